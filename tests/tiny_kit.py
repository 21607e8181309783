"""A small random tiny backbone shared by the method and baseline tests (imported by their conftests).

``tests/`` is on ``sys.path`` because the root ``conftest.py`` lives there (pytest's default
import mode), so ``from tiny_kit import ...`` works from any test folder.
"""

from __future__ import annotations

import torch

from mcil.backbones.tiny import TinyBackbone
from mcil.backbones.tiny_towers import TinyConfig

#: Class names made of words the tiny word tokenizer knows (its vocabulary is built from them).
CLASS_NAMES: tuple[str, ...] = ("red star", "blue circle", "green square", "yellow ring", "purple cross", "orange moon")

#: Width 32, 2 blocks per tower, 16×16 images, 0.25 s audio: a few ms per forward on one thread.
SMALL = TinyConfig(
    embed_dim=32, width=32, depth=2, heads=2, mlp_ratio=2.0, image_size=16, image_patch=8,
    num_samples=4000, n_mels=16, audio_frames=16, audio_patch_mel=8, audio_patch_time=8, context_length=16,
)


def random_backbone(seed: int = 0, redraw_positions: bool = False) -> TinyBackbone:
    """A frozen random tiny backbone whose vocabulary holds :data:`CLASS_NAMES`.

    TinyBackbone's own initialisation (std 0.02, meant for pre-training) maps every input to
    almost the same embedding; weights are redrawn with std 1/√fan_in (embeddings std 1) so that
    a *random* backbone already separates synthetic classes a little, as a pre-trained one would.
    ``redraw_positions`` also gives the position embeddings std 0.1 (the baseline tests' stream
    relies on it).
    """
    bb = TinyBackbone.random(seed=seed, vocab=list(CLASS_NAMES), config=SMALL)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for m in bb.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.weight.normal_(0.0, m.weight[0].numel() ** -0.5)
            elif isinstance(m, torch.nn.Embedding):
                m.weight.normal_(0.0, 1.0)
        if redraw_positions:
            for tower in (bb.image, bb.audio, bb.text):
                tower.pos.normal_(0.0, 0.1)
    return bb.freeze()
