"""Peer-compatible variants (mcil.metrics.compat) against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

import mcil.metrics as m
from mcil.metrics import compat

from metric_matrices import A4, C4, FIXTURE_ROWS, N4


def test_continuum_fixture_reproduces_logged_values():
    A = m.lower_triangle_to_matrix(FIXTURE_ROWS)
    out = compat.continuum_1_2_7(A, [500, 500, 500])
    # logged forgetting: 0.0 after task index 1, (98.4 - 90.4)/2 = 4.0 after task 2
    assert out["forgetting_steps"] == pytest.approx([0.0, 0.0, 4.0])
    # logged BWT: 0 after task 1, (90.4 - 98.4)/3 after task 2
    assert out["backward_transfer_steps"] == pytest.approx([0.0, 0.0, -8.0 / 3])
    assert round(out["backward_transfer"], 2) == -2.67
    # "fwt" = mean of old-task accuracies: 96.2, then (96.2 + 90.4 + 90.8)/3
    assert out["forward_transfer_steps"] == pytest.approx([0.0, 96.2, 277.4 / 3])
    assert out["accuracy_A"] == pytest.approx(555.6 / 6)
    assert out["accuracy_per_task"] == pytest.approx([90.4, 90.8, 86.6])
    assert out["accuracy_steps"] == pytest.approx([98.4, 94.7, 267.8 / 3])
    # and the correct values differ
    assert m.forgetting_per_step(A)[1:] == pytest.approx([2.2, 5.2])


def test_continuum_two_tasks_forgetting_is_zero():
    A = [[80.0, np.nan], [60.0, 90.0]]
    out = compat.continuum_1_2_7(A, [100, 300])
    assert out["forgetting"] == 0.0
    assert out["backward_transfer"] == 0.0
    assert out["forward_transfer"] == pytest.approx(60.0)
    assert m.forgetting(A) == pytest.approx(20.0)


def test_continuum_four_tasks_per_step():
    out = compat.continuum_1_2_7(A4, N4)
    # k=3: (R00 - R20)/2 = -2.5; k=4: ((max(90,70) - 50) + (80 - 65))/3
    assert out["forgetting_steps"] == pytest.approx([0.0, 0.0, -2.5, 55 / 3])
    # k=3: (95-90)/3; k=4: (5 + (50-90) + (65-80))/6
    assert out["backward_transfer_steps"] == pytest.approx([0.0, 0.0, 5 / 3, -50 / 6])
    # strictly-lower means: 70; (70+95+60)/3; (70+95+60+50+65+70)/6
    assert out["forward_transfer_steps"] == pytest.approx([0.0, 70.0, 75.0, 410 / 6])
    assert out["accuracy_A_steps"] == pytest.approx([90.0, 80.0, 80.0, 76.0])
    assert out["average_incremental_accuracy"] == pytest.approx(80.5)
    assert out["accuracy"] == pytest.approx(77.0)


def test_continuum_single_task():
    out = compat.continuum_1_2_7([[42.0]], [3])
    assert out["forgetting"] == out["backward_transfer"] == out["forward_transfer"] == 0.0
    assert out["accuracy_A"] == pytest.approx(42.0)


def test_pilot_max_includes_current_step():
    out = compat.pilot(A4, N4)
    # t2: (max(90,70,95) - 95 + max(80,60) - 60)/2 = 10 (Chaudhry gives 7.5)
    assert math.isnan(out["forgetting_steps"][0])
    assert out["forgetting_steps"][1:] == pytest.approx([20.0, 10.0, 25.0])
    assert out["forgetting"] == pytest.approx(25.0)
    assert out["average"] == pytest.approx(80.5)
    assert out["last"] == pytest.approx(77.0)
    assert out["curve"] == pytest.approx(list(m.seen_accuracy(A4, N4)))


def test_pilot_fixture():
    A = m.lower_triangle_to_matrix(FIXTURE_ROWS)
    assert compat.pilot(A, [1, 1, 1])["forgetting"] == pytest.approx(5.2)


def test_mammoth_values():
    out = compat.mammoth(A4, [1.0, 2.0, 3.0, 4.0])
    assert out["accuracy_steps"] == pytest.approx([90.0, 75.0, 80.0, 70.0])
    assert out["accuracy"] == pytest.approx(70.0)
    assert out["forgetting"] == pytest.approx(25.0)
    assert out["bwt"] == pytest.approx(-70 / 3)
    assert out["fwt"] == pytest.approx(13 / 3)
    assert math.isnan(compat.mammoth(A4)["fwt"])


def test_mammoth_forgetting_sees_before_training_entry():
    # Mammoth appends A[0,1] = 70 (before training task 1) to row 0: max of column 1 is 70.
    A = [[50.0, 70.0, np.nan], [45.0, 60.0, 5.0], [40.0, 55.0, 80.0]]
    assert compat.mammoth(A)["forgetting"] == pytest.approx(((50 - 40) + (70 - 55)) / 2)
    assert m.forgetting(A) == pytest.approx(((50 - 40) + (60 - 55)) / 2)
    # not measured -> zero padding -> same as Chaudhry here
    A[0][1] = np.nan
    assert compat.mammoth(A)["forgetting"] == pytest.approx(7.5)


def test_mammoth_single_task_nan():
    out = compat.mammoth([[30.0]], [1.0])
    assert math.isnan(out["forgetting"]) and math.isnan(out["bwt"]) and math.isnan(out["fwt"])


def test_facil_values():
    out = compat.facil(A4, C4)
    assert out["avg_accs"] == pytest.approx([90.0, 75.0, 80.0, 70.0])
    assert out["wavg_accs"] == pytest.approx([90.0, 520 / 7, 730 / 9, 63.0])
    forg = np.array(out["forg"])
    expected = np.zeros((4, 4))
    expected[1, 0] = 20.0
    expected[2, :2] = [-5.0, 20.0]
    expected[3, :3] = [45.0, 15.0, 15.0]
    np.testing.assert_allclose(forg, expected)
    assert math.isnan(out["forg_avg_steps"][0])
    assert out["forg_avg_steps"][1:] == pytest.approx([20.0, 7.5, 25.0])
    assert out["forgetting"] == pytest.approx(25.0)


def test_avcil_average_forgetting_is_mean_over_steps():
    out = compat.avcil(A4, N4)
    assert out["forgetting_steps"][1:] == pytest.approx([20.0, 7.5, 25.0])
    assert out["average_forgetting"] == pytest.approx((20.0 + 7.5 + 25.0) / 3)
    assert out["mean_accuracy"] == pytest.approx(80.5)
    A = m.lower_triangle_to_matrix(FIXTURE_ROWS)
    assert compat.avcil(A, [1, 1, 1])["average_forgetting"] == pytest.approx((2.2 + 5.2) / 2)
    assert math.isnan(compat.avcil([[10.0]], [1])["average_forgetting"])


def test_compat_validates_inputs():
    with pytest.raises(m.MetricInputError):
        compat.continuum_1_2_7([[1.0, 2.0]], [1])
    with pytest.raises(m.MetricInputError, match="task 1"):
        compat.avcil([[10.0, np.nan], [5.0, 6.0]], [3, 0])
    with pytest.raises(m.MetricInputError, match="n_classes"):
        compat.facil(A4, [1, 1, 0, 1])
