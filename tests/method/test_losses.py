"""Classifier and losses: hand-computed values, the cancelled official weights, MI direction."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mcil.errors import UserError
from mcil.method.losses import (
    NonFiniteLossError,
    check_finite,
    cosine_logits,
    cw_loss,
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
