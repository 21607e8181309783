"""Session fixtures shared across the suite: one tiny synav dataset and one random tiny backbone.

Both are generated once per test session into a temporary folder (a few seconds), so tests of the
trainer, the baselines and the pipeline run on real files through the real cache.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    """Put the scripts of the interpreter running pytest first on PATH, as an activated virtualenv
    does: the workflow tests call `snakemake`, whose jobs call `mcil`. Without this,
    `.venv/bin/pytest` from a shell that has not activated the venv skipped them as "not installed"."""
    scripts = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != scripts:
        os.environ["PATH"] = scripts + os.pathsep + path


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread for every test module: on the shared 2-core CI machine the small
    models run several times faster single-threaded than on two competing threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass(frozen=True)
class TinyEnv:
    data_root: Path  # synav-clean, 6 incremental classes
    noisy_root: Path  # synav-noisy, same size
    checkpoint: Path  # random (not pre-trained) tiny backbone
    cache_dir: Path

    def overrides(self, **extra: object) -> list[str]:
        """Dotted overrides pointing a RunConfig at this environment (small and fast)."""
        base = {
            "data.root": str(self.data_root),
            "data.cache_dir": str(self.cache_dir),
            "backbone.name": "tiny",
            "backbone.checkpoint": str(self.checkpoint),
            "scenario.n_tasks": 3,
            "optim.batch_size": 8,
            "optim.warmup_steps": 2,
            "optim.eval_batch_size": 16,
            "device": "cpu",
        }
        base.update(extra)
        return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture(scope="session")
def tiny_env(tmp_path_factory) -> TinyEnv:
    from mcil.backbones.tiny import TinyBackbone, save_tiny
    from mcil.data.manifest import read_manifest
    from mcil.data.synth import generate
    from mcil.data.synth_classes import SynthConfig

    root = tmp_path_factory.mktemp("tinyenv")
    small = dict(n_classes=6, train_per_class=8, test_per_class=4, pretrain_per_class=1)
    clean = generate(root / "synav-clean", SynthConfig(regime="clean", **small))
    noisy = generate(root / "synav-noisy", SynthConfig(regime="noisy", **small))
    names = read_manifest(clean).class_names
    backbone = TinyBackbone.random(seed=0, vocab=names)
    ckpt = root / "tiny.pt"
    save_tiny(backbone, ckpt)
    return TinyEnv(clean, noisy, ckpt, root / "cache")
