"""The preprocessing contract between a backbone and the tensor cache.

A backbone declares *how* its inputs must look (:class:`PreprocessSpec`); the cache decodes every
file once to that spec and stores uint8 images and float16 waveforms. Normalisation and audio
scaling are cheap and applied per batch (:func:`normalise_images`, :func:`scale_audio`), so they
are part of the spec but not of the stored bytes. The spec's :meth:`PreprocessSpec.key` enters the
cache file name, so two backbones with different preprocessing never share a cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["PreprocessSpec", "normalise_images", "scale_audio"]


@dataclass(frozen=True)
class PreprocessSpec:
    """How raw files become model inputs.

    image_size: side of the square crop fed to the image tower.
    image_resize: ``short-side-bicubic`` = resize the short side to image_size (bicubic, PIL),
        then centre-crop (CLIP/AudioCLIP); ``exact-bilinear`` = resize to image_size×image_size.
    image_mean / image_std: per-channel normalisation of [0, 1] pixels, applied per batch.
    audio_sample_rate: target rate; sources at another rate are resampled (torchaudio).
    audio_num_samples: clip length fed to the audio tower (centre crop / zero pad).
    audio_scale: ``int16`` = waveform in [-1, 1] multiplied by 32768 (AudioCLIP's training loaders),
        ``minmax`` = per-clip min-max map onto [-32768, 32767] (AudioCLIP's US8K loader),
        ``unit`` = left in [-1, 1].
    """

    image_size: int
    image_resize: Literal["short-side-bicubic", "exact-bilinear"]
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    audio_sample_rate: int
    audio_num_samples: int
    audio_scale: Literal["int16", "minmax", "unit"]

    def key(self) -> str:
        """Short stable hash of the spec (enters cache file names)."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def stored_fields(self) -> dict:
        """The fields that change the stored bytes (normalisation/scaling are applied per batch)."""
        return {
            "image_size": self.image_size,
            "image_resize": self.image_resize,
            "audio_sample_rate": self.audio_sample_rate,
            "audio_num_samples": self.audio_num_samples,
        }


def normalise_images(images_u8: torch.Tensor, spec: PreprocessSpec, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, 3, H, W) uint8 → (B, 3, H, W) float, (x/255 − mean)/std."""
    x = images_u8.to(dtype).div_(255.0)
    mean = torch.tensor(spec.image_mean, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.image_std, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def scale_audio(wave: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """(B, N) float waveform in [-1, 1] → the backbone's expected units (float32)."""
    wave = wave.float()
    if spec.audio_scale == "int16":
        return wave * 32768.0
    if spec.audio_scale == "minmax":
        lo = wave.amin(dim=-1, keepdim=True)
        hi = wave.amax(dim=-1, keepdim=True)
        span = (hi - lo).clamp_min(1e-12)
        return (wave - lo) / span * 65535.0 - 32768.0
    return wave
