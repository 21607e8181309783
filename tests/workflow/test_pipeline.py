"""The Snakemake pipeline: dry runs of the shipped configs (fast) and a tiny end-to-end run (slow).

Each run uses ``--directory`` on a temporary folder, so nothing is read from or written to the
repository's data/, results/ or figures/.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "Snakefile"

pytestmark = pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake is not installed")


def snakemake(workdir: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = ["snakemake", "--snakefile", str(SNAKEFILE), "--directory", str(workdir), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> number of jobs."""
    block = output.split("Job stats:", 1)[1]
    counts = {}
    for line in block.splitlines()[3:]:
        m = re.fullmatch(r"(\S+)\s+(\d+)", line.strip())
        if not m:
            break
        counts[m[1]] = int(m[2])
    return counts


def expected_runs(cfg: dict) -> set[tuple]:
    """Independent re-statement of the grid: the union over run_groups of each group's product."""
    d = cfg["defaults"]
    runs = set()
    for name in cfg.get("run_groups") or cfg["groups"]:
        g = cfg["groups"][name]
        methods = []
        for m in g["methods"]:
            methods += cfg["method_sets"][m[1:]] if m.startswith("@") else [m]
        for ds in g.get("datasets") or sorted(cfg["datasets"]):
            tasks = cfg["datasets"][ds].get("tasks") or {}
            main_T = cfg["datasets"][ds].get("T", d["T"])
            Ts = []
            for t in g.get("T", [main_T]):
                Ts += sorted(int(k) for k in tasks) if t == "all" else [int(t)]
            for combo in itertools.product(methods, Ts, g.get("th", [d["th"]]), g.get("alpha", [d["alpha"]]),
                                           g.get("seeds", d["seeds"])):
                runs.add((ds, *map(str, combo)))
    return runs


def test_default_dry_run_lists_the_grid(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "default.yaml").read_text())
    res = snakemake(tmp_path, "--dry-run")
    assert res.returncode == 0, res.stderr + res.stdout
    counts = job_counts(res.stdout)
    n_synth = sum(1 for d in cfg["datasets"].values() if d["source"] == "synth")
    assert counts["synth"] == n_synth == 2
    assert counts["cache"] == len(cfg["datasets"])
    assert counts["pretrain"] == 1
    assert counts["train"] == len(expected_runs(cfg))
    assert counts["aggregate"] == 1 and counts["all"] == 1
    # folder names keep th/alpha as written in the config, then the overrides' hash
    assert re.search(r"results/runs/synav-noisy/mcil/T5_thalways_a0\.7_s2-[0-9a-f]{8}/result\.json", res.stdout)
    assert re.search(r"results/runs/synav-clean/mcil/T5_thalways_a1\.0_s0-[0-9a-f]{8}/result\.json", res.stdout)


def _run_folders(stdout):
    return dict(re.findall(r"results/runs/([^ ]+?_s[0-9]+)-([0-9a-f]{8})/result\.json", stdout))


def test_run_folder_hash_follows_the_overrides_not_the_locations(tmp_path):
    base = _run_folders(snakemake(tmp_path, "--dry-run").stdout)
    moved = _run_folders(snakemake(tmp_path, "--dry-run", "--config", "data_dir=elsewhere", "cache_dir=elsewhere/cache").stdout)
    # a run key no method_run entry overrides (joint sets its own optim.epochs)
    changed = snakemake(tmp_path, "--dry-run", "--config", "run={optim.warmup_steps: 3}")
    assert changed.returncode == 0, changed.stderr
    changed = _run_folders(changed.stdout)
    assert base and base == moved  # same runs, same folders wherever the data lives
    assert changed.keys() == base.keys() and all(changed[k] != base[k] for k in base)
    assert len(set(base.values())) == len(base)  # every run its own hash


