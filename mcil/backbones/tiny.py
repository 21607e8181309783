"""The tiny tri-modal backbone: three small pre-LN transformers sharing one embedding space.

It stands in for AudioCLIP in the embedded default (design §4): same interface, about 0.5 M
parameters per tower (1.46 M in all with synav's 63-word vocabulary), pre-trained contrastively on synav's pre-training classes by
``mcil pretrain`` (:mod:`mcil.backbones.pretrain`) and then frozen.

Towers (all pre-LN transformers of ``depth`` blocks, width ``width``):

- image: 64×64 RGB → one token per 8×8 patch (a stride-2 convolutional stem, see
  :func:`_patch_embedding`) → 64 tokens + CLS → CLS → linear projection;
- audio: 1 s at 16 kHz → log-mel spectrogram (torchaudio, inside the model) → 64 mels × 64 frames
  → one token per 8×8 patch (same kind of stem) → 64 tokens + CLS → CLS → linear projection;
- text: a word-level tokenizer (lower-case words split on non-letters) over synav's vocabulary,
  ``<sot> words <eot> <pad>…`` → EOT token → linear projection.

Every transformer block is an adapter site (layout ``BLD``, token 0 = CLS / SOT).

The checkpoint is a plain dict read with ``torch.load(weights_only=True)``::

    {"format": "mcil-tiny-v1", "config": {...TinyConfig...}, "state_dict": {...},
     "vocab": [...], "pretrain": {...metadata: seed, epochs, data, content hash, ...}}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from mcil.atomic import atomic_torch_save
from mcil.backbones.base import AdapterSite, Backbone, BackboneError, file_sha256
from mcil.backbones.registry import register_backbone
from mcil.data.spec import PreprocessSpec
from mcil.data.templates import load_templates

__all__ = [
    "TinyConfig",
    "TinyBackbone",
    "WordTokenizer",
    "SPECIAL_TOKENS",
    "CHECKPOINT_FORMAT",
    "build_vocab",
    "synav_templates",
    "prompt_templates",
    "load_tiny",
    "save_tiny",
    "state_dict_sha256",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "mcil-tiny-v1"
SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<sot>", "<eot>", "<unk>")
PRETRAIN_HINT = (
    "run `mcil pretrain --data data/synav-clean --out checkpoints/tiny.pt` "
    "or the Snakemake `pretrain` rule"
)
_WORD_RE = re.compile(r"[a-z]+")


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
# vocabulary and tokenizer
# ------------------------------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    """Lower-case words of ``text``, split on every non-letter."""
    return _WORD_RE.findall(text.lower())


def prompt_templates(name: str = "synav") -> dict[str, Any]:
    """Prompt templates shipped with mcil (``mcil/resources/templates/<name>.yaml``) as
    ``{"test": str, "train": [str, ...]}``, each with one ``{}`` for the class name."""
    tpl = load_templates(name)
    return {"test": tpl.test, "train": list(tpl.train)}


def synav_templates() -> dict[str, Any]:
    """The synav prompt templates (see :func:`prompt_templates`)."""
    return prompt_templates("synav")


def build_vocab(texts: Iterable[str], include_templates: bool = True) -> tuple[str, ...]:
    """Special tokens + sorted unique words of ``texts`` (and of the synav templates).

    Pass every class name of a dataset (pre-training *and* incremental classes) so that no
    class name ever tokenises to ``<unk>``.
    """
    words: set[str] = set()
    for t in texts:
        words.update(_words(t))
    if include_templates:
        tpl = synav_templates()
        for t in [tpl["test"], *tpl["train"]]:
            words.update(_words(t))
    words -= set(SPECIAL_TOKENS)
    return SPECIAL_TOKENS + tuple(sorted(words))


class WordTokenizer:
    """Word-level tokenizer: ``"A red star."`` → ``<sot> a red star <eot> <pad> …``.

    Words are lower-case runs of letters; anything else separates words. Unknown words map to
    ``<unk>``. A text whose words do not fit in ``context_length - 2`` is an error.
    """

    def __init__(self, vocab: Sequence[str], context_length: int) -> None:
        vocab = tuple(vocab)
        if vocab[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise BackboneError(f"tiny vocabulary must start with {list(SPECIAL_TOKENS)}, got {list(vocab[:4])}")
        if len(set(vocab)) != len(vocab):
            raise BackboneError("tiny vocabulary has duplicate entries")
        self.vocab = vocab
        self.context_length = context_length
        self.index = {w: i for i, w in enumerate(vocab)}
        self.pad_id, self.sot_id, self.eot_id, self.unk_id = (self.index[t] for t in SPECIAL_TOKENS)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without padding: ``[sot, w1, …, wn, eot]``."""
        ids = [self.index.get(w, self.unk_id) for w in _words(text)]
        if len(ids) + 2 > self.context_length:
            raise BackboneError(
                f"text {text!r} has {len(ids)} words but the tiny backbone's context holds "
                f"{self.context_length - 2} (context_length={self.context_length}); shorten the class name "
                f"or template, or pre-train with a larger context_length"
            )
        return [self.sot_id, *ids, self.eot_id]

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """List of B strings → (B, context_length) int64 ids, padded with ``<pad>``."""
        if isinstance(texts, str):
            texts = [texts]
        out = torch.full((len(texts), self.context_length), self.pad_id, dtype=torch.int64)
        for i, t in enumerate(texts):
            ids = self.encode(t)
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
        return out


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
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(round(width * mlp_ratio))
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), keep)
        return x + self.mlp(self.ln_2(x))


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
        t = self.patch(x).flatten(2).transpose(1, 2)  # (B, N, D)
        t = torch.cat([self.cls.expand(t.shape[0], 1, -1), t], dim=1) + self.pos
        t = self.ln_pre(t)
        for blk in self.blocks:
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
        keep = tokens != self.pad_id  # (B, L)
        emb = self.token(tokens) if embeddings is None else embeddings
        t = emb + self.pos[: tokens.shape[1]]
        for blk in self.blocks:
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


