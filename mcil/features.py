"""Frozen-tower feature cache: embeddings of towers a learner never adapts, computed once.

The paper's audio tower is frozen, so re-running it every step (as the official code does) is
wasted work. For each (tensor-cache key × tower × backbone checkpoint) the embeddings of a whole
split are computed once, stored beside the tensor cache (atomic write, keyed by content) and
memory-mapped by every later run. No augmentation is applied to a frozen tower's input (a fixed
view per sample), so the cached and the raw path give the same numbers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from mcil.atomic import atomic_torch_save
from mcil.data.spec import normalise_images, scale_audio

__all__ = ["frozen_embeddings", "encode_split"]

log = logging.getLogger(__name__)


@torch.no_grad()
def encode_split(
    backbone, split, tower: str, device: torch.device, batch_size: int = 256, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """(N, D) float32 embeddings of ``split`` through ``tower`` ('image' | 'audio'); zeros where absent.

    ``rows`` (int64 indices), if given, encodes only those rows and leaves the others zero: for
    ``mcil bench``, which touches a few dozen samples of a split that may hold thousands.
    """
    n = len(split.labels)
    out = torch.zeros(n, backbone.embed_dim, dtype=torch.float32)
    present = split.has_image if tower == "image" else split.has_audio
    if rows is not None:
        keep = torch.zeros(n, dtype=torch.bool)
        keep[rows.long().cpu()] = True
        present = present.bool() & keep
    idx_all = torch.nonzero(present, as_tuple=False).flatten()
    for start in range(0, len(idx_all), batch_size):
        idx = idx_all[start : start + batch_size]
        if tower == "image":
            x = normalise_images(split.images[idx].to(device), backbone.preprocess)
            emb = backbone.encode_image(x)
        elif tower == "audio":
            x = scale_audio(split.audio[idx].to(device), backbone.preprocess)
            emb = backbone.encode_audio(x)
        else:
            raise ValueError(f"unknown tower {tower!r}")
        out[idx] = emb.float().cpu()
    return out


def frozen_embeddings(
    backbone, split, tower: str, device: torch.device, cache_dir: str | Path | None, batch_size: int = 256
) -> torch.Tensor:
    """Embeddings of a frozen tower for a whole split, from disk when already computed.

    The file name combines the split's tensor-cache key, the tower and the backbone checkpoint's
    SHA-256, so a different checkpoint or preprocessing never reuses stale features. A backbone
    without a checkpoint hash (randomly initialised, tests) is encoded in memory only.
    """
    sha = getattr(backbone, "checkpoint_sha256", None)
    if cache_dir is None or not sha:
        return encode_split(backbone, split, tower, device, batch_size)
    path = Path(cache_dir) / "features" / f"{split.key}-{tower}-{backbone.name}-{sha[:16]}.pt"
    if path.is_file():
        try:
            feats = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            if feats.shape == (len(split.labels), backbone.embed_dim):
                return feats
            log.warning("feature cache %s has shape %s; recomputing", path, tuple(feats.shape))
        except Exception as exc:  # corrupt file: recompute rather than fail
            log.warning("feature cache %s unreadable (%s); recomputing", path, exc)
    log.info("encoding %d samples through the frozen %s tower (once; cached at %s)", len(split.labels), tower, path)
    feats = encode_split(backbone, split, tower, device, batch_size)
    atomic_torch_save(feats, path)
    return feats
