"""The equality check of ``mcil bench``: one step of each path from the same random adapter state
with dropout off, compared on loss, every gradient and the evaluation logits (max relative
difference), so that a speed-up is only reported next to the proof that it changes nothing."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["compare_paths", "dropout_off", "randomise_trainable"]


@contextlib.contextmanager
def dropout_off(module: torch.nn.Module) -> Iterator[None]:
    """Every dropout layer at p = 0, everything else as it is (training mode and routing rules kept).

    Why: dropout is the only random operation of a step, and the two paths draw their masks for
    tensors of different shapes (trimmed prompts), so the equality check compares the functions
    the paths compute, not two random draws. (p is set, not the mode: ``train_step`` runs in
    training mode and ``learner.train()`` would switch eval-mode dropout back on.)
    """
    drops = [(m, m.p) for m in module.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    for m, _p in drops:
        m.p = 0.0
    try:
        yield
    finally:
        for m, p in drops:
            m.p = p


def randomise_trainable(params: list[torch.nn.Parameter], seed: int, scale: float) -> None:
    """Add ``scale``·N(0, 1) (seeded) to every trainable parameter: zero-initialised up-projections
    and routers would otherwise give a check in which most gradients are trivially zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_((scale * torch.randn(p.shape, generator=g)).to(p.device, p.dtype))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max(|a|∞, |b|∞): 0 for equal tensors, scale-free."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    denom = max(float(a.abs().max()) if a.numel() else 0.0, float(b.abs().max()) if b.numel() else 0.0)
    if denom == 0.0:
        return 0.0
    return float((a - b).abs().max()) / denom


def compare_paths(
    ref: dict[str, Any], opt: dict[str, Any], tolerance: float, judged: tuple[str, ...] = ("loss_rel", "grad_rel", "logits_rel")
) -> dict[str, Any]:
    """Max relative differences of loss, gradients (per tensor, max over tensors) and eval logits,
    and the share of eval rows whose top-1 class agrees.

    ``ref`` / ``opt``: ``{"loss": Tensor (), "grads": [Tensor | None, ...], "logits": Tensor (B, C)}``
    of the same step from the same state. A gradient present on one path only counts as ∞.
    ``judged``: the differences that must be ≤ ``tolerance`` for ``ok`` (bf16: the loss only —
    bf16 rounds every feature to 8 mantissa bits, so gradients and near-zero cosines move far
    more than the loss; they are reported, not judged).
    """
    grads = []
    for a, b in zip(ref["grads"], opt["grads"], strict=True):
        if a is None and b is None:
            continue
        grads.append(math.inf if a is None or b is None else _rel(a, b))
    out = {
        "loss_rel": _rel(ref["loss"], opt["loss"]),
        "grad_rel": max(grads) if grads else 0.0,
        "grad_tensors": len(grads),
        "logits_rel": _rel(ref["logits"], opt["logits"]),
        "top1_agree": float((ref["logits"].argmax(-1) == opt["logits"].argmax(-1)).float().mean()),
        "tolerance": tolerance,
        "judged": list(judged),
    }
    out["ok"] = bool(all(out[k] <= tolerance for k in judged))
    return out
