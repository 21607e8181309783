"""The trainer for one configuration: schedule, data access, result.json, determinism, resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from mcil.config import load_config
from mcil.learners.base import Learner, Prediction
from mcil.learners.registry import register_learner
from mcil.schemas import validate_result
from mcil.train import Interrupted, NonFiniteLossError, lr_at, train
from mcil.train_data import absence_mask


@register_learner
class _LinearProbe(Learner):
    """Test learner: a linear head on pooled raw pixels + audio envelope, with dropout (so resume
    must restore the RNG) — trains, forgets, and is fast. (A random, un-pre-trained backbone maps
    every input to almost the same embedding, so raw features keep this test meaningful.)"""

    NAME = "test-linear-probe"
    MODALITIES = frozenset({"image", "audio"})
    nan = False  # tests flip this to make the loss non-finite

    def __init__(self, backbone, class_names, templates, cfg, options):
        super().__init__()
        self.head = nn.Linear(48 + 32, len(class_names))
        self.drop = nn.Dropout(0.3)
        self._classes: tuple[int, ...] = ()

    def begin_task(self, task):
        self._classes = task.classes

    def _features(self, batch):
        img = nn.functional.adaptive_avg_pool2d(batch.image, 4).flatten(1)  # (B, 48)
        aud = batch.audio.abs().unflatten(1, (32, -1)).mean(-1) * 10  # (B, 32) envelope
        return torch.cat([img, aud], -1)

    def train_step(self, batch):
        cls = torch.tensor(self._classes)
        logits = self.head(self.drop(self._features(batch)))[:, cls]
        target = (batch.labels.unsqueeze(1) == cls.unsqueeze(0)).float().argmax(1)
        loss = nn.functional.cross_entropy(logits, target)
        if self.nan:
            loss = loss * float("nan")
        return {"loss": loss}

    def predict(self, batch, classes):
        f = self._features(batch)
        logits = self.head(f)[:, torch.tensor(list(classes))]
        return Prediction(logits=logits, by_modality={"fused": logits}, features={"image": f[:, : f.shape[1] // 2]})


def _cfg(env, *extra):
    base = {"method.name": "test-linear-probe", "optim.epochs": 6, "optim.lr": 0.1}
    return load_config(None, env.overrides(**base) + list(extra))


# --------------------------------------------------------------------------------------------- pure


def test_lr_schedule_matches_official_cosine_lr():
    base = 1e-3
    assert lr_at(0, 100, 30, base) == pytest.approx(base / 30)
    assert lr_at(29, 100, 30, base) == pytest.approx(base)
    assert lr_at(30, 100, 30, base) == pytest.approx(base)  # cosine starts at its peak
    assert lr_at(65, 100, 30, base) == pytest.approx(0.5 * (1 + math.cos(math.pi * 35 / 70)) * base)
    assert lr_at(99, 100, 30, base) == pytest.approx(0.5 * (1 + math.cos(math.pi * 69 / 70)) * base)
    assert lr_at(5, 10, 0, base) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 10)) * base)


def test_absence_mask_is_exact_and_stable():
    ids = [f"s{i}" for i in range(200)]
    m = absence_mask(ids, 0.25, seed=0, salt="audio-test")
    assert int(m.sum()) == 50
    assert torch.equal(m, absence_mask(ids, 0.25, seed=0, salt="audio-test"))
    assert not torch.equal(m, absence_mask(ids, 0.25, seed=1, salt="audio-test"))
    assert not absence_mask(ids, 0.0, 0, "x").any() and absence_mask(ids, 1.0, 0, "x").all()
    # a sample's fate does not depend on its position in the list
    perm = list(reversed(ids))
    m2 = absence_mask(perm, 0.25, seed=0, salt="audio-test")
    assert {ids[i] for i in torch.nonzero(m).flatten().tolist()} == {perm[i] for i in torch.nonzero(m2).flatten().tolist()}


# ----------------------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def reference_run(tiny_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    return train(_cfg(tiny_env), out), out


def test_result_is_complete_and_consistent(reference_run):
    result, out = reference_run
    validate_result(json.loads((out / "result.json").read_text()))
    T = result["scenario"]["n_tasks"]
    A = np.array(result["accuracy_matrix"])
    assert A.shape == (T, T) and T == 3
    # per-step accuracy over all seen classes == sample-weighted diagonal block of the matrix
    n = np.array(result["n_test_per_task"])
    for t in range(T):
        expect = (A[t, : t + 1] * n[: t + 1]).sum() / n[: t + 1].sum()
        assert result["acc_per_step"][t] == pytest.approx(expect)
    assert result["metrics"]["aia"] == pytest.approx(np.mean(result["acc_per_step"]))
    assert result["metrics"]["last"] == pytest.approx(result["acc_per_step"][-1])
    assert sorted(result["scenario"]["class_order"]) == list(range(6))
    assert [len(t) for t in result["scenario"]["tasks"]] == [2, 2, 2]
    assert result["provenance"]["backbone_sha256"]
    assert result["provenance"]["cpu"]   # the CPU model: float32 numbers differ across CPUs
    assert result["provenance"]["cpu_signature"]["isa"]   # and what tells two hosts of one model name apart
    assert result["timings"]["train_samples"] > 0
    # a learner that trains beats chance on the task it just learned (scored among all seen classes)
    chance = np.mean([100 / (2 * (t + 1)) for t in range(T)])
    assert np.mean(np.diag(A)) > chance + 10
    assert not (out / "checkpoints").exists()  # removed once result.json is written


def test_same_seeds_identical_metrics_and_order_seed_changes_order(tiny_env, reference_run, tmp_path):
    result, _ = reference_run
    again = train(_cfg(tiny_env), tmp_path / "again")
    assert again["accuracy_matrix"] == result["accuracy_matrix"]
    assert again["metrics"] == result["metrics"]
    other = train(_cfg(tiny_env, "scenario.order_seed=1"), tmp_path / "other")
    assert other["scenario"]["class_order"] != result["scenario"]["class_order"]


def test_eval_future_next_skips_only_what_no_metric_uses(tiny_env, reference_run, tmp_path):
    result, _ = reference_run
    lean = train(_cfg(tiny_env, "eval_future=next"), tmp_path / "next")
    validate_result(json.loads((tmp_path / "next" / "result.json").read_text()))
    A, full = lean["accuracy_matrix"], result["accuracy_matrix"]
    assert A[0][2] is None  # after task 1, task 3 is two steps ahead: not evaluated
    assert all(A[t][j] == full[t][j] for t in range(3) for j in range(3) if j <= t + 1)
    for key in ("aia", "last", "forgetting", "bwt", "fwt"):
        assert lean["metrics"][key] == pytest.approx(result["metrics"][key]), key
    assert lean["metrics"]["paper"] == result["metrics"]["paper"]  # M1's last batch is a seen task's
    assert lean["metrics"]["compat"] == result["metrics"]["compat"]
    assert lean["accuracy_before_training"] == result["accuracy_before_training"]


def test_validation_runs_train_on_the_same_rows_and_evaluate_on_held_out_train_rows(tiny_env, tmp_path):
    # With val_per_class > 0 a run never trains on the validation rows; eval_split=val measures on them.
    on_test = train(_cfg(tiny_env, "data.val_per_class=2"), tmp_path / "test")
    on_val = train(_cfg(tiny_env, "data.val_per_class=2", "data.eval_split=val"), tmp_path / "val")
    n_classes = on_test["dataset"]["n_classes"]
    assert on_val["dataset"]["n_test"] == 2 * n_classes and on_val["dataset"]["eval_split"] == "val"
    assert on_test["dataset"]["n_train"] == on_val["dataset"]["n_train"]
    full = train(_cfg(tiny_env), tmp_path / "full")
    assert full["dataset"]["n_train"] == on_test["dataset"]["n_train"] + 2 * n_classes
    assert on_test["dataset"]["n_test"] == full["dataset"]["n_test"]
    assert on_val["accuracy_matrix"] != on_test["accuracy_matrix"]
    assert on_val["dataset"]["cache_keys"]["test"].startswith(on_val["dataset"]["cache_keys"]["train"].split("-fit-")[0])


def test_interrupted_run_resumes_to_identical_metrics(tiny_env, reference_run, tmp_path):
    result, _ = reference_run
    out = tmp_path / "resumed"
    cfg = _cfg(tiny_env, "checkpoint_every=1")
    with pytest.raises(Interrupted):
        train(cfg, out, stop_after_steps=7)  # mid task 1 (6 epochs x 2 steps = 12 steps per task)
    assert not (out / "result.json").exists()
    with pytest.raises(Interrupted):
        train(cfg, out, stop_after_steps=9)  # into task 2
    resumed = train(cfg, out)
    assert resumed["accuracy_matrix"] == result["accuracy_matrix"]
    assert resumed["metrics"] == result["metrics"]


def test_checkpoint_of_another_config_is_refused(tiny_env, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(_cfg(tiny_env, "checkpoint_every=1"), out, stop_after_steps=1)
    with pytest.raises(Exception, match="holds a checkpoint of another configuration"):
        train(_cfg(tiny_env, "loss.alpha=0.5"), out)


class _Payload:
    """A pickle that runs code when unpickled (what a crafted state.pt on a shared file system holds)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('payload ran')",)


