"""The tiny backbone's architecture: its config (:class:`TinyConfig`) and the towers built from it.

Every tower is a pre-LN transformer of :class:`Block` s; :class:`PatchTower` reads a 2-D grid
(the image, or the audio's log-mel from :class:`LogMel`) through a patch stem
(:func:`_patch_embedding`), :class:`TextTower` reads word tokens. :mod:`mcil.backbones.tiny`
puts three of them together as the backbone.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from mcil.backbones.base import BackboneError
from mcil.data.spec import PreprocessSpec

__all__ = ["TinyConfig", "PRETRAIN_HINT", "Attention", "Block", "PatchTower", "TextTower", "LogMel"]

PRETRAIN_HINT = (
    "run `mcil pretrain --data data/synav-clean --out checkpoints/tiny.pt` "
    "or the Snakemake `pretrain` rule"
)


# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TinyConfig:
    """Architecture of the tiny backbone (the vocabulary travels separately, see :class:`TinyBackbone`).

    embed_dim: shared embedding width; width / depth / heads / mlp_ratio: every tower's transformer;
    image_size / image_patch: square input side and patch side (pixels);
    sample_rate / num_samples: audio input (1 s at 16 kHz);
    n_fft / hop_length / n_mels / mel_eps: log-mel front end, ``log(mel + mel_eps)``;
    mel_mean / mel_std: fixed standardisation of the log-mel values (measured on synav: about −2 ± 2.5);
    audio_frames: mel frames kept (the first ``audio_frames`` of ``1 + num_samples // hop_length``);
    audio_patch_mel / audio_patch_time: audio patch size (mel bins × frames);
    stem: how patches become tokens: ``conv`` (a stride-2 3×3 convolutional stem; patch sides must
    be powers of 2) or ``linear`` (one kernel = stride = patch convolution, plain ViT);
    context_length: text tokens including ``<sot>`` and ``<eot>``;
    text_pool: ``eot`` (the EOT token's state) or ``mean`` (mean over non-pad tokens);
    image_mean / image_std: per-channel normalisation of [0, 1] pixels (enters the preprocessing spec).
    """

    embed_dim: int = 128
    width: int = 128
    depth: int = 3
    heads: int = 4
    mlp_ratio: float = 2.0
    image_size: int = 64
    image_patch: int = 8
    sample_rate: int = 16000
    num_samples: int = 16000
    n_fft: int = 512
    hop_length: int = 250
    n_mels: int = 64
    mel_eps: float = 1e-6
    mel_mean: float = -2.0
    mel_std: float = 2.5
    audio_frames: int = 64
    audio_patch_mel: int = 8
    audio_patch_time: int = 8
    stem: Literal["conv", "linear"] = "conv"
    context_length: int = 24
    text_pool: Literal["eot", "mean"] = "eot"
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        problems = []
        if self.width % self.heads:
            problems.append(f"width {self.width} is not divisible by heads {self.heads}")
        if self.image_size % self.image_patch:
            problems.append(f"image_size {self.image_size} is not a multiple of image_patch {self.image_patch}")
        if self.n_mels % self.audio_patch_mel:
            problems.append(f"n_mels {self.n_mels} is not a multiple of audio_patch_mel {self.audio_patch_mel}")
        if self.audio_frames % self.audio_patch_time:
            problems.append(
                f"audio_frames {self.audio_frames} is not a multiple of audio_patch_time {self.audio_patch_time}"
            )
        if self.audio_frames > 1 + self.num_samples // self.hop_length:
            problems.append(
                f"audio_frames {self.audio_frames} exceeds the {1 + self.num_samples // self.hop_length} "
                f"frames of {self.num_samples} samples at hop {self.hop_length}"
            )
        if self.context_length < 3:
            problems.append(f"context_length {self.context_length} < 3 (needs <sot>, a word and <eot>)")
        if self.depth < 1 or self.embed_dim < 1 or self.mlp_ratio <= 0:
            problems.append("depth, embed_dim and mlp_ratio must be positive")
        if self.stem not in ("conv", "linear"):
            problems.append(f"stem {self.stem!r} is not 'conv' or 'linear'")
        elif self.stem == "conv":
            sides = (self.image_patch, self.audio_patch_mel, self.audio_patch_time)
            if any(p < 1 or p & (p - 1) for p in sides):
                problems.append(f"stem 'conv' needs power-of-2 patch sides, got {sides} (or use stem='linear')")
        if self.text_pool not in ("eot", "mean"):
            problems.append(f"text_pool {self.text_pool!r} is not 'eot' or 'mean'")
        if problems:
            raise BackboneError("tiny backbone config: " + "; ".join(problems))

    # -- (de)serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-/``weights_only``-safe dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TinyConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (naming ``source``)."""
        if not isinstance(data, dict):
            raise BackboneError(f"{source}: 'config' is {type(data).__name__}, expected a dict")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise BackboneError(
                f"{source}: unknown tiny config keys {unknown}; the checkpoint was written by another "
                f"version of mcil — {PRETRAIN_HINT} again"
            )
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kw)

    # -- derived ------------------------------------------------------------------------------------
    @property
    def preprocess(self) -> PreprocessSpec:
        """The preprocessing contract (cache decodes to it; see :mod:`mcil.data.spec`)."""
        return PreprocessSpec(
            image_size=self.image_size,
            image_resize="exact-bilinear",
            image_mean=tuple(self.image_mean),
            image_std=tuple(self.image_std),
            audio_sample_rate=self.sample_rate,
            audio_num_samples=self.num_samples,
            audio_scale="unit",
        )

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.image_patch) ** 2

    @property
    def audio_tokens(self) -> int:
        return (self.n_mels // self.audio_patch_mel) * (self.audio_frames // self.audio_patch_time)


# ------------------------------------------------------------------------------------------------
# transformer parts
# ------------------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head self-attention. x (B, L, D), keep (B, L) bool or None → (B, L, D)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mask = None if keep is None else keep[:, None, None, :]  # (B, 1, 1, L): True = attend
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, L, D/H)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then + MLP(LN(x)). x (B, L, D) → (B, L, D).

    This is the adapter site: a forward hook sees ``inputs[0]`` = x and may add to the output.
    ``frozen_out``, if given, is :meth:`body` of x computed earlier (a frozen block's own output,
    :mod:`mcil.backbones.prefix_memo`): it is returned as the output, so the hooks still run on x.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(round(width * mlp_ratio))
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def body(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The block's own function, without hooks."""
        x = x + self.attn(self.ln_1(x), keep)
        return x + self.mlp(self.ln_2(x))

    def forward(
        self, x: torch.Tensor, keep: torch.Tensor | None = None, frozen_out: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.body(x, keep) if frozen_out is None else frozen_out


def _patch_embedding(cfg: TinyConfig, channels: int, patch: tuple[int, int]) -> nn.Module:
    """(B, C, H, W) → (B, width, H/ph, W/pw): one token per ph×pw patch.

    ``linear``: a conv with kernel = stride = patch (ViT). ``conv``: a small convolutional stem of
    stride-2 3×3 convolutions (channels doubling up to ``width``, GELU between), one per factor of
    2 of the patch — the same token grid, with local, translation-equivariant features, which a
    transformer trained from scratch on a thousand samples does not learn by itself.
    """
    if cfg.stem == "linear":
        return nn.Conv2d(channels, cfg.width, kernel_size=patch, stride=patch)
    steps = [int(math.log2(p)) for p in patch]
    n = max(steps)
    layers: list[nn.Module] = []
    c_in = channels
    for k in range(n):
        c_out = cfg.width // 2 ** (n - 1 - k)
        stride = tuple(2 if k < s else 1 for s in steps)
        layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1))
        if k < n - 1:
            layers.append(nn.GELU())
        c_in = c_out
    return nn.Sequential(*layers)


