"""mcil.grid, mcil.study_grid: the run grid without Snakemake (names, th axis, overrides, hash, keys, variants)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mcil import grid, study_grid
from mcil.config import load_config

REPO = Path(__file__).resolve().parents[1]

RUN = dict(dataset="synav-clean", method="mcil-gate-sample", T="5", th="0.8", alpha="0.7", seed="2")


def _default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "default.yaml").read_text())


def test_run_name_round_trips():
    name = grid.run_name(RUN, "0123abcd")
    assert name == "synav-clean/mcil-gate-sample/T5_th0.8_a0.7_s2-0123abcd"
    assert grid.parse_run_name(name) == {**RUN, "hash": "0123abcd"}
    assert grid.run_name(grid.parse_run_name(name), "0123abcd") == name
    # a longer path, a folder without hash, a gate word
    parsed = grid.parse_run_name(f"results/runs/base/{grid.run_name({**RUN, 'th': 'always'})[:-1]}")
    assert parsed == {**RUN, "th": "always", "hash": None}
    assert grid.parse_run_name("results/runs/synav-clean/mcil") is None


def test_run_dir_regex_is_the_one_aggregate_used():
    assert grid.RUN_DIR_RE.pattern == (
        r"(?P<dataset>[^/]+)/(?P<method>[^/]+)/T(?P<T>\d+)_th(?P<th>[^_/]+)_a(?P<alpha>[^_/]+)_s(?P<seed>\d+)"
        r"(?:-(?P<hash>[0-9a-f]{8}))?$"
    )


def test_gate_words_come_from_the_config_type():
    assert grid.GATE_WORDS == ("always", "never", "adaptive")


@pytest.mark.parametrize(
    "th, fusion, canonical",
    [
        ("0.8", {"th": "0.8", "gate": "batch"}, "0.8"),
        ("0.80", {"th": "0.80", "gate": "batch"}, "0.8"),
        ("1", {"th": "1", "gate": "batch"}, "1"),
        ("always", {"gate": "always"}, "always"),
        ("never", {"gate": "never"}, "never"),
        ("adaptive", {"gate": "adaptive"}, "adaptive"),
    ],
)
def test_th_both_ways(th, fusion, canonical):
    assert grid.th_fusion(th) == fusion
    assert grid.th_label(grid.th_fusion(th)) == canonical
    assert grid.th_fusion(canonical)["gate"] == fusion["gate"]


def test_th_label_of_fusion_configs():
    assert grid.th_label(None) == "0.8"
    assert grid.th_label({"gate": "batch", "th": 0.5}) == "0.5"
    assert grid.th_label({"gate": "sample", "th": 0.8}) == "sample-0.8"
    assert grid.th_label({"gate": "sample", "th": "0.8"}, default_th="0.8") == "sample"
    assert grid.th_label({"gate": "sample", "th": "always"}, default_th="0.8") == "sample-always"


def test_th_overrides_parse_as_the_fusion_config():
    for th in ("0.7", "never"):
        items = {f"fusion.{k}": v for k, v in grid.th_fusion(th).items()}
        cfg = load_config(overrides=[f"{k}={v}" for k, v in items.items()])
        assert grid.th_label({"gate": cfg.fusion.gate, "th": cfg.fusion.th}) == th


def test_overrides_hash_is_stable():
    # value of the implementation that lived in workflow/rules/common.smk (commit 3cf7873)
    items = {"data.name": "x", "data.root": "/a", "optim.lr": 0.001, "scenario.n_tasks": None, "flag": True,
             "order": [2, 0, 1], "fusion.th": "0.8", "fusion.gate": "batch", "train_seed": 3}
    assert grid.overrides_hash(items) == "e7fdefbe"
    # order-independent, locations left out
    moved = {**dict(reversed(list(items.items()))), "data.root": "/b", "backbone.checkpoint": "/c.pt"}
    assert grid.overrides_hash(moved) == "e7fdefbe"
    assert grid.overrides_hash({**items, "optim.lr": 0.01}) != "e7fdefbe"


def test_default_config_folder_names_are_the_pipelines():
    config = _default_config()
    runs = grid.all_runs(config)
    assert len(runs) == 117  # the training jobs of the default target
    run = dict(dataset="synav-clean", method="mcil", T="5", th="always", alpha="0.3", seed="0")
    assert run in runs
    items = grid.run_overrides(config, config["datasets"]["synav-clean"], run)
    # folder of this run in `snakemake -n` at commit 3cf7873
    assert grid.run_name(run, grid.overrides_hash(items)) == "synav-clean/mcil/T5_thalways_a0.3_s0-b65a12f8"
    assert grid.quote_overrides(items).endswith(
        "scenario.n_tasks=5 method.name=mcil fusion.gate=always loss.alpha=0.3 train_seed=0 scenario.order_seed=0"
    )


def test_groups_expand_and_report_bad_names():
    config = _default_config()
    sets = {"pair": ["a", "b"], "one": ["b"]}
    assert grid.expand_methods(["@pair", "@one", "c"], "g", sets) == ["a", "b", "c"]
    with pytest.raises(grid.GridError, match="'@nope' names no method set"):
        grid.expand_methods(["@nope"], "groups.x", sets)
    group = {"methods": ["m"], "th": ["0.5", "always"], "seeds": [0, 1]}
    runs = grid.expand_group(group, "g", ["d"], {"d": {}}, config["defaults"], sets)
    assert [(r["th"], r["seed"]) for r in runs] == [("0.5", "0"), ("0.5", "1"), ("always", "0"), ("always", "1")]
    with pytest.raises(grid.GridError, match="neither a number"):
        grid.expand_group({"methods": ["m"], "th": ["sometimes"]}, "g", ["d"], {"d": {}}, config["defaults"], sets)
    with pytest.raises(grid.GridError, match="has no task split"):
        grid.task_counts("d", {"tasks": {"5": {}}}, [10], 5)
    with pytest.raises(grid.GridError, match="is not a group"):
        grid.group_runs(config, "nope")


def test_variants_name_only_what_differs():
    base = {"optim.lr": 0.001, "optim.batch_size": 16}
    assert study_grid.variant_of({"optim.lr": "1e-3", "optim.batch_size": 16}, base) == (study_grid.BASE_VARIANT, {})
    assert study_grid.variant_of({"optim.lr": "1e-5", "optim.batch_size": 8}, base) == (
        "lr=1e-5,batch_size=8", {"optim.lr": "1e-5", "optim.batch_size": 8})
    part = {"variants": [{}, {"data.x": 1}], "grid": {"a": [1, 2]}}
    assert study_grid.grid_combos(part) == [{"a": 1}, {"a": 2}, {"data.x": 1, "a": 1}, {"data.x": 1, "a": 2}]


def test_run_keys_are_checked_against_run_config():
    assert grid.run_key_problem("optim.lr") is None
    assert grid.run_key_problem("method.options.anything.below") is None
    assert "'lrr' is not a key of section optim" in grid.run_key_problem("optim.lrr")
    assert "is not a key of the top level" in grid.run_key_problem("optimizer.lr")
    assert "fusion.th is a value" in grid.run_key_problem("fusion.th.x")
    with pytest.raises(grid.GridError, match=r"method_run.lwf: 'optim.lrr' is not a run configuration key"):
        grid.check_run_keys([("run", {"optim.lr": 1}), ("method_run.lwf", {"optim.lrr": 1})])
    config = _default_config()
    checks = yaml.safe_load((REPO / "config" / "checks.yaml").read_text())
    datasets = {**checks["datasets"], **config["datasets"]}
    grid.check_run_keys(grid.run_key_sections(config, datasets, checks, "config/checks.yaml"))


def test_paths_resolve_or_name_the_missing_entry():
    assert grid.resolve("{root}/x", {"root": "/data"}) == "/data/x"
    with pytest.raises(grid.MissingPath) as err:
        grid.resolve("{root}/x", {"root": None})
    assert err.value.args[0] == "root"
    config = {"backbone": {"name": "audioclip", "checkpoint": "{ckpt}"}, "paths": {"ckpt": None},
              "data_dir": "data", "datasets": {}}
    assert grid.missing_inputs(config, []) == ["paths.ckpt is not set (needed by backbone.checkpoint (audioclip))"]
    assert "paths=\"{ckpt: /path/to/ckpt}\"" in grid.missing_inputs_hint(config)
