"""The SLURM profile against a real scheduler: a local one-node cluster (scripts/slurm-local.sh).

config/smoke.yaml runs through ``--workflow-profile workflow/profiles/slurm``; every job must be a
SLURM job (ids in the logs and in ``sacct``). The paper's method's training job is cancelled twice
with ``scancel`` while it trains: the profile's ``retries: 1`` resubmits it once (it resumes), the
second cancel fails it, and the same command run again resumes it to the metrics of an
uninterrupted run.

Needs root and apt-get (the script installs munge, slurmctld, slurmd, slurmdbd, mariadb-server when
missing). Where SLURM cannot start the test skips with the reason — and fails under ``CI=true``, so
that CI never passes without having run it. Deselect with ``-m "not cluster"``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "slurm-local.sh"
PROFILE = REPO / "workflow" / "profiles" / "slurm"

MCIL_RUN = "rule_train_wildcards_synav-clean_mcil_"  # the plugin's --comment of the mcil training job


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"SLURM cannot start on this CI machine, so the cluster test cannot run: {reason}", pytrace=False)
    pytest.skip(f"SLURM cannot start here: {reason}")


def _sh(*cmd: str, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def slurm_cluster():
    """The local cluster, up for this module; brought down afterwards unless it was up before."""
    if shutil.which("snakemake") is None:
        _unavailable("snakemake is not installed")
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        _unavailable("snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
    was_up = "slurmctld: running" in _sh("bash", str(SCRIPT), "status").stdout
    t0 = time.time()
    up = _sh("bash", str(SCRIPT), "up", timeout=900)
    if up.returncode != 0:
        if not was_up:
            _sh("bash", str(SCRIPT), "down", timeout=300)
        _unavailable(f"`scripts/slurm-local.sh up` exited {up.returncode}: {up.stderr.strip()[-3000:]}")
    print(f"slurm-local.sh up: {time.time() - t0:.1f} s")
    try:
        yield
    finally:
        if not was_up:
            down = _sh("bash", str(SCRIPT), "down", timeout=300)
            assert down.returncode == 0, down.stderr


def _squeue() -> list[tuple[str, str, str]]:
    """(job id, state, comment) of the jobs SLURM knows now."""
    res = _sh("squeue", "-h", "-t", "all", "-o", "%i|%T|%k")
    return [tuple(line.split("|", 2)) for line in res.stdout.splitlines() if line.count("|") >= 2]


def _sacct(ids) -> dict[str, dict[str, str]]:
    fields = ["JobIdRaw", "State", "Comment", "ReqTRES", "Timelimit", "ExitCode"]
    res = _sh("sacct", "-X", "-P", "-n", "--starttime", "now-1days", "-j", ",".join(ids), f"--format={','.join(fields)}")
    assert res.returncode == 0, res.stderr
    rows = (dict(zip(fields, line.split("|"))) for line in res.stdout.splitlines() if line)
    return {r["JobIdRaw"]: r for r in rows}


def _position(run_glob: Path) -> tuple[int, int] | None:
    """(task, step) of the mcil run's resume state, if it has one (read weights_only, as mcil does)."""
    for state in run_glob.parent.glob(f"{run_glob.name}/checkpoints/state.pt"):
        try:
            saved = torch.load(state, map_location="cpu", weights_only=True)
        except Exception:  # replaced while we read it: next poll
            return None
        return int(saved["state"]["task"]), int(saved["state"]["step"])
    return None


def _cancel_training(work: Path, proc: subprocess.Popen, log: Path, after: tuple[str, tuple[int, int]] | None,
                     timeout: float = 300) -> tuple[str, tuple[int, int], str]:
    """scancel the running mcil training job once its resume state is past ``after`` (or at step 4).

    Returns (SLURM job id, (task, step) of the state at the cancel, the run's train log then)."""
    runs = work / "results" / "runs" / "synav-clean" / "mcil" / "T2_*"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"snakemake ended (rc {proc.returncode}) before the training job could be cancelled:\n"
                        + log.read_text()[-5000:])
        running = [j for j, state, comment in _squeue()
                   if state == "RUNNING" and comment.startswith(MCIL_RUN) and (after is None or j != after[0])]
        pos = _position(runs)
        train_log = "".join(p.read_text() for p in (work / "logs" / "train" / "synav-clean" / "mcil").glob("*.log"))
        if after is None:
            ready = pos is not None and pos >= (0, 4)
        else:  # the retry resumed (its log says where) and has checkpointed beyond that point
            m = re.search(r"resuming \S+ at task (\d+)/\d+, step (\d+)", train_log)
            ready = m is not None and pos is not None and pos > (int(m[1]) - 1, int(m[2]))
        if running and ready:
            (jobid,) = running
            res = _sh("scancel", jobid)
            assert res.returncode == 0, res.stderr
            return jobid, pos, train_log
        time.sleep(0.2)
    pytest.fail("no running mcil training job to cancel within the time limit:\n" + log.read_text()[-5000:])


def _submitted(output: str) -> list[tuple[str, str]]:
    """(SLURM job id, its log file) of every job snakemake submitted."""
    return re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.", output)


def test_unavailable_slurm_fails_under_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="cannot run: no root"):
        _unavailable("no root")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="SLURM cannot start here: no root"):
        _unavailable("no root")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None, reason="needs root to become another user")