def test_paper_dry_run_with_dummy_paths(tmp_path):
    raw = tmp_path / "raw"
    for d in ("imagenet", "esc50", "aric"):
        (raw / d).mkdir(parents=True)
    (raw / "audioclip.pt").write_bytes(b"")
    paths = (f"paths={{audioclip_checkpoint: {raw / 'audioclip.pt'}, imagenet: {raw / 'imagenet'}, "
             f"esc50: {raw / 'esc50'}, miniaric: {raw / 'aric'}}}")
    work = tmp_path / "work"
    work.mkdir()
    res = snakemake(work, "--dry-run", "--printshellcmds", "--configfile", str(REPO / "config" / "paper.yaml"), "--config", paths)
    assert res.returncode == 0, res.stderr + res.stdout
    counts = job_counts(res.stdout)
    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    assert counts["prepare"] == 3 and counts["cache"] == 3
    assert "pretrain" not in counts and "synth" not in counts  # the paper config replaces the default one
    assert counts["train"] == len(expected_runs(cfg))
    assert "scenario.initial=13 scenario.increment=10" in res.stdout  # miniARIC T=3 split
    assert f"backbone.checkpoint={raw / 'audioclip.pt'}" in res.stdout


def test_missing_paths_stop_before_any_job(tmp_path):
    res = snakemake(tmp_path, "--dry-run", "--configfile", str(REPO / "config" / "paper.yaml"),
                    "--config", f"paths={{imagenet: {tmp_path / 'nope'}}}")
    assert res.returncode != 0
    text = res.stdout + res.stderr
    assert "paths.audioclip_checkpoint is not set" in text
    assert "paths.esc50 is not set" in text and "paths.miniaric is not set" in text
    assert f"{tmp_path / 'nope'} does not exist" in text
    assert "Job stats" not in text


@pytest.mark.slow
def test_smoke_end_to_end(tmp_path):
    """config/smoke.yaml through Snakemake: synth, pretrain, cache, 2 runs, aggregate (≈ 2 min on a CPU)."""
    res = snakemake(tmp_path, "--cores", "2", "--resources", "gpu=1", "--configfile",
                    str(REPO / "config" / "smoke.yaml"), timeout=600)
    assert res.returncode == 0, res.stderr[-5000:] + res.stdout[-5000:]
    results = tmp_path / "results"
    runs = pd.read_csv(results / "all_runs.csv")
    assert sorted(runs["method"]) == ["finetune", "mcil"]
    assert set(runs["T"]) == {2} and not runs["mixed_code"].any()
    main = pd.read_csv(results / "tables" / "main.csv")
    assert {"mcil", "finetune"} <= set(main["method"])
    assert {"aia", "last"} <= set(main["metric"])
    assert (main["n"] == 1).all()
    claims = (results / "claims.md").read_text()
    assert "| C1: MCIL has a higher AIA than every baseline | synav-clean | 2 |" in claims
    assert "**inconclusive**" in claims  # one seed cannot settle a claim
    for name in ("accuracy_curves", "threshold_sweep", "alpha_sweep", "fusion_rate", "expert_usage"):
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 0
    (log,) = (tmp_path / "logs" / "train" / "synav-clean" / "mcil").glob("T2_thalways_a0.7_s0-*.log")
    log = log.read_text()
    assert log.startswith("overrides: ") and "method.name=mcil" in log
    # the cache rule decoded what training needed: training added no second copy of the data
    caches = sorted(p.name for p in (tmp_path / "data" / "cache").glob("synav-clean-*.pt"))
    assert len([c for c in caches if "-train-" in c]) == 1 and len([c for c in caches if "-test-" in c]) == 1

    # A pipeline stopped before a run finished (so before the aggregate): that run has no
    # result.json (written last) and there are no tables yet. Restarted, only that run and the
    # aggregate are redone; the finished run is not touched.
    smoke = ("--configfile", str(REPO / "config" / "smoke.yaml"))
    assert "Nothing to be done" in snakemake(tmp_path, "-n", *smoke).stdout
    (unfinished,) = (results / "runs" / "synav-clean" / "finetune").glob("*/result.json")
    (finished,) = (results / "runs" / "synav-clean" / "mcil").glob("*/result.json")
    before = finished.stat().st_mtime_ns
    unfinished.unlink()
    (results / "claims.md").unlink()
    again = snakemake(tmp_path, "--cores", "2", "--resources", "gpu=1", *smoke, timeout=600)
    assert again.returncode == 0, again.stderr[-5000:]
    assert job_counts(again.stdout + again.stderr) == {"train": 1, "aggregate": 1, "all": 1, "total": 3}
    assert unfinished.is_file() and finished.stat().st_mtime_ns == before
