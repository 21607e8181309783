"""Classifier and losses: hand-computed values, the cancelled official weights, MI direction."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mcil.errors import UserError
from mcil.method.gradient_scale import VARIANTS, MiVariant, feature_gradient_scale
from mcil.method.losses import (
    NonFiniteLossError,
    check_finite,
    cosine_logits,
    cw_loss,
    grad_norm,
    grad_norm_scale,
    infonce_mi,
    mi_loss,
    similarity_weights,
    total_loss,
)
from mcil.metrics.paper import mutual_information


def test_cosine_logits_hand_values():
    f = torch.tensor([[3.0, 4.0]])  # normalised: [0.6, 0.8]
    t = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert torch.allclose(cosine_logits(f, t, 10.0), torch.tensor([[6.0, 8.0]]))
    # official training path: raw prototypes
    assert torch.allclose(cosine_logits(f, t, 10.0, normalize_prototypes=False), torch.tensor([[6.0, 16.0]]))


def test_similarity_weights():
    f = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    w = similarity_weights(f)
    assert torch.allclose(w, torch.tensor([[1.0, 0.5, 0.0], [0.5, 1.0, 0.5], [0.0, 0.5, 1.0]]))


@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_official_cw_weights_cancel_to_cross_entropy(ls):
    g = torch.Generator().manual_seed(0)
    logits, feats = torch.randn(6, 4, generator=g), torch.randn(6, 8, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    ce = F.cross_entropy(logits, y, label_smoothing=ls)
    assert torch.allclose(cw_loss(logits, y, feats, "official", ls), ce, atol=1e-6)


def test_weighted_cw_hand_value_differs_from_ce():
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    y = torch.tensor([0, 1])
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # orthogonal: w_01 = 0.5, w_ii = 1
    # targets q_0 = (1·e0 + 0.5·e1)/1.5 = [2/3, 1/3]; q_1 = [1/3, 2/3]; softmax(ℓ_0) = [3/4, 1/4]
    l0 = -(2 / 3 * math.log(3 / 4) + 1 / 3 * math.log(1 / 4))
    l1 = math.log(2.0)
    expected = (l0 + l1) / 2
    got = cw_loss(logits, y, feats, "weighted")
    assert math.isclose(float(got), expected, rel_tol=1e-6)
    ce = (-math.log(3 / 4) + math.log(2.0)) / 2
    assert not math.isclose(expected, ce, rel_tol=1e-3)


def test_weighted_cw_label_smoothing_hand_value():
    logits = torch.tensor([[math.log(3.0), 0.0]])
    y = torch.tensor([0])
    # one sample: q = onehot, smoothed: 0.9·[1, 0] + 0.1/2 = [0.95, 0.05]
    expected = -(0.95 * math.log(3 / 4) + 0.05 * math.log(1 / 4))
    assert math.isclose(float(cw_loss(logits, y, torch.ones(1, 2), "weighted", 0.1)), expected, rel_tol=1e-6)


def test_weighted_cw_equals_ce_when_the_batch_has_one_class():
    g = torch.Generator().manual_seed(1)
    logits, feats = torch.randn(5, 3, generator=g), torch.randn(5, 4, generator=g)
    y = torch.full((5,), 2)
    assert torch.allclose(cw_loss(logits, y, feats, "weighted"), F.cross_entropy(logits, y), atol=1e-6)


def test_cw_weights_carry_no_gradient():
    feats = torch.randn(4, 3, requires_grad=True)
    logits = torch.randn(4, 2, requires_grad=True)
    cw_loss(logits, torch.tensor([0, 1, 0, 1]), feats, "weighted").backward()
    assert feats.grad is None and logits.grad is not None


def test_mi_loss_matches_the_metric_and_has_the_right_sign():
    g = torch.Generator().manual_seed(0)
    f, v, a = (torch.randn(3, 6, generator=g) for _ in range(3))
    expected = -(mutual_information(f, v, "sum") + mutual_information(f, a, "sum"))
    assert torch.allclose(mi_loss(f, v, a, "sum", "official"), expected)
    assert torch.allclose(mi_loss(f, v, a, "mean", "official"), expected / 3)
    assert float(mi_loss(f, v, a, "mean")) <= 0.0  # MI of this estimator is >= 0


def test_mi_loss_unit_rms_rescales_unit_vectors_so_the_gradient_does_not_vanish():
    g = torch.Generator().manual_seed(0)
    d = 128
    f, v, a = (F.normalize(torch.randn(8, d, generator=g), dim=-1) for _ in range(3))
    k = math.sqrt(d)
    assert torch.allclose(mi_loss(f, v, a, "mean", "unit-rms"), mi_loss(f * k, v * k, a * k, "mean", "official"))
    grads = {}
    for inputs in ("official", "unit-rms"):
        x = f.clone().requires_grad_()
        mi_loss(x, v, a, "mean", inputs).backward()
        grads[inputs] = float(x.grad.abs().max())
    # on unit vectors the official estimator's softmax is nearly uniform: almost no gradient
    assert grads["official"] < 1e-3 < 0.1 < grads["unit-rms"]
    with pytest.raises(ValueError, match="loss.mi_input"):
        mi_loss(f, v, a, "mean", "raw")


def test_mi_loss_descent_increases_mutual_information():
    g = torch.Generator().manual_seed(0)
    v, a = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    f = torch.randn(4, 6, generator=g, requires_grad=True)
    before = float(mutual_information(f.detach(), v, "sum") + mutual_information(f.detach(), a, "sum"))
    mi_loss(f, v, a, "mean", "official").backward()
    with torch.no_grad():
        f2 = f - 0.1 * f.grad
    after = float(mutual_information(f2, v, "sum") + mutual_information(f2, a, "sum"))
    assert after > before


def test_official_mi_variants_are_unchanged():
    # values pinned from the code before loss.mi_estimator / loss.mi_scale existed
    f = torch.tensor([[0.6, 0.8, 0.0], [0.0, 0.6, -0.8]])
    v = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    a = torch.tensor([[0.0, 1.0, 0.0], [0.6, 0.0, 0.8]])
    pinned = {("sum", "official"): -4.88517951965332, ("sum", "unit-rms"): -5.628822326660156,
              ("mean", "official"): -2.44258975982666, ("mean", "unit-rms"): -2.814411163330078}
    for (reduction, inputs), value in pinned.items():
        assert float(mi_loss(f, v, a, reduction, inputs)) == pytest.approx(value, rel=1e-6)
        assert float(mi_loss(f, v, a, reduction, inputs, "official", 0.01)) == pytest.approx(value, rel=1e-6)


def test_infonce_hand_values_and_bounds():
    tau = 0.5
    eye = torch.eye(2)
    # ℓ = [[2, 0], [0, 2]]: per row and direction CE = log(1 + e^-2); MI estimate = log 2 − that
    expected = math.log(2) - math.log(1 + math.exp(-2))
    assert float(infonce_mi(eye, eye, tau)) == pytest.approx(expected, rel=1e-6)
    assert float(infonce_mi(eye, eye, tau, "sum")) == pytest.approx(2 * expected, rel=1e-6)
    assert float(infonce_mi(3 * eye, 0.5 * eye, tau)) == pytest.approx(expected, rel=1e-6)  # norm-invariant
    assert float(infonce_mi(eye[:1], eye[:1], tau)) == 0.0  # one pair: log 1 − 0
    assert float(mi_loss(eye, eye, eye, "mean", "unit-rms", "infonce", tau)) == pytest.approx(-2 * expected, rel=1e-6)
    g = torch.Generator().manual_seed(0)
    for n in (2, 8, 32):
        x, y = torch.randn(n, 16, generator=g), torch.randn(n, 16, generator=g)
        for t in (0.01, 0.07, 1.0):
            assert float(infonce_mi(x, y, t)) <= math.log(n) + 1e-6  # bounded by log n
            assert float(infonce_mi(x, x, t)) >= 0.0  # perfectly paired: at least chance
    with pytest.raises(ValueError, match="mi_estimator"):
        mi_loss(eye, eye, eye, "mean", "unit-rms", "nce")
    with pytest.raises(ValueError, match="temperature"):
        mi_loss(eye, eye, eye, "mean", "unit-rms", "infonce", 0.0)


def test_grad_norm_and_grad_norm_scale_hand_values():
    x = torch.tensor([[1.0, 2.0], [0.0, -1.0]], requires_grad=True)
    w_cw = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # ∂L_CW/∂x, norm 5
    w_mi = torch.tensor([[0.0, 0.0], [0.0, 0.5]])  # ∂L_MI/∂x, norm 0.5
    l_cw, l_mi = (x * w_cw).sum(), (x * w_mi).sum()
    other = torch.ones(3, requires_grad=True)  # not on either graph: counts as zero
    assert grad_norm(l_cw, [x, other]) == pytest.approx(5.0)
    assert grad_norm(l_mi, [x]) == pytest.approx(0.5)
    c = grad_norm_scale(l_cw, l_mi, x)
    assert not c.requires_grad and float(c) == pytest.approx(10.0)
    assert grad_norm(c * l_mi, [x]) == pytest.approx(grad_norm(l_cw, [x]))
    # graph retained: the caller can still backpropagate
    (l_cw + c * l_mi).backward()
    assert torch.allclose(x.grad, w_cw + 10.0 * w_mi)
    # no MI gradient (nothing fused / constant): weight 0, never inf
    assert float(grad_norm_scale(l_cw.detach() + (x * w_cw).sum(), (x * 0.0).sum(), x)) == 0.0
    assert float(grad_norm_scale(torch.tensor(1.0), l_mi, x)) == 0.0


@pytest.mark.parametrize("dim", [32, 128, 512])
@pytest.mark.parametrize("batch", [4, 16, 64])
def test_grad_norm_variants_push_the_fused_feature_as_hard_as_cross_entropy(dim, batch):
    """At every width and batch size the normalised MI term's gradient matches L_CW's; the
    official estimator's does not (≪ 1 on unit vectors; with unit-rms it grows with D)."""
    for v in VARIANTS:
        r = feature_gradient_scale(v, dim, batch)
        assert math.isfinite(r.l_cw) and math.isfinite(r.l_mi) and r.grad_cw > 0 and r.grad_mi > 0
        if v.scale == "grad-norm":
            assert r.ratio == pytest.approx(1.0, rel=1e-4), v.label
        elif v == MiVariant("official", "official"):
            assert r.ratio < 0.1, v.label
    ratios = [feature_gradient_scale(MiVariant("official", "unit-rms"), d, batch).ratio for d in (32, 512)]
    assert ratios[1] > 5 * ratios[0]  # unit-rms: the MI gradient grows with the width D


