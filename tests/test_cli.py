"""The console-script entry: output is flushed and the exit code kept although it skips teardown."""

import subprocess
import sys

ENTRY = "import sys; from mcil.cli import entry; sys.argv = ['mcil'] + sys.argv[1:]; entry()"


def _run(*args):
    return subprocess.run([sys.executable, "-c", ENTRY, *args], capture_output=True, text=True, timeout=120)


def test_entry_flushes_output_and_returns_success():
    res = _run("methods")
    assert res.returncode == 0, res.stderr
    assert "mcil-gate-batch" in res.stdout and "joint" in res.stdout


def test_entry_keeps_the_error_exit_code_and_message(tmp_path):
    res = _run("train", "--out", str(tmp_path / "run"), "fusion.gate=sometimes")
    assert res.returncode == 2
    assert "fusion.gate: 'sometimes' is not allowed" in res.stderr
