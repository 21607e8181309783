"""The backbone interface every learner is written against (the registry: :mod:`.registry`).

A backbone is a frozen vision–audio–text model with one embedding space of width ``embed_dim``.
Learners never import a concrete backbone: they receive a :class:`Backbone` from
:func:`mcil.backbones.registry.build_backbone` and attach adapters to the :class:`AdapterSite` s it exposes.

Adapters attach by forward hooks: a site's ``module`` maps a hidden state ``h`` to ``h'`` of the
same shape, and an adapter adds ``A(h)`` to ``h'`` (parallel adapter). ``layout`` says how to
read the hidden state:

- ``BLD``: (batch, tokens, width) — token 0 is CLS/SOT;
- ``LBD``: (tokens, batch, width) — CLIP's text transformer layout;
- ``BCHW``: (batch, channels, height, width) — ResNet stages (AudioCLIP's image tower).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from mcil.data.spec import PreprocessSpec
from mcil.errors import UserError

__all__ = [
    "AdapterSite",
    "Backbone",
    "BackboneError",
    "file_sha256",
    "trimmed_length",
]


class BackboneError(UserError, RuntimeError):
    """A checkpoint is missing, unreadable or does not match the architecture."""


@dataclass(frozen=True)
class AdapterSite:
    """A block whose output an adapter may add to.

    module: the block (hook target); width: hidden width D (or channels C);
    layout: 'BLD' | 'LBD' | 'BCHW'; name: stable dotted name (for logs and usage statistics).
    """

    name: str
    module: nn.Module
    width: int
    layout: Literal["BLD", "LBD", "BCHW"]


class Backbone(nn.Module):
    """Frozen tri-modal encoder with a shared embedding space.

    Subclasses implement the three encoders and :meth:`tokenize`, set ``embed_dim``,
    ``preprocess`` and ``name``, and list their adapter sites. Outputs are *not* L2-normalised.
    """

    name: str = "backbone"
    embed_dim: int
    preprocess: PreprocessSpec
    checkpoint_sha256: str | None = None

    # -- encoders ---------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised float → (B, embed_dim)."""
        raise NotImplementedError

    def encode_audio(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(B, N) float waveform in the spec's units (see ``preprocess.audio_scale``) → (B, embed_dim)."""
        raise NotImplementedError

    def encode_text(self, tokens: torch.Tensor, embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) int64 token ids → (B, embed_dim).

        ``embeddings`` (B, L, W), if given, replaces the token-embedding lookup (positional
        embeddings are still added); ``tokens`` still decides pooling (EOT position) and padding.
        This is how prompt learning (CoOp) inserts learnable context vectors.
        """
        raise NotImplementedError

    def token_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) int64 → (B, L, W) token embeddings (before positional embeddings)."""
        raise NotImplementedError

    #: Whether :meth:`encode_text` of the *bare* tower gives the same features for ``tokens`` and
    #: ``tokens[:, :trimmed_length(tokens)]`` (causal mask, or padding masked as keys, and a pool
    #: that reads only real tokens). False unless a backbone proves it (tested per backbone).
    TEXT_TRIM_EXACT: bool = False
    #: The id that pads token sequences on the right.
    text_pad_id: int = 0

    def trim_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) ids → (B, L') with L' = the longest sequence through its last non-pad token.

        Why: prompts are a dozen BPE tokens padded to CLIP's 77; every text block costs O(L), so
        encoding only the columns some sequence uses is a large exact saving where
        :attr:`TEXT_TRIM_EXACT` holds. Returns ``tokens`` unchanged where it does not.
        """
        if not self.TEXT_TRIM_EXACT:
            return tokens
        return tokens[:, : trimmed_length(tokens, self.text_pad_id)]

    def text_token_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) ids → (B, L) bool: each row's own positions, through its last non-pad token
        (what a ``prompt-mean`` router averages; the padding after it is excluded)."""
        col = torch.arange(tokens.shape[1], device=tokens.device)
        real = tokens != self.text_pad_id
        last = torch.where(real, col, torch.full_like(col, -1)).amax(dim=1, keepdim=True)  # (B, 1)
        return col.unsqueeze(0) <= last

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """List of strings → (B, L) int64 token ids (errors on texts that do not fit)."""
        raise NotImplementedError

    # -- adapters -------------------------------------------------------------------------------
    def image_sites(self) -> list[AdapterSite]:
        """Blocks of the image tower where adapters may attach, input to output order."""
        raise NotImplementedError

    def text_sites(self) -> list[AdapterSite]:
        """Blocks of the text tower where adapters may attach, input to output order."""
        raise NotImplementedError

    # -- classifier temperature -------------------------------------------------------------------
    def logit_scale_value(self) -> float:
        """exp(logit_scale) clamped as the backbone does (CLIP: ≤ 100)."""
        raise NotImplementedError

    # -- freezing ---------------------------------------------------------------------------------
    def freeze(self) -> Backbone:
        """requires_grad=False everywhere and eval mode (BatchNorm uses running statistics)."""
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()
        return self

    def train(self, mode: bool = True) -> Backbone:
        """A frozen backbone stays in eval mode; adapters attached by hooks keep their own mode."""
        return super().train(False)


def trimmed_length(tokens: torch.Tensor, pad_id: int = 0) -> int:
    """Smallest L such that every row of ``tokens`` (B, L0) is pad-only after column L (≥ 1).

    One vectorised reduction (no per-row Python): the last non-pad column + 1, max over rows.
    """
    if tokens.ndim != 2 or tokens.shape[1] == 0:
        raise ValueError(f"trimmed_length expects (B, L ≥ 1) token ids, got {tuple(tokens.shape)}")
    used = (tokens != pad_id).any(dim=0)  # (L0,) column holds a real token in some row
    if not bool(used.any()):
        return 1
    return int(torch.nonzero(used, as_tuple=False).max()) + 1


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file (streamed), for provenance in every result."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
