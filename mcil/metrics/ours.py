"""Metric variants of **ours** (not the paper's): what M1/M2 would need to carry information.

The paper's M1 and M2 (:mod:`mcil.metrics.paper`) stay exactly as the official code computes
them. Examined on generated features (``docs/metrics.md`` §5), two of their parts say almost
nothing:

- **M2's fusion half is a constant.** On L2-normalised features every entry is O(1/√D), so each
  softmax is within O(1/√D) of uniform and the official NMI is ``1 + O(1/D)`` whatever the two
  features are: NMI(x, x) = NMI(x, independent y) = NMI(x, −x) = 1.0024 at D = 128 (1.0005 at
  D = 512). ½·(½·NMI_v + ½·NMI_a) ≈ 0.50 for every method (:func:`nmi_degeneracy`).
- **M1 ≈ AIA / 2.** ``M1 − ½·AIA = ½·(1/T) Σ_t (1 − s_t)(100 − F_t) ≤ 50·w`` with
  ``w = (1/T) Σ_t (1 − s_t)`` (:func:`m1_forgetting_weight`); consecutive task prototypes are
  close (s_t ≈ 0.97–0.99 on the full test set), so the forgetting half weighs 1–3 %.

Variants that carry information (all keys start with ``m1_ours_`` / ``m2_ours_`` / ``ours_``):

- :func:`m1_ours_weighted`: the paper's idea (forgetting counts less between similar tasks) with
  the weights normalised: ``½·AIA + ½·Σ_{t≥2} (1−s_t)(100−F_t) / Σ_{t≥2} (1−s_t)``, so the
  forgetting half spans 0–100 whatever the size of ``1 − s_t``.
- :func:`cka_debiased`: debiased linear CKA (unbiased HSIC, Song et al. 2012; Kornblith et al.
  2019) between fused and unimodal features over samples — ≈ 1 when one is a linear function of
  the other, ≈ 0 when they are independent, in [0, 1] after clipping. :func:`m2_ours_cka` puts
  it where M2 has the NMI.
- :func:`nmi_posterior`: Shannon NMI in [0, 1] between the class posteriors of two branches (the
  joint distribution of their soft predictions over the test set); :func:`m2_ours_posterior`.
  Needs per-branch class posteriors, which the trainer does not record yet (then ``None``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from mcil.metrics import MetricInputError

__all__ = [
    "nmi_degeneracy",
    "m1_forgetting_weight",
    "m1_ours_weighted",
    "cka_debiased",
    "nmi_posterior",
    "m2_ours_cka",
    "m2_ours_posterior",
    "ours_metrics",
]


def _np(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Examination of the paper's terms
# --------------------------------------------------------------------------------------------


def nmi_degeneracy(D: int = 128, B: int = 256, seed: int = 0) -> dict[str, float]:
    """The official NMI (:func:`mcil.metrics.paper.nmi`) and :func:`cka_debiased` on generated,
    L2-normalised Gaussian features ``x, y`` of shape ``(B, D)``, ``y`` independent of ``x``.

    Returns ``nmi_self`` = NMI(x, x), ``nmi_independent`` = NMI(x, y), ``nmi_negated`` =
    NMI(x, −x) (all ≈ 1 + O(1/D): the paper's term cannot tell them apart) and the same three
    for CKA (1, ≈ 0, 1: it can).
    """
    from mcil.metrics.paper import nmi

    g = torch.Generator().manual_seed(int(seed))
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    y = torch.randn(B, D, generator=g, dtype=torch.float64)
    x, y = x / x.norm(dim=1, keepdim=True), y / y.norm(dim=1, keepdim=True)
    return {
        "D": float(D),
        "B": float(B),
        "nmi_self": float(nmi(x, x)),
        "nmi_independent": float(nmi(x, y)),
        "nmi_negated": float(nmi(x, -x)),
        "cka_self": cka_debiased(x, x),
        "cka_independent": cka_debiased(x, y),
        "cka_negated": cka_debiased(x, -x),
    }


def m1_forgetting_weight(s_steps: ArrayLike) -> float:
    """``w = (1/T) Σ_t (1 − s_t)``, the largest share of 100 points the forgetting half of M1 can
    move: ``0 ≤ M1 − ½·AIA ≤ 50·w`` (percent). ``s_steps``: ``(T,)`` with ``s_1 = 1``."""
    s = _np(s_steps)
    if s.ndim != 1 or s.shape[0] == 0 or not np.isfinite(s).all():
        raise MetricInputError(f"s_steps: expected a finite (T,) series, got {s.tolist()}")
    return float(np.mean(1.0 - s))


def m1_ours_weighted(aia_percent: float, forgetting_steps_percent: ArrayLike, s_steps: ArrayLike) -> float:
    """Ours: ``½·AIA + ½·Σ_{t≥2} (1−s_t)(100−F_t) / Σ_{t≥2} (1−s_t)`` (percent).

    The paper's weights ``1 − s_t`` normalised to sum to 1, so the second half is a weighted mean
    of ``100 − F_t`` (0–100) instead of a term bounded by ``100·w``. ``nan`` for T = 1 or when
    every ``s_t = 1`` (no weight to normalise). Shapes as :func:`mcil.metrics.paper.m1`.
    """
    Fs, s = _np(forgetting_steps_percent), _np(s_steps)
    if Fs.ndim != 1 or Fs.shape != s.shape or Fs.shape[0] == 0:
        raise MetricInputError(f"m1_ours_weighted: need one F_t and s_t per task, got {Fs.shape}, {s.shape}")
    w = 1.0 - s[1:]
    if w.size == 0 or not np.isfinite(w).all() or w.sum() <= 0:
        return math.nan
    if not np.isfinite(Fs[1:]).all():
        raise MetricInputError(f"m1_ours_weighted: forgetting after tasks 2..T must be finite, got {Fs.tolist()}")
    return float(0.5 * aia_percent + 0.5 * np.dot(w, 100.0 - Fs[1:]) / w.sum())


# --------------------------------------------------------------------------------------------
# Dependence between fused and unimodal features
# --------------------------------------------------------------------------------------------


def _unbiased_hsic(X: np.ndarray, Y: np.ndarray) -> float:
    """Unbiased linear-kernel HSIC (Song et al. 2012), computed in feature space: O(N·D²)."""
    n = X.shape[0]
    kd = np.einsum("ij,ij->i", X, X)  # diag(K), K = X Xᵀ
    ld = np.einsum("ij,ij->i", Y, Y)
    tr = float(np.sum((X.T @ Y) ** 2) - np.dot(kd, ld))  # tr(K̃ L̃), K̃ = K − diag(K)
    k1 = X @ X.sum(0) - kd  # K̃ 1
    l1 = Y @ Y.sum(0) - ld
    s_k, s_l = float(k1.sum()), float(l1.sum())
    return (tr + s_k * s_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * float(np.dot(k1, l1))) / (n * (n - 3))


def cka_debiased(x: ArrayLike | Tensor, y: ArrayLike | Tensor) -> float:
    """Debiased linear CKA between ``x`` ``(N, D_x)`` and ``y`` ``(N, D_y)`` (rows = samples).

    ``HSIC₁(K, L) / sqrt(HSIC₁(K, K) · HSIC₁(L, L))`` with linear kernels: invariant to rotations
    and scaling of either feature, 1 for ``y = ±x``, ≈ 0 (may be slightly negative) for
    independent features even when D ≈ N. Needs N ≥ 4. ``nan`` when either side is constant.
    """
    X, Y = _np(x), _np(y)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise MetricInputError(f"cka_debiased: expected (N, D) arrays with the same N, got {X.shape} and {Y.shape}")
    if X.shape[0] < 4:
        raise MetricInputError(f"cka_debiased: needs at least 4 samples, got {X.shape[0]}")
    xy, xx, yy = _unbiased_hsic(X, Y), _unbiased_hsic(X, X), _unbiased_hsic(Y, Y)
    if not (xx > 0 and yy > 0):
        return math.nan
    return float(xy / math.sqrt(xx * yy))


def nmi_posterior(p: ArrayLike | Tensor, q: ArrayLike | Tensor, eps: float = 1e-12) -> float:
    """Shannon NMI in [0, 1] between two branches' class posteriors ``p, q`` ``(N, C)`` (rows sum to 1).

    Joint ``J = (1/N) Σ_n p_n q_nᵀ`` (C×C), marginals ``J 1`` and ``Jᵀ 1``;
    ``NMI = I(J) / sqrt(H(J 1) · H(Jᵀ 1))``. 1 when both branches make the same confident
    predictions, 0 when their predictions are independent. ``nan`` when a marginal has no entropy.
    """
    P, Q = _np(p), _np(q)
    if P.ndim != 2 or P.shape != Q.shape or P.shape[0] == 0:
        raise MetricInputError(f"nmi_posterior: expected two (N, C) posteriors of the same shape, got {P.shape}, {Q.shape}")
    for name, M in (("p", P), ("q", Q)):
        if (M < -eps).any() or not np.allclose(M.sum(1), 1.0, atol=1e-6):
            raise MetricInputError(f"nmi_posterior: rows of {name} must be probabilities summing to 1 (apply softmax)")
    J = P.T @ Q / P.shape[0]
    a, b = J.sum(1), J.sum(0)

    def h(v: np.ndarray) -> float:
        v = v[v > eps]
        return float(-(v * np.log(v)).sum())

    nz = J > eps
    mi = float((J[nz] * (np.log(J[nz]) - np.log(np.outer(a, b)[nz]))).sum())
    ha, hb = h(a), h(b)
    if ha <= 0 or hb <= 0:
        return math.nan
    return float(min(max(mi / math.sqrt(ha * hb), 0.0), 1.0))


def _m2_with(aia_fraction: float, bwt_steps: ArrayLike, fwt_steps: ArrayLike, dep_v: float, dep_a: float) -> float:
    b, f = _np(bwt_steps), _np(fwt_steps)
    if b.ndim != 1 or b.shape != f.shape or b.shape[0] == 0 or not (np.isfinite(b).all() and np.isfinite(f).all()):
        raise MetricInputError("m2 (ours): BWT_t and FWT_t need one finite value per task (0 after task 1)")
    if not all(math.isfinite(v) for v in (aia_fraction, dep_v, dep_a)):
        return math.nan
    clip = lambda v: min(max(v, 0.0), 1.0)  # noqa: E731
    transfer = float((b + f).sum() / b.shape[0])
    return 0.5 * (0.5 * aia_fraction + 0.5 * transfer) + 0.5 * (0.5 * clip(dep_v) + 0.5 * clip(dep_a))


def m2_ours_cka(aia_fraction: float, bwt_steps: ArrayLike, fwt_steps: ArrayLike, cka_v: float, cka_a: float) -> float:
    """Ours: M2 with ``½·CKA(f_v, f_fused) + ½·CKA(f_a, f_fused)`` (each clipped to [0, 1]) in place
    of the NMI half; the accuracy/transfer half is the paper's (fractions, shapes as ``m2``)."""
    return _m2_with(aia_fraction, bwt_steps, fwt_steps, cka_v, cka_a)


def m2_ours_posterior(aia_fraction: float, bwt_steps: ArrayLike, fwt_steps: ArrayLike, nmi_v: float,
                      nmi_a: float) -> float:
    """Ours: M2 with the posterior NMI (:func:`nmi_posterior`) of image vs fused and audio vs fused."""
    return _m2_with(aia_fraction, bwt_steps, fwt_steps, nmi_v, nmi_a)


# --------------------------------------------------------------------------------------------
# From the trainer's record
# --------------------------------------------------------------------------------------------


def ours_metrics(official: Mapping[str, Any], full: Mapping[str, Any], features: Mapping[str, Tensor] | None,
                 posteriors: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Our variants next to the paper's, from the two variant dicts of ``m1_m2_from_inputs``.

    ``features``: ``{'image', 'audio', 'fused'}`` → ``(N, D)`` (whole final test set);
    ``posteriors``: the same keys → ``(N, C)`` class posteriors (optional; the trainer does not
    record them yet). Keys: ``m1_weight_official``, ``m1_weight_full`` (:func:`m1_forgetting_weight`),
    ``m1_ours_weighted`` (full variant's F_t, s_t), ``cka_v``, ``cka_a``, ``m2_ours_cka``,
    ``nmi_post_v``, ``nmi_post_a``, ``m2_ours_posterior``, ``notes``; ``None`` where undefined.
    """
    out: dict[str, Any] = {k: None for k in ("m1_weight_official", "m1_weight_full", "m1_ours_weighted", "cka_v",
                                             "cka_a", "m2_ours_cka", "nmi_post_v", "nmi_post_a", "m2_ours_posterior")}
    notes: list[str] = []
    if official.get("s_steps") is not None:
        out["m1_weight_official"] = m1_forgetting_weight(official["s_steps"])
    if full.get("s_steps") is not None:
        out["m1_weight_full"] = m1_forgetting_weight(full["s_steps"])
        out["m1_ours_weighted"] = m1_ours_weighted(full["aia"], full["forgetting_steps"], full["s_steps"])
    else:
        notes.append("m1_ours_weighted undefined: no task similarities (see the paper's M1 notes)")
    aia_frac = float(full["aia"]) / 100.0
    feats = dict(features or {})
    if all(k in feats for k in ("image", "audio", "fused")) and int(feats["image"].shape[0]) >= 4:
        out["cka_v"] = cka_debiased(feats["image"], feats["fused"])
        out["cka_a"] = cka_debiased(feats["audio"], feats["fused"])
        out["m2_ours_cka"] = m2_ours_cka(aia_frac, full["bwt_steps"], full["fwt_steps"], out["cka_v"], out["cka_a"])
    else:
        notes.append("m2_ours_cka undefined: needs image, audio and fused features of at least 4 test samples")
    post = dict(posteriors or {})
    if all(k in post for k in ("image", "audio", "fused")):
        out["nmi_post_v"] = nmi_posterior(post["image"], post["fused"])
        out["nmi_post_a"] = nmi_posterior(post["audio"], post["fused"])
        out["m2_ours_posterior"] = m2_ours_posterior(aia_frac, full["bwt_steps"], full["fwt_steps"],
                                                     out["nmi_post_v"], out["nmi_post_a"])
    else:
        notes.append("m2_ours_posterior undefined: the trainer records no per-branch class posteriors")
    out["notes"] = notes
    return out
