"""Fixtures of the report tests (result files: see results_factory.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    return root
