"""Our metric variants (mcil.metrics.ours) and the examination of the paper's M1/M2 terms."""

from __future__ import annotations

import math

import numpy as np
import pytest

import mcil.metrics as m
from mcil.metrics import ours, paper

FIXTURE_ROWS = [[98.4], [96.2, 93.2], [90.4, 90.8, 86.6]]
TEXT = [[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]]
IMG = [[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]


@pytest.mark.parametrize("D, value", [(128, 1.0024), (512, 1.0005)])
def test_paper_nmi_is_a_constant_on_normalised_features(D, value):
    """The official NMI cannot tell x from an independent y or from −x on L2-normalised features
    (docs/metrics.md §5): all three are 1 + O(1/D). Pinned to 4 decimals, so a change of the
    estimator (or of the normalisation the trainer feeds it) fails here."""
    r = ours.nmi_degeneracy(D=D, B=256, seed=0)
    for key in ("nmi_self", "nmi_independent", "nmi_negated"):
        assert r[key] == pytest.approx(value, abs=5e-5), key
    assert max(r["nmi_self"], r["nmi_independent"], r["nmi_negated"]) - min(
        r["nmi_self"], r["nmi_independent"], r["nmi_negated"]) < 1e-4
    # so the fusion half of M2 is ½·(½·NMI_v + ½·NMI_a) ≈ 0.50 whatever the fusion does
    assert 0.5 * (0.5 * r["nmi_self"] + 0.5 * r["nmi_independent"]) == pytest.approx(0.5, abs=2e-3)
    # our CKA separates the three cases
    assert r["cka_self"] == pytest.approx(1.0) and r["cka_negated"] == pytest.approx(1.0)
    assert abs(r["cka_independent"]) < 0.05


def _cka_brute_force(X, Y):
    """Unbiased HSIC with explicit N×N Gram matrices (Song et al. 2012, eq. 5)."""
    def hsic(K, L):
        n = K.shape[0]
        K, L = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
        one = np.ones(n)
        return (np.trace(K @ L) + one @ K @ one * (one @ L @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ K @ L @ one) / (n * (n - 3))
    K, L = X @ X.T, Y @ Y.T
    return hsic(K, L) / math.sqrt(hsic(K, K) * hsic(L, L))


def test_cka_matches_gram_formula_and_is_rotation_invariant():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 5))
    Y = X @ rng.normal(size=(5, 3)) + 0.5 * rng.normal(size=(12, 3))
    assert ours.cka_debiased(X, Y) == pytest.approx(_cka_brute_force(X, Y), rel=1e-9)
    Q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    assert ours.cka_debiased(X @ Q * 3.0, Y) == pytest.approx(ours.cka_debiased(X, Y), rel=1e-9)
    assert math.isnan(ours.cka_debiased(np.zeros((6, 2)), Y[:6]))
    with pytest.raises(m.MetricInputError, match="at least 4"):
        ours.cka_debiased(X[:3], Y[:3])


def test_nmi_posterior_by_hand():
    p = [[1.0, 0.0], [0.0, 1.0]]
    # J = ½·[[.75, .25], [.25, .75]], marginals ½: MI = .75 ln 1.5 + .25 ln .5; H = ln 2
    q = [[0.75, 0.25], [0.25, 0.75]]
    expected = (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / math.log(2)
    assert ours.nmi_posterior(p, q) == pytest.approx(expected)  # 0.18872
    assert ours.nmi_posterior(p, p) == pytest.approx(1.0)
    assert ours.nmi_posterior(p, [[0.5, 0.5], [0.5, 0.5]]) == pytest.approx(0.0)
    assert math.isnan(ours.nmi_posterior(p, [[1.0, 0.0], [1.0, 0.0]]))  # q has no entropy
    with pytest.raises(m.MetricInputError, match="softmax"):
        ours.nmi_posterior(p, [[2.0, 0.0], [0.0, 1.0]])


def test_m1_reduces_toward_half_aia_and_our_weighted_variant_by_hand():
    A = m.lower_triangle_to_matrix(FIXTURE_ROWS)
    full = paper.m1_m2_from_inputs(A, [1, 1, 1], TEXT, IMG, None, None, "full")
    s, F, aia = full["s_steps"], full["forgetting_steps"], full["aia"]  # s = [1, .75, .5]; F = [0, 2.2, 5.2]
    w = ours.m1_forgetting_weight(s)
    assert w == pytest.approx((0 + 0.25 + 0.5) / 3)
    assert 0 <= full["m1"] - aia / 2 <= 50 * w
    # ours: (0.25·97.8 + 0.5·94.8) / 0.75 = 95.8, so ½·94.1222 + ½·95.8
    assert ours.m1_ours_weighted(aia, F, s) == pytest.approx(0.5 * (98.4 + 94.7 + 267.8 / 3) / 3 + 0.5 * 95.8)
    # s_t -> 1 (the 0.97-0.99 of the full-test-set variant): M1 sits within 50·w of AIA/2 ...
    near = [1.0, 0.99, 0.98]
    assert paper.m1(aia, F, near) - aia / 2 <= 50 * ours.m1_forgetting_weight(near) == pytest.approx(0.5)
    # ... while our variant keeps the forgetting half on 0-100
    assert ours.m1_ours_weighted(aia, F, near) - aia / 2 == pytest.approx(0.5 * (0.01 * 97.8 + 0.02 * 94.8) / 0.03)
    assert math.isnan(ours.m1_ours_weighted(aia, F, [1.0, 1.0, 1.0]))


def test_m2_ours_replaces_only_the_fusion_half():
    b, f = [0.0, -0.022, -0.052], [0.0, 0.962, 0.92467]
    transfer_half = 0.5 * (0.5 * 0.941222 + 0.5 * (sum(b) + sum(f)) / 3)
    assert ours.m2_ours_cka(0.941222, b, f, 0.8, 0.2) == pytest.approx(transfer_half + 0.25)
    assert ours.m2_ours_cka(0.941222, b, f, 1.3, -0.1) == pytest.approx(transfer_half + 0.25)  # clipped
    assert paper.m2(0.941222, b, f, 0.8, 0.2) == pytest.approx(ours.m2_ours_cka(0.941222, b, f, 0.8, 0.2))


