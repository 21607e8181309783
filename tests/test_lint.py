"""The code is lint-clean: ``ruff check`` on the repository and ``snakefmt --check`` on the workflow.

Both tools are pinned in the ``test`` extra (envs/requirements.lock), so the README's test command
runs them; settings are in pyproject.toml (``[tool.ruff]``, ``[tool.snakefmt]``).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ["Snakefile", "workflow/"]


def _run_tool(module: str, *args: str) -> subprocess.CompletedProcess:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install -r envs/requirements.lock -e '.[test]')")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_ruff_check_is_clean():
    proc = _run_tool("ruff", "check", "--no-cache", ".")
    assert proc.returncode == 0, f"ruff check . (fix with `ruff check --fix .`):\n{proc.stdout}{proc.stderr}"


def test_workflow_is_snakefmt_formatted():
    proc = _run_tool("snakefmt", "--check", "--diff", *WORKFLOW_FILES)
    assert proc.returncode == 0, f"snakefmt --check (format with `snakefmt Snakefile workflow/`):\n{proc.stdout}{proc.stderr}"
