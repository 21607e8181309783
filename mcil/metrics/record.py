"""M1/M2 as a result.json records them: the paper's two variants and our variants, from the trainer's record.

:mod:`mcil.metrics.paper` computes the paper's terms and :mod:`mcil.metrics.ours` our variants
(which build on the paper's); this module puts both into the ``metrics.paper`` entry, so neither
of the two imports the other's consumer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from torch import Tensor

from mcil.metrics import MetricInputError, as_accuracy_matrix, check_acc_steps, json_safe
from mcil.metrics.ours import ours_metrics
from mcil.metrics.paper import m1_m2_from_inputs, nmi_pair

__all__ = ["paper_metrics"]


def _nonzero_or_none(series: np.ndarray | None, what: str, notes: list[str]) -> np.ndarray | None:
    """``series`` (T, D), or None (with a note) when some step's prototype is zero or not finite."""
    if series is None:
        return None
    norms = np.linalg.norm(series, axis=-1)
    if not np.all(np.isfinite(norms) & (norms > 0)):
        notes.append(f"M1 undefined for a variant: a {what} prototype is zero or not finite (no such features)")
        return None
    return series


def _series_or_none(values: Any, T: int) -> np.ndarray | None:
    """A (T, D) prototype series, or None when any step is missing (None or empty)."""
    if values is None:
        return None
    if isinstance(values, Tensor):
        values = values.detach().cpu().double().numpy()
    rows = list(values)
    if len(rows) != T or any(r is None or len(r) == 0 for r in rows):
        return None
    return np.asarray([np.asarray(r, dtype=np.float64) for r in rows])


def paper_metrics(
    *,
    A: ArrayLike,
    n: ArrayLike,
    text_means: Any,
    image_means_last_batch: Any,
    image_means_full: Any,
    features: Mapping[str, Tensor] | None,
    last_batch_size: int,
    acc_steps: ArrayLike | None = None,
    A0: ArrayLike | None = None,
    posteriors: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Both variants of M1/M2 from the trainer's raw record, JSON-safe (nan -> None).

    - ``text_means``: T vectors (t̄_t); ``image_means_last_batch`` / ``image_means_full``: T
      vectors (v̄_t of the last evaluation batch / of all seen test samples, from L2-normalised
      image features). A ``None`` or empty entry makes M1 of that variant ``None``.
    - ``features``: ``{'image', 'audio', 'fused'}`` -> ``(N, D)`` features of the whole test set
      after the final task, in evaluation order; the official variant uses the last
      ``last_batch_size`` rows. A missing key makes M2 ``None``.
    - ``acc_steps``: if given, cross-checked against ``A`` and ``n``. ``A0`` is accepted so the
      whole record can be passed, and ignored (neither variant uses GEM's FWT).

    - ``posteriors``: optional ``{'image', 'audio', 'fused'}`` -> ``(N, C)`` class posteriors
      (for our ``m2_ours_posterior``; the trainer does not pass them yet).

    Returns ``{"official": {...}, "full": {...}, "notes": [...], "ours": {...}}`` (result keys:
    see :func:`m1_m2_from_inputs`; ``ours``: :func:`mcil.metrics.ours.ours_metrics`, our variants,
    never the paper's); ``notes`` says why a value is ``None``.
    """
    M = as_accuracy_matrix(A)
    T = M.shape[0]
    if acc_steps is not None:
        check_acc_steps(acc_steps, M, n)
    notes: list[str] = []
    text = _series_or_none(text_means, T)
    img_last = _series_or_none(image_means_last_batch, T)
    img_full = _series_or_none(image_means_full, T)
    if text is None:
        notes.append("M1 undefined: no text prototypes (learner without a text encoder)")
    if img_last is None or img_full is None:
        notes.append("M1 undefined for a variant: image prototypes missing")
    # A zero prototype (e.g. no test sample has an image) leaves the task similarity undefined.
    text = _nonzero_or_none(text, "text", notes)
    img_last = _nonzero_or_none(img_last, "image (last batch)", notes)
    img_full = _nonzero_or_none(img_full, "image (full test set)", notes)
    feats = dict(features or {})
    nmi_last: tuple[float | None, float | None] = (None, None)
    nmi_all: tuple[float | None, float | None] = (None, None)
    missing = [k for k in ("image", "audio", "fused") if k not in feats]
    if missing:
        notes.append(f"M2 undefined: no {', '.join(missing)} features from the learner")
    else:
        N = int(feats["image"].shape[0])
        if any(int(feats[k].shape[0]) != N for k in ("audio", "fused")):
            raise MetricInputError("features: image, audio and fused must have the same rows")
        if not 1 <= int(last_batch_size) <= N:
            raise MetricInputError(
                f"last_batch_size = {last_batch_size}: expected 1..{N} (rows of the features)"
            )
        b = int(last_batch_size)
        nmi_last = nmi_pair(feats["image"][-b:], feats["audio"][-b:], feats["fused"][-b:])
        nmi_all = nmi_pair(feats["image"], feats["audio"], feats["fused"])
    official = m1_m2_from_inputs(
        M, n, text if img_last is not None else None, img_last, *nmi_last, variant="official"
    )
    full = m1_m2_from_inputs(
        M, n, text if img_full is not None else None, img_full, *nmi_all, variant="full"
    )
    ours = ours_metrics(official, full, feats if not missing else None, posteriors)
    return json_safe({"official": official, "full": full, "notes": notes, "ours": ours})
