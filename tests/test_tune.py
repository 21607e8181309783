"""mcil tune: steps run on the validation split only, picks follow the rule, a finished tune is reused."""

from __future__ import annotations

import argparse
import json

import pytest

from mcil import tune
from mcil.errors import UserError


def test_pick_best_and_flattened():
    scores = {"1": 60.0, "2": 70.5, "4": 71.0, "8": 70.8}
    values = ("1", "2", "4", "8")
    assert tune.pick_value(scores, values, "best", 1.0) == "4"
    assert tune.pick_value(scores, values, "flattened", 1.0) == "2"     # within 1 point of the best
    assert tune.pick_value(scores, values, "flattened", 0.1) == "4"
    assert tune.pick_value({"a": 5.0, "b": 5.0}, ("a", "b"), "best", 1.0) == "a"   # ties: the earlier one


def _spec(tmp_path, tiny_env, **base):
    spec = {
        "base": {**dict(o.split("=", 1) for o in tiny_env.overrides()), "data.val_per_class": 2,
                 "data.eval_split": "val", "optim.epochs": 1, **base},
        "seeds": [0],
        "steps": [
            {"name": "schedule", "key": "optim.epochs", "values": [1, 2], "methods": ["finetune", "lwf"],
             "pick": "flattened", "shared": True, "tolerance": 100.0},
            {"name": "lr", "key": "optim.lr", "values": ["1e-4", "1e-1"], "methods": ["finetune"]},
        ],
    }
    import yaml

    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_tune_runs_on_validation_and_chooses_in_order(tmp_path, tiny_env):
    out = tmp_path / "out"
    parser = argparse.ArgumentParser()
    tune.configure_parser(parser)
    assert tune.run_cli(parser.parse_args(["--spec", str(_spec(tmp_path, tiny_env)), "--out", str(out)])) == 0
    sel = json.loads((out / "selection.json").read_text())
    # tolerance 100: the first epoch count is "flattened" for both methods, and lr is tuned at it.
    assert sel["chosen"]["finetune"]["optim.epochs"] == "1" and sel["chosen"]["lwf"]["optim.epochs"] == "1"
    assert sel["chosen"]["finetune"]["optim.lr"] in ("1e-4", "1e-1")
    lr_runs = [r for r in sel["runs"] if r["step"] == "lr"]
    best = max(lr_runs, key=lambda r: r["val_score"])
    assert sel["chosen"]["finetune"]["optim.lr"] == best["value"]
    for result in out.glob("runs/**/result.json"):
        r = json.loads(result.read_text())
        assert r["dataset"]["eval_split"] == "val" and r["dataset"]["n_test"] == 2 * r["dataset"]["n_classes"]
    [lr_file] = out.glob("runs/lr/finetune/optim.lr=1e-1_s0-*/result.json")
    lr_run = json.loads(lr_file.read_text())
    assert lr_run["resolved_config"]["optim"]["epochs"] == 1    # the schedule step's choice carried over
    assert sel["shared"] == {"optim.epochs": "1"}
    md = (out / "selection.md").read_text()
    assert "## lr: `optim.lr` (best)" in md and "| finetune |" in md
    # A second call reuses every finished run (no training) and writes the same selection.
    mtimes = {p: p.stat().st_mtime for p in out.glob("runs/**/result.json")}
    tune.run_tune(tune.load_spec(_spec(tmp_path, tiny_env)), out)
    assert {p: p.stat().st_mtime for p in out.glob("runs/**/result.json")} == mtimes
    assert json.loads((out / "selection.json").read_text())["chosen"] == sel["chosen"]


