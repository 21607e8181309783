"""The tiny backbone's text side before the tower: prompt templates, vocabulary and tokenizer.

Words are lower-case runs of letters; the vocabulary (:func:`build_vocab`) is the special tokens
followed by the sorted words of every class name and of the synav templates, and
:class:`WordTokenizer` turns texts into ``<sot> words <eot> <pad>…`` ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from mcil.backbones.base import BackboneError
from mcil.data.templates import load_templates

__all__ = ["SPECIAL_TOKENS", "WordTokenizer", "build_vocab", "prompt_templates", "synav_templates"]

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<sot>", "<eot>", "<unk>")
_WORD_RE = re.compile(r"[a-z]+")


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
