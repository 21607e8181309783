"""synav: the embedded procedural audio-visual-text dataset (real PNG + WAV files + manifest).

The real benchmarks (ImageNet-ESC, miniARIC) and the AudioCLIP weights cannot be shipped, so the
default pipeline runs on this generator. Every class is a composition of six named attributes and
its name is the words for them, e.g. ``"red striped star, high pulsing whistle"``:

- visual: ``shape`` × ``colour`` × ``texture`` (8 × 8 × 4 = 256 visual triples);
- audio: ``pitch`` × ``timbre`` × ``rhythm`` (6 × 6 × 6 = 216 audio triples).

The classes (their design, the config that fixes them and the draw) live in
:mod:`mcil.data.synth_classes`; this module renders their samples and writes the dataset.

Per-sample variation
--------------------
Images (64×64 RGB, drawn at 2× and box-downsampled for anti-aliasing): position, scale, rotation
(±17°, small enough that a square never becomes a diamond), colour and brightness jitter, a
textured background (tinted grey + low-frequency field + desaturated distractor blobs) and pixel
noise. Audio (1.0 s mono, 16 kHz, PCM_16): pitch jitter (±0.7 semitone; pitch classes are 10
semitones apart), onset shift, duration, amplitude, random phase and additive noise.

Regimes
-------
``clean`` mirrors ImageNet-ESC: both modalities informative and paired. ``noisy`` mirrors
miniARIC: per train/test sample at most one corruption is drawn with the rates of
:data:`~mcil.data.synth_classes.DEFAULT_CORRUPTION_RATES` (45 % in total) multiplied by ``noise_level`` (0 = clean, 1 =
default, 2 = heavy; if the scaled rates exceed 1 they are renormalised to sum to 1). Kinds: the
audio is near-silent, replaced by coloured noise, or swapped with the sound of a class with a
different audio prototype (misleading); or the image is occluded by a box over the object or
blurred and hazed. The kind is recorded in the manifest's ``corruption`` column; pre-training
samples are never corrupted. Content and corruption draw from separate random streams, so an
uncorrupted noisy sample is byte-identical to the same clean sample.

Determinism
-----------
Each sample has its own ``numpy`` generator seeded by ``(seed, split, index, stream)``; rendering
is therefore order-independent and the worker pool (spawn context) gives the same bytes as a single
process. PNGs are written by PIL with fixed options and no metadata, WAVs by soundfile.
The vocabulary and the renderers of one picture or sound live in :mod:`mcil.data.synth_render`.

Output (written to ``<out>.tmp-<pid>`` and renamed): ``images/<split>/<index>.png``,
``audio/<split>/<index>.wav``, ``manifest.csv``, ``classes.json`` and ``synth_config.json``
(the config, used to skip regeneration of an identical dataset).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import errno
import functools
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image

from mcil.data.synth_classes import CORRUPTIONS, SynavClass, SynthConfig, build_classes, min_pretrain_classes
from mcil.data.synth_render import NUM_SAMPLES, SAMPLE_RATE, noise_clip, render_audio, render_image
from mcil.errors import DataError

__all__ = [
    "MANIFEST_COLUMNS",
    "generate",
    "configure_parser",
    "run_cli",
]

log = logging.getLogger(__name__)

MANIFEST_COLUMNS: tuple[str, ...] = (
    "sample_id", "split", "label", "class_name", "image_path", "audio_path", "corruption",
)
_SPLIT_CODES = {"train": 1, "test": 2, "pretrain": 3}
_STREAM_IMAGE, _STREAM_AUDIO, _STREAM_CORRUPTION = 0, 1, 2


# ---------------------------------------------------------------------------------------------
# Configuration and classes
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# One sample
# ---------------------------------------------------------------------------------------------


def _sample_rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODES[split], index, stream])


def _draw_corruption(rates: dict[str, float], rng: np.random.Generator) -> str:
    u = rng.random()
    acc = 0.0
    for kind in CORRUPTIONS:
        acc += rates[kind]
        if u < acc:
            return kind
    return ""


def _render_sample(config: SynthConfig, classes: Sequence[SynavClass], split: str, index: int,
                   label: int, rates: dict[str, float]) -> tuple[np.ndarray, np.ndarray, str]:
    cls = classes[label]
    crng = _sample_rng(config.seed, split, index, _STREAM_CORRUPTION)
    corruption = _draw_corruption(rates, crng) if split != "pretrain" else ""
    image = render_image(cls.visual, _sample_rng(config.seed, split, index, _STREAM_IMAGE),
                         corruption if corruption.startswith("image-") else "", crng)
    if corruption == "audio-silent":
        audio = np.clip(crng.normal(0.0, 0.001, size=NUM_SAMPLES), -1, 1).astype(np.float32)
    elif corruption == "audio-noise":
        audio = noise_clip(crng)
    elif corruption == "audio-swap":
        others = [c for c in classes if c.group == "incremental" and c.audio != cls.audio]
        other = others[int(crng.integers(len(others)))]
        audio = render_audio(other.audio, crng)
    else:
        audio = render_audio(cls.audio, _sample_rng(config.seed, split, index, _STREAM_AUDIO))
    return image, audio, corruption


@functools.lru_cache(maxsize=4)
def _classes_of(config: SynthConfig) -> tuple[SynavClass, ...]:
    """build_classes, once per process and config: with many pre-training classes the draw's
    collision repair takes seconds (about 5 s for 128), which would otherwise be paid per chunk."""
    return tuple(build_classes(config))


def _render_chunk(payload: tuple[dict[str, Any], str, list[tuple[str, int, int]]]) -> list[dict[str, Any]]:
    """Worker: render and write a list of (split, index, label) samples, return their manifest rows."""
    config_fields, root_str, jobs = payload
    config = SynthConfig(**config_fields)
    classes = _classes_of(config)
    rates = config.corruption_rates()
    root = Path(root_str)
    rows = []
    for split, index, label in jobs:
        image, audio, corruption = _render_sample(config, classes, split, index, label, rates)
        image_rel = f"images/{split}/{index:06d}.png"
        audio_rel = f"audio/{split}/{index:06d}.wav"
        Image.fromarray(image, mode="RGB").save(root / image_rel, format="PNG", optimize=False, compress_level=6)
        sf.write(root / audio_rel, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        rows.append({
            "sample_id": f"{split}-{index:06d}",
            "split": split,
            "label": label,
            "class_name": classes[label].name,
            "image_path": image_rel,
            "audio_path": audio_rel,
            "corruption": corruption,
        })
    return rows


def _jobs(config: SynthConfig) -> list[tuple[str, int, int]]:
    k = config.n_classes
    jobs = [("train", i, i // config.train_per_class) for i in range(k * config.train_per_class)]
    jobs += [("test", i, i // config.test_per_class) for i in range(k * config.test_per_class)]
    jobs += [("pretrain", i, k + i // config.pretrain_per_class)
             for i in range(config.n_pretrain_classes * config.pretrain_per_class)]
    return jobs


# ---------------------------------------------------------------------------------------------
# Whole dataset
# ---------------------------------------------------------------------------------------------


def _existing_matches(out: Path, config: SynthConfig) -> bool:
    """True if `out` is a complete dataset of this config; False if absent or an empty folder.

    Raises DataError for anything else, so a stale or foreign folder is never silently reused
    or overwritten.
    """
    if not out.exists():
        return False
    if not out.is_dir():
        raise DataError(f"synav output {out} exists and is not a folder; delete it or choose another --out")
    if not any(out.iterdir()):
        return False
    cfg_path, manifest_path = out / "synth_config.json", out / "manifest.csv"
    if not cfg_path.is_file() or not manifest_path.is_file() or not (out / "classes.json").is_file():
        raise DataError(f"synav output {out} exists but is not a complete synav dataset "
                        "(synth_config.json, manifest.csv or classes.json missing); "
                        "delete it or choose another --out")
    try:
        stored = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"synav output {out}: cannot read synth_config.json ({exc}); delete the folder") from exc
    wanted = config.to_json()
    if stored != wanted:
        diff = ", ".join(f"{key}: {stored.get(key)!r} there vs {wanted.get(key)!r} asked"
                         for key in sorted(set(stored) | set(wanted)) if stored.get(key) != wanted.get(key))
        raise DataError(f"synav output {out} already holds a dataset with another config ({diff}); "
                        "delete it or choose another --out")
    with manifest_path.open(newline="") as fh:
        n_rows = sum(1 for _ in csv.DictReader(fh))
    if n_rows != config.expected_rows():
        raise DataError(f"synav output {out}: manifest.csv has {n_rows} rows, expected {config.expected_rows()}; "
                        "delete the folder and generate again")
    return True


def _write_metadata(root: Path, config: SynthConfig, classes: Sequence[SynavClass],
                    rows: list[dict[str, Any]]) -> None:
    with (root / "manifest.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    meta = {
        "name": config.name,
        "regime": config.regime,
        "seed": config.seed,
        "templates": "synav",
        "classes": [c.to_json() for c in classes],
    }
    (root / "classes.json").write_text(json.dumps(meta, indent=2) + "\n")
    (root / "synth_config.json").write_text(json.dumps(config.to_json(), indent=2, sort_keys=True) + "\n")


def _publish(tmp: Path, out: Path, config: SynthConfig) -> None:
    """Rename the finished temp folder onto `out`; if another process won the race, keep theirs."""
    try:
        os.replace(tmp, out)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        if not _existing_matches(out, config):
            raise DataError(f"synav output {out} appeared while generating and cannot be replaced; "
                            "delete it or choose another --out") from exc
        log.info("synav: %s was written concurrently with the same config; keeping it", out)


def generate(out_dir: str | os.PathLike[str], config: SynthConfig = SynthConfig(),
             workers: int | None = None) -> Path:
    """Write the dataset of `config` to `out_dir` (atomically) and return its path.

    An existing complete dataset with the same config is reused; one with another config raises
    DataError. `workers` (default: up to 2 CPU cores) changes speed, never the bytes.
    """
    out = Path(out_dir)
    if _existing_matches(out, config):
        log.info("synav: %s already holds this dataset (same synth_config.json); skipping", out)
        return out
    classes = build_classes(config)
    jobs = _jobs(config)
    if workers is None:  # a pool costs more than it saves on tiny datasets
        workers = min(2, os.cpu_count() or 1) if len(jobs) >= 200 else 1
    workers = max(1, int(workers))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f"{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    start = time.perf_counter()
    log.info("synav: rendering %d samples (%d incremental + %d pre-training classes, regime %s) "
             "with %d worker(s) into %s",
             len(jobs), config.n_classes, config.n_pretrain_classes, config.regime, workers, out)
    try:
        for kind in ("images", "audio"):
            for split in ("train", "test", "pretrain"):
                (tmp / kind / split).mkdir(parents=True, exist_ok=True)
        fields = dataclasses.asdict(config)
        chunk = 64
        payloads = [(fields, str(tmp), jobs[i:i + chunk]) for i in range(0, len(jobs), chunk)]
        rows: list[dict[str, Any]] = []
        if workers == 1:
            for payload in payloads:
                rows.extend(_render_chunk(payload))
        else:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for part in pool.imap(_render_chunk, payloads):
                    rows.extend(part)
        _write_metadata(tmp, config, classes, rows)
        _publish(tmp, out, config)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n_corrupt = sum(1 for r in rows if r["corruption"])
    log.info("synav: wrote %s (%d samples, %d corrupted) in %.1f s", out, len(rows), n_corrupt,
             time.perf_counter() - start)
    return out


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def configure_parser(p: argparse.ArgumentParser) -> None:
    d = SynthConfig()
    p.add_argument("--out", required=True, help="dataset folder to create, e.g. data/synav-clean")
    p.add_argument("--seed", type=int, default=d.seed, help="generator seed (classes and samples)")
    p.add_argument("--regime", choices=("clean", "noisy"), default=d.regime,
                   help="clean: both modalities informative; noisy: per-sample corruptions (miniARIC-like)")
    p.add_argument("--n-classes", type=int, default=d.n_classes, help="incremental classes K")
    p.add_argument("--train-per-class", type=int, default=d.train_per_class)
    p.add_argument("--test-per-class", type=int, default=d.test_per_class)
    p.add_argument("--pretrain-classes", type=int, default=d.n_pretrain_classes,
                   help=f"pre-training classes P (>= {min_pretrain_classes()})")
    p.add_argument("--pretrain-per-class", type=int, default=d.pretrain_per_class)
    p.add_argument("--noise-level", type=float, default=d.noise_level,
                   help="scales the noisy regime's corruption rates (0 = none, 1 = default ~45%%, 2 = heavy)")
    p.add_argument("--lookalike-fraction", type=float, default=d.lookalike_fraction,
                   help="share of incremental classes in look-alike pairs (same picture or same sound as their twin)")
    p.add_argument("--workers", type=int, default=None,
                   help="rendering processes (default: up to 2); no effect on the bytes")


def run_cli(args: argparse.Namespace) -> int:
    config = SynthConfig(
        regime=args.regime,
        seed=args.seed,
        n_classes=args.n_classes,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        n_pretrain_classes=args.pretrain_classes,
        pretrain_per_class=args.pretrain_per_class,
        noise_level=args.noise_level,
        lookalike_fraction=args.lookalike_fraction,
    )
    if config.regime == "clean" and config.noise_level != SynthConfig.noise_level:
        log.warning("synav: --noise-level only applies to --regime noisy; ignored")
    generate(args.out, config, workers=args.workers)
    return 0
