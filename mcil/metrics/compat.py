"""Peer-compatible metric variants: recompute a peer toolbox's numbers from the stored matrix.

Each function reproduces what one peer *computes*, including its known defects, so that
published numbers can be compared like for like. They are not recommendations: use
:func:`mcil.metrics.summarise` for mcil's own numbers. All inputs and outputs are in percent
(the peers that work in fractions are multiplied by 100, as their logs do). Per-step series
have one entry per task (0-based step ``t`` = after training task ``t``); entries a peer does
not define are nan. Formulas are written 0-based here and 1-based in ``docs/metrics.md``.

Peers and their sources (read from the public code; no code copied):

- continuum 1.2.7 (``continuum/metrics/metrics.py``, ``Logger``), used by MoE-Adapters4CL and
  by the paper's official code (``MCIL-AudioCLIP/main.py``) -> :func:`continuum_1_2_7`.
- PILOT / PyCIL (``trainer.py``, ``print_forget``) -> :func:`pilot`.
- Mammoth (``utils/metrics.py``, ``utils/training.py``) -> :func:`mammoth`.
- FACIL (``src/main_incremental.py``) -> :func:`facil`.
- AV-CIL (``train_incremental_*.py``) -> :func:`avcil`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mcil.metrics import (
    MetricInputError,
    _check_series,
    as_accuracy_matrix,
    check_counts,
    forgetting_per_step,
    seen_accuracy,
)

__all__ = [
    "continuum_1_2_7",
    "continuum_1_2_7_block",
    "pilot",
    "mammoth",
    "facil",
    "avcil",
]


def _mean_or_nan(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


# --------------------------------------------------------------------------------------------
# continuum 1.2.7
# --------------------------------------------------------------------------------------------


def continuum_1_2_7_block(M: np.ndarray, acc_steps: np.ndarray, k: int) -> dict[str, Any]:
    """continuum 1.2.7 ``Logger`` values when ``k`` tasks have been seen (block ``M[:k, :k]``).

    ``M`` is a validated matrix, ``acc_steps`` the sample-weighted per-step accuracy. With
    ``R = M[:k, :k]`` and ``S = k(k-1)/2`` (continuum returns 0 for ``k <= 1`` except for the
    accuracies):

    - ``accuracy = acc[k-1]``; ``average_incremental_accuracy = mean(acc[0..k-1])``
    - ``forgetting = (1/(k-1)) Σ_{j=0}^{k-3} (max_{l∈[j,k-3]} R[l,j] − R[k-1,j])``  (**bug**:
      task ``k-2`` is skipped but the divisor stays ``k-1``; 0 whenever ``k = 2``)
    - ``backward_transfer = Σ_{i=1}^{k-1} Σ_{j=0}^{i-2} (R[i,j] − R[j,j]) / S``  (**bug**:
      skips ``j = i-1``)
    - ``forward_transfer = Σ_{i} Σ_{j<i} R[i,j] / S`` (mean of the strictly-lower triangle: an
      old-task accuracy, not GEM's forward transfer)
    - ``accuracy_A = Σ_{i} Σ_{j<=i} R[i,j] / (k(k+1)/2)`` (Díaz-Rodríguez)
    - ``accuracy_per_task = R[k-1, 0..k-1]``
    """
    R = M[:k, :k]
    out: dict[str, Any] = {
        "accuracy": float(acc_steps[k - 1]),
        "average_incremental_accuracy": float(np.mean(acc_steps[:k])),
        "accuracy_per_task": [float(x) for x in R[k - 1]],
        "accuracy_A": float(R[np.tril_indices(k)].sum() / (k * (k + 1) / 2)),
    }
    if k <= 1:
        out.update(forgetting=0.0, backward_transfer=0.0, forward_transfer=0.0)
        return out
    f = 0.0
    for j in range(k - 2):
        f += R[j : k - 2, j].max() - R[k - 1, j]
    bwt_sum = 0.0
    for i in range(1, k):
        for j in range(i - 1):
            bwt_sum += R[i, j] - R[j, j]
    pairs = k * (k - 1) / 2
    out["forgetting"] = float(f / (k - 1))
    out["backward_transfer"] = float(bwt_sum / pairs)
    out["forward_transfer"] = float(R[np.tril_indices(k, -1)].sum() / pairs)
    return out


def continuum_1_2_7(A: ArrayLike, n: ArrayLike) -> dict[str, Any]:
    """Reproduce continuum 1.2.7's ``Logger`` metrics, **including its two index bugs** (percent).

    Source: continuum 1.2.7 ``metrics.py`` (latest PyPI release; the fix is only on ``master``,
    issues #281/#291). MoE-Adapters4CL and the paper's official code read these values after
    every task, before ``end_task()``, so the per-step series are what they log.

    Keys (final values, ``k = T``): ``accuracy``, ``average_incremental_accuracy``,
    ``forgetting``, ``backward_transfer``, ``forward_transfer``, ``accuracy_A``,
    ``accuracy_per_task``; and per-step lists (block ``k = t+1`` after step ``t``):
    ``accuracy_steps``, ``average_incremental_accuracy_steps``, ``forgetting_steps``,
    ``backward_transfer_steps``, ``forward_transfer_steps``, ``accuracy_A_steps``.
    Formulas: :func:`continuum_1_2_7_block`. Continuum works in fractions; values here are
    ×100 like the logs of MoE-Adapters4CL (``100 * metric_logger.forgetting``).

    Fixture (MoE-Adapters4CL CIFAR-100, equal ``n``): rows ``[98.4], [96.2, 93.2],
    [90.4, 90.8, 86.6]`` give ``forgetting_steps = [0, 0, 4.0]`` (Chaudhry: ``[nan, 2.2, 5.2]``)
    and ``backward_transfer_steps = [0, 0, -2.667]``.
    """
    M = as_accuracy_matrix(A)
    T = M.shape[0]
    acc = seen_accuracy(M, n)
    blocks = [continuum_1_2_7_block(M, acc, k) for k in range(1, T + 1)]
    out = dict(blocks[-1])
    out["bug_note"] = (
        "reproduction of continuum 1.2.7: forgetting skips the most recent old task (divisor "
        "unchanged), backward_transfer skips j = i-1, forward_transfer is a mean old-task accuracy"
    )
    for key in (
        "accuracy",
        "average_incremental_accuracy",
        "forgetting",
        "backward_transfer",
        "forward_transfer",
        "accuracy_A",
    ):
        out[f"{key}_steps"] = [b[key] for b in blocks]
    return out


# --------------------------------------------------------------------------------------------
# PILOT / PyCIL
# --------------------------------------------------------------------------------------------


def pilot(A: ArrayLike, n: ArrayLike) -> dict[str, Any]:
    """PILOT / PyCIL: sample-weighted curve, its mean, and ``print_forget`` forgetting (percent).

    Source: PILOT ``trainer.py`` (curve = "CNN top1 curve", "Average Accuracy (CNN)"; forgetting
    added by PR #6). The per-block accuracy table is zero-padded and the maximum runs over
    **all** steps including the current one:

    - ``curve[t] = Σ_{j<=t} n_j A[t,j] / Σ_{j<=t} n_j``; ``average = mean(curve)``; ``last = curve[T-1]``
    - ``forgetting_steps[t] = (1/t) Σ_{j<t} (max_{l∈[j,t]} A[l,j] − A[t,j])`` (nan at ``t = 0``,
      where PILOT's ``np.mean`` of an empty list is nan too); ``forgetting = forgetting_steps[T-1]``.

    PILOT groups accuracies by blocks of its ``increment`` classes; they equal the tasks when
    every task has that many classes. PILOT rounds the curve to 2 decimals; this does not.
    """
    M = as_accuracy_matrix(A)
    T = M.shape[0]
    curve = seen_accuracy(M, n)
    f_steps = [math.nan]
    for t in range(1, T):
        f_steps.append(_mean_or_nan([M[j : t + 1, j].max() - M[t, j] for j in range(t)]))
    return {
        "curve": [float(x) for x in curve],
        "average": float(curve.mean()),
        "last": float(curve[-1]),
        "forgetting": float(f_steps[-1]),
        "forgetting_steps": [float(x) for x in f_steps],
    }


# --------------------------------------------------------------------------------------------
# Mammoth
# --------------------------------------------------------------------------------------------


def mammoth(A: ArrayLike, A0: ArrayLike | None = None) -> dict[str, Any]:
    """Mammoth Class-IL: task-balanced accuracy, forgetting, BWT, FWT (percent).

    Source: Mammoth ``utils/metrics.py`` and the training loop (``--enable_other_metrics 1``),
    which appends ``A[t-1, t]`` (accuracy on task ``t`` before training it) to row ``t-1``.

    - ``accuracy_steps[t] = (1/(t+1)) Σ_{j<=t} A[t,j]`` ("Accuracy for t tasks");
      ``accuracy = accuracy_steps[T-1]``
    - ``forgetting = (1/(T-1)) Σ_{j<T-1} (max_l P[l,j] − A[T-1,j])`` where ``P`` is the results
      list zero-padded to ``T×T``: ``P[l,j] = A[l,j]`` for ``j <= l``, ``P[j-1,j] = A[j-1,j]``
      (0 if not measured), else 0. So the max also sees the before-training accuracy.
    - ``bwt = (1/(T-1)) Σ_{j<T-1} (A[T-1,j] − A[j,j])`` (GEM)
    - ``fwt = (1/(T-1)) Σ_{j=1}^{T-1} (A[j-1,j] − b_j)``, ``b = A0`` (Mammoth evaluates a randomly
      initialised model; for a frozen pre-trained backbone mcil's ``A0`` is the zero-shot model
      before any training). nan when ``A0`` is None.

    ``T = 1``: forgetting, bwt and fwt are nan (``np.mean([])``).
    """
    M = as_accuracy_matrix(A)
    T = M.shape[0]
    acc_steps = [float(M[t, : t + 1].mean()) for t in range(T)]
    P = np.zeros((T, T))
    for t in range(T):
        P[t, : t + 1] = M[t, : t + 1]
        if t + 1 < T and np.isfinite(M[t, t + 1]):
            P[t, t + 1] = M[t, t + 1]
    col_max = P.max(axis=0)
    forg = _mean_or_nan([col_max[j] - M[T - 1, j] for j in range(T - 1)])
    bwt_v = _mean_or_nan([M[T - 1, j] - M[j, j] for j in range(T - 1)])
    if A0 is None or T == 1:
        fwt_v = math.nan
        if A0 is not None:
            _check_series(A0, T, "A0")
    else:
        b = _check_series(A0, T, "A0")
        terms = []
        for j in range(1, T):
            if not np.isfinite(M[j - 1, j]):
                raise MetricInputError(
                    f"A[{j - 1}][{j}] is not measured: Mammoth's FWT needs the accuracy on task "
                    f"{j} before training it"
                )
            if not np.isfinite(b[j]):
                raise MetricInputError(f"A0[{j}] = {b[j]}: expected a measured accuracy")
            terms.append(M[j - 1, j] - b[j])
        fwt_v = float(np.mean(terms))
    return {
        "accuracy_steps": acc_steps,
        "accuracy": acc_steps[-1],
        "forgetting": forg,
        "bwt": bwt_v,
        "fwt": fwt_v,
    }


# --------------------------------------------------------------------------------------------
# FACIL
# --------------------------------------------------------------------------------------------


def facil(A: ArrayLike, c: ArrayLike) -> dict[str, Any]:
    """FACIL task-agnostic (TAg) summary: ``avg_accs``, ``wavg_accs`` and forgetting (percent).

    Source: FACIL ``src/main_incremental.py`` and ``utils.print_summary``.

    - ``avg_accs[t] = (1/(t+1)) Σ_{u<=t} A[t,u]`` (task-balanced)
    - ``wavg_accs[t] = Σ_{u<=t} c_u A[t,u] / Σ_{u<=t} c_u`` (class-weighted)
    - ``forg[t,u] = max_{l<t} A[l,u] − A[t,u]`` for ``u < t`` (strictly earlier steps; FACIL's
      zero-initialised rows ``l < u`` never win), 0 elsewhere
    - ``forg_avg_steps[t] = (1/t) Σ_{u<t} forg[t,u]`` (the "Avg." column; nan at ``t = 0``);
      ``forgetting = forg_avg_steps[T-1]`` — identical to mcil's Chaudhry forgetting.
    """
    M = as_accuracy_matrix(A)
    T = M.shape[0]
    w = check_counts(c, T, "n_classes")
    avg = [float(M[t, : t + 1].mean()) for t in range(T)]
    wavg = [float(np.dot(w[: t + 1], M[t, : t + 1]) / w[: t + 1].sum()) for t in range(T)]
    forg = np.zeros((T, T))
    for t in range(1, T):
        for u in range(t):
            forg[t, u] = M[u:t, u].max() - M[t, u]
    f_steps = [math.nan] + [float(forg[t, :t].mean()) for t in range(1, T)]
    return {
        "avg_accs": avg,
        "wavg_accs": wavg,
        "forg": forg.tolist(),
        "forg_avg_steps": f_steps,
        "forgetting": f_steps[-1],
    }


# --------------------------------------------------------------------------------------------
# AV-CIL
# --------------------------------------------------------------------------------------------


def avcil(A: ArrayLike, n: ArrayLike) -> dict[str, Any]:
    """AV-CIL: per-step accuracy, mean accuracy, step forgetting and "Average Forgetting" (percent).

    Source: AV-CIL ``train_incremental_*.py`` (per-step accuracy on all seen classes; the paper's
    "mean accuracy"). AV-CIL evaluates the best-validation checkpoint of each step; mcil's
    matrix holds whatever checkpoint the trainer evaluated.

    - ``acc_steps[t]`` sample-weighted over seen tasks; ``mean_accuracy = mean(acc_steps)``
    - ``forgetting_steps[t] = (1/t) Σ_{j<t} (max_{l∈[j,t-1]} A[l,j] − A[t,j])`` (nan at ``t = 0``)
    - ``average_forgetting = (1/(T-1)) Σ_{t>=1} forgetting_steps[t]`` — a mean over steps, not
      the forgetting after the last task (nan for ``T = 1``).
    """
    M = as_accuracy_matrix(A)
    acc = seen_accuracy(M, n)
    f_steps = forgetting_per_step(M)
    return {
        "acc_steps": [float(x) for x in acc],
        "mean_accuracy": float(acc.mean()),
        "last": float(acc[-1]),
        "forgetting_steps": [float(x) for x in f_steps],
        "average_forgetting": _mean_or_nan([float(x) for x in f_steps[1:]]),
    }
