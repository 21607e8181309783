"""Strict loading of an AudioCLIP checkpoint, and the ``audioclip`` backbone registration.

The checkpoint is expected to be AudioCLIP's published ``AudioCLIP-Full-Training.pt``: a plain
fp32 state_dict with 861 tensors. Loading is strict: every key, shape and dtype must match the
rebuilt model. The only tolerated difference (spec §5) is absent BatchNorm
``num_batches_tracked`` counters, which are filled with 0 and logged.

The model skeleton is built on the meta device and the checkpoint's tensors are adopted as its
parameters (``load_state_dict(assign=True)``), so loading never allocates or initialises a second
copy of the 134 M weights. A state_dict passed as a dict is adopted as well, not copied.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from mcil.backbones.audioclip.model import AudioCLIP
from mcil.backbones.base import BackboneError, file_sha256
from mcil.backbones.registry import register_backbone

__all__ = ["load_audioclip", "PUBLISHED_CHECKPOINTS", "build_audioclip"]

logger = logging.getLogger(__name__)

CONFIG_KEY = "backbone.checkpoint"
DOWNLOAD_URL = "https://github.com/AndreyGuzhov/AudioCLIP/releases/download/v0.1/AudioCLIP-Full-Training.pt"
EXPECTED_FILE = "AudioCLIP-Full-Training.pt (a plain fp32 state_dict of 861 tensors, 537,302,068 bytes)"

#: SHA-256 → variant of the published full AudioCLIP checkpoints (AndreyGuzhov/AudioCLIP assets).
PUBLISHED_CHECKPOINTS: dict[str, str] = {
    "2441d35b353352c8b1bbfb8f7c687f46314c3d2909e940eaf763b8c17f632c44": "Full-Training",
    "1921885b6c3b5de0619f2ef4a9700ecbade758a398b34eb064230c30baef0c75": "Partial-Training",
}

#: Published files that hold only part of the model (recognised to give a precise error).
_PARTIAL_FILES: dict[str, str] = {
    "124e6d59d54c0837c456c953b3147adf438a21570d5c5b01ad83f6ad3e78d15e": "CLIP.pt (OpenAI RN50 image and text only)",
    "acfcc6b0a0f07025cc660ed6dcf9b5a05fbd7c8ebf65edaa0a81d88a92ff6834": "ESRNXFBSP.pt (the audio tower only)",
}

_MAX_LISTED = 8


@functools.lru_cache(maxsize=1)
def _expected_layout() -> Mapping[str, torch.Tensor]:
    """The rebuilt model's state_dict as meta tensors (keys, shapes, dtypes; no data), built once."""
    return MappingProxyType(AudioCLIP(device="meta").state_dict())


def _fix_hint() -> str:
    return f"expected {EXPECTED_FILE}, from {DOWNLOAD_URL}; set {CONFIG_KEY} to its path"


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", … ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def _read_file(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling, zip and I/O failures all mean "not the expected file"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackboneError(
            f"{CONFIG_KEY}: cannot read {path} as a tensor-only checkpoint ({type(exc).__name__}: {reason}); "
            f"{_fix_hint()}"
        ) from exc


def _prefix_hint(unexpected: list[str], expected: Mapping[str, Any]) -> str:
    """If every unexpected key is an expected key behind one common prefix, say so."""
    if not unexpected:
        return ""
    prefix = unexpected[0].split(".", 1)[0] + "."
    if all(k.startswith(prefix) and k[len(prefix) :] in expected for k in unexpected):
        return (
            f"; the keys carry an extra prefix {prefix!r} (a wrapped model?): "
            "save model.state_dict() of the AudioCLIP module itself"
        )
    return ""