# ------------------------------------------------------------------------------------------------
# the backbone
# ------------------------------------------------------------------------------------------------
class TinyBackbone(Backbone):
    """Three small transformer towers with a shared embedding space and a learned temperature.

    ``vocab``: the word list of the tokenizer, starting with ``<pad> <sot> <eot> <unk>``
    (see :func:`build_vocab`). Construction uses the global RNG; use :meth:`random` for a seeded one.
    No dropout and no batch statistics, so train and eval mode compute the same function.
    """

    name = "tiny"
    # Padding is masked as attention keys and pooling reads only real tokens, so dropping the
    # all-padding columns leaves every feature unchanged (tests/backbones/test_tiny.py).
    TEXT_TRIM_EXACT = True
    text_pad_id = SPECIAL_TOKENS.index("<pad>")

    def __init__(self, config: TinyConfig, vocab: Sequence[str]) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = WordTokenizer(vocab, config.context_length)
        self.vocab: tuple[str, ...] = self.tokenizer.vocab
        self.embed_dim = config.embed_dim
        self.preprocess = config.preprocess
        self.image = PatchTower(config, 3, (config.image_patch, config.image_patch), config.image_tokens)
        self.logmel = LogMel(config)
        self.audio = PatchTower(config, 1, (config.audio_patch_mel, config.audio_patch_time), config.audio_tokens)
        self.text = TextTower(config, len(self.vocab), self.tokenizer.pad_id, self.tokenizer.eot_id)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.pretrain_info: dict[str, Any] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Width-scaled normal initialisation (CLIP's scales): residual-branch outputs shrink with
        depth, patch/projection weights ~ 1/sqrt(fan-in), small token and text-position embeddings."""
        w, depth = self.config.width, self.config.depth
        resid = w**-0.5 * (2 * depth) ** -0.5
        for tower in (self.image, self.audio, self.text):
            for blk in tower.blocks:
                nn.init.normal_(blk.attn.qkv.weight, std=w**-0.5)
                nn.init.normal_(blk.attn.out.weight, std=resid)
                nn.init.normal_(blk.mlp[0].weight, std=(2 * w) ** -0.5)
                nn.init.normal_(blk.mlp[2].weight, std=resid)
                for lin in (blk.attn.qkv, blk.attn.out, blk.mlp[0], blk.mlp[2]):
                    nn.init.zeros_(lin.bias)
                for ln in (blk.ln_1, blk.ln_2):
                    nn.init.ones_(ln.weight)
                    nn.init.zeros_(ln.bias)
            nn.init.normal_(tower.proj.weight, std=w**-0.5)
            nn.init.ones_(tower.ln_post.weight)
            nn.init.zeros_(tower.ln_post.bias)
        for tower in (self.image, self.audio):
            convs = [m for m in tower.patch.modules() if isinstance(m, nn.Conv2d)]
            for k, conv in enumerate(convs):
                gain = 2.0**0.5 if k < len(convs) - 1 else 1.0  # GELU follows every conv but the last
                nn.init.normal_(conv.weight, std=gain * conv.weight[0].numel() ** -0.5)
                nn.init.zeros_(conv.bias)
            nn.init.normal_(tower.cls, std=w**-0.5)
            nn.init.normal_(tower.pos, std=w**-0.5)
            nn.init.ones_(tower.ln_pre.weight)
            nn.init.zeros_(tower.ln_pre.bias)
        nn.init.normal_(self.text.token.weight, std=0.02)
        nn.init.normal_(self.text.pos, std=0.01)
        with torch.no_grad():
            self.logit_scale.fill_(math.log(1 / 0.07))

    @classmethod
    def random(
        cls, seed: int = 0, vocab: Sequence[str] | None = None, config: TinyConfig | None = None
    ) -> TinyBackbone:
        """A randomly initialised backbone (for tests of other modules); the global RNG is untouched.

        ``vocab``: words *or* phrases (e.g. class names); their words plus the synav template words
        form the vocabulary. None: the template words only.
        """
        words = build_vocab(vocab or [])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(config or TinyConfig(), words)

    # -- encoders ---------------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 64, 64) normalised float → (B, embed_dim)."""
        s = self.config.image_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, s, s):
            raise ValueError(f"tiny encode_image expects (B, 3, {s}, {s}), got {tuple(images.shape)}")
        return self.image(images.float())

    def encode_audio(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(B, 16000) waveform in [-1, 1] → (B, embed_dim)."""
        n = self.config.num_samples
        if waveforms.dim() != 2 or waveforms.shape[1] != n:
            raise ValueError(f"tiny encode_audio expects (B, {n}), got {tuple(waveforms.shape)}")
        return self.audio(self.logmel(waveforms))

    def encode_text(self, tokens: torch.Tensor, embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L ≤ context_length) int64 ids from :meth:`tokenize` → (B, embed_dim).

        ``embeddings`` (B, L, width), if given, replaces the token-embedding lookup (positions are
        still added); ``tokens`` still decides padding and the EOT position (prompt learning).
        """
        if tokens.dim() != 2 or tokens.shape[1] > self.config.context_length:
            raise ValueError(
                f"tiny encode_text expects (B, ≤{self.config.context_length}) token ids, got {tuple(tokens.shape)}"
            )
        if embeddings is not None and tuple(embeddings.shape) != (*tokens.shape, self.config.width):
            raise ValueError(
                f"tiny encode_text: embeddings {tuple(embeddings.shape)} must be (B, L, width) = "
                f"{(*tokens.shape, self.config.width)}"
            )
        return self.text(tokens.long(), embeddings)

    def token_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) int64 → (B, L, width) token embeddings (before positional embeddings)."""
        return self.text.token(tokens.long())

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """List of B strings → (B, context_length) int64 (BackboneError if a text does not fit)."""
        return self.tokenizer(texts).to(self.logit_scale.device)

    # -- adapters -----------------------------------------------------------------------------------
    def image_sites(self) -> list[AdapterSite]:
        w = self.config.width
        return [AdapterSite(f"image.blocks.{i}", b, w, "BLD") for i, b in enumerate(self.image.blocks)]

    def text_sites(self) -> list[AdapterSite]:
        w = self.config.width
        return [AdapterSite(f"text.blocks.{i}", b, w, "BLD") for i, b in enumerate(self.text.blocks)]

    def audio_sites(self) -> list[AdapterSite]:
        """Blocks of the audio tower (not part of the Backbone interface; for completeness)."""
        w = self.config.width
        return [AdapterSite(f"audio.blocks.{i}", b, w, "BLD") for i, b in enumerate(self.audio.blocks)]

    # -- temperature --------------------------------------------------------------------------------
    def logit_scale_tensor(self) -> torch.Tensor:
        """exp(logit_scale) clamped to ≤ 100, differentiable (used by pre-training)."""
        return self.logit_scale.exp().clamp(max=100.0)

    def logit_scale_value(self) -> float:
        return float(self.logit_scale_tensor().detach())

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------
def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Content hash of a state dict: names, dtypes, shapes and bytes, in sorted key order."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_tiny(model: TinyBackbone, path: str | Path, pretrain: dict[str, Any] | None = None) -> str:
    """Write ``model`` to ``path`` atomically (temp file + rename); returns the state-dict hash.

    ``pretrain``: JSON-like metadata (seed, epochs, data, timings), stored as plain JSON types
    (anything else becomes its ``str``); the content hash is added as ``pretrain["state_sha256"]``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    digest = state_dict_sha256(state)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": model.config.to_dict(),
        "state_dict": state,
        "vocab": list(model.vocab),
        # a JSON round trip keeps only plain types, which ``torch.load(weights_only=True)`` accepts
        "pretrain": json.loads(json.dumps({**(pretrain or {}), "state_sha256": digest}, default=str)),
    }
    atomic_torch_save(payload, path)
    return digest


