"""The gradient-ratio record through the real trainer: in result.json per task, schema-valid, and
identical after a run is interrupted inside a task's probed steps and resumed."""

from __future__ import annotations

import math

import pytest

from mcil.config import load_config
from mcil.train import Interrupted, train


def test_loss_gradients_reach_result_json_and_survive_resume(tiny_env, tmp_path):
    over = tiny_env.overrides(**{"method.name": "mcil", "optim.epochs": 2, "checkpoint_every": 1, "fusion.gate": "always"})
    cfg = load_config(None, over)
    full = train(cfg, tmp_path / "full")  # train() validates result.json against the schema
    rec = full["learner_statistics"]["loss_gradients"]
    assert rec["probe_steps"] == 3
    assert set(rec["per_task"]) == {str(t) for t in range(len(full["scenario"]["tasks"]))}
    for key, task in rec["per_task"].items():
        assert len(task["steps"]) == 3, key
        for where in ("ratio_fusion_params", "ratio_fused_features"):
            assert math.isfinite(task[where]) and task[where] > 0, (key, where)
        assert task["ratio_fused_features"] == pytest.approx(1.0, rel=1e-4)  # default mi_scale=grad-norm
    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "cut", stop_after_steps=1)  # inside task 1's probed steps
    resumed = train(cfg, tmp_path / "cut")
    assert resumed["learner_statistics"]["loss_gradients"] == rec
