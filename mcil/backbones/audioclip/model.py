"""The AudioCLIP model: CLIP RN50 image and text towers plus the ESResNeXt-fbsp audio tower.

The module tree reproduces the published checkpoint's state_dict exactly (861 keys, same order,
shapes and dtypes): CLIP's attributes sit at the top level, the audio tower under ``audio``.
See ``docs/audioclip.md`` and the spec in ``shared/reference/audioclip-spec.md``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mcil.backbones.audioclip.audio import WIN_LENGTH, ESResNeXtFBSP, blackmanharris_window
from mcil.backbones.audioclip.image import ModifiedResNet
from mcil.backbones.audioclip.text import LayerNorm32, TextTransformer
from mcil.backbones.audioclip.tokenizer import CONTEXT_LENGTH, VOCAB_SIZE
from mcil.backbones.audioclip.tokenizer import tokenize as _tokenize
from mcil.backbones.base import AdapterSite, Backbone
from mcil.data.spec import PreprocessSpec

__all__ = ["AudioCLIP", "AUDIOCLIP_PREPROCESS", "CLIP_MEAN", "CLIP_STD"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

AUDIOCLIP_PREPROCESS = PreprocessSpec(
    image_size=224,
    image_resize="short-side-bicubic",
    image_mean=CLIP_MEAN,
    image_std=CLIP_STD,
    audio_sample_rate=44100,
    audio_num_samples=220500,
    audio_scale="int16",
)

EMBED_DIM = 1024
IMAGE_RESOLUTION = 224
TEXT_WIDTH = 512
TEXT_HEADS = 8
TEXT_LAYERS = 12


class AudioCLIP(Backbone):
    """AudioCLIP (Guzhov et al., 2022) as a frozen tri-modal :class:`Backbone`.

    encode_image: (B, 3, 224, 224) CLIP-normalised float → (B, 1024)
    encode_audio: (B, N) or (B, C, N) float waveform at 44.1 kHz in int16 units → (B, 1024)
    encode_text:  (B, L ≤ 77) int64 CLIP BPE ids → (B, 1024)
    Outputs are not L2-normalised.

    ``AudioCLIP()`` builds a randomly initialised model (CLIP's init for image/text, torchvision's
    for audio); ``AudioCLIP(device="meta")`` builds an uninitialised skeleton for
    :func:`mcil.backbones.audioclip.load_audioclip`, which is the way to get pretrained weights.
    """

    name = "audioclip"
    embed_dim = EMBED_DIM
    preprocess = AUDIOCLIP_PREPROCESS
    # The causal mask: the EOT feature never sees the zero padding after it, so trimming the
    # padding columns leaves every feature unchanged (tests/backbones/test_audioclip.py).
    TEXT_TRIM_EXACT = True
    text_pad_id = 0

    def __init__(self, *, device: torch.device | str | None = None) -> None:
        super().__init__()
        target = torch.device(device) if device is not None else torch.get_default_device()
        # The tree is always built on the meta device (no memory, no default init); a real model is
        # then allocated once and initialised once by reset_parameters().
        with torch.device("meta"):
            # Own parameters first, in the checkpoint's order.
            self.positional_embedding = nn.Parameter(torch.empty(CONTEXT_LENGTH, TEXT_WIDTH))
            self.text_projection = nn.Parameter(torch.empty(TEXT_WIDTH, EMBED_DIM))
            self.logit_scale = nn.Parameter(torch.empty(()))
            self.logit_scale_ai = nn.Parameter(torch.empty(()))
            self.logit_scale_at = nn.Parameter(torch.empty(()))
            # Then the submodules, in the checkpoint's order.
            self.visual = ModifiedResNet(
                layers=(3, 4, 6, 3), output_dim=EMBED_DIM, heads=32, input_resolution=IMAGE_RESOLUTION, width=64
            )
            self.transformer = TextTransformer(width=TEXT_WIDTH, layers=TEXT_LAYERS, heads=TEXT_HEADS)
            # _weight given: skips nn.Embedding's own init (slow on meta; reset_parameters() inits it).
            self.token_embedding = nn.Embedding(VOCAB_SIZE, TEXT_WIDTH, _weight=torch.empty(VOCAB_SIZE, TEXT_WIDTH))
            self.ln_final = LayerNorm32(TEXT_WIDTH)
            self.audio = ESResNeXtFBSP(num_classes=EMBED_DIM, window=torch.empty(WIN_LENGTH))
        self.checkpoint_sha256: str | None = None
        self.checkpoint_variant: str | None = None
        if target.type != "meta":
            # Like to_empty(), without empty_like on meta tensors (which imports sympy: seconds).
            self._apply(lambda t: torch.empty(t.shape, dtype=t.dtype, device=target))
            with torch.no_grad():
                for t in [*self.parameters(), *self.buffers()]:
                    if t.is_floating_point():
                        t.fill_(float("nan"))  # anything reset_parameters() missed stays NaN (tested)
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random init as upstream: CLIP's scheme for image/text, torchvision's for audio."""
        with torch.no_grad():
            nn.init.normal_(self.token_embedder.weight, std=0.02)
            nn.init.normal_(self.positional_embedding, std=0.01)
            nn.init.normal_(self.text_projection, std=TEXT_WIDTH**-0.5)
            self.logit_scale.fill_(math.log(1 / 0.07))
            self.logit_scale_ai.fill_(math.log(100.0))
            self.logit_scale_at.fill_(math.log(100.0))
            self.ln_final.reset_parameters()
            self.audio.window.copy_(blackmanharris_window(WIN_LENGTH))
            self.visual.reset_parameters()
            self.transformer.reset_parameters()
            self.audio.reset_parameters()

    # -- encoders ---------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) CLIP-normalised float → (B, 1024)."""
        if images.ndim != 4 or images.shape[1:] != (3, IMAGE_RESOLUTION, IMAGE_RESOLUTION):
            raise ValueError(
                f"encode_image expects (B, 3, {IMAGE_RESOLUTION}, {IMAGE_RESOLUTION}) images, got {tuple(images.shape)}"
            )
        return self.visual(images)

    def encode_audio(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(B, N) or (B, C, N) waveform at 44.1 kHz in int16 units (N ≥ 1) → (B, 1024).

        Channels are encoded separately and their pooled features summed before the projection.
        """
        if waveforms.ndim not in (2, 3) or waveforms.shape[-1] < 1 or not waveforms.is_floating_point():
            raise ValueError(
                "encode_audio expects a float (B, N) or (B, C, N) waveform in int16 units, "
                f"got {waveforms.dtype} {tuple(waveforms.shape)}"
            )
        return self.audio(waveforms)

    def encode_text(self, tokens: torch.Tensor, embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) int64 ids, L ≤ 77, from :meth:`tokenize` → (B, 1024): the EOT (max id) feature, projected.

        ``embeddings`` (B, L, 512), if given, replaces the token-embedding lookup (positional
        embeddings are still added); ``tokens`` still decides the EOT position (prompt learning).
        A shorter L gives the same result as padding to 77: the causal mask hides all after EOT.
        """
        if tokens.ndim != 2 or tokens.shape[1] > CONTEXT_LENGTH or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"encode_text expects (B, L ≤ {CONTEXT_LENGTH}) integer token ids, "
                f"got {tokens.dtype} {tuple(tokens.shape)}"
            )
        if embeddings is None:
            x = self.token_embedding(tokens)  # (B, L, D)
        elif embeddings.shape != (*tokens.shape, TEXT_WIDTH):
            raise ValueError(
                f"encode_text: embeddings {tuple(embeddings.shape)} must be (B, L, {TEXT_WIDTH}) = "
                f"{(*tokens.shape, TEXT_WIDTH)}"
            )
        else:
            x = embeddings.to(self.positional_embedding.dtype)
        x = x + self.positional_embedding[: tokens.shape[1]]
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)  # the blocks see (L, B, D)
        x = self.ln_final(x)
        eot = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]  # (B, D)
        return eot @ self.text_projection

    def token_embedding(self, tokens: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """(B, L) int64 → (B, L, 512) token embeddings (before positional embeddings).

        The lookup table is the submodule registered under the name ``token_embedding`` (the
        checkpoint key is ``token_embedding.weight``); this method of the Backbone interface shadows
        it as an attribute, so the table is reached as :attr:`token_embedder`.
        """
        return self.token_embedder(tokens)

    @property
    def token_embedder(self) -> nn.Embedding:
        """The (49408, 512) token-embedding table (submodule ``token_embedding``)."""
        return self._modules["token_embedding"]  # type: ignore[return-value]

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Texts → (B, 77) int64 CLIP BPE ids on the model's device; over 77 tokens raises TextTooLongError."""
        return _tokenize(texts).to(self.positional_embedding.device)

    # -- adapters -------------------------------------------------------------------------------
    def image_sites(self) -> list[AdapterSite]:
        """The 12 shape-preserving ModifiedResNet Bottleneck blocks (BCHW; width = channels).

        A parallel adapter adds ``A(h)`` to the block output, so input and output must have the
        same shape. The first block of each stage (the 4 with a ``downsample`` shortcut) changes
        channels and resolution and is therefore not a site.
        """
        return [
            AdapterSite(name=f"visual.{name}", module=block, width=block.bn3.num_features, layout="BCHW")
            for name, block in self.visual.blocks()
            if block.downsample is None
        ]

    def text_sites(self) -> list[AdapterSite]:
        """The 12 text residual blocks (CLIP's (L, B, D) layout; width 512)."""
        return [
            AdapterSite(name=f"transformer.resblocks.{i}", module=block, width=TEXT_WIDTH, layout="LBD")
            for i, block in enumerate(self.transformer.resblocks)
        ]

    # -- temperatures -------------------------------------------------------------------------------
    def logit_scale_value(self) -> float:
        """Image–text temperature exp(logit_scale), clamped to [1, 100] as AudioCLIP does."""
        return float(self.logit_scale.detach().exp().clamp(1.0, 100.0))

    def logit_scales(self) -> dict[str, float]:
        """All three temperatures, each exp(·) clamped to [1, 100]: image_text, audio_image, audio_text."""
        return {
            key: float(p.detach().exp().clamp(1.0, 100.0))
            for key, p in (
                ("image_text", self.logit_scale),
                ("audio_image", self.logit_scale_ai),
                ("audio_text", self.logit_scale_at),
            )
        }

