"""Class-incremental metrics: pure functions of the accuracy matrix (recommended definitions).

Conventions (code is 0-based; ``docs/metrics.md`` writes the same formulas 1-based):

- ``A``: ``(T, T)`` float array in percent. ``A[t, j]`` = top-1 accuracy on the test samples of
  task ``j`` after training task ``t``. The lower triangle including the diagonal (``j <= t``)
  must be finite; entries ``j > t`` (accuracy on a future task, before it is trained) may be
  NaN (or ``None`` in the input) when not measured.
- ``n``: ``(T,)`` number of test samples per task, all > 0.
- ``c``: ``(T,)`` number of classes per task, all > 0.
- ``acc_steps``: ``(T,)`` accuracy over all seen test samples after each task (percent).
- ``A0``: ``(T,)`` accuracy on each task of the model before any training (percent), used as
  the GEM reference ``b_j`` of forward transfer.

Every scalar that is undefined for a single task (forgetting, BWT, FWT with ``T = 1``; the
first entry of a per-step series) is ``nan``; :func:`json_safe` turns those into ``None``.

Peer-compatible variants live in :mod:`mcil.metrics.compat`; the paper's M1/M2 and the
feature mutual information in :mod:`mcil.metrics.paper`. Both are importable as attributes
(``mcil.metrics.compat``) after ``import mcil.metrics``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from mcil.errors import UserError

__all__ = [
    "MetricInputError",
    "as_accuracy_matrix",
    "lower_triangle_to_matrix",
    "check_counts",
    "seen_accuracy",
    "average_incremental_accuracy",
    "aia_task_balanced",
    "aia_class_weighted",
    "last_accuracy",
    "forgetting_per_step",
    "forgetting",
    "bwt_per_step",
    "bwt",
    "fwt",
    "forgetting_beyond_reference",
    "check_acc_steps",
    "summarise",
    "per_step",
    "json_safe",
]


class MetricInputError(UserError, ValueError):
    """An accuracy matrix, count vector or per-step series is malformed or inconsistent."""


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def as_accuracy_matrix(A: ArrayLike, name: str = "A") -> np.ndarray:
    """Return ``A`` as a validated ``(T, T)`` float64 array (percent; ``None`` -> NaN).

    Raises :class:`MetricInputError` if ``A`` is not square, is empty, has a non-finite entry
    on or below the diagonal, or has any finite entry outside ``[0, 100]``.
    """
    try:
        M = np.array(A, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricInputError(
            f"{name}: cannot read the accuracy matrix as a T×T array of numbers ({exc}); "
            "pad ragged rows with NaN (see lower_triangle_to_matrix)"
        ) from None
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] == 0:
        raise MetricInputError(
            f"{name}: accuracy matrix must be square T×T with T >= 1, got shape {M.shape}"
        )
    T = M.shape[0]
    rows, cols = np.tril_indices(T)
    bad = ~np.isfinite(M[rows, cols])
    if bad.any():
        t, j = int(rows[bad][0]), int(cols[bad][0])
        raise MetricInputError(
            f"{name}[{t}][{j}] = {M[t, j]}: entries on and below the diagonal (task j <= step t) "
            "must be measured accuracies"
        )
    finite = np.isfinite(M)
    out = finite & ((M < 0.0) | (M > 100.0))
    if out.any():
        t, j = (int(v) for v in np.argwhere(out)[0])
        raise MetricInputError(
            f"{name}[{t}][{j}] = {M[t, j]}: accuracies are percentages in [0, 100]"
        )
    return M


def lower_triangle_to_matrix(rows: Sequence[Sequence[float]]) -> np.ndarray:
    """Build a ``(T, T)`` matrix from ragged rows (row ``t`` has ``t + 1 .. T`` entries), NaN-padded.

    Example: ``[[98.4], [96.2, 93.2]]`` -> ``[[98.4, nan], [96.2, 93.2]]``.
    """
    T = len(rows)
    M = np.full((T, T), np.nan)
    for t, row in enumerate(rows):
        if not (t + 1 <= len(row) <= T):
            raise MetricInputError(
                f"row {t} of the accuracy matrix has {len(row)} entries; expected {t + 1}..{T}"
            )
        M[t, : len(row)] = np.array(row, dtype=np.float64)
    return as_accuracy_matrix(M)


_COUNT_WHAT = {"n_test": "test samples", "n_classes": "classes"}


def check_counts(values: ArrayLike, T: int, name: str) -> np.ndarray:
    """Validate a per-task count vector (``n_test`` or ``n_classes``): shape ``(T,)``, all > 0."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.shape[0] != T:
        raise MetricInputError(
            f"{name}: expected one value per task (T = {T}), got shape {v.shape}"
        )
    what = _COUNT_WHAT.get(name, "entries")
    for j, x in enumerate(v):
        if not np.isfinite(x) or x <= 0:
            raise MetricInputError(
                f"{name}[{j}] = {x}: task {j} (0-based) has no {what}; every task needs at "
                "least one — check the class order / split of that task"
            )
    return v