def test_a_shared_choice_reaches_methods_outside_its_step_and_folders_name_the_settings(tmp_path, tiny_env):
    import yaml

    spec = yaml.safe_load(_spec(tmp_path, tiny_env).read_text())
    spec["steps"][0]["values"] = [2, 1]          # the shared schedule step now picks 2 epochs
    spec["steps"][1]["methods"] = ["finetune", "ewc"]
    spec["steps"][1]["values"] = ["1e-2"]
    path = tmp_path / "tune2.yaml"
    path.write_text(yaml.safe_dump(spec))
    sel = tune.run_tune(tune.load_spec(path), tmp_path / "out2")
    [ewc_file] = (tmp_path / "out2").glob("runs/lr/ewc/optim.lr=1e-2_s0-*/result.json")
    assert json.loads(ewc_file.read_text())["resolved_config"]["optim"]["epochs"] == 2   # ewc was not in step 1
    assert sel["chosen"]["ewc"] == {"optim.lr": "1e-2"} and sel["shared"] == {"optim.epochs": "2"}


def test_tune_refuses_to_choose_on_test(tmp_path, tiny_env):
    spec = tune.load_spec(_spec(tmp_path, tiny_env, **{"data.eval_split": "test"}))
    with pytest.raises(UserError, match="data.eval_split=val"):
        tune.run_tune(spec, tmp_path / "out")


def test_bad_spec_names_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - {name: x, key: optim.lr}\n")
    with pytest.raises(UserError, match=r"steps\[0\] lacks 'values'"):
        tune.load_spec(bad)
    with pytest.raises(UserError, match="does not exist"):
        tune.load_spec(tmp_path / "nope.yaml")
    good = tmp_path / "good.yaml"
    good.write_text("steps:\n  - {name: x, key: optim.lr, values: [1e-3], methods: [mcil]}\n")
    parser = argparse.ArgumentParser()
    tune.configure_parser(parser)
    with pytest.raises(UserError, match="'data.root' is not key=value"):
        tune.run_cli(parser.parse_args(["--spec", str(good), "data.root"]))


def test_parallel_jobs_choose_the_same_as_one_job(tmp_path, tiny_env):
    """--jobs 2 trains a step's runs in two worker processes; the runs and the choices are those of one job."""
    spec = tune.load_spec(_spec(tmp_path, tiny_env))
    one = tune.run_tune(spec, tmp_path / "one")
    two = tune.run_tune(spec, tmp_path / "two", jobs=2)
    assert two["chosen"] == one["chosen"] and two["decisions"] == one["decisions"]
    assert [(r["step"], r["method"], r["value"], r["val_score"]) for r in two["runs"]] == [
        (r["step"], r["method"], r["value"], r["val_score"]) for r in one["runs"]
    ]
    with pytest.raises(UserError, match="--jobs 0 must be >= 1"):
        tune.run_tune(spec, tmp_path / "none", jobs=0)


def test_a_run_another_step_already_made_is_reused_not_retrained(tmp_path, tiny_env, monkeypatch):
    """Step 2's first candidate (lr 1e-3 at the chosen 1 epoch) is step 1's run at 1 epoch: copied."""
    import yaml

    spec_path = _spec(tmp_path, tiny_env, **{"optim.lr": "1e-3"})
    data = yaml.safe_load(spec_path.read_text())
    data["steps"][1]["values"] = ["1e-3", "1e-1"]
    spec_path.write_text(yaml.safe_dump(data))
    trained = []
    real = tune._train_one
    monkeypatch.setattr(tune, "_train_one", lambda o, f, t: trained.append(f) or real(o, f, t))
    sel = tune.run_tune(tune.load_spec(spec_path), tmp_path / "out")
    assert len(trained) == 4 + 1  # schedule: 2 methods x 2 epochs; lr: only 1e-1 is new
    [copy] = (tmp_path / "out").glob("runs/lr/finetune/optim.lr=1e-3_s0-*/result.json")
    [orig] = (tmp_path / "out").glob("runs/schedule/finetune/optim.epochs=1_s0-*/result.json")
    assert copy.read_text() == orig.read_text() and copy.parent.name.split("-")[-1] == orig.parent.name.split("-")[-1]
    assert {r["value"] for r in sel["runs"] if r["step"] == "lr"} == {"1e-3", "1e-1"}


