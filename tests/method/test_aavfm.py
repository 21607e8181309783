"""AAVFM: Pearson r, gate decision in every mode, feature selection, dynamic fusion (hand values)."""

from __future__ import annotations

import math

import pytest
import torch

from mcil.method.aavfm import DynamicFusion, adaptive_threshold, gate_decision, pearson_r, select_features

T, F_ = True, False


def test_pearson_r_hand_values():
    f_v = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 0.0, -1.0], [5.0, 5.0, 5.0]])
    f_a = torch.tensor([[2.0, 4.0, 6.0], [3.0, 2.0, 1.0], [1.0, 1.0, -2.0], [1.0, 2.0, 3.0]])
    r = pearson_r(f_v, f_a)
    # row 2: both centred already; cov = 1 + 0 + 2 = 3, norms √2 and √6 → 3/√12 = √3/2
    expected = torch.tensor([1.0, -1.0, math.sqrt(3) / 2, 0.0])  # constant row → 0, not NaN
    assert torch.allclose(r, expected, atol=1e-6)


def test_pearson_r_is_scale_invariant():
    g = torch.Generator().manual_seed(0)
    v, a = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    assert torch.allclose(pearson_r(v, a), pearson_r(3 * v, 0.5 * a), atol=1e-6)


R = torch.tensor([0.9, 0.5, 0.85, 0.95])
HAS_AUDIO = torch.tensor([T, T, T, F_])
HAS_IMAGE = torch.tensor([T, T, T, T])


@pytest.mark.parametrize(
    "mode, th, expected",
    [
        ("sample", 0.8, [T, F_, T, F_]),  # sample 3 has r 0.95 but no audio
        ("adaptive", 0.8, [T, F_, T, F_]),  # per sample, threshold given by the caller
        ("adaptive", 0.4, [T, T, T, F_]),
        ("always", 0.8, [T, T, T, F_]),
        ("never", 0.8, [F_, F_, F_, F_]),
        ("batch", 0.8, [F_, F_, F_, F_]),  # mean r over samples with both = (0.9+0.5+0.85)/3 = 0.75 < 0.8
        ("batch", 0.75, [T, T, T, F_]),  # 0.75 >= 0.75 opens the gate for all that have audio
    ],
)
def test_gate_decision(mode, th, expected):
    assert gate_decision(R, th, mode, HAS_AUDIO, HAS_IMAGE).tolist() == expected


def test_gate_missing_image_never_fuses():
    has_image = torch.tensor([F_, T, T, T])
    assert gate_decision(R, 0.0, "always", HAS_AUDIO, has_image).tolist() == [F_, T, T, F_]


def test_batch_gate_ignores_samples_without_both_and_survives_empty_batches():
    r = torch.tensor([float("nan"), 0.9, -1.0])
    has_audio = torch.tensor([F_, T, T])
    has_image = torch.tensor([T, T, F_])
    # only sample 1 has both: mean r = 0.9
    assert gate_decision(r, 0.8, "batch", has_audio, has_image).tolist() == [F_, T, F_]
    none = torch.tensor([F_, F_, F_])
    assert gate_decision(r, 0.8, "batch", none, has_image).tolist() == [F_, F_, F_]


def test_unknown_gate_mode():
    with pytest.raises(ValueError, match="fusion.gate"):
        gate_decision(R, 0.8, "sometimes", HAS_AUDIO, HAS_IMAGE)


def test_adaptive_threshold_is_a_quantile_of_finite_r():
    assert adaptive_threshold(torch.tensor([4.0, 0.0, 2.0, float("nan"), 1.0, 3.0]), 0.5) == 2.0
    assert adaptive_threshold(torch.tensor([0.0, 1.0]), 0.25) == 0.25
    assert math.isnan(adaptive_threshold(torch.empty(0), 0.5))


def test_select_features():
    f_v = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    f_a = torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]])
    fused = torch.tensor([F_, T, F_])
    f_fused = torch.tensor([[7.0, 7.0]])
    has_image = torch.tensor([T, T, F_])
    out = select_features(f_v, f_a, fused, f_fused, has_image)
    assert out.tolist() == [[1.0, 0.0], [7.0, 7.0], [0.0, 3.0]]


@pytest.mark.parametrize("attention", ["sample", "batch-official"])
def test_fusion_starts_as_the_sum_of_the_modalities(attention):
    torch.manual_seed(0)
    fusion = DynamicFusion(8, attention=attention)
    f_v, f_a = torch.randn(3, 8), torch.randn(3, 8)
    assert torch.allclose(fusion(f_v, f_a), f_v + f_a)
    with torch.no_grad():
        fusion.w_a.fill_(0.0)  # the learnable modality weights scale each path
    assert torch.allclose(fusion(f_v, f_a), f_v)
    torch.nn.init.normal_(fusion.mlp[-1].weight)
    assert not torch.allclose(fusion(f_v, f_a), f_v)


def test_sample_attention_hand_value():
    fusion = DynamicFusion(2, attention="sample")
    with torch.no_grad():
        for lin in (fusion.q, fusion.k, fusion.v):
            lin.weight.copy_(torch.eye(2))
    f_v, f_a = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    # scores q·k/√2 = [1/√2, 0] → softmax → h = p0·e1 + p1·e2
    p0 = 1.0 / (1.0 + math.exp(-1 / math.sqrt(2)))
    assert torch.allclose(fusion.attend(f_v, f_a), torch.tensor([[p0, 1 - p0]]), atol=1e-6)


def test_sample_attention_does_not_mix_samples_but_batch_official_does():
    torch.manual_seed(0)
    f_v, f_a = torch.randn(4, 8), torch.randn(4, 8)
    per_sample = DynamicFusion(8, attention="sample")
    assert torch.allclose(per_sample.attend(f_v, f_a)[:1], per_sample.attend(f_v[:1], f_a[:1]), atol=1e-6)
    batch = DynamicFusion(8, attention="batch-official")
    assert batch.attend(f_v, f_a).shape == (4, 16)
    assert not torch.allclose(batch.attend(f_v, f_a)[:1], batch.attend(f_v[:1], f_a[:1]))


def test_batch_official_attention_hand_value():
    fusion = DynamicFusion(1, attention="batch-official")
    with torch.no_grad():
        fusion.q.weight.copy_(torch.tensor([[1.0], [0.0]]))  # q = [f_v, 0]
    f_v, f_a = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [1.0]])
    # z = [[1, 0], [2, 1]]; row 0 scores [1, 2]/√2 → softmax p; h0 = p0·z0 + p1·z1
    p1 = 1.0 / (1.0 + math.exp(-1 / math.sqrt(2)))
    h = fusion.attend(f_v, f_a)
    assert torch.allclose(h[0], torch.tensor([(1 - p1) * 1 + p1 * 2, p1 * 1.0]), atol=1e-6)
