"""AudioCLIP (Guzhov et al., 2022) rebuilt to load the published checkpoint strictly.

>>> from mcil.backbones.audioclip import load_audioclip, tokenize
>>> model = load_audioclip("checkpoints/AudioCLIP-Full-Training.pt")   # doctest: +SKIP
>>> model.encode_text(tokenize(["dog barking"]))                        # doctest: +SKIP

Modules: ``image`` (CLIP ModifiedResNet-50), ``text`` (CLIP text transformer), ``audio``
(ESResNeXt-fbsp), ``tokenizer`` (CLIP BPE, lazy), ``model`` (the assembled :class:`AudioCLIP`),
``load`` (strict checkpoint loading and the ``audioclip`` registry entry). See docs/audioclip.md.
"""

from mcil.backbones.audioclip.load import PUBLISHED_CHECKPOINTS, build_audioclip, load_audioclip
from mcil.backbones.audioclip.model import AUDIOCLIP_PREPROCESS, AudioCLIP
from mcil.backbones.audioclip.tokenizer import TextTooLongError, tokenize

__all__ = [
    "AudioCLIP",
    "AUDIOCLIP_PREPROCESS",
    "PUBLISHED_CHECKPOINTS",
    "TextTooLongError",
    "build_audioclip",
    "load_audioclip",
    "tokenize",
]