def test_next_value_continues_the_grid_progression():
    lrs = ["1e-4", "3e-4", "1e-3", "3e-3", "1e-2", "3e-2"]
    assert tune.next_value(lrs, "up") == "1e-1" and tune.next_value([*lrs, "1e-1"], "up") == "3e-1"
    assert tune.next_value(lrs, "down") == "3e-5" and tune.next_value(["3e-5", *lrs], "down") == "1e-5"
    assert tune.next_value(["2", "4", "8"], "up") == "16" and tune.next_value(["2", "4", "8"], "down") == "1"
    assert tune.next_value(["1", "2"], "down") is None                      # 0.5 epochs: not an integer
    assert tune.next_value(["0.1", "0.3", "1.0"], "down") == "0.03"
    assert tune.next_value(["64", "16"], "up") is None                      # not increasing
    assert tune.next_value(["grad-norm", "none"], "up") is None
    with pytest.raises(UserError, match="extend needs at least two positive numeric values"):
        tune.TuneStep(name="b", key="optim.batch_size", values=("64", "16"), methods=("joint",), extend=1)


def _fake_training(monkeypatch, score):
    """Replace training by a result.json whose validation AIA is ``score(method, key=value overrides)``."""
    trained = []

    def fake(overrides, folder, threads):
        kv = dict(o.split("=", 1) for o in overrides)
        path = tune.Path(folder) / "result.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        aia = float(score(kv["method.name"], kv))
        path.write_text(json.dumps({"metrics": {"aia": aia, "last": aia}, "accuracy_matrix": [[aia], [aia, aia]],
                                    "timings": {"train_s": 0.0}}))
        trained.append(folder)
        return str(path)

    monkeypatch.setattr(tune, "_train_one", fake)
    return trained


def test_a_choice_at_the_edge_of_its_grid_extends_the_grid(tmp_path, tiny_env, monkeypatch):
    """lr keeps rising for finetune (two extensions, then the cap), peaks inside the grid for lwf (none);
    an epoch curve still rising at its end grows, one falling from its start never goes below its floor."""
    import math

    import yaml

    def score(method, kv):
        lr, epochs = math.log10(float(kv["optim.lr"])), int(kv["optim.epochs"])
        if method == "finetune":
            return 50 + 5 * lr + epochs            # rises with lr and with length
        return 60 - abs(lr + 3.5) - epochs          # lwf: best lr 3e-4, shortest length best

    trained = _fake_training(monkeypatch, score)
    spec = yaml.safe_load(_spec(tmp_path, tiny_env).read_text())
    spec["steps"] = [
        {"name": "lr", "key": "optim.lr", "values": ["1e-4", "3e-4", "1e-3"], "methods": ["finetune", "lwf"],
         "extend": 2},
        {"name": "length", "key": "optim.epochs", "values": [2, 4], "methods": ["finetune", "lwf"],
         "pick": "flattened", "tolerance": 1.0, "extend": 1},
    ]
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(spec))
    sel = tune.run_tune(tune.load_spec(path), tmp_path / "out")
    assert sel["chosen"]["finetune"] == {"optim.lr": "1e-2", "optim.epochs": "8"}
    assert sel["chosen"]["lwf"] == {"optim.lr": "3e-4", "optim.epochs": "2"}
    by_step = {(d["step"], d["methods"][0]): d for d in sel["decisions"]}
    assert by_step["lr", "finetune"]["extended"] == ["3e-3", "1e-2"] and by_step["lr", "lwf"]["extended"] == []
    assert list(by_step["lr", "finetune"]["scores"]) == ["1e-4", "3e-4", "1e-3", "3e-3", "1e-2"]
    assert by_step["length", "finetune"]["extended"] == ["8"] and by_step["length", "lwf"]["extended"] == []
    assert len(trained) == (5 + 3) + (3 + 2)          # no run of lwf past its grid, no length below 2
    md = (tmp_path / "out" / "selection.md").read_text()
    # the lr step runs at the base's 1 epoch: finetune 51 + 5 log10(lr), lwf 59 - |log10(lr) + 3.5|
    assert "| finetune | 31.0 | 33.4 | 36.0 | 38.4 | **41.0** | 1e-2 |" in md
    assert "| lwf | 58.5 | **59.0** | 58.5 | – | – | 3e-4 |" in md
    assert "Grid extended past an edge" in md and "finetune: 3e-3, 1e-2" in md


