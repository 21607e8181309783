"""The tensor cache: every sample of a split decoded once, stored in one memory-mapped file.

Training must never decode a JPEG or a WAV, and every run of a grid reads the same data, so each
(dataset, split, stored preprocessing) is decoded once into ``<dataset>-<split>-<hash>.pt`` under
the cache folder. The file is a ``torch.save`` of a dict of tensors plus metadata (plain Python
types only), loaded with ``torch.load(mmap=True, weights_only=True)``: pages are read on demand
and shared between the processes of a machine.

The hash covers the manifest rows of the split, the spec fields that change the stored bytes
(:meth:`PreprocessSpec.stored_fields`) and :data:`CACHE_FORMAT`; a changed manifest or spec gives
a new file, never a stale one. It does *not* cover file contents: after editing media in place,
delete the cache file.

Concurrency and failure: the builder holds an exclusive ``fcntl`` lock on ``<file>.lock``; a
second process asking for the same file waits, then loads what the first wrote. Data are written
to scratch files and a temp file in the cache folder and moved into place with ``os.replace``,
so a crash never leaves a half-written cache under the final name.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
import re
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mcil.atomic import atomic_write_text
from mcil.data.decode import decode_audio_array, decode_image_array
from mcil.data.manifest import CLASSES_FILE, MANIFEST_FILE, SPLITS, Manifest, read_manifest
from mcil.data.spec import PreprocessSpec
from mcil.errors import DataError

__all__ = [
    "CACHE_FORMAT",
    "CachedSplit",
    "load_split",
    "build_cache",
    "cache_path",
    "split_key",
    "dataset_key",
    "configure_parser",
    "run_cli",
]

log = logging.getLogger(__name__)

#: Bump when the stored layout or the decoding changes; it enters every cache hash.
CACHE_FORMAT = 1

_TENSOR_KEYS = ("images", "audio", "labels", "has_image", "has_audio")
_CHUNK = 64  # rows per worker task


@dataclass(frozen=True, eq=False)
class CachedSplit:
    """One split of a dataset, decoded (tensors are memory-mapped, read-only by convention).

    images (N, 3, S, S) uint8, zeros where has_image is False; audio (N, L) float16 in [-1, 1],
    zeros where has_audio is False; labels (N,) int64; has_image / has_audio (N,) bool.
    class_names: all classes of the dataset, index = label. key: content hash of this split's
    cache (enters result provenance). meta: build metadata (source sample rates and resampling,
    build time, file path).
    """

    images: torch.Tensor
    audio: torch.Tensor
    labels: torch.Tensor
    has_image: torch.Tensor
    has_audio: torch.Tensor
    sample_ids: list[str]
    corruption: list[str]
    class_names: list[str]
    spec: PreprocessSpec
    key: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: torch.Tensor, name: str) -> CachedSplit:
        """Rows ``idx`` (int64, (n,)) as a split of their own (copied out of the memory map), e.g. the
        validation rows of a train split. ``name`` tags the key, so provenance tells the two apart."""
        ids = [self.sample_ids[i] for i in idx.tolist()]
        key = hashlib.sha256(f"{self.key}/{name}/{','.join(ids)}".encode()).hexdigest()[:16]
        return CachedSplit(
            images=self.images[idx], audio=self.audio[idx], labels=self.labels[idx],
            has_image=self.has_image[idx], has_audio=self.has_audio[idx], sample_ids=ids,
            corruption=[self.corruption[i] for i in idx.tolist()], class_names=self.class_names,
            spec=self.spec, key=f"{self.key}-{name}-{key}", meta={**self.meta, "subset_of": self.key},
        )


# --------------------------------------------------------------------------------------------
# Keys and file names
# --------------------------------------------------------------------------------------------

_ROW_FIELDS = ("sample_id", "label", "class_name", "image_path", "audio_path", "corruption")


def dataset_key(root: str | Path) -> str:
    """Content hash (16 hex) of a dataset folder's ``manifest.csv`` + ``classes.json`` bytes.

    Identifies the dataset version in result provenance; it changes whenever any row or class
    changes (media contents are not hashed).
    """
    root = Path(root)
    h = hashlib.sha256()
    for name in (MANIFEST_FILE, CLASSES_FILE):
        path = root / name
        if not path.is_file():
            raise DataError(f"{path} does not exist; create the dataset with `mcil synth` or `mcil prepare`")
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def split_key(manifest: Manifest, split: str, spec: PreprocessSpec) -> str:
    """Full sha256 over the split's rows (in order), the stored spec fields and CACHE_FORMAT."""
    rows = manifest.split(split)
    payload = {
        "format": CACHE_FORMAT,
        "dataset": manifest.name,
        "split": split,
        "spec": spec.stored_fields(),
        "rows": [[str(v) for v in r] for r in rows[list(_ROW_FIELDS)].itertuples(index=False, name=None)],
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def cache_path(cache_dir: str | Path, manifest: Manifest, split: str, spec: PreprocessSpec) -> Path:
    """``cache_dir/<dataset>-<split>-<hash16>.pt``."""
    return Path(cache_dir) / f"{_safe_name(manifest.name)}-{split}-{split_key(manifest, split, spec)[:16]}.pt"


# --------------------------------------------------------------------------------------------
# Decoding (plain loop or process pool)
# --------------------------------------------------------------------------------------------

_Job = tuple[int, str, str, str]  # (row index, sample_id, absolute image path or '', absolute audio path or '')
_Decoded = tuple[int, np.ndarray | None, np.ndarray | None, int | None]


def _decode_chunk(jobs: Sequence[_Job], spec: PreprocessSpec) -> list[_Decoded]:
    """Decode a list of rows → [(index, (3,S,S) uint8 | None, (L,) float32 | None, source sr | None)]."""
    out: list[_Decoded] = []
    for index, sid, img_path, aud_path in jobs:
        img = decode_image_array(img_path, spec, sid) if img_path else None
        if aud_path:
            wave, sr = decode_audio_array(aud_path, spec, sid)
        else:
            wave, sr = None, None
        out.append((index, img, wave, sr))
    return out


def _init_worker() -> None:
    torch.set_num_threads(1)


def _decode_all(jobs: list[_Job], spec: PreprocessSpec, workers: int) -> Iterator[list[_Decoded]]:
    """Yield decoded chunks; ``workers <= 1`` decodes in this process."""
    chunks = [jobs[i : i + _CHUNK] for i in range(0, len(jobs), _CHUNK)]
    if workers <= 1 or len(chunks) <= 1:
        for chunk in chunks:
            yield _decode_chunk(chunk, spec)
        return
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(processes=workers, initializer=_init_worker) as pool:
        results = [pool.apply_async(_decode_chunk, (chunk, spec)) for chunk in chunks]
        for res in results:
            yield res.get()


def default_workers() -> int:
    """Decoding processes used when the caller does not say: ``MCIL_CACHE_WORKERS`` or 1.

    Measured on synav (3360 samples, 64×64 PNG + 1 s 16 kHz WAV, busy 2-core machine): plain loop
    3–17 s, 2-process pool 9–20 s (decoding is ~1.7 ms/sample; pickling and contention eat the
    gain), so 1 is the default; raise it for large JPEGs / long 44.1 kHz clips on many free cores.
    """
    try:
        return max(1, int(os.environ.get("MCIL_CACHE_WORKERS", "1")))
    except ValueError:
        return 1


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``<path>.lock`` (held across processes until the block ends)."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process building %s", path.name)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _scratch_tensor(path: Path, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Zero-filled tensor backed by a scratch file, so building never needs the split in RAM."""
    n = int(np.prod(shape)) if shape else 1
    if path.exists():
        path.unlink()
    flat = torch.from_file(str(path), shared=True, size=max(n, 1), dtype=dtype)
    return flat[:n].view(shape)


def _remove_leftovers(final: Path) -> None:
    """Delete temp/scratch files of an earlier build of ``final`` that crashed (we hold its lock)."""
    for p in final.parent.glob(f".{final.name}.*"):
        try:
            p.unlink()
            log.info("removed leftover %s from an interrupted build", p.name)
        except FileNotFoundError:
            pass


def _build_file(manifest: Manifest, split: str, spec: PreprocessSpec, final: Path, key: str, workers: int) -> None:
    rows = manifest.split(split)
    n = len(rows)
    S, L = spec.image_size, spec.audio_num_samples
    scratch = {
        "images": final.with_name(f".{final.name}.images-{os.getpid()}"),
        "audio": final.with_name(f".{final.name}.audio-{os.getpid()}"),
    }
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    t0 = time.perf_counter()
    try:
        images = _scratch_tensor(scratch["images"], (n, 3, S, S), torch.uint8)
        audio = _scratch_tensor(scratch["audio"], (n, L), torch.float16)
        has_image = torch.zeros(n, dtype=torch.bool)
        has_audio = torch.zeros(n, dtype=torch.bool)
        source_rates: dict[str, int] = {}
        root = manifest.root
        jobs: list[_Job] = [
            (
                i,
                sid,
                str(root / ip) if ip else "",
                str(root / ap) if ap else "",
            )
            for i, (sid, ip, ap) in enumerate(zip(rows["sample_id"], rows["image_path"], rows["audio_path"]))
        ]
        done = 0
        for chunk in _decode_all(jobs, spec, workers):
            for index, img, wave, sr in chunk:
                if img is not None:
                    images[index] = torch.from_numpy(img)
                    has_image[index] = True
                if wave is not None:
                    audio[index] = torch.from_numpy(wave).to(torch.float16)
                    has_audio[index] = True
                    source_rates[str(sr)] = source_rates.get(str(sr), 0) + 1
            done += len(chunk)
            if done % 1024 < _CHUNK or done == n:
                log.debug("decoded %d/%d samples of %s/%s", done, n, manifest.name, split)
        resampled = {
            f"{rate}->{spec.audio_sample_rate}": count
            for rate, count in sorted(source_rates.items())
            if int(rate) != spec.audio_sample_rate
        }
        meta: dict[str, Any] = {
            "format": CACHE_FORMAT,
            "key": key,
            "dataset": manifest.name,
            "split": split,
            "n": n,
            "stored_spec": spec.stored_fields(),
            "sample_ids": [str(s) for s in rows["sample_id"]],
            "corruption": [str(c) for c in rows["corruption"]],
            "source_sample_rates": source_rates,
            "resampled": resampled,
            "target_sample_rate": spec.audio_sample_rate,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(time.perf_counter() - t0, 3),
            "builder_pid": os.getpid(),
        }
        payload = {
            "images": images,
            "audio": audio,
            "labels": torch.tensor(rows["label"].to_numpy(dtype=np.int64)),
            "has_image": has_image,
            "has_audio": has_audio,
            "meta": meta,
        }
        torch.save(payload, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        for p in (tmp, *scratch.values()):
            if p.exists():
                p.unlink()
    size_mb = final.stat().st_size / 2**20
    log.info(
        "built cache %s: %d samples, %.1f MiB in %.1f s%s",
        final,
        n,
        size_mb,
        time.perf_counter() - t0,
        f" (resampled {resampled})" if resampled else "",
    )


def _split_rows_or_fail(manifest: Manifest, split: str) -> pd.DataFrame:
    if split not in SPLITS:
        raise DataError(f"split {split!r} is not allowed; use one of {', '.join(SPLITS)}")
    rows = manifest.split(split)
    if len(rows) == 0:
        raise DataError(
            f"dataset {manifest.root} has no {split!r} rows; available splits: {', '.join(manifest.splits)}"
        )
    return rows


def build_cache(
    root: str | Path,
    split: str,
    spec: PreprocessSpec,
    cache_dir: str | Path,
    workers: int | None = None,
    manifest: Manifest | None = None,
) -> Path:
    """Build the cache file of one split unless it already exists; return its path.

    Safe to call from several processes at once: one builds, the others wait on the lock and
    return the same path. ``workers``: decoding processes (default :func:`default_workers`).
    """
    if manifest is None:
        manifest = read_manifest(root)
    _split_rows_or_fail(manifest, split)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = split_key(manifest, split, spec)
    final = cache_path(cache_dir, manifest, split, spec)
    if final.exists():
        return final
    with _file_lock(final):
        if final.exists():  # built by another process while we waited
            log.info("cache %s was built by another process", final.name)
            return final
        _remove_leftovers(final)
        _build_file(manifest, split, spec, final, key, default_workers() if workers is None else workers)
    return final


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _delete_hint(path: Path) -> str:
    return f"delete {path} (and {path.name}.lock) and run again to rebuild it"


def _load_verified(path: Path, key: str, n: int, spec: PreprocessSpec) -> dict[str, Any]:
    try:
        data = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise DataError(
            f"cache file {path} cannot be read ({exc.__class__.__name__}: {exc}); {_delete_hint(path)}"
        ) from exc
    if not isinstance(data, dict) or not all(k in data for k in (*_TENSOR_KEYS, "meta")):
        raise DataError(f"cache file {path} lacks the expected entries {_TENSOR_KEYS}; {_delete_hint(path)}")
    meta = data["meta"]
    if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
        raise DataError(
            f"cache file {path} does not match the manifest and spec it is named for (stored key "
            f"{str(meta.get('key'))[:16]}, format {meta.get('format')}; expected {key[:16]}, format "
            f"{CACHE_FORMAT}); {_delete_hint(path)}"
        )
    S, L = spec.image_size, spec.audio_num_samples
    expected = {
        "images": ((n, 3, S, S), torch.uint8),
        "audio": ((n, L), torch.float16),
        "labels": ((n,), torch.int64),
        "has_image": ((n,), torch.bool),
        "has_audio": ((n,), torch.bool),
    }
    for name, (shape, dtype) in expected.items():
        t = data[name]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or t.dtype != dtype:
            got = (tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else type(t).__name__
            raise DataError(f"cache file {path}: {name} is {got}, expected {shape} {dtype}; {_delete_hint(path)}")
    if len(meta.get("sample_ids", [])) != n or len(meta.get("corruption", [])) != n:
        raise DataError(f"cache file {path}: metadata does not list {n} samples; {_delete_hint(path)}")
    return data


def load_split(
    root: str | Path,
    split: str,
    spec: PreprocessSpec,
    cache_dir: str | Path,
    workers: int | None = None,
) -> CachedSplit:
    """The decoded split of the dataset at ``root``: built on first use, memory-mapped afterwards.

    When the cache file exists, media files are not touched (only the manifest is read), so a
    machine holding just the manifest and the cache can train.
    """
    manifest = read_manifest(root, check_files=False)
    rows = _split_rows_or_fail(manifest, split)
    key = split_key(manifest, split, spec)
    path = cache_path(cache_dir, manifest, split, spec)
    if not path.exists():
        path = build_cache(root, split, spec, cache_dir, workers=workers, manifest=read_manifest(root))
    data = _load_verified(path, key, len(rows), spec)
    meta = dict(data["meta"])
    meta["path"] = str(path)
    return CachedSplit(
        images=data["images"],
        audio=data["audio"],
        labels=data["labels"],
        has_image=data["has_image"],
        has_audio=data["has_audio"],
        sample_ids=list(meta.pop("sample_ids")),
        corruption=list(meta.pop("corruption")),
        class_names=manifest.class_names,
        spec=spec,
        key=key[:16],
        meta=meta,
    )


# --------------------------------------------------------------------------------------------
# CLI: mcil cache
# --------------------------------------------------------------------------------------------

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset folder holding manifest.csv and classes.json")
    p.add_argument("--cache-dir", required=True, help="folder for the cache files")
    p.add_argument("--splits", nargs="+", choices=SPLITS, help="splits to build (default: every split present)")
    p.add_argument("--spec-json", help="JSON file with the PreprocessSpec fields (instead of the options below)")
    g = p.add_argument_group("preprocessing spec (when --spec-json is not given)")
    g.add_argument("--image-size", type=int)
    g.add_argument("--image-resize", choices=["short-side-bicubic", "exact-bilinear"])
    g.add_argument("--sample-rate", type=int, help="target audio sample rate (Hz)")
    g.add_argument("--num-samples", type=int, help="audio clip length in samples")
    g.add_argument("--audio-scale", choices=["int16", "minmax", "unit"], default="unit")
    g.add_argument("--image-mean", type=float, nargs=3, default=list(_CLIP_MEAN))
    g.add_argument("--image-std", type=float, nargs=3, default=list(_CLIP_STD))
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: MCIL_CACHE_WORKERS or 1)")
    p.add_argument("--report", help="write a JSON {split: {path, key, n}} here (for workflow outputs)")


def spec_from_args(args: argparse.Namespace) -> PreprocessSpec:
    """PreprocessSpec from ``--spec-json`` or the explicit options; DataError names what is missing."""
    fields = {f.name for f in dataclasses.fields(PreprocessSpec)}
    if args.spec_json:
        path = Path(args.spec_json)
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"--spec-json {path}: cannot read a JSON object ({exc})") from exc
        if not isinstance(raw, dict) or set(raw) != fields:
            got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
            raise DataError(f"--spec-json {path}: needs exactly the keys {sorted(fields)}; got {got}")
        raw["image_mean"] = tuple(raw["image_mean"])
        raw["image_std"] = tuple(raw["image_std"])
        return PreprocessSpec(**raw)
    needed = {"--image-size": args.image_size, "--image-resize": args.image_resize,
              "--sample-rate": args.sample_rate, "--num-samples": args.num_samples}
    missing = [k for k, v in needed.items() if v is None]
    if missing:
        raise DataError(
            f"mcil cache: give --spec-json FILE or all of {', '.join(needed)}; missing {', '.join(missing)}"
        )
    for flag in ("image_size", "sample_rate", "num_samples"):
        if getattr(args, flag) <= 0:
            raise DataError(f"mcil cache: --{flag.replace('_', '-')} {getattr(args, flag)} must be > 0")
    return PreprocessSpec(
        image_size=args.image_size,
        image_resize=args.image_resize,
        image_mean=tuple(args.image_mean),
        image_std=tuple(args.image_std),
        audio_sample_rate=args.sample_rate,
        audio_num_samples=args.num_samples,
        audio_scale=args.audio_scale,
    )


def run_cli(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    manifest = read_manifest(args.data)
    splits = args.splits or manifest.splits
    report: dict[str, Any] = {}
    for split in splits:
        path = build_cache(args.data, split, spec, args.cache_dir, workers=args.workers, manifest=manifest)
        report[split] = {
            "path": str(path),
            "key": split_key(manifest, split, spec)[:16],
            "n": int(len(manifest.split(split))),
        }
        log.info("%s/%s: %s", manifest.name, split, path)
    if args.report:
        report_all = {"dataset": manifest.name, "dataset_key": dataset_key(args.data), "splits": report}
        atomic_write_text(Path(args.report), json.dumps(report_all, indent=1) + "\n")
    return 0
