"""Tiny generated media and dataset folders for the data-layer tests (all in tmp_path, < 1 s)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mcil.data.manifest import write_manifest
from mcil.data.spec import PreprocessSpec


def write_image(path: Path, width: int = 20, height: int = 12, seed: int = 0, fmt: str | None = None) -> Path:
    """Random RGB image (PNG or JPEG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    Image.fromarray(arr, "RGB").save(path, format=fmt)
    return path


def write_wav(
    path: Path, sr: int = 16000, seconds: float = 0.5, freq: float = 440.0, channels: int = 1, amp: float = 0.5
) -> Path:
    """Sine tone WAV (PCM16); stereo channels get different amplitudes so mono mixing is visible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(sr * seconds)) / sr
    tone = amp * np.sin(2 * np.pi * freq * t)
    data = np.stack([tone * (1.0 - 0.5 * c) for c in range(channels)], axis=1)
    sf.write(str(path), data, sr, subtype="PCM_16")
    return path


@pytest.fixture
def spec() -> PreprocessSpec:
    return PreprocessSpec(
        image_size=8,
        image_resize="exact-bilinear",
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.5, 0.5, 0.5),
        audio_sample_rate=16000,
        audio_num_samples=4000,
        audio_scale="unit",
    )


def build_dataset(
    root: Path,
    n_classes: int = 3,
    per_split: int = 2,
    n_pretrain: int = 0,
    sr: int = 16000,
    name: str = "toy",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Write a valid dataset folder (PNG + WAV + manifest); returns (rows, classes_meta)."""
    rows: list[dict[str, Any]] = []
    classes = [{"label": i, "name": f"class {i}", "group": "incremental"} for i in range(n_classes)]
    classes += [{"label": n_classes + j, "name": f"pre {j}", "group": "pretrain"} for j in range(n_pretrain)]
    k = 0
    for c in classes:
        splits = ("pretrain",) if c["group"] == "pretrain" else ("train", "test")
        for split in splits:
            for i in range(per_split):
                sid = f"{split}-{c['label']}-{i}"
                img = f"image/{sid}.png"
                aud = f"audio/{sid}.wav"
                write_image(root / img, seed=k)
                write_wav(root / aud, sr=sr, freq=200.0 + 50 * k)
                rows.append(
                    {
                        "sample_id": sid,
                        "split": split,
                        "label": c["label"],
                        "class_name": c["name"],
                        "image_path": img,
                        "audio_path": aud,
                        "corruption": "",
                    }
                )
                k += 1
    meta = {"name": name, "classes": classes, "templates": "synav"}
    write_manifest(root, rows, meta)
    return rows, meta


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_dataset(**kw)`` writes a dataset under tmp_path/<name> and returns its root."""

    def _make(**kw: Any) -> Path:
        root = tmp_path / kw.get("name", "toy")
        build_dataset(root, **kw)
        return root

    return _make


@pytest.fixture
def media() -> SimpleNamespace:
    """The writers above as a fixture (test modules should not import conftest directly)."""
    return SimpleNamespace(image=write_image, wav=write_wav, dataset=build_dataset)