@pytest.mark.parametrize("content", ["payload", "old-format"])
def test_resume_state_is_loaded_weights_only(tiny_env, tmp_path, content):
    """state.pt is read with weights_only=True: a pickle with a payload (or an old mcil's state, which
    held a dataclass) is refused with an error that says what to do, and the payload never runs."""
    from mcil.errors import UserError
    from mcil.train import RunState

    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(_cfg(tiny_env, "checkpoint_every=1"), out, stop_after_steps=1)
    state = out / "checkpoints" / "state.pt"
    saved = torch.load(state, weights_only=True)  # what mcil writes loads safely
    marker = tmp_path / "pwned"
    saved["state"] = _Payload(marker) if content == "payload" else RunState(**saved["state"])
    torch.save(saved, state)
    with pytest.raises(UserError, match=r"refusing to unpickle.*Delete .*checkpoints to start this run again"):
        train(_cfg(tiny_env, "checkpoint_every=1"), out)
    assert not marker.exists()
    assert not (out / "result.json").exists()


def test_nan_loss_stops_without_result(tiny_env, tmp_path, monkeypatch):
    monkeypatch.setattr(_LinearProbe, "nan", True)
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at task 1/3, step 1/"):
        train(_cfg(tiny_env), out)
    assert not (out / "result.json").exists()