def test_a_shared_step_extends_all_its_methods_together(tmp_path, tiny_env, monkeypatch):
    import yaml

    _fake_training(monkeypatch, lambda method, kv: 40 + 3 * int(kv["optim.epochs"]) + (method == "lwf"))
    spec = yaml.safe_load(_spec(tmp_path, tiny_env).read_text())
    spec["steps"] = [{"name": "schedule", "key": "optim.epochs", "values": [1, 2], "methods": ["finetune", "lwf"],
                      "pick": "flattened", "shared": True, "tolerance": 1.0, "extend": 1}]
    path = tmp_path / "shared.yaml"
    path.write_text(yaml.safe_dump(spec))
    sel = tune.run_tune(tune.load_spec(path), tmp_path / "out")
    assert sel["shared"] == {"optim.epochs": "4"}
    assert sel["decisions"][0]["extended"] == ["4"] and list(sel["decisions"][0]["scores"]) == ["1", "2", "4"]


def _selection(runs, decisions):
    return {"seeds": [0, 1], "base": {}, "shared": {}, "chosen": {}, "decisions": decisions,
            "runs": [{"step": st, "method": m, "key": "optim.lr", "value": v, "seed": s, "val_score": x, "train_s": 1.0}
                     for st, m, v, s, x in runs]}


def test_seed_margins_compare_the_choice_with_its_strongest_rival_seed_by_seed():
    runs = [("lr", "a", "1", 0, 80.0), ("lr", "a", "1", 1, 70.0),      # mean 75: chosen
            ("lr", "a", "2", 0, 78.0), ("lr", "a", "2", 1, 71.0),      # mean 74.5: the rival
            ("lr", "a", "3", 0, 10.0), ("lr", "a", "3", 1, 10.0),
            ("lr", "b", "1", 0, 50.0), ("lr", "b", "1", 1, 52.0),      # another method of the step: not mixed in
            ("lr", "b", "2", 0, 40.0), ("lr", "b", "2", 1, 41.0)]
    dec_a = {"step": "lr", "key": "optim.lr", "methods": ["a"], "value": "1", "pick": "best",
             "scores": {"1": 75.0, "2": 74.5, "3": 10.0}}
    dec_b = {"step": "lr", "key": "optim.lr", "methods": ["b"], "value": "1", "pick": "best",
             "scores": {"1": 51.0, "2": 40.5}}
    sel = _selection(runs, [dec_a, dec_b])
    assert tune.seed_margins(sel, dec_a) == ("2", {0: 2.0, 1: -1.0})
    assert tune.seed_margins(sel, dec_b) == ("2", {0: 10.0, 1: 11.0})
    # A shared step scores a seed by the mean over its methods at that seed.
    shared = {**dec_a, "methods": ["a", "b"], "scores": {"1": 63.0, "2": 57.5}}
    assert tune.seed_margins(sel, shared) == ("2", {0: 6.0, 1: 5.0})
    assert tune.seed_margins(sel, {**dec_a, "scores": {"1": 75.0}}) is None   # one candidate: no rival
    md = tune.selection_markdown(sel)
    assert "| a | **75.0** | 74.5 | 10.0 | 1 | +2.0 / -1.0 (vs 2) |" in md
    assert "| b | **51.0** | 40.5 | – | 1 | +10.0 / +11.0 (vs 2) |" in md
    assert "agree on the sign of the chosen value's margin over its rival in 1 of 2 choices" in md
    assert "does not resolve: lr a (1 vs 2)." in md
