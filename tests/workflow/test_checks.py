"""`snakemake checks`: dry runs of the validation studies (config/checks.yaml) against an independent count.

Each run uses ``--directory`` on a temporary folder, so nothing is read from or written to the repository's
data/, results/ or figures/ (the checks file is found in the repository).
"""

from __future__ import annotations

import itertools
import re
import shutil

import pytest
import yaml
from test_pipeline import REPO, job_counts, snakemake

pytestmark = pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake is not installed")

MAIN = yaml.safe_load((REPO / "config" / "default.yaml").read_text())
CHECKS = yaml.safe_load((REPO / "config" / "checks.yaml").read_text())


def _same(a, b) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def expected_check_runs(study: str) -> set[tuple]:
    """Independent re-statement of one study's runs: each part's product times its variants and grid;
    a variant is the set of its values that differ from the base setting (main run:, checks run:, dataset run:)."""
    d = CHECKS["defaults"]
    sets = {**MAIN["method_sets"], **CHECKS.get("method_sets", {})}
    runs = set()
    for part in CHECKS["studies"][study]["runs"]:
        methods = []
        for m in part["methods"]:
            methods += sets[m[1:]] if m.startswith("@") else [m]
        grid = part.get("grid", {})
        combos = [dict(zip(grid, v)) for v in itertools.product(*grid.values())] or [{}]
        combos = [{**v, **g} for v in part.get("variants", [{}]) for g in combos]
        for ds in part["datasets"]:
            base = {**MAIN.get("run", {}), **CHECKS.get("run", {}), **CHECKS["datasets"][ds].get("run", {})}
            main_T = CHECKS["datasets"][ds].get("T", d["T"])
            for method, T, th, alpha, seed, values in itertools.product(
                methods, part.get("T", [main_T]), part.get("th", [d["th"]]), part.get("alpha", [d["alpha"]]),
                part.get("seeds", d["seeds"]), combos,
            ):
                changed = frozenset((k, str(v)) for k, v in values.items() if not (k in base and _same(base[k], v)))
                runs.add((changed, ds, method, int(T), str(th), str(alpha), int(seed)))
    return runs


@pytest.mark.parametrize("study", sorted(CHECKS["studies"]))
def test_each_study_dry_run_counts_its_runs(tmp_path, study):
    res = snakemake(tmp_path, "--dry-run", "checks", "--config", f"checks={{studies: [{study}]}}")
    assert res.returncode == 0, res.stderr + res.stdout
    counts = job_counts(res.stdout)
    assert counts["train_check"] == len(expected_check_runs(study))
    assert counts["checks"] == 1
    datasets = {ds for part in CHECKS["studies"][study]["runs"] for ds in part["datasets"]}
    assert counts["cache"] == len(datasets)
    assert counts.get("synth", 0) == len(datasets) + 1  # + synav-clean, the backbone's pre-training data
    assert counts["pretrain"] == 1


def test_all_studies_share_runs(tmp_path):
    res = snakemake(tmp_path, "--dry-run", "checks", "--printshellcmds")
    assert res.returncode == 0, res.stderr + res.stdout
    counts = job_counts(res.stdout)
    default = [s for s, spec in CHECKS["studies"].items() if not spec.get("optional")]
    assert "tasks-long" in CHECKS["studies"] and "tasks-long" not in default  # opt-in: named in checks.studies
    union = set().union(*(expected_check_runs(s) for s in default))
    assert counts["train_check"] == len(union) < sum(len(expected_check_runs(s)) for s in default)
    out = res.stdout
    assert "data/synav-long/" not in out and "runs/base/synav-long/" not in out  # nothing of tasks-long runs
    # the report gets every study of the file with its datasets (kind after the name when it differs)
    assert "tasks-long:tasks=synav-long" in out and "threshold-noise=synav-noise0,synav-noise0p5" in out
    # variant folders name the values that differ from the checks' run: setting; the base setting is `base`
    assert re.search(re.escape("results/checks/runs/lr=1e-5,batch_size=8/synav-small/mcil/T4_thalways_a0.7_s0") + r"-[0-9a-f]{8}/result\.json", out)
    assert re.search(re.escape("results/checks/runs/base/synav-noise2/mcil/T4_thnever_a0.7_s1") + r"-[0-9a-f]{8}/result\.json", out)
    assert "results/checks/runs/missing_audio_train=1.0,missing_audio_test=1.0/synav-small/mcil/T4_thalways_a0.7_s1-" in out
    # a check run gets the checks' run: and its variant's values, before the wildcards
    line = next(x for x in out.splitlines() if "--out results/checks/runs/lr=1e-5,batch_size=8/synav-small/mcil/T4_" in x)
    assert "optim.epochs=1" in line and "optim.lr=1e-5" in line and "optim.batch_size=8" in line
    assert "optim.lr=0.001" not in line and "optim.batch_size=16" not in line
    assert "fusion.adaptive_quantile=0.25 scenario.n_tasks=4 method.name=mcil fusion.gate=adaptive" in out
    # the noise levels reach both the generator and the report
    assert "--noise-level 2.0" in out and "synav-noise2=2" in out
    assert "--task-counts synav-long=4 synav-noise0=4" in out


def test_long_sequences_run_when_named(tmp_path):
    res = snakemake(tmp_path, "--dry-run", "checks", "--printshellcmds", "--config", "checks={studies: [tasks-long]}")
    assert res.returncode == 0, res.stderr + res.stdout
    assert "--n-classes 200 --train-per-class 6 --test-per-class 3" in res.stdout
    assert re.search(re.escape("results/checks/runs/base/synav-long/mcil/T100_thalways_a0.7_s1") + r"-[0-9a-f]{8}/result\.json", res.stdout)


def test_unknown_study_is_named(tmp_path):
    res = snakemake(tmp_path, "--dry-run", "checks", "--config", "checks={studies: [nope]}")
    assert res.returncode != 0 and "checks.studies: nope not in" in res.stdout + res.stderr


def test_default_target_runs_no_study(tmp_path):
    res = snakemake(tmp_path, "--dry-run")
    assert res.returncode == 0, res.stderr + res.stdout
    counts = job_counts(res.stdout)
    assert "train_check" not in counts and "checks" not in counts
    assert "results/checks" not in res.stdout


def test_checks_without_a_checks_file_say_how(tmp_path):
    off = tmp_path / "off.yaml"
    off.write_text("checks: {config: null}\n")
    work = tmp_path / "work"
    work.mkdir()
    res = snakemake(work, "--dry-run", "checks", "--configfile", str(REPO / "config" / "default.yaml"), str(off))
    assert res.returncode != 0
    assert "no studies configured; set checks.config" in res.stdout + res.stderr
    # the default target is unaffected
    assert snakemake(work, "--dry-run", "--configfile", str(REPO / "config" / "default.yaml"), str(off)).returncode == 0