def test_modality_absence_masks_reach_the_learner(tiny_env, tmp_path):
    res = train(_cfg(tiny_env, "data.missing_audio_test=1.0", "data.missing_audio_train=0.5"), tmp_path / "abs")
    assert res["config"]["data"]["missing_audio_test"] == 1.0
    # with all test audio dropped the probe sees zero audio features: results differ from the full run
    assert res["accuracy_matrix"] != train(_cfg(tiny_env), tmp_path / "full")["accuracy_matrix"]


@pytest.mark.slow
def test_sigkill_mid_task_then_resume_equals_uninterrupted(tiny_env, tmp_path):
    """A real SIGKILL of `mcil train` (the paper's method), then the same command again."""
    pytest.importorskip("mcil.method.mcil_learner")
    args = tiny_env.overrides(**{"method.name": "mcil", "optim.epochs": 3, "checkpoint_every": 1})
    full = tmp_path / "full"
    cmd = [sys.executable, "-m", "mcil.cli", "train", "--threads", "1", "--out"]
    subprocess.run(cmd + [str(full)] + args, check=True, capture_output=True, timeout=600)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + [str(killed)] + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = killed / "checkpoints" / "state.pt"
    deadline = time.time() + 300
    seen = 0
    while time.time() < deadline and proc.poll() is None:
        if state.exists():
            seen += 1
            if seen > 3:  # a few checkpoints into the run: mid-task
                break
        time.sleep(0.2)
    assert proc.poll() is None, "run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "result.json").exists()
    subprocess.run(cmd + [str(killed)] + args, check=True, capture_output=True, timeout=600)
    a = json.loads((full / "result.json").read_text())
    b = json.loads((killed / "result.json").read_text())
    assert a["accuracy_matrix"] == b["accuracy_matrix"]
    assert a["metrics"] == b["metrics"]