def _check_state_dict(
    state: Mapping[str, Any], expected: Mapping[str, torch.Tensor], source: str
) -> OrderedDict[str, torch.Tensor]:
    """Validate ``state`` against the skeleton's state_dict; return it in the skeleton's key order."""
    non_tensor = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if non_tensor:
        raise BackboneError(
            f"{CONFIG_KEY}: {source} is not a plain state_dict: {len(non_tensor)} entries are not tensors "
            f"({_listed(non_tensor)}); {_fix_hint()}"
        )
    missing = [k for k in expected if k not in state]
    filled = [k for k in missing if k.endswith(".num_batches_tracked")]
    missing = [k for k in missing if not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    bad_shape = [
        f"{k} (expected {tuple(expected[k].shape)}, got {tuple(state[k].shape)})"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    bad_dtype = [
        f"{k} (expected {expected[k].dtype}, got {state[k].dtype})"
        for k in expected
        if k in state and state[k].dtype != expected[k].dtype
    ]
    if missing or unexpected or bad_shape or bad_dtype:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_listed(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_listed(unexpected)}")
        if bad_shape:
            parts.append(f"{len(bad_shape)} shape mismatches: {_listed(bad_shape)}")
        if bad_dtype:
            parts.append(f"{len(bad_dtype)} dtype mismatches: {_listed(bad_dtype)}")
        raise BackboneError(
            f"{CONFIG_KEY}: {source} does not match the AudioCLIP architecture: {'; '.join(parts)}"
            f"{_prefix_hint(unexpected, expected)}; {_fix_hint()}"
        )
    if filled:
        logger.info(
            "%s: %d BatchNorm num_batches_tracked counters absent, filled with 0 (allowed; they do not affect eval)",
            source,
            len(filled),
        )
    ordered: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, ref in expected.items():
        ordered[k] = state[k] if k in state else torch.zeros((), dtype=ref.dtype)
    return ordered


def load_audioclip(
    source: str | os.PathLike[str] | Mapping[str, torch.Tensor], *, allow_unknown_checkpoint: bool = True
) -> AudioCLIP:
    """Build AudioCLIP from a checkpoint file or a state_dict: strict, float32, eval mode, frozen.

    source: path to ``AudioCLIP-Full-Training.pt`` (read with ``torch.load(weights_only=True)``)
        or an already loaded state_dict (its tensors are adopted, not copied).
    allow_unknown_checkpoint: if False, a file whose SHA-256 is not a published AudioCLIP
        checkpoint is refused; if True (default) it is loaded with a warning.

    The file's SHA-256 is recorded as ``model.checkpoint_sha256`` and the published variant
    ('Full-Training', 'Partial-Training' or None) as ``model.checkpoint_variant``.
    Raises :class:`BackboneError` naming the problem and ``backbone.checkpoint``.
    """
    sha256: str | None = None
    if isinstance(source, Mapping):
        state: Any = source
        label = "the given state_dict"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        label = str(path)
        if not path.is_file():
            what = "is a directory, not a file" if path.is_dir() else "does not exist"
            raise BackboneError(f"{CONFIG_KEY}: {path} {what}; {_fix_hint()}")
        sha256 = file_sha256(path)
        if sha256 in _PARTIAL_FILES:
            raise BackboneError(
                f"{CONFIG_KEY}: {path} is AudioCLIP's {_PARTIAL_FILES[sha256]}, not the full model; {_fix_hint()}"
            )
        if sha256 not in PUBLISHED_CHECKPOINTS:
            if not allow_unknown_checkpoint:
                raise BackboneError(
                    f"{CONFIG_KEY}: {path} (sha256 {sha256}) is not a published AudioCLIP checkpoint and "
                    "backbone.allow_unknown_checkpoint is false; use the published file or allow unknown checkpoints"
                )
            logger.warning(
                "%s: sha256 %s is not a published AudioCLIP checkpoint (Full-Training or Partial-Training); "
                "loading it anyway, results record this hash",
                path,
                sha256,
            )
        state = _read_file(path)
    else:
        raise BackboneError(
            f"{CONFIG_KEY}: expected a checkpoint path or a state_dict, got {type(source).__name__}; {_fix_hint()}"
        )

    if not isinstance(state, Mapping):
        raise BackboneError(
            f"{CONFIG_KEY}: {label} holds a {type(state).__name__}, not a state_dict (a dict of tensors); {_fix_hint()}"
        )

    ordered = _check_state_dict(state, _expected_layout(), label)
    model = AudioCLIP(device="meta")
    model.load_state_dict(ordered, strict=True, assign=True)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:  # a bug, not a user error: every tensor of the model must be in the state_dict
        raise RuntimeError(f"AudioCLIP tensors not materialised by the checkpoint: {leftover}")
    model.checkpoint_sha256 = sha256
    model.checkpoint_variant = PUBLISHED_CHECKPOINTS.get(sha256) if sha256 else None
    if sha256:
        logger.info("loaded AudioCLIP from %s (sha256 %s, variant %s)", label, sha256, model.checkpoint_variant)
    return model.freeze()


@register_backbone("audioclip")
def build_audioclip(checkpoint: str | os.PathLike[str] | None, **kwargs: Any) -> AudioCLIP:
    """Registry constructor: ``build_backbone('audioclip', checkpoint)``.

    Accepts the keyword ``allow_unknown_checkpoint`` (config ``backbone.allow_unknown_checkpoint``).
    """
    allow_unknown = bool(kwargs.pop("allow_unknown_checkpoint", True))
    if kwargs:
        raise BackboneError(f"backbone: audioclip takes no options {sorted(kwargs)}; remove them from the config")
    if checkpoint is None or str(checkpoint) == "":
        raise BackboneError(f"{CONFIG_KEY}: the audioclip backbone needs a checkpoint file; {_fix_hint()}")
    return load_audioclip(checkpoint, allow_unknown_checkpoint=allow_unknown)