def _check_series(values: ArrayLike, T: int, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.shape[0] != T:
        raise MetricInputError(f"{name}: expected {T} per-step values, got shape {v.shape}")
    return v


def _check_percent_series(values: ArrayLike, T: int, name: str) -> np.ndarray:
    v = _check_series(values, T, name)
    bad = ~np.isfinite(v) | (v < 0.0) | (v > 100.0)
    if bad.any():
        i = int(np.argmax(bad))
        raise MetricInputError(f"{name}[{i}] = {v[i]}: expected a finite percentage in [0, 100]")
    return v


# --------------------------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------------------------


def seen_accuracy(A: ArrayLike, n: ArrayLike) -> np.ndarray:
    """Sample-weighted accuracy over all seen tasks after each step, ``(T,)`` percent.

    ``acc[t] = Σ_{j<=t} n[j]·A[t, j] / Σ_{j<=t} n[j]``. Equals the trainer's per-step accuracy
    over all seen test samples (used as a cross-check in :func:`summarise`).
    """
    M = as_accuracy_matrix(A)
    T = M.shape[0]
    w = check_counts(n, T, "n_test")
    return np.array([np.dot(w[: t + 1], M[t, : t + 1]) / w[: t + 1].sum() for t in range(T)])


def average_incremental_accuracy(acc_steps: ArrayLike) -> float:
    """AIA = ``(1/T) Σ_t acc[t]`` (iCaRL; PILOT, AV-CIL, continuum), percent."""
    v = np.asarray(acc_steps, dtype=np.float64)
    if v.ndim != 1 or v.shape[0] == 0:
        raise MetricInputError(f"acc_steps: expected a non-empty 1-D series, got shape {v.shape}")
    _check_percent_series(v, v.shape[0], "acc_steps")
    return float(v.mean())


def aia_task_balanced(A: ArrayLike) -> float:
    """Task-balanced AIA (Mammoth, FACIL ``avg_accs``): ``(1/T) Σ_t (1/(t+1)) Σ_{j<=t} A[t, j]``."""
    M = as_accuracy_matrix(A)
    return float(np.mean([M[t, : t + 1].mean() for t in range(M.shape[0])]))


def aia_class_weighted(A: ArrayLike, c: ArrayLike) -> float:
    """Class-weighted AIA (FACIL ``wavg_accs``): ``(1/T) Σ_t Σ_{j<=t} c[j]·A[t, j] / Σ_{j<=t} c[j]``."""
    M = as_accuracy_matrix(A)
    T = M.shape[0]
    w = check_counts(c, T, "n_classes")
    return float(
        np.mean([np.dot(w[: t + 1], M[t, : t + 1]) / w[: t + 1].sum() for t in range(T)])
    )


def last_accuracy(acc_steps: ArrayLike) -> float:
    """Last = ``acc[T-1]``, the accuracy over all test samples after the final task (percent)."""
    v = np.asarray(acc_steps, dtype=np.float64)
    if v.ndim != 1 or v.shape[0] == 0:
        raise MetricInputError(f"acc_steps: expected a non-empty 1-D series, got shape {v.shape}")
    _check_percent_series(v, v.shape[0], "acc_steps")
    return float(v[-1])


# --------------------------------------------------------------------------------------------
# Forgetting and transfer
# --------------------------------------------------------------------------------------------


def _forgetting_block(M: np.ndarray, t: int) -> float:
    """Chaudhry forgetting after step ``t`` (0-based) on rows/cols ``0..t``; nan for ``t == 0``."""
    if t == 0:
        return math.nan
    drops = [M[j:t, j].max() - M[t, j] for j in range(t)]
    return float(np.mean(drops))


def forgetting_per_step(A: ArrayLike) -> np.ndarray:
    """Chaudhry (2018) forgetting after every step, ``(T,)`` percent; entry 0 is nan.

    ``F[t] = (1/t) Σ_{j<t} (max_{l ∈ [j, t-1]} A[l, j] − A[t, j])`` for ``t >= 1``
    (maximum over earlier steps only, as FACIL and AV-CIL). AV-CIL prints exactly this series.
    """
    M = as_accuracy_matrix(A)
    return np.array([_forgetting_block(M, t) for t in range(M.shape[0])])


def forgetting(A: ArrayLike) -> float:
    """Final Chaudhry forgetting ``F[T-1]`` (percent; higher is worse). ``T = 1`` -> nan."""
    return float(forgetting_per_step(A)[-1])


def bwt_per_step(A: ArrayLike) -> np.ndarray:
    """GEM backward transfer on the top-left ``(t+1)×(t+1)`` block, ``(T,)``; entry 0 is nan.

    ``BWT[t] = (1/t) Σ_{j<t} (A[t, j] − A[j, j])``.
    """
    M = as_accuracy_matrix(A)
    out = [math.nan]
    for t in range(1, M.shape[0]):
        out.append(float(np.mean([M[t, j] - M[j, j] for j in range(t)])))
    return np.array(out)


def bwt(A: ArrayLike) -> float:
    """GEM (Lopez-Paz & Ranzato 2017) ``BWT = (1/(T-1)) Σ_{j<T-1} (A[T-1, j] − A[j, j])``. ``T = 1`` -> nan."""
    return float(bwt_per_step(A)[-1])


def fwt(A: ArrayLike, A0: ArrayLike) -> float:
    """GEM forward transfer ``FWT = (1/(T-1)) Σ_{j=1}^{T-1} (A[j-1, j] − b[j])``, ``b = A0``.

    ``A[j-1, j]`` is the accuracy on task ``j`` just before training it and ``A0[j]`` the accuracy
    on task ``j`` of the model before any training. Those entries must be measured (finite);
    ``A0[0]`` is not used. ``T = 1`` -> nan.
    """
    M = as_accuracy_matrix(A)
    T = M.shape[0]
    b = _check_series(A0, T, "A0")
    if T == 1:
        return math.nan
    terms = []
    for j in range(1, T):
        if not np.isfinite(M[j - 1, j]):
            raise MetricInputError(
                f"A[{j - 1}][{j}] is not measured: forward transfer needs the accuracy on task {j} "
                f"before training it (evaluate every task after each step)"
            )
        if not (np.isfinite(b[j]) and 0.0 <= b[j] <= 100.0):
            raise MetricInputError(f"A0[{j}] = {b[j]}: expected a finite percentage in [0, 100]")
        terms.append(M[j - 1, j] - b[j])
    return float(np.mean(terms))


def forgetting_beyond_reference(A: ArrayLike, A_ref: ArrayLike) -> float:
    """Forgetting caused by training: ``forgetting(A) − forgetting(A_ref)`` (percent points).

    ``A_ref`` ``(T, T)`` is the frozen zero-shot model's matrix on the same class order and test
    split. A model that learns nothing still "forgets": its accuracy on task j drops as later
    classes join the label space it must choose from. Subtracting that reference leaves the
    forgetting that training adds (negative: training protects old tasks better than a frozen
    model). ``T = 1`` -> nan.
    """
    M, R = as_accuracy_matrix(A), as_accuracy_matrix(A_ref, "A_ref")
    if M.shape != R.shape:
        raise MetricInputError(
            f"A_ref: the reference run has shape {R.shape}, this run {M.shape}; compare runs with the same T"
        )
    return forgetting(M) - forgetting(R)


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


def check_acc_steps(
    acc_steps: ArrayLike, A: ArrayLike, n: ArrayLike, atol: float = 1e-6
) -> np.ndarray:
    """Return ``acc_steps`` ``(T,)`` after checking it equals :func:`seen_accuracy` of ``A``, ``n``
    within ``atol`` (percent points); raises :class:`MetricInputError` naming the first step
    that differs."""
    M = as_accuracy_matrix(A)
    derived = seen_accuracy(M, n)
    steps = _check_percent_series(acc_steps, M.shape[0], "acc_steps")
    diff = np.abs(steps - derived)
    if (diff > atol).any():
        t = int(np.argmax(diff))
        raise MetricInputError(
            f"acc_steps[{t}] = {steps[t]} differs from the sample-weighted accuracy of row {t} "
            f"of A ({derived[t]}): the matrix, n_test and the per-step accuracy disagree"
        )
    return steps


def summarise(
    A: ArrayLike,
    n: ArrayLike,
    c: ArrayLike,
    acc_steps: ArrayLike | None = None,
    A0: ArrayLike | None = None,
    atol: float = 1e-6,
) -> dict[str, Any]:
    """All recommended scalar metrics of one run (percent), with stable keys, values ``float``.

    Keys: ``aia``, ``aia_task_balanced``, ``aia_class_weighted``, ``last``, ``forgetting``,
    ``bwt``, ``fwt`` (nan without ``A0``; forgetting/bwt/fwt nan for ``T = 1``; pass the result
    through :func:`json_safe` before writing strict JSON). Per-step lists: :func:`per_step`.
    If ``acc_steps`` is given it must equal :func:`seen_accuracy` within ``atol`` (catches a
    trainer/matrix mismatch); otherwise it is derived from ``A`` and ``n``.
    """
    M = as_accuracy_matrix(A)
    steps = seen_accuracy(M, n) if acc_steps is None else check_acc_steps(acc_steps, M, n, atol)
    return {
        "aia": average_incremental_accuracy(steps),
        "aia_task_balanced": aia_task_balanced(M),
        "aia_class_weighted": aia_class_weighted(M, c),
        "last": last_accuracy(steps),
        "forgetting": forgetting(M),
        "bwt": bwt(M),
        "fwt": fwt(M, A0) if A0 is not None else math.nan,
    }


def per_step(A: ArrayLike, n: ArrayLike) -> dict[str, list[float]]:
    """Per-step series (percent), one entry per task: ``acc_steps`` (:func:`seen_accuracy`),
    ``forgetting_steps`` (:func:`forgetting_per_step`) and ``bwt_steps`` (:func:`bwt_per_step`);
    the first entry of the last two is nan."""
    M = as_accuracy_matrix(A)
    return {
        "acc_steps": [float(x) for x in seen_accuracy(M, n)],
        "forgetting_steps": [float(x) for x in forgetting_per_step(M)],
        "bwt_steps": [float(x) for x in bwt_per_step(M)],
    }


def json_safe(obj: Any) -> Any:
    """Copy of ``obj`` (dicts, lists, tuples, numpy scalars/arrays) with nan/inf floats -> ``None``."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def __getattr__(name: str) -> Any:
    """Lazy submodules: ``compat``, ``paper`` and ``ours`` (the last two import torch)."""
    if name in ("compat", "paper", "ours"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
