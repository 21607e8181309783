"""Recommended metrics (mcil.metrics) against hand-computed matrices."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import mcil.metrics as m
from mcil.errors import UserError

from metric_matrices import A0_4, A4, C4, FIXTURE_ROWS, N4

NAN = math.nan


def test_seen_accuracy_is_sample_weighted():
    # t1: (10*70 + 20*80)/30; t2: (10*95 + 20*60 + 30*85)/60; t3: (500+1300+2100+3800)/100
    acc = m.seen_accuracy(A4, N4)
    assert acc == pytest.approx([90.0, 2300 / 30, 4700 / 60, 77.0])


def test_aia_variants():
    acc = m.seen_accuracy(A4, N4)
    assert m.average_incremental_accuracy(acc) == pytest.approx(80.5)
    # task-balanced rows: 90, 75, (95+60+85)/3 = 80, (50+65+70+95)/4 = 70
    assert m.aia_task_balanced(A4) == pytest.approx(78.75)
    # class-weighted rows: 90, 520/7, 730/9, 63
    assert m.aia_class_weighted(A4, C4) == pytest.approx(19429 / 252)
    assert m.last_accuracy(acc) == pytest.approx(77.0)


def test_forgetting_per_step_chaudhry():
    f = m.forgetting_per_step(A4)
    assert math.isnan(f[0])
    # t1: 90-70; t2: (max(90,70)-95 + 80-60)/2; t3: (95-50 + max(80,60)-65 + 85-70)/3
    assert f[1:] == pytest.approx([20.0, 7.5, 25.0])
    assert m.forgetting(A4) == pytest.approx(25.0)


def test_bwt_per_step_gem():
    b = m.bwt_per_step(A4)
    assert math.isnan(b[0])
    # t1: 70-90; t2: (95-90 + 60-80)/2; t3: (50-90 + 65-80 + 70-85)/3
    assert b[1:] == pytest.approx([-20.0, -7.5, -70 / 3])
    assert m.bwt(A4) == pytest.approx(-70 / 3)


def test_fwt_gem_uses_superdiagonal_and_A0():
    # (A[0,1]-b1 + A[1,2]-b2 + A[2,3]-b3)/3 = (8 + 5 + 0)/3
    assert m.fwt(A4, A0_4) == pytest.approx(13 / 3)


def test_fwt_needs_before_training_accuracy():
    A = np.array(A4)
    A[1, 2] = np.nan
    with pytest.raises(m.MetricInputError, match=r"A\[1\]\[2\]"):
        m.fwt(A, A0_4)


def test_two_tasks_forgetting_positive():
    A = [[80.0, 5.0], [60.0, 90.0]]
    assert m.forgetting(A) == pytest.approx(20.0)
    assert m.bwt(A) == pytest.approx(-20.0)
    assert m.fwt(A, [10.0, 2.0]) == pytest.approx(3.0)
    assert m.seen_accuracy(A, [100, 300]) == pytest.approx([80.0, 82.5])
    assert m.aia_class_weighted(A, [3, 1]) == pytest.approx((80 + 67.5) / 2)


def test_fixture_correct_values():
    A = m.lower_triangle_to_matrix(FIXTURE_ROWS)
    f = m.forgetting_per_step(A)
    assert f[1:] == pytest.approx([2.2, 5.2])
    assert m.bwt(A) == pytest.approx(-5.2)
    acc = m.seen_accuracy(A, [500, 500, 500])
    assert acc == pytest.approx([98.4, 94.7, 267.8 / 3])
    assert m.average_incremental_accuracy(acc) == pytest.approx((98.4 + 94.7 + 267.8 / 3) / 3)


def test_summarise_keys_and_values():
    acc = m.seen_accuracy(A4, N4)
    s = m.summarise(A4, N4, C4, acc, A0=A0_4)
    for key in ("aia", "aia_task_balanced", "last", "forgetting", "bwt", "fwt"):
        assert key in s
    assert s["aia"] == pytest.approx(80.5)
    assert s["aia_task_balanced"] == pytest.approx(78.75)
    assert s["last"] == pytest.approx(77.0)
    assert s["forgetting"] == pytest.approx(25.0)
    assert s["bwt"] == pytest.approx(-70 / 3)
    assert s["fwt"] == pytest.approx(13 / 3)
    assert all(isinstance(v, float) for v in s.values())
    assert math.isnan(m.summarise(A4, N4, C4)["fwt"])
    series = m.per_step(A4, N4)
    assert series["acc_steps"] == pytest.approx([90.0, 2300 / 30, 4700 / 60, 77.0])
    assert series["forgetting_steps"][1:] == pytest.approx([20.0, 7.5, 25.0])
    assert series["bwt_steps"][1:] == pytest.approx([-20.0, -7.5, -70 / 3])


def test_summarise_cross_checks_trainer_accuracy():
    acc = m.seen_accuracy(A4, N4)
    acc[2] += 0.5
    with pytest.raises(m.MetricInputError, match=r"acc_steps\[2\]"):
        m.summarise(A4, N4, C4, acc)


def test_single_task_is_nan_and_json_safe():
    A = [[73.0]]
    s = m.summarise(A, [5], [2], [73.0], A0=[1.0])
    assert s["aia"] == pytest.approx(73.0) and s["last"] == pytest.approx(73.0)
    assert math.isnan(s["forgetting"]) and math.isnan(s["bwt"]) and math.isnan(s["fwt"])
    safe = m.json_safe({**s, **m.per_step(A, [5])})
    assert safe["forgetting"] is None and safe["forgetting_steps"] == [None]
    json.dumps(safe, allow_nan=False)


def test_zero_test_samples_names_the_task():
    with pytest.raises(m.MetricInputError, match=r"task 2 \(0-based\) has no test samples"):
        m.seen_accuracy(A4, [10, 20, 0, 40])
    with pytest.raises(UserError):
        m.summarise(A4, [10, 20, 0, 40], C4)


@pytest.mark.parametrize(
    "bad",
    [
        [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],  # 2x3
        [1.0, 2.0],  # 1-D
        np.zeros((0, 0)),  # empty
    ],
)
def test_non_square_matrix_rejected(bad):
    with pytest.raises(m.MetricInputError, match="square"):
        m.as_accuracy_matrix(bad)


def test_matrix_entry_checks():
    with pytest.raises(m.MetricInputError, match=r"A\[1\]\[1\]"):
        m.as_accuracy_matrix([[50.0, NAN], [40.0, NAN]])
    with pytest.raises(m.MetricInputError, match=r"\[0, 100\]"):
        m.as_accuracy_matrix([[50.0, NAN], [40.0, 100.5]])
    with pytest.raises(m.MetricInputError, match=r"A\[0\]\[1\]"):
        m.as_accuracy_matrix([[50.0, -1.0], [40.0, 60.0]])
    # None above the diagonal (JSON null) is an unmeasured entry
    M = m.as_accuracy_matrix([[50.0, None], [40.0, 60.0]])
    assert math.isnan(M[0, 1])


def test_length_mismatch_rejected():
    with pytest.raises(m.MetricInputError, match="T = 4"):
        m.seen_accuracy(A4, [10, 20, 30])
    with pytest.raises(m.MetricInputError, match="n_classes"):
        m.aia_class_weighted(A4, [1, 1, 1, 1, 1])
    with pytest.raises(m.MetricInputError, match="acc_steps"):
        m.summarise(A4, N4, C4, [90.0, 80.0])
    with pytest.raises(m.MetricInputError, match="A0"):
        m.fwt(A4, [1.0, 2.0])


def test_lower_triangle_to_matrix():
    M = m.lower_triangle_to_matrix(FIXTURE_ROWS)
    assert M.shape == (3, 3)
    assert M[2, 1] == 90.8 and math.isnan(M[0, 1]) and math.isnan(M[1, 2])
    with pytest.raises(m.MetricInputError, match="row 1"):
        m.lower_triangle_to_matrix([[1.0], [2.0]])


def test_lazy_submodules():
    assert m.compat.continuum_1_2_7 is not None
    assert callable(m.paper.mutual_information)


def test_forgetting_beyond_zero_shot_on_a_hand_computed_matrix():
    # trained: F_3 = ((90 − 60) + (80 − 75)) / 2 = 17.5
    A = m.lower_triangle_to_matrix([[90.0], [70.0, 80.0], [60.0, 75.0, 85.0]])
    # frozen zero-shot, same order: F_3 = ((50 − 35) + (45 − 42)) / 2 = 9 from label-space growth alone
    Z = m.lower_triangle_to_matrix([[50.0], [40.0, 45.0], [35.0, 42.0, 48.0]])
    assert m.forgetting_beyond_reference(A, Z) == pytest.approx(17.5 - 9.0)
    assert m.forgetting_beyond_reference(Z, Z) == 0.0
    assert math.isnan(m.forgetting_beyond_reference([[50.0]], [[40.0]]))
    with pytest.raises(m.MetricInputError, match="same T"):
        m.forgetting_beyond_reference(A, [[50.0]])
