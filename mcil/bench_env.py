"""The self-contained environment of ``mcil bench``: a small synav dataset and a random-weights
tiny backbone, generated once into a work folder (keyed by their sizes) and reused afterwards."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["SynthSizes", "BenchEnv", "default_work_dir", "ensure_bench_env"]


@dataclass(frozen=True)
class SynthSizes:
    """Size of the self-contained synav dataset (``mcil bench`` without a dataset)."""

    n_classes: int = 8
    train_per_class: int = 24
    test_per_class: int = 8
    seed: int = 0

    @property
    def tag(self) -> str:
        return f"c{self.n_classes}-tr{self.train_per_class}-te{self.test_per_class}-s{self.seed}"


@dataclass(frozen=True)
class BenchEnv:
    """A dataset, its tensor-cache folder and a tiny-backbone checkpoint made by :func:`ensure_bench_env`."""

    data_root: Path
    cache_dir: Path
    checkpoint: Path


def default_work_dir() -> Path:
    """``$XDG_CACHE_HOME/mcil/bench`` (``~/.cache/mcil/bench``): generated once, reused after."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mcil" / "bench"


def ensure_bench_env(work_dir: str | Path, sizes: SynthSizes = SynthSizes()) -> BenchEnv:
    """Generate (or reuse) a clean synav dataset of ``sizes`` and a random-weights tiny backbone.

    Both are keyed by the sizes, written atomically, and reused by later calls: the first call
    costs a few seconds, later ones nothing.
    """
    from mcil.backbones.tiny import TinyBackbone, save_tiny
    from mcil.data.manifest import read_manifest
    from mcil.data.synth import generate
    from mcil.data.synth_classes import SynthConfig

    work = Path(work_dir)
    synth = SynthConfig(
        regime="clean", seed=sizes.seed, n_classes=sizes.n_classes, train_per_class=sizes.train_per_class,
        test_per_class=sizes.test_per_class, pretrain_per_class=1,
    )
    root = generate(work / f"synav-clean-{sizes.tag}", synth, workers=1)
    ckpt = work / f"tiny-random-{sizes.tag}.pt"
    if not ckpt.is_file():
        names = list(read_manifest(root).class_names)
        save_tiny(TinyBackbone.random(seed=0, vocab=names), ckpt)
        log.info("bench: wrote a random-weights tiny backbone to %s", ckpt)
    return BenchEnv(root, work / "cache", ckpt)