def test_infonce_value_and_gradient_do_not_depend_on_width():
    """InfoNCE on cosines sees D only through the geometry: L_MI ≥ −2·log B always (each MI
    estimate is ≤ log B) and here ≤ 0, at every width, where the official unit-rms value grows with D."""
    for batch in (4, 16, 64):
        for dim in (32, 128, 512):
            r = feature_gradient_scale(MiVariant("infonce"), dim, batch)
            assert -2 * math.log(batch) - 1e-5 <= r.l_mi <= 0.0
    official = [feature_gradient_scale(MiVariant("official", "unit-rms"), d, 16).l_mi for d in (32, 512)]
    assert official[1] < official[0] - 1.0


def test_alpha_changes_the_gradient_direction_with_grad_norm_but_not_with_official_input():
    """Total gradient w.r.t. the fused features at α = 0.3 vs 0.7 (tiny generated example)."""

    def direction(v: MiVariant, alpha: float) -> torch.Tensor:
        g = torch.Generator().manual_seed(3)
        protos = F.normalize(torch.randn(3, 16, generator=g), dim=-1)
        y = torch.tensor([0, 1, 2, 0, 1, 2])
        f_v = F.normalize(protos[y] + 1.5 * torch.randn(6, 16, generator=g), dim=-1)
        f_a = F.normalize(protos[y] + 1.5 * torch.randn(6, 16, generator=g), dim=-1)
        f = F.normalize(f_v + f_a, dim=-1).requires_grad_()
        l_cw = F.cross_entropy(cosine_logits(f, protos, 1 / 0.07), y)
        l_mi = mi_loss(f, f_v, f_a, "mean", v.inputs, v.estimator, 0.07)
        if v.scale == "grad-norm":
            l_mi = grad_norm_scale(l_cw, l_mi, f) * l_mi
        total_loss(l_cw, l_mi, alpha).backward()
        return F.normalize(f.grad.flatten(), dim=0)

    def cos(v: MiVariant) -> float:
        return float(direction(v, 0.3) @ direction(v, 0.7))

    assert cos(MiVariant("official", "official")) > 0.999  # L_MI ~ 0: α only rescales, which Adam cancels
    assert cos(MiVariant("official", "unit-rms", "grad-norm")) < 0.95
    assert cos(MiVariant("infonce", "unit-rms", "grad-norm")) < 0.95


def test_mi_loss_without_fused_samples_is_zero():
    empty = torch.zeros(0, 6)
    assert float(mi_loss(empty, empty, empty)) == 0.0


def test_total_loss():
    assert math.isclose(float(total_loss(torch.tensor(2.0), torch.tensor(-1.0), 0.7)), 0.7 * 2 - 0.3, rel_tol=1e-6)


def test_check_finite_names_the_term():
    check_finite({"loss_cw": torch.tensor(1.0)})
    with pytest.raises(NonFiniteLossError, match="loss_mi"):
        check_finite({"loss_cw": torch.tensor(1.0), "loss_mi": torch.tensor(float("nan"))})
    assert issubclass(NonFiniteLossError, FloatingPointError) and issubclass(NonFiniteLossError, UserError)
