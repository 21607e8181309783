"""Every baseline through the real trainer (``mcil.train.train``) on the tiny synav environment:
a schema-valid result.json, and — for the learners with data-dependent state — a run killed in
the middle of a task and resumed gives exactly the uninterrupted run's accuracy matrix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mcil.config import ConfigError, load_config
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


def test_joint_is_one_task_and_refuses_an_incremental_scenario(tiny_env, tmp_path):
    cfg = load_config(None, [o for o in tiny_env.overrides(**{"method.name": "joint", "optim.epochs": 1})
                             if not o.startswith("scenario.n_tasks")])
    result = train(cfg, tmp_path / "joint")
    assert np.array(result["accuracy_matrix"]).shape == (1, 1)
    assert len(result["scenario"]["tasks"]) == 1 and len(result["scenario"]["tasks"][0]) == 6
    with pytest.raises(ConfigError, match="method joint trains all classes in one task"):
        train(_cfg(tiny_env, "joint"), tmp_path / "joint-3")  # the user's scenario.n_tasks=3 wins the preset


@pytest.mark.parametrize("name", ["lwf", "replay", "ewc"])
def test_interrupted_run_resumes_to_the_same_result(tiny_env, tmp_path, name):
    cfg = _cfg(tiny_env, name, "optim.epochs=2", "checkpoint_every=1")
    full = train(cfg, tmp_path / "full")
    with pytest.raises(Interrupted):  # killed in the middle of task 2 (2 steps per epoch per task)
        train(cfg, tmp_path / "cut", stop_after_steps=6)
    resumed = train(cfg, tmp_path / "cut")
    assert resumed["accuracy_matrix"] == full["accuracy_matrix"]
    assert resumed["learner_statistics"] == full["learner_statistics"]
