"""Decode one image or audio file to the tensors a :class:`PreprocessSpec` asks for.

Pure functions of (file, spec): the tensor cache calls them once per sample, so training never
decodes a file. Images follow OpenAI CLIP's order (PIL resize first, then centre crop, then to
tensor); audio is read with soundfile (torchaudio 2.11 routes ``torchaudio.load`` through
torchcodec, which we do not depend on), mixed to mono, resampled with torchaudio's windowed-sinc
resampler and centre-cropped / zero-padded to a fixed length.

Not applied (documented choices): EXIF orientation (CLIP ignores it too); random crops (the cache
is deterministic; augmentation, if any, happens per batch).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image, UnidentifiedImageError

from mcil.data.spec import PreprocessSpec
from mcil.errors import DataError

__all__ = [
    "load_image",
    "load_audio",
    "decode_image_array",
    "decode_audio_array",
    "read_audio_file",
    "resize_image",
    "fit_length",
]


def _what(path: Path, sample_id: str | None) -> str:
    return f"sample {sample_id!r} ({path})" if sample_id is not None else str(path)


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def resize_image(img: Image.Image, size: int, mode: str) -> Image.Image:
    """Resize a PIL RGB image to ``size``×``size`` following ``mode``.

    ``short-side-bicubic``: short side → ``size`` (long side = int(size·long/short), as
    torchvision's Resize computes it), bicubic, then centre crop with rounded offsets (CLIP's
    ``CenterCrop``). ``exact-bilinear``: straight resize to ``size``×``size``.
    """
    if mode == "exact-bilinear":
        return img.resize((size, size), Image.Resampling.BILINEAR)
    if mode != "short-side-bicubic":
        raise DataError(f"image_resize {mode!r} is not supported; use 'short-side-bicubic' or 'exact-bilinear'")
    w, h = img.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left = int(round((new_w - size) / 2.0))
    top = int(round((new_h - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def decode_image_array(path: str | Path, spec: PreprocessSpec, sample_id: str | None = None) -> np.ndarray:
    """File → (3, S, S) uint8 numpy array (S = spec.image_size). Raises DataError if unreadable."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PIL's palette/transparency notes are not errors
                rgb = img.convert("RGB")
    except FileNotFoundError as exc:
        raise DataError(
            f"{_what(path, sample_id)}: image file does not exist; restore it or re-run the preparer"
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(
            f"{_what(path, sample_id)}: cannot decode image ({exc.__class__.__name__}: {exc}); "
            f"replace the file or drop its row from manifest.csv"
        ) from exc
    out = resize_image(rgb, spec.image_size, spec.image_resize)
    arr = np.asarray(out, dtype=np.uint8)  # (S, S, 3)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def load_image(path: str | Path, spec: PreprocessSpec, sample_id: str | None = None) -> torch.Tensor:
    """File → (3, S, S) uint8 tensor, resized as ``spec.image_resize`` says."""
    return torch.from_numpy(decode_image_array(path, spec, sample_id))


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------


def read_audio_file(path: str | Path, sample_id: str | None = None) -> tuple[np.ndarray, int]:
    """File → ((n,) float32 mono waveform, source sample rate). Channels are averaged."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{_what(path, sample_id)}: audio file does not exist; restore it or re-run the preparer")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError) as exc:
        raise DataError(
            f"{_what(path, sample_id)}: cannot decode audio ({exc.__class__.__name__}: {exc}); "
            f"replace the file or drop its row from manifest.csv"
        ) from exc
    if data.shape[0] == 0:
        raise DataError(f"{_what(path, sample_id)}: audio file has no samples; replace it or drop its row")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise DataError(f"{_what(path, sample_id)}: audio contains NaN/inf samples; replace the file")
    return np.ascontiguousarray(mono, dtype=np.float32), int(sr)


@functools.lru_cache(maxsize=16)
def _resampler(orig: int, new: int) -> torch.nn.Module:
    """One cached torchaudio resampler per rate pair (its sinc kernel is built once)."""
    import torchaudio

    return torchaudio.transforms.Resample(orig_freq=orig, new_freq=new)


def resample(wave: np.ndarray, orig: int, new: int) -> np.ndarray:
    """(n,) float32 at ``orig`` Hz → (≈ n·new/orig,) float32 at ``new`` Hz (windowed sinc, torchaudio)."""
    if orig == new:
        return wave
    with torch.no_grad():
        out = _resampler(orig, new)(torch.from_numpy(wave).unsqueeze(0))[0]
    return out.numpy()


def fit_length(wave: np.ndarray, length: int) -> np.ndarray:
    """(n,) → (length,): centre crop if longer, zero pad split evenly on both sides if shorter."""
    n = wave.shape[0]
    if n == length:
        return wave
    if n > length:
        start = (n - length) // 2
        return wave[start : start + length]
    out = np.zeros(length, dtype=wave.dtype)
    left = (length - n) // 2
    out[left : left + n] = wave
    return out


def decode_audio_array(path: str | Path, spec: PreprocessSpec, sample_id: str | None = None) -> tuple[np.ndarray, int]:
    """File → ((L,) float32 in [-1, 1], source sample rate); L = spec.audio_num_samples."""
    wave, sr = read_audio_file(path, sample_id)
    wave = resample(wave, sr, spec.audio_sample_rate)
    wave = fit_length(wave, spec.audio_num_samples)
    return np.clip(wave, -1.0, 1.0).astype(np.float32, copy=False), sr


def load_audio(path: str | Path, spec: PreprocessSpec, sample_id: str | None = None) -> torch.Tensor:
    """File → (L,) float32 mono waveform in [-1, 1] at ``spec.audio_sample_rate``."""
    wave, _sr = decode_audio_array(path, spec, sample_id)
    return torch.from_numpy(np.ascontiguousarray(wave))