def read_tiny_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, validated for its top-level structure (BackboneError otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"tiny backbone checkpoint {path} does not exist; {PRETRAIN_HINT}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — any unpickling failure means "not our checkpoint"
        raise BackboneError(
            f"{path}: not a readable tiny backbone checkpoint ({type(exc).__name__}: {str(exc)[:200]}); "
            f"{PRETRAIN_HINT} to rewrite it"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise BackboneError(
            f"{path}: format is {found!r}, expected {CHECKPOINT_FORMAT!r} (is this an AudioCLIP checkpoint? "
            f"then set backbone.name=audioclip); {PRETRAIN_HINT} to write a tiny one"
        )
    for key, kind in (("config", dict), ("state_dict", dict), ("vocab", list)):
        if not isinstance(ckpt.get(key), kind):
            raise BackboneError(f"{path}: entry {key!r} missing or not a {kind.__name__}; {PRETRAIN_HINT} again")
    return ckpt


def load_tiny(path: str | Path) -> TinyBackbone:
    """Build a :class:`TinyBackbone` from a checkpoint, strictly (every key present, no extra key).

    Raises BackboneError for a missing file, a wrong format or mismatching keys/shapes.
    Not frozen: :func:`mcil.backbones.registry.build_backbone` freezes. Does not consume the global RNG.
    """
    path = Path(path)
    ckpt = read_tiny_checkpoint(path)
    config = TinyConfig.from_dict(ckpt["config"], source=str(path))
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten: leave the global RNG alone
        model = TinyBackbone(config, ckpt["vocab"])
    state = ckpt["state_dict"]
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise BackboneError(
            f"{path}: state_dict does not match the tiny architecture: missing keys {missing[:8]}"
            f"{' …' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
            f"{' …' if len(unexpected) > 8 else ''}; {PRETRAIN_HINT} again"
        )
    wrong = [
        f"{k} {tuple(state[k].shape)}≠{tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape
    ]
    if wrong:
        raise BackboneError(f"{path}: tensor shapes do not match the config: {wrong[:4]}; {PRETRAIN_HINT} again")
    model.load_state_dict(state, strict=True)
    model.checkpoint_sha256 = file_sha256(path)
    model.pretrain_info = dict(ckpt.get("pretrain") or {})
    log.debug("loaded tiny backbone %s (%d parameters)", path, model.num_parameters())
    return model


@register_backbone("tiny")
def _build_tiny(checkpoint: str | Path | None, **kwargs: Any) -> TinyBackbone:
    """Registry constructor: ``build_backbone("tiny", "checkpoints/tiny.pt")``."""
    if kwargs:
        raise BackboneError(f"backbone tiny: unexpected options {sorted(kwargs)}; the tiny backbone takes only a checkpoint")
    if checkpoint is None:
        raise BackboneError(f"backbone.checkpoint: the tiny backbone needs a checkpoint; {PRETRAIN_HINT}")
    return load_tiny(checkpoint)
