"""The tiny tri-modal backbone: three small pre-LN transformers sharing one embedding space.

It stands in for AudioCLIP in the embedded default (design §4): same interface, about 0.5 M
parameters per tower (1.46 M in all with synav's 63-word vocabulary), pre-trained contrastively on synav's pre-training classes by
``mcil pretrain`` (:mod:`mcil.backbones.pretrain`) and then frozen.

Towers (all pre-LN transformers of ``depth`` blocks, width ``width``):

- image: 64×64 RGB → one token per 8×8 patch (a stride-2 convolutional stem, see
  :func:`mcil.backbones.tiny_towers._patch_embedding`) → 64 tokens + CLS → CLS → linear projection;
- audio: 1 s at 16 kHz → log-mel spectrogram (torchaudio, inside the model) → 64 mels × 64 frames
  → one token per 8×8 patch (same kind of stem) → 64 tokens + CLS → CLS → linear projection;
- text: a word-level tokenizer (lower-case words split on non-letters) over synav's vocabulary,
  ``<sot> words <eot> <pad>…`` → EOT token → linear projection.

Every transformer block is an adapter site (layout ``BLD``, token 0 = CLS / SOT). The config and
the towers are in :mod:`mcil.backbones.tiny_towers`, the vocabulary and tokenizer in
:mod:`mcil.backbones.tiny_vocab`; this module puts them together and reads and writes checkpoints.

The checkpoint is a plain dict read with ``torch.load(weights_only=True)``::

    {"format": "mcil-tiny-v1", "config": {...TinyConfig...}, "state_dict": {...},
     "vocab": [...], "pretrain": {...metadata: seed, epochs, data, content hash, ...}}
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mcil.atomic import atomic_torch_save
from mcil.backbones.base import AdapterSite, Backbone, BackboneError, file_sha256
from mcil.backbones.prefix_memo import PrefixMemo
from mcil.backbones.registry import register_backbone
from mcil.backbones.tiny_towers import PRETRAIN_HINT, LogMel, PatchTower, TextTower, TinyConfig
from mcil.backbones.tiny_vocab import SPECIAL_TOKENS, WordTokenizer, build_vocab

__all__ = [
    "TinyBackbone",
    "CHECKPOINT_FORMAT",
    "load_tiny",
    "save_tiny",
    "read_tiny_checkpoint",
    "state_dict_sha256",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "mcil-tiny-v1"


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
        # Each tower's frozen prefix (stem and block 0) once per sample; bypassed while it can learn.
        self._prefix_memo = {tower: PrefixMemo() for tower in ("image", "audio", "text")}
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
        x = images.float()
        return self.image.from_prefix(*self._prefix_memo["image"](x, self.image.prefix_parameters(), self.image.prefix))

    def encode_audio(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(B, 16000) waveform in [-1, 1] → (B, embed_dim)."""
        n = self.config.num_samples
        if waveforms.dim() != 2 or waveforms.shape[1] != n:
            raise ValueError(f"tiny encode_audio expects (B, {n}), got {tuple(waveforms.shape)}")
        params = [*self.logmel.buffers(), *self.audio.prefix_parameters()]
        return self.audio.from_prefix(
            *self._prefix_memo["audio"](waveforms, params, lambda w: self.audio.prefix(self.logmel(w)))
        )

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
        tokens = tokens.long()
        if embeddings is not None:  # prompt learning: the embeddings are the learnt part, nothing to memo
            return self.text(tokens, embeddings)
        return self.text.from_prefix(
            tokens, *self._prefix_memo["text"](tokens, self.text.prefix_parameters(), self.text.prefix)
        )

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
