"""Every baseline through the real trainer (``mcil.train.train``) on the tiny synav environment:
a schema-valid result.json, and — for the learners with data-dependent state — a run killed in
the middle of a task and resumed gives exactly the uninterrupted run's accuracy matrix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mcil.config import load_config
from mcil.train import Interrupted, train

ALL = ["zeroshot", "finetune", "lwf", "ewc", "replay", "coop", "simplecil", "ranpac", "moe-adapters", "av-concat"]
SMALL_OPTIONS = {"ranpac": ["method.options.M=64"], "ewc": ["method.options.fisher_samples=8"],
                 "replay": ["method.options.per_class=3"]}


def _cfg(env, name, *extra):
    over = env.overrides(**{"method.name": name, "optim.epochs": 1, "optim.lr": 0.01})
    return load_config(None, over + SMALL_OPTIONS.get(name, []) + list(extra))


@pytest.mark.parametrize("name", ALL)
def test_runs_through_the_trainer(tiny_env, tmp_path, name):
    result = train(_cfg(tiny_env, name), tmp_path / name)
    assert np.array(result["accuracy_matrix"]).shape == (3, 3)
    assert json.loads((tmp_path / name / "result.json").read_text())["method"]["name"] == name
    stats = result["learner_statistics"]
    assert stats["params"]["learner"] == result["params"]["per_task"][-1]["learner_total"]
    if name == "replay":
        assert stats["memory_total"] == 3 * 6


def test_joint_trains_every_class_in_one_task_whatever_the_scenario(tiny_env, tmp_path):
    result = train(_cfg(tiny_env, "joint", "optim.epochs=1"), tmp_path / "joint")  # the config says 3 tasks
    assert np.array(result["accuracy_matrix"]).shape == (1, 1)
    assert len(result["scenario"]["tasks"]) == 1 and len(result["scenario"]["tasks"][0]) == 6
    assert result["method"]["learner"] == "mcil" and result["method"]["preset"] == "joint"


@pytest.mark.parametrize("name", ["lwf", "replay", "ewc"])
def test_interrupted_run_resumes_to_the_same_result(tiny_env, tmp_path, name):
    cfg = _cfg(tiny_env, name, "optim.epochs=2", "checkpoint_every=1")
    full = train(cfg, tmp_path / "full")
    with pytest.raises(Interrupted):  # killed in the middle of task 2 (2 steps per epoch per task)
        train(cfg, tmp_path / "cut", stop_after_steps=6)
    resumed = train(cfg, tmp_path / "cut")
    assert resumed["accuracy_matrix"] == full["accuracy_matrix"]
    assert resumed["learner_statistics"] == full["learner_statistics"]
