"""Paper metrics (mcil.metrics.paper): MI/NMI on hand-made tensors, similarity, M1, M2."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import mcil.metrics as m
from mcil.metrics import paper

LN3 = math.log(3.0)
E = math.e
FIXTURE_ROWS = [[98.4], [96.2, 93.2], [90.4, 90.8, 86.6]]


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


# --------------------------------------------------------------------------------------------
# MI / entropy / NMI
# --------------------------------------------------------------------------------------------


def test_mi_two_dim_by_hand():
    # x ⊙ y = [0, ln 3] so P = p_x = [1/4, 3/4]; p_y = [1, e]/(1+e)
    # MI = -Σ P log p_y = ln(1+e) - 3/4
    x, y = t([[0.0, LN3]]), t([[0.0, 1.0]])
    mi = paper.mutual_information(x, y)
    assert mi.item() == pytest.approx(math.log(1 + E) - 0.75, rel=1e-12)
    hx = math.log(4) - 0.75 * LN3
    hy = math.log(1 + E) - E / (1 + E)
    assert paper.entropy(torch.softmax(x, -1)).item() == pytest.approx(hx, rel=1e-12)
    assert paper.entropy(torch.softmax(y, -1)).item() == pytest.approx(hy, rel=1e-12)
    expected_nmi = (math.log(1 + E) - 0.75) / math.sqrt(hx * hy)
    assert paper.nmi(x, y).item() == pytest.approx(expected_nmi, rel=1e-12)
    assert paper.nmi(y, x).item() == pytest.approx(expected_nmi, rel=1e-12)
    assert expected_nmi == pytest.approx(0.984408, abs=1e-6)  # value quoted in docs/metrics.md


def test_identical_binary_inputs_give_nmi_one():
    # entries in {0,1}: x ⊙ x = x, so P = p_x = p_y and MI = -Σ P log P = H(p_x)
    x = t([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    h_row1 = -(1 / (1 + 2 * E)) * math.log(1 / (1 + 2 * E)) - 2 * (E / (1 + 2 * E)) * math.log(
        E / (1 + 2 * E)
    )
    h_row2 = -(E / (E + 2)) * math.log(E / (E + 2)) - 2 * (1 / (E + 2)) * math.log(1 / (E + 2))
    assert paper.mutual_information(x, x).item() == pytest.approx(h_row1 + h_row2, rel=1e-12)
    assert paper.nmi(x, x).item() == pytest.approx(1.0, rel=1e-12)


def test_constant_partner_is_not_zero_mi():
    # y = 0: P and p_y are uniform, MI = -(1/D) Σ_d log p_x,d per row (the estimator's floor)
    x = t([[0.0, LN3]])
    y = torch.zeros_like(x)
    assert paper.mutual_information(x, y).item() == pytest.approx(
        math.log(4) - 0.5 * LN3, rel=1e-12
    )
    z = torch.zeros(3, 5, dtype=torch.float64)
    assert paper.mutual_information(z, z).item() == pytest.approx(3 * math.log(5), rel=1e-12)


def test_reductions_sum_over_batch_and_mean():
    x = t([[0.0, LN3], [0.0, 1.0]])
    y = t([[0.0, 1.0], [0.0, LN3]])
    per_row = [paper.mutual_information(x[i : i + 1], y[i : i + 1]).item() for i in range(2)]
    assert per_row[0] == pytest.approx(math.log(1 + E) - 0.75)
    assert paper.mutual_information(x, y, "sum").item() == pytest.approx(sum(per_row))
    assert paper.mutual_information(x, y, "mean").item() == pytest.approx(sum(per_row) / 2)
    p = torch.softmax(x, -1)
    assert paper.entropy(p, "mean").item() == pytest.approx(paper.entropy(p).item() / 2)


def test_mi_is_differentiable():
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x.requires_grad_(True)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: paper.mutual_information(a, b), (x, y))
    loss = -paper.mutual_information(x.float(), y.float())
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_nmi_parts_equal_concatenation():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 6, generator=g, dtype=torch.float64)
    y = torch.randn(7, 6, generator=g, dtype=torch.float64)
    parts = [paper.nmi_parts(x[:4], y[:4]), paper.nmi_parts(x[4:], y[4:])]
    assert paper.nmi_from_parts(parts) == pytest.approx(paper.nmi(x, y).item(), rel=1e-12)


def test_mi_shape_errors():
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        paper.mutual_information(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        paper.mutual_information(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="reduction"):
        paper.mutual_information(torch.zeros(2, 3), torch.zeros(2, 3), "max")


# --------------------------------------------------------------------------------------------
# Similarity
# --------------------------------------------------------------------------------------------

TEXT = [[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]]  # cos: 0, then 1
IMG = [[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]  # cos: 1, then -1


def test_task_similarity_and_steps():
    # s_2 = ½·(0+1)/2 + ½·(1+1)/2 = 0.75; s_3 = ½·(1+1)/2 + ½·(-1+1)/2 = 0.5
    assert paper.task_similarity(TEXT[1], TEXT[0], IMG[1], IMG[0]) == pytest.approx(0.75)
    s = paper.similarity_steps(np.array(TEXT), torch.tensor(IMG))
    assert s == pytest.approx([1.0, 0.75, 0.5])
    with pytest.raises(m.MetricInputError, match="zero"):
        paper.task_similarity([0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0])


def test_image_prototype_normalises_rows():
    f = t([[3.0, 4.0], [0.0, 2.0]])
    assert paper.image_prototype(f).tolist() == pytest.approx([0.3, 0.9])


# --------------------------------------------------------------------------------------------
# M1, M2
# --------------------------------------------------------------------------------------------


def test_m1_counts_first_task_in_denominator():
    # (1/T) with T = 2: ½·80 + ½·(0.5·(100-10))/2 = 40 + 11.25 (62.5 if divided by T-1)
    assert paper.m1(80.0, [math.nan, 10.0], [1.0, 0.5]) == pytest.approx(51.25)


def test_m1_fixture_like():
    # terms: 0.1·100 + 0.2·96 = 29.2 -> /3; M1 = 94.12/2 + 29.2/6
    assert paper.m1(94.12, [0.0, 0.0, 4.0], [1.0, 0.9, 0.8]) == pytest.approx(
        47.06 + 29.2 / 6
    )


def test_m1_rejects_bad_inputs():
    with pytest.raises(m.MetricInputError, match=r"s_steps\[0\]"):
        paper.m1(80.0, [0.0, 10.0], [0.9, 0.5])
    with pytest.raises(m.MetricInputError, match="one value per task"):
        paper.m1(80.0, [0.0, 10.0, 3.0], [1.0, 0.5])
    with pytest.raises(m.MetricInputError, match="percentage"):
        paper.m1(180.0, [0.0, 10.0], [1.0, 0.5])


def test_m2_by_hand():
    # transfer = (0 + 0.962 + (-0.0267 + 0.9247))/3 = 0.62
    v = paper.m2(0.9412, [0.0, 0.0, -0.0267], [0.0, 0.962, 0.9247], 0.5, 0.3)
    assert v == pytest.approx(0.5 * (0.5 * 0.9412 + 0.5 * 0.62) + 0.5 * (0.25 + 0.15))
    with pytest.raises(m.MetricInputError, match="fraction"):
        paper.m2(94.12, [0.0], [0.0], 0.5, 0.3)


def test_m1_m2_official_on_fixture():
    A = m.lower_triangle_to_matrix(FIXTURE_ROWS)
    out = paper.m1_m2_from_inputs(A, [500] * 3, TEXT, IMG, 0.5, 0.3, "official")
    assert out["s_steps"] == pytest.approx([1.0, 0.75, 0.5])
    assert out["forgetting_steps"] == [0.0, 0.0, 4.0]
    assert out["bwt_steps"] == [0.0, 0.0, -0.0267]
    assert out["fwt_steps"] == [0.0, 0.962, 0.9247]
    assert out["aia"] == 94.12
    # M1 = 94.12/2 + (0.25·100 + 0.5·96)/6 = 59.22667 -> rounded to 4 decimals
    assert out["m1"] == pytest.approx(59.2267, abs=1e-12)
    # M2 = ½(½·0.9412 + ½·0.62) + ½(½·0.5 + ½·0.3) = 0.5903
    assert out["m2"] == pytest.approx(0.5903, abs=1e-12)


def test_m1_m2_full_on_fixture():
    A = m.lower_triangle_to_matrix(FIXTURE_ROWS)
    out = paper.m1_m2_from_inputs(A, [500] * 3, TEXT, IMG, 0.5, 0.3, "full")
    assert out["forgetting_steps"] == pytest.approx([0.0, 2.2, 5.2])
    assert out["bwt_steps"] == pytest.approx([0.0, -0.022, -0.052])
    # continuum's strictly-lower mean is kept: 96.2, then (96.2 + 90.4 + 90.8)/3, as fractions
    assert out["fwt_steps"] == pytest.approx([0.0, 0.962, 2.774 / 3])
    aia = (98.4 + 94.7 + 267.8 / 3) / 3
    assert out["m1"] == pytest.approx(aia / 2 + (0.25 * 97.8 + 0.5 * 94.8) / 6)
    transfer = (0.0 + (0.962 - 0.022) + (2.774 / 3 - 0.052)) / 3
    assert out["m2"] == pytest.approx(0.5 * (0.5 * aia / 100 + 0.5 * transfer) + 0.2)


def test_m1_m2_feature_wrappers_compute_nmi():
    A = m.lower_triangle_to_matrix(FIXTURE_ROWS)
    f_v = t([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    f_a = t([[0.0, LN3, 0.0], [0.0, 0.0, 0.0]])
    official = paper.m1_m2_official(A, [1, 1, 1], TEXT, IMG, f_v, f_a, f_v)
    assert official["nmi_v"] == pytest.approx(1.0)  # f_fused = f_v, as in the released runs
    assert official["nmi_a"] == pytest.approx(paper.nmi(f_a, f_v).item())
    full = paper.m1_m2_full(A, [1, 1, 1], TEXT, IMG, f_v, f_a, f_v)
    assert full["variant"] == "full" and full["nmi_v"] == pytest.approx(1.0)


def test_m1_m2_task_count_mismatch():
    A = m.lower_triangle_to_matrix(FIXTURE_ROWS)
    with pytest.raises(m.MetricInputError, match="tasks"):
        paper.m1_m2_from_inputs(A, [1, 1, 1], TEXT[:2], IMG[:2], 0.5, 0.3)
    with pytest.raises(ValueError, match="variant"):
        paper.m1_m2_from_inputs(A, [1, 1, 1], TEXT, IMG, 0.5, 0.3, "paper")


def test_m1_m2_none_when_inputs_missing():
    A = m.lower_triangle_to_matrix(FIXTURE_ROWS)
    out = paper.m1_m2_from_inputs(A, [1, 1, 1], None, IMG, None, 0.3, "full")
    assert out["m1"] is None and out["m2"] is None and out["s_steps"] is None
    assert out["forgetting_steps"] == pytest.approx([0.0, 2.2, 5.2])


