"""The paper's metrics (arXiv 2506.09999, official code ``MCIL-AudioCLIP/main.py``): feature
mutual information, NMI, task similarity, M1 and M2 — in two documented variants.

Feature MI (also the training loss L_MI, imported by ``mcil.method.losses``). For ``x, y`` of
shape ``(B, D)`` and softmax taken row-wise over the ``D`` features::

    P = softmax(x ⊙ y),  p_x = softmax(x),  p_y = softmax(y)
    MI(x, y) = Σ_{b,d} P_bd (log P_bd − log p_x,bd − log p_y,bd)          (summed: official)
    H(p)     = −Σ_{b,d} p_bd log p_bd                                      (summed over batch)
    NMI(x, y) = MI(x, y) / sqrt(H(p_x) H(p_y))

This is the official estimator, not Shannon MI between random variables: e.g. ``MI(0, 0) =
B log D``; for inputs with entries in {0, 1}, ``MI(x, x) = H(p_x)`` and ``NMI(x, x) = 1``.

M1 and M2 (T tasks, 1-based ``t`` in the formulas, 0-based arrays in code)::

    M1 = ½·Avg + ½·(1/T) Σ_t (1 − s_t)(100 − F_t)                 Avg, F_t in percent, s_1 = 1
    s_t = ½·(cos(t̄_t, t̄_{t−1}) + 1)/2 + ½·(cos(v̄_t, v̄_{t−1}) + 1)/2      (t >= 2)
    M2 = ½·(½·Avg' + ½·(1/T) Σ_t (BWT_t + FWT_t)) + ½·(½·NMI_v + ½·NMI_a)
                                                        Avg', BWT_t, FWT_t as fractions

Variants (one call each: :func:`m1_m2_official`, :func:`m1_m2_full`, or
:func:`m1_m2_from_inputs` with precomputed NMI values; :func:`mcil.metrics.record.paper_metrics`
computes both from the trainer's raw record):

``official`` — what ``main.py`` computes. ``F_t``, ``BWT_t``, ``FWT_t`` are continuum 1.2.7's
per-step values (:func:`mcil.metrics.compat.continuum_1_2_7`, with its off-by-one bugs; all 0
after task 1); ``v̄_t`` is the mean L2-normalised image feature of the **last evaluation batch**
after task t; ``NMI_v = NMI(f_v, f_fused)`` and ``NMI_a = NMI(f_a, f_fused)`` on the **last
evaluation batch of the final task**. Values are rounded as the code rounds them: ``F_t`` (%) to
4 decimals, Avg (%) to 2, Avg' to 4, ``BWT_t``/``FWT_t`` (fractions) to 4, and M1/M2 to 4.

``full`` — same formulas, measured properly: ``v̄_t`` is the mean L2-normalised image feature
over **all seen test samples** after task t; NMI over the **whole final test set**; ``F_t`` is
the correct Chaudhry forgetting and ``BWT_t`` the GEM BWT of the ``t×t`` block
(:func:`mcil.metrics.forgetting_per_step`, :func:`mcil.metrics.bwt_per_step`); ``F_1 = BWT_1 =
0``. ``FWT_t`` keeps continuum's definition (mean of the strictly-lower triangle of the ``t×t``
block, 0 at t = 1) because GEM's FWT needs a before-training reference the paper never used.
No rounding.

What the trainer must collect, per task ``t`` (0-based ``t`` = after training task ``t``):

- ``A`` (T×T, %), ``n_test`` (T,) — as for every metric;
- ``text_means[t]`` (D_text,): mean of the **unnormalised** text embeddings of the test prompts
  of all classes seen up to task t, computed with the text encoder as it is **when task t
  starts** (before training on t); same for both variants;
- official: ``image_means[t]`` = :func:`image_prototype` of the image features of the last
  evaluation batch after task t (evaluation over seen tasks in task order, unshuffled, batch 64
  in the official code); and the image/audio/fused features of the last evaluation batch after
  the final task;
- full: ``image_means[t]`` = :func:`image_prototype` over all seen test samples after task t
  (accumulate ``Σ f/‖f‖`` and the count); and the image/audio/fused features of the whole test
  set after the final task (or accumulate :func:`nmi_parts` per batch and use
  :func:`nmi_from_parts`, which is identical).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import Tensor

from mcil.metrics import (
    MetricInputError,
    as_accuracy_matrix,
    bwt_per_step,
    forgetting_per_step,
    seen_accuracy,
)
from mcil.metrics.compat import continuum_1_2_7

__all__ = [
    "mutual_information",
    "entropy",
    "nmi",
    "nmi_parts",
    "nmi_from_parts",
    "image_prototype",
    "task_similarity",
    "similarity_steps",
    "m1",
    "m2",
    "m1_m2_from_inputs",
    "m1_m2_official",
    "m1_m2_full",
    "nmi_pair",
]

Variant = Literal["official", "full"]


# --------------------------------------------------------------------------------------------
# Mutual information
# --------------------------------------------------------------------------------------------


def _check_pair(x: Tensor, y: Tensor) -> None:
    if not (isinstance(x, Tensor) and isinstance(y, Tensor)):
        raise TypeError("mutual information expects two torch tensors of shape (B, D)")
    if x.ndim != 2 or x.shape != y.shape or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(
            f"mutual information expects two tensors of the same shape (B, D), B, D >= 1; "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )


def _reduce(rows: Tensor, reduction: str) -> Tensor:
    if reduction == "sum":
        return rows.sum()
    if reduction == "mean":
        return rows.mean()
    raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")


def mutual_information(x: Tensor, y: Tensor, reduction: str = "sum") -> Tensor:
    """Feature MI of the official code, a differentiable scalar.

    ``x, y``: ``(B, D)``. ``MI = Σ_{b,d} P (log P − log p_x − log p_y)`` with ``P =
    softmax(x ⊙ y)``, ``p_x = softmax(x)``, ``p_y = softmax(y)`` over ``d``. ``reduction='sum'``
    (official) sums over the batch; ``'mean'`` divides that sum by ``B``. Log-softmax is used
    for stability (same value as the code's ``log(softmax(·))``).
    """
    _check_pair(x, y)
    log_joint = F.log_softmax(x * y, dim=-1)
    log_px = F.log_softmax(x, dim=-1)
    log_py = F.log_softmax(y, dim=-1)
    rows = (log_joint.exp() * (log_joint - log_px - log_py)).sum(dim=-1)
    return _reduce(rows, reduction)


def entropy(p: Tensor, reduction: str = "sum") -> Tensor:
    """``H(p) = −Σ_{b,d} p_bd log p_bd`` for probabilities ``p`` of shape ``(B, D)`` (0·log 0 = 0).

    ``'sum'`` (official) sums over the batch; ``'mean'`` divides by ``B``.
    """
    if not isinstance(p, Tensor) or p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        shape = getattr(p, "shape", p)
        raise ValueError(f"entropy expects a (B, D) tensor of probabilities, got {shape}")
    rows = -torch.special.xlogy(p, p).sum(dim=-1)
    return _reduce(rows, reduction)


def nmi(x: Tensor, y: Tensor) -> Tensor:
    """``NMI(x, y) = MI(x, y) / sqrt(H(softmax x) · H(softmax y))``, sums over the batch (official)."""
    mi, hx, hy = _nmi_terms(x, y)
    return mi / torch.sqrt(hx * hy)


def _nmi_terms(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    _check_pair(x, y)
    return (
        mutual_information(x, y, "sum"),
        entropy(F.softmax(x, dim=-1), "sum"),
        entropy(F.softmax(y, dim=-1), "sum"),
    )


def nmi_parts(x: Tensor, y: Tensor) -> tuple[float, float, float]:
    """Batch contributions ``(MI, H(p_x), H(p_y))`` (all sums over rows) for :func:`nmi_from_parts`."""
    with torch.no_grad():
        mi, hx, hy = _nmi_terms(x.double(), y.double())
    return float(mi), float(hx), float(hy)


def nmi_from_parts(parts: Iterable[tuple[float, float, float]]) -> float:
    """NMI over the union of batches: ``Σ MI / sqrt(Σ H_x · Σ H_y)`` (= :func:`nmi` on the concatenation)."""
    mi = hx = hy = 0.0
    count = 0
    for a, b, c in parts:
        mi, hx, hy, count = mi + a, hx + b, hy + c, count + 1
    if count == 0:
        raise ValueError("nmi_from_parts: no batches given")
    return mi / math.sqrt(hx * hy)


# --------------------------------------------------------------------------------------------
# Task similarity
# --------------------------------------------------------------------------------------------


def _as_float_array(v: Any) -> np.ndarray:
    if isinstance(v, Tensor):
        v = v.detach().cpu().double().numpy()
    return np.asarray(v, dtype=np.float64)


def image_prototype(features: Tensor) -> Tensor:
    """``v̄ = (1/B) Σ_b f_b / ‖f_b‖`` for image features ``(B, D)`` -> ``(D,)`` (not re-normalised)."""
    if not isinstance(features, Tensor) or features.ndim != 2 or features.shape[0] == 0:
        shape = getattr(features, "shape", features)
        raise ValueError(f"image_prototype expects a (B, D) tensor, got {shape}")
    return (features / features.norm(dim=-1, keepdim=True)).mean(dim=0)


def _cos(a: np.ndarray, b: np.ndarray, name: str) -> float:
    if a.ndim != 1 or a.shape != b.shape:
        raise MetricInputError(
            f"{name}: expected two vectors of the same length, got {a.shape} and {b.shape}"
        )
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if not (na > 0 and nb > 0 and np.isfinite(na) and np.isfinite(nb)):
        raise MetricInputError(f"{name}: a prototype is zero or not finite; cosine undefined")
    return float(np.dot(a, b) / (na * nb))


def task_similarity(
    text_mean_t: ArrayLike | Tensor,
    text_mean_prev: ArrayLike | Tensor,
    img_mean_t: ArrayLike | Tensor,
    img_mean_prev: ArrayLike | Tensor,
) -> float:
    """``s_t = ½·(cos(t̄_t, t̄_{t−1}) + 1)/2 + ½·(cos(v̄_t, v̄_{t−1}) + 1)/2`` (t >= 2), in [0, 1]."""
    cos_text = _cos(_as_float_array(text_mean_t), _as_float_array(text_mean_prev), "text prototypes")
    cos_img = _cos(_as_float_array(img_mean_t), _as_float_array(img_mean_prev), "image prototypes")
    return 0.5 * (cos_text + 1) / 2 + 0.5 * (cos_img + 1) / 2


def similarity_steps(
    text_means: ArrayLike | Tensor, image_means: ArrayLike | Tensor
) -> np.ndarray:
    """``s`` for every task, ``(T,)``: ``s[0] = 1``, ``s[t] = task_similarity(·[t], ·[t-1])``.

    ``text_means``: ``(T, D_text)``; ``image_means``: ``(T, D_img)``.
    """
    tm = _as_float_array(text_means)
    im = _as_float_array(image_means)
    if tm.ndim != 2 or im.ndim != 2 or tm.shape[0] != im.shape[0] or tm.shape[0] == 0:
        raise MetricInputError(
            "text_means and image_means must be (T, D) with the same T >= 1, "
            f"got {tm.shape} and {im.shape}"
        )
    s = [1.0]
    for t in range(1, tm.shape[0]):
        s.append(task_similarity(tm[t], tm[t - 1], im[t], im[t - 1]))
    return np.array(s)


# --------------------------------------------------------------------------------------------
# M1, M2
# --------------------------------------------------------------------------------------------


def m1(aia_percent: float, forgetting_steps_percent: ArrayLike, s_steps: ArrayLike) -> float:
    """``M1 = ½·Avg + ½·(1/T) Σ_{t=1}^{T} (1 − s_t)(100 − F_t)``; percent scale.

    ``forgetting_steps_percent`` and ``s_steps``: ``(T,)``. ``s_steps[0]`` must be 1 (task 1
    contributes 0 but counts in ``1/T``); ``F[0]`` may therefore be nan.
    """
    Fs = np.asarray(forgetting_steps_percent, dtype=np.float64)
    s = np.asarray(s_steps, dtype=np.float64)
    if Fs.ndim != 1 or Fs.shape != s.shape or Fs.shape[0] == 0:
        raise MetricInputError(
            "m1: forgetting and similarity need one value per task, "
            f"got shapes {Fs.shape} and {s.shape}"
        )
    if s[0] != 1.0:
        raise MetricInputError(
            f"m1: s_steps[0] = {s[0]}; the first task's similarity is 1 by definition"
        )
    if not (np.isfinite(s).all() and ((s >= 0) & (s <= 1)).all()):
        raise MetricInputError(f"m1: similarities must lie in [0, 1], got {s.tolist()}")
    if not np.isfinite(Fs[1:]).all():
        raise MetricInputError(
            f"m1: forgetting after tasks 2..T must be finite, got {Fs.tolist()}"
        )
    if not (np.isfinite(aia_percent) and 0.0 <= aia_percent <= 100.0):
        raise MetricInputError(f"m1: Avg = {aia_percent}; expected a percentage in [0, 100]")
    terms = (1.0 - s[1:]) * (100.0 - Fs[1:])
    return float(0.5 * aia_percent + 0.5 * terms.sum() / Fs.shape[0])


def m2(
    aia_fraction: float,
    bwt_steps: ArrayLike,
    fwt_steps: ArrayLike,
    nmi_v: float,
    nmi_a: float,
) -> float:
    """``M2 = ½·(½·Avg' + ½·(1/T) Σ_t (BWT_t + FWT_t)) + ½·(½·NMI_v + ½·NMI_a)``; fraction scale.

    ``bwt_steps``, ``fwt_steps``: ``(T,)`` fractions, finite (use 0 after task 1).
    ``aia_fraction`` in [0, 1] (a value > 1 means a percentage was passed).
    """
    b = np.asarray(bwt_steps, dtype=np.float64)
    f = np.asarray(fwt_steps, dtype=np.float64)
    if b.ndim != 1 or b.shape != f.shape or b.shape[0] == 0:
        raise MetricInputError(
            f"m2: BWT and FWT need one value per task, got shapes {b.shape} and {f.shape}"
        )
    if not (np.isfinite(b).all() and np.isfinite(f).all()):
        raise MetricInputError("m2: BWT_t and FWT_t must be finite for every t (0 after task 1)")
    if not (np.isfinite(aia_fraction) and 0.0 <= aia_fraction <= 1.0):
        raise MetricInputError(f"m2: Avg' = {aia_fraction}; expected a fraction in [0, 1]")
    nv, na = float(nmi_v), float(nmi_a)
    if not (math.isfinite(nv) and math.isfinite(na)):
        raise MetricInputError(f"m2: NMI values must be finite, got {nv}, {na}")
    transfer = float((b + f).sum() / b.shape[0])
    return 0.5 * (0.5 * aia_fraction + 0.5 * transfer) + 0.5 * (0.5 * nv + 0.5 * na)


def m1_m2_from_inputs(
    A: ArrayLike,
    n: ArrayLike,
    text_means: ArrayLike | Tensor | None,
    image_means: ArrayLike | Tensor | None,
    nmi_v: float | Tensor | None,
    nmi_a: float | Tensor | None,
    variant: Variant = "official",
) -> dict[str, Any]:
    """M1 and M2 of one run from plain inputs (see the module docstring for what to collect).

    ``A`` (T, T) percent, ``n`` (T,), ``text_means`` (T, D_text), ``image_means`` (T, D_img)
    built as the ``variant`` requires, ``nmi_v = NMI(f_v, f_fused)``, ``nmi_a = NMI(f_a,
    f_fused)``. M1 is ``None`` when a prototype series is ``None``; M2 is ``None`` when an NMI
    is ``None``. Returns ``variant``, ``m1``, ``m2``, ``aia`` (%), ``s_steps``,
    ``forgetting_steps`` (%), ``bwt_steps``, ``fwt_steps`` (fractions), ``nmi_v``, ``nmi_a``.
    """
    if variant not in ("official", "full"):
        raise ValueError(f"variant must be 'official' or 'full', got {variant!r}")
    M = as_accuracy_matrix(A)
    T = M.shape[0]
    acc = seen_accuracy(M, n)
    s: np.ndarray | None = None
    if text_means is not None and image_means is not None:
        s = similarity_steps(text_means, image_means)
        if s.shape[0] != T:
            raise MetricInputError(f"text_means/image_means have {s.shape[0]} tasks, A has {T}")
    nv = None if nmi_v is None else float(nmi_v)
    na = None if nmi_a is None else float(nmi_a)
    cont = continuum_1_2_7(M, n)
    if variant == "official":
        f_steps = [round(x, 4) for x in cont["forgetting_steps"]]
        b_steps = [round(x / 100.0, 4) for x in cont["backward_transfer_steps"]]
        w_steps = [round(x / 100.0, 4) for x in cont["forward_transfer_steps"]]
        avg_pct = round(float(np.mean(acc)), 2)
        avg_frac = round(float(np.mean(acc / 100.0)), 4)
        v1 = None if s is None else round(m1(avg_pct, f_steps, s), 4)
        v2 = None if nv is None or na is None else round(m2(avg_frac, b_steps, w_steps, nv, na), 4)
    else:
        f_arr = forgetting_per_step(M)
        f_arr[0] = 0.0
        b_arr = bwt_per_step(M) / 100.0
        b_arr[0] = 0.0
        f_steps = [float(x) for x in f_arr]
        b_steps = [float(x) for x in b_arr]
        w_steps = [x / 100.0 for x in cont["forward_transfer_steps"]]
        avg_pct = float(np.mean(acc))
        v1 = None if s is None else m1(avg_pct, f_steps, s)
        v2 = None if nv is None or na is None else m2(avg_pct / 100.0, b_steps, w_steps, nv, na)
    return {
        "variant": variant,
        "m1": v1,
        "m2": v2,
        "aia": avg_pct,
        "s_steps": None if s is None else [float(x) for x in s],
        "forgetting_steps": f_steps,
        "bwt_steps": b_steps,
        "fwt_steps": w_steps,
        "nmi_v": nv,
        "nmi_a": na,
    }


def nmi_pair(
    image_feats: Tensor, audio_feats: Tensor, fused_feats: Tensor
) -> tuple[float, float]:
    """``(NMI(f_v, f_fused), NMI(f_a, f_fused))`` of ``(N, D)`` features, in float64: M2's fusion half."""
    with torch.no_grad():
        nv = float(nmi(image_feats.double(), fused_feats.double()))
        na = float(nmi(audio_feats.double(), fused_feats.double()))
    return nv, na


def m1_m2_official(
    A: ArrayLike,
    n: ArrayLike,
    text_means: ArrayLike | Tensor,
    image_means_last_batch: ArrayLike | Tensor,
    image_feats_last: Tensor,
    audio_feats_last: Tensor,
    fused_feats_last: Tensor,
) -> dict[str, Any]:
    """M1/M2 exactly as the official code: continuum 1.2.7 per-step values, last-batch inputs.

    ``image_means_last_batch[t]`` = :func:`image_prototype` of the last evaluation batch after
    task t, ``(T, D)``; ``*_feats_last``: ``(B, D)`` image / audio / fused features of the last
    evaluation batch after the final task. See :func:`m1_m2_from_inputs` for the result keys.
    """
    nv, na = nmi_pair(image_feats_last, audio_feats_last, fused_feats_last)
    return m1_m2_from_inputs(A, n, text_means, image_means_last_batch, nv, na, "official")


def m1_m2_full(
    A: ArrayLike,
    n: ArrayLike,
    text_means: ArrayLike | Tensor,
    image_means_seen: ArrayLike | Tensor,
    image_feats: Tensor,
    audio_feats: Tensor,
    fused_feats: Tensor,
) -> dict[str, Any]:
    """M1/M2 measured properly: Chaudhry F_t, GEM BWT_t, whole-test-set prototypes and NMI.

    ``image_means_seen[t]`` = :func:`image_prototype` over all seen test samples after task t,
    ``(T, D)``; ``*_feats``: ``(N, D)`` features of the whole test set after the final task.
    See :func:`m1_m2_from_inputs` for the result keys.
    """
    nv, na = nmi_pair(image_feats, audio_feats, fused_feats)
    return m1_m2_from_inputs(A, n, text_means, image_means_seen, nv, na, "full")
