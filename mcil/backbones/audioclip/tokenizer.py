"""CLIP's BPE tokenizer for the AudioCLIP text tower, loaded lazily from ``open_clip_torch``.

``open_clip``'s package ``__init__`` imports its whole model zoo (timm, torchvision, …; several
seconds). Its ``tokenizer.py`` only needs ftfy, regex, numpy and torch and ships next to the
vocabulary file, so on the first :func:`tokenize` call this module executes that one file under a
private module name, without running the package ``__init__`` (≈0.3 s instead of ≈6 s). If the
file cannot be loaded that way (a future open_clip layout), it falls back to
``import open_clip.tokenizer``.

Encoding: ftfy fix, HTML unescape, whitespace collapse, lower case; ``[SOT] + BPE + [EOT]``,
zero-padded to 77. Unlike CLIP and open_clip, a text that does not fit raises
:class:`TextTooLongError` instead of being truncated.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mcil.backbones.base import BackboneError
from mcil.errors import UserError

__all__ = ["CONTEXT_LENGTH", "SOT_TOKEN", "EOT_TOKEN", "VOCAB_SIZE", "TextTooLongError", "tokenize", "encode"]

logger = logging.getLogger(__name__)

CONTEXT_LENGTH = 77
SOT_TOKEN = 49406
EOT_TOKEN = 49407
VOCAB_SIZE = 49408

_PRIVATE_MODULE = "_mcil_open_clip_tokenizer"
_lock = threading.Lock()
_tokenizer: Any = None


class TextTooLongError(UserError, ValueError):
    """A text has more than 77 tokens including SOT and EOT."""


def _load_tokenizer_file() -> Any:
    """Execute open_clip/tokenizer.py alone and return its module (raises ImportError if impossible)."""
    spec = importlib.util.find_spec("open_clip")  # a top-level lookup: does not run the package __init__
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("open_clip is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer.py"
    file_spec = importlib.util.spec_from_file_location(_PRIVATE_MODULE, path)
    if file_spec is None or file_spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(file_spec)
    sys.modules[_PRIVATE_MODULE] = module
    try:
        file_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(_PRIVATE_MODULE, None)
        raise
    return module


def _get_tokenizer() -> Any:
    global _tokenizer
    if _tokenizer is not None:
        return _tokenizer
    with _lock:
        if _tokenizer is not None:
            return _tokenizer
        try:
            module = _load_tokenizer_file()
        except Exception as exc:  # noqa: BLE001 - any failure of the shortcut falls back to the package
            logger.info("loading open_clip/tokenizer.py directly failed (%s); importing open_clip", exc)
            try:
                module = importlib.import_module("open_clip.tokenizer")
            except ImportError as exc2:
                raise BackboneError(
                    "the AudioCLIP text tower needs CLIP's BPE tokenizer from open_clip_torch; "
                    f"install it with `pip install 'open_clip_torch>=2.24'` ({exc2})"
                ) from exc2
        tok = getattr(module, "_tokenizer", None)
        if not isinstance(tok, module.SimpleTokenizer):
            tok = module.SimpleTokenizer()
        ids = (len(tok.encoder), tok.sot_token_id, tok.eot_token_id)
        if ids != (VOCAB_SIZE, SOT_TOKEN, EOT_TOKEN):
            raise BackboneError(
                f"open_clip's SimpleTokenizer has (vocab, SOT, EOT) = {ids}, expected "
                f"({VOCAB_SIZE}, {SOT_TOKEN}, {EOT_TOKEN}); install a compatible open_clip_torch (>=2.24)"
            )
        _tokenizer = tok
        return tok


def encode(text: str) -> list[int]:
    """BPE ids of one text, without SOT/EOT."""
    return list(_get_tokenizer().encode(text))


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """Texts → (B, context_length) int64 ids: SOT, BPE ids, EOT, zero padding.

    Raises :class:`TextTooLongError` naming the first text that does not fit (no truncation).
    """
    if isinstance(texts, str):
        texts = [texts]
    tok = _get_tokenizer()
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"tokenize expects strings, got {type(text).__name__} at index {i}")
        ids = [SOT_TOKEN, *tok.encode(text), EOT_TOKEN]
        if len(ids) > context_length:
            shown = text if len(text) <= 120 else text[:117] + "..."
            raise TextTooLongError(
                f"text {i} ({shown!r}) has {len(ids)} tokens with SOT/EOT, more than the text tower's "
                f"context of {context_length}; shorten the class name or prompt template"
            )
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out
