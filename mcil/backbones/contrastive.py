"""The objective of ``mcil pretrain``: what a pre-training batch holds, which text is a positive for
which sample, and the symmetric multi-positive contrastive loss over them.

:class:`PretrainData` is the pre-training split as tensors. :func:`texts_and_positives` draws one
text per sample for an (image or audio, text) pair, a full class name or, with
:attr:`~mcil.backbones.pretrain.PretrainOptions.partial_text`, a partial description (a random
non-empty subset of the class's attribute values of that modality, :data:`NAME_PARTS`), and the
(B, B) mask of which texts describe which samples; :func:`contrastive_loss` takes the target of a
row (column) uniform over its positives. The recipe is in :mod:`mcil.backbones.pretrain`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "NAME_PARTS",
    "class_parts_from_classes",
    "PretrainData",
    "contrastive_loss",
    "class_contrastive_loss",
    "attribute_codes",
    "texts_and_positives",
]

#: classes.json attribute keys per modality, in the order synav writes them into a class name
#: ("{colour} {texture} {shape}, {pitch} {rhythm} {timbre}").
NAME_PARTS: dict[str, tuple[str, ...]] = {"image": ("colour", "texture", "shape"), "audio": ("pitch", "rhythm", "timbre")}


def class_parts_from_classes(classes: Sequence[dict[str, Any]]) -> list[dict[str, tuple[str, ...]] | None] | None:
    """Per label, the attribute values of :data:`NAME_PARTS` (None for a class that lacks them);
    None when no class has them (datasets other than synav)."""
    parts: list[dict[str, tuple[str, ...]] | None] = []
    for c in classes:
        if all(isinstance(c.get(k), str) for keys in NAME_PARTS.values() for k in keys):
            parts.append({m: tuple(c[k] for k in keys) for m, keys in NAME_PARTS.items()})
        else:
            parts.append(None)
    return parts if any(p is not None for p in parts) else None


@dataclass
class PretrainData:
    """Tensors of the pre-training split (the cache's layout, see docs/architecture.md).

    images (N, 3, S, S) uint8; audio (N, L) float16/float32 in [-1, 1]; labels (N,) int64;
    has_image / has_audio (N,) bool; class_names: index = label (all classes of the dataset).
    class_parts: optional, index = label: ``{"image": (value, ...), "audio": (value, ...)}`` — the
    attribute values a class name is made of, per modality, in name order (synav:
    ``("red", "striped", "star")`` and ``("high", "pulsing", "whistle")``); enables partial
    descriptions (:attr:`PretrainOptions.partial_text`). None where unknown.
    """

    images: torch.Tensor
    audio: torch.Tensor
    labels: torch.Tensor
    has_image: torch.Tensor
    has_audio: torch.Tensor
    class_names: list[str]
    class_parts: list[dict[str, tuple[str, ...]] | None] | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, positives: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric contrastive loss with a multi-positive soft target.

    a, b: (B, D) embeddings (any norm) of two views of B samples; positives: (B, B) bool,
    ``positives[i, j]`` = a_i and b_j describe the same thing (the diagonal must be True);
    scale: scalar temperature. logits = scale · â b̂ᵀ; the target of row i is uniform over its
    positives, the target of column j uniform over its positives. Returns the mean of the
    row-wise and column-wise cross-entropies (a scalar).
    """
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    logits = scale * a @ b.t()
    pos = positives.to(logits.dtype)
    row = -((pos / pos.sum(dim=1, keepdim=True)) * logits.log_softmax(dim=1)).sum(dim=1).mean()
    col = -((pos / pos.sum(dim=0, keepdim=True)) * logits.log_softmax(dim=0)).sum(dim=0).mean()
    return 0.5 * (row + col)


def class_contrastive_loss(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """:func:`contrastive_loss` with class-level targets: same-label pairs are positives.

    a, b: (B, D); labels: (B,). With one sample per class this is CLIP's InfoNCE loss.
    """
    return contrastive_loss(a, b, labels[:, None] == labels[None, :], scale)


def attribute_codes(data: PretrainData, modality: str) -> torch.Tensor | None:
    """(C, P) int64: code of each attribute value of each class for ``modality`` (−1 = unknown)."""
    parts = data.class_parts
    if parts is None:
        return None
    width = max((len(p[modality]) for p in parts if p is not None), default=0)
    if width == 0:
        return None
    codes: dict[str, int] = {}
    table = torch.full((len(data.class_names), width), -1, dtype=torch.int64)
    for c, p in enumerate(parts):
        if p is None:
            continue
        for k, value in enumerate(p[modality]):
            table[c, k] = codes.setdefault(value, len(codes))
    return table


def texts_and_positives(
    labels: torch.Tensor,
    data: PretrainData,
    modality: str,
    codes: torch.Tensor | None,
    templates: Sequence[str],
    p_partial: float,
    g: torch.Generator,
) -> tuple[list[str], torch.Tensor]:
    """One text per sample for the (``modality``, text) pair and the (B, B) positive mask.

    A full-name text is positive for every sample of its class; a partial text (a subset S of the
    class's ``modality`` attribute values) for every sample whose class has all values of S.
    """
    b = len(labels)
    tpl = torch.randint(0, len(templates), (b,), generator=g).tolist()
    same = labels[:, None] == labels[None, :]
    if codes is None or p_partial <= 0:
        return [templates[t].format(data.class_names[y]) for t, y in zip(tpl, labels.tolist())], same
    n_parts = codes.shape[1]
    partial = (torch.rand(b, generator=g) < p_partial) & (codes[labels] >= 0).all(dim=1)
    # a random non-empty subset of the parts: an integer in 1 .. 2^P − 1 read as a bit mask
    subset = torch.randint(1, 2**n_parts, (b,), generator=g)
    mask = ((subset[:, None] >> torch.arange(n_parts)) & 1).bool()  # (B, P)
    texts = []
    for j, y in enumerate(labels.tolist()):
        if partial[j]:
            values = [v for v, keep in zip(data.class_parts[y][modality], mask[j].tolist()) if keep]
            texts.append(templates[tpl[j]].format(" ".join(values)))
        else:
            texts.append(templates[tpl[j]].format(data.class_names[y]))
    c = codes[labels]  # (B, P)
    match = ((c[:, None, :] == c[None, :, :]) | ~mask[None, :, :]).all(dim=-1)  # (B_samples, B_texts)
    return texts, torch.where(partial[None, :], match, same)
