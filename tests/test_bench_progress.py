"""Training logs its progress inside an epoch (samples/s and ETA), so a long AudioCLIP epoch is not silent."""

from __future__ import annotations

import logging
import re

from mcil.config import load_config
from mcil.train import train


def test_training_logs_progress_with_rate_and_eta(tiny_env, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("mcil.train.PROGRESS_EVERY_S", 0.0)  # every step
    cfg = load_config(None, tiny_env.overrides(**{"method.name": "mcil", "optim.epochs": 1, "scenario.n_tasks": 2}))
    with caplog.at_level(logging.INFO, logger="mcil.train"):
        train(cfg, tmp_path / "run")
    lines = [r.getMessage() for r in caplog.records if "samples/s, ETA epoch" in r.getMessage()]
    assert lines, "no progress line"
    assert all(re.search(r"task \d+/2 epoch 1/1 step \d+/\d+: [\d.]+ samples/s, ETA epoch \d+s", m) for m in lines)