class PatchTower(nn.Module):
    """ViT-style tower over a 1- or 3-channel 2-D grid.

    x (B, C, H, W) → patch tokens (B, N, width) (see :func:`_patch_embedding`) → [CLS, p1 … pN]
    + positions → LN → blocks → LN(CLS) → linear projection → (B, embed_dim).
    """

    def __init__(self, cfg: TinyConfig, channels: int, patch: tuple[int, int], n_tokens: int) -> None:
        super().__init__()
        w = cfg.width
        self.patch = _patch_embedding(cfg, channels, patch)
        self.cls = nn.Parameter(torch.zeros(w))
        self.pos = nn.Parameter(torch.zeros(n_tokens + 1, w))
        self.ln_pre = nn.LayerNorm(w)
        self.blocks = nn.ModuleList(Block(w, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Linear(w, cfg.embed_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_prefix(*self.prefix(x))

    def prefix(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) → (block-0 input, block-0 output without hooks), each (B, N + 1, width)."""
        t = self.patch(x).flatten(2).transpose(1, 2)  # (B, N, D)
        t = torch.cat([self.cls.expand(t.shape[0], 1, -1), t], dim=1) + self.pos
        t = self.ln_pre(t)
        return t, self.blocks[0].body(t)

    def prefix_parameters(self) -> list[torch.Tensor]:
        """What :meth:`prefix` reads: a memo of it is valid while these are unchanged."""
        return [*self.patch.parameters(), self.cls, self.pos, *self.ln_pre.parameters(), *self.blocks[0].parameters()]

    def from_prefix(self, t: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        """The rest of :meth:`forward` from :meth:`prefix`'s two tensors (block 0's hooks run here) → (B, embed_dim)."""
        t = self.blocks[0](t, None, y0)
        for blk in self.blocks[1:]:
            t = blk(t)
        return self.proj(self.ln_post(t[:, 0]))


class TextTower(nn.Module):
    """Word tokens (B, L) int64 → embeddings + positions → blocks (padding masked) → pool → (B, embed_dim)."""

    def __init__(self, cfg: TinyConfig, vocab_size: int, pad_id: int, eot_id: int) -> None:
        super().__init__()
        w = cfg.width
        self.pad_id, self.eot_id, self.pool = pad_id, eot_id, cfg.text_pool
        self.token = nn.Embedding(vocab_size, w)
        self.pos = nn.Parameter(torch.zeros(cfg.context_length, w))
        self.blocks = nn.ModuleList(Block(w, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Linear(w, cfg.embed_dim, bias=False)

    def forward(self, tokens: torch.Tensor, embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, L) int64; embeddings (B, L, W) replaces ``self.token(tokens)`` if given."""
        return self.from_prefix(tokens, *self.prefix(tokens, embeddings))

    def prefix(self, tokens: torch.Tensor, embeddings: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, L) → (block-0 input, block-0 output without hooks), each (B, L, width)."""
        emb = self.token(tokens) if embeddings is None else embeddings
        t = emb + self.pos[: tokens.shape[1]]
        return t, self.blocks[0].body(t, tokens != self.pad_id)

    def prefix_parameters(self) -> list[torch.Tensor]:
        """What :meth:`prefix` reads from token ids: a memo of it is valid while these are unchanged."""
        return [*self.token.parameters(), self.pos, *self.blocks[0].parameters()]

    def from_prefix(self, tokens: torch.Tensor, t: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        """The rest of :meth:`forward` from :meth:`prefix`'s two tensors (block 0's hooks run here) → (B, embed_dim)."""
        keep = tokens != self.pad_id  # (B, L)
        t = self.blocks[0](t, keep, y0)
        for blk in self.blocks[1:]:
            t = blk(t, keep)
        t = self.ln_post(t)
        if self.pool == "eot":
            pooled = t[torch.arange(t.shape[0], device=t.device), (tokens == self.eot_id).int().argmax(dim=1)]
        else:
            m = keep.unsqueeze(-1).to(t.dtype)
            pooled = (t * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.proj(pooled)


class LogMel(nn.Module):
    """Waveform (B, N) in [-1, 1] → standardised log-mel (B, 1, n_mels, audio_frames):
    ``(log(mel + eps) − mel_mean) / mel_std``."""

    def __init__(self, cfg: TinyConfig) -> None:
        super().__init__()
        self.frames, self.eps, self.mean, self.std = cfg.audio_frames, cfg.mel_eps, cfg.mel_mean, cfg.mel_std
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels, power=2.0
        )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        spec = self.mel(wave.float())[..., : self.frames]  # (B, n_mels, T)
        return ((torch.log(spec + self.eps) - self.mean) / self.std).unsqueeze(1)