def test_script_says_why_it_cannot_start(tmp_path):
    """As a normal user, `up` exits 2 with the reason (what the cluster test reports) and starts nothing."""
    state = tmp_path / "state"
    res = subprocess.run(["runuser", "-u", "nobody", "--", "env", f"MCIL_SLURM_DIR={state}", "bash", str(SCRIPT), "up"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert "cannot start SLURM here: not root" in res.stderr
    assert not state.exists()


@pytest.mark.cluster
@pytest.mark.slow
def test_smoke_through_slurm_profile_resumes_after_scancel(slurm_cluster, tmp_path):
    t0 = time.time()
    work = tmp_path / "work"
    work.mkdir()
    cmd = [
        "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
        "--workflow-profile", str(PROFILE), "--configfile", str(REPO / "config" / "smoke.yaml"),
        # the smoke runs, long enough (2 x 80 steps) for a training job to be caught mid-task
        "--config", "run={optim.epochs: 40, checkpoint_every: 4}",
        # the plugin's first status query waits 40 s by default (busy clusters); a local one answers at once
        "--slurm-init-seconds-before-status-checks", "2",
    ]
    first_log = tmp_path / "first.log"
    with open(first_log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)
    try:
        cut1 = _cancel_training(work, proc, first_log, after=None)
        cut2 = _cancel_training(work, proc, first_log, after=cut1[:2])  # the retry (profile: retries: 1)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:  # a failed check: do not leave snakemake (or its jobs) behind
            proc.kill()
            proc.wait(timeout=60)
            for jobid, _state, comment in _squeue():
                if comment.startswith("rule_"):
                    _sh("scancel", jobid)
    first = first_log.read_text()
    t_first = time.time() - t0
    # the retry resumed from the first attempt's state; its second cancel failed the job for good
    m = re.search(r"resuming \S+ at task (\d+)/2, step (\d+)", cut2[2])
    assert m and (int(m[1]) - 1, int(m[2])) >= cut1[1], cut2[2][-3000:]
    assert proc.returncode != 0, first[-3000:]
    (mcil_dir,) = (work / "results" / "runs" / "synav-clean" / "mcil").glob("T2_*")
    assert not (mcil_dir / "result.json").exists() and (mcil_dir / "checkpoints" / "state.pt").is_file()
    assert not (work / "results" / "claims.md").exists()  # aggregate waits for every run

    # The same command again: only the cancelled run (resumed) and the aggregate are left.
    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    out2 = second.stdout + second.stderr
    assert second.returncode == 0, out2[-5000:]
    t_total = time.time() - t0

    # Every job of the pipeline (all but the target rule `all`) went through the scheduler.
    out1 = first
    jobs = _submitted(out1) + _submitted(out2)
    rule_of = {jobid: Path(path).relative_to(work / "logs" / "slurm").parts[0] for jobid, path in jobs}
    assert sorted(rule_of.values()) == sorted(
        ["rule_synth", "rule_pretrain", "rule_cache", "rule_calibrate", "rule_aggregate"] + ["rule_train"] * 4
    ), jobs  # finetune; mcil: attempt 1 and its retry (first command), the resumed attempt (second)
    assert [rule_of[j] for j, _ in _submitted(out2)] == ["rule_train", "rule_aggregate"]
    for jobid, path in jobs:  # the profile's slurm-logdir, one log per SLURM job, kept
        assert Path(path).is_file() and Path(path).name == f"{jobid}.log", path
    acct = _sacct(rule_of)
    assert set(acct) == set(rule_of), acct
    for jobid, rule in rule_of.items():
        want = "CANCELLED" if jobid in (cut1[0], cut2[0]) else "COMPLETED"
        assert acct[jobid]["State"].startswith(want), (jobid, acct[jobid])
        assert acct[jobid]["Comment"].startswith(rule), (jobid, acct[jobid])
        if rule == "rule_train":  # config/smoke.yaml train: {threads: 1, gpus: 0, mem_mb: 2000, runtime: 10}
            tres = acct[jobid]["ReqTRES"]
            assert "cpu=1" in tres and "mem=2000M" in tres and "gpu" not in tres, tres
            assert acct[jobid]["Timelimit"] == "00:10:00", acct[jobid]
    assert "CANCELLED" in Path(dict(jobs)[cut1[0]]).read_text()  # slurmstepd's note in the job's log

    # The resumed run ends with exactly the metrics of an uninterrupted one (same overrides, no SLURM).
    (train_log,) = (work / "logs" / "train" / "synav-clean" / "mcil").glob("T2_*.log")
    text = train_log.read_text()
    assert "resuming" in text, text[-3000:]
    overrides = text.splitlines()[0].removeprefix("overrides: ").split()
    ref_dir = tmp_path / "uninterrupted"
    ref = subprocess.run(["mcil", "train", "--out", str(ref_dir), "--threads", "1", *overrides], cwd=work,
                         capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    a = json.loads((ref_dir / "result.json").read_text())
    b = json.loads((mcil_dir / "result.json").read_text())
    assert b["accuracy_matrix"] == a["accuracy_matrix"]
    assert b["metrics"] == a["metrics"]
    assert (work / "results" / "claims.md").is_file()
    print(f"SLURM smoke: first command {t_first:.0f} s, whole test {time.time() - t0:.0f} s "
          f"(pipeline {t_total:.0f} s); SLURM jobs {dict(sorted(rule_of.items(), key=lambda kv: int(kv[0])))}; "
          f"cancelled {cut1[0]} at task/step {cut1[1]}, {cut2[0]} at {cut2[1]}")
