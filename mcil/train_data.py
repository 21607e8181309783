"""The trainer's data: cached train/test splits served as :class:`~mcil.learners.base.Batch` es.

:class:`TrainData` holds the memory-mapped tensors, the modality-absence masks
(:func:`absence_mask`) and the frozen-tower embeddings; :func:`epoch_order` is the resumable
shuffle of an epoch and :func:`concat_batches` appends a learner's replay rows to a batch.
"""

from __future__ import annotations

import dataclasses
import hashlib

import torch

from mcil.config import RunConfig

__all__ = ["TrainData", "absence_mask", "epoch_order", "concat_batches"]


def absence_mask(sample_ids: list[str], rate: float, seed: int, salt: str) -> torch.Tensor:
    """(N,) bool, True = the modality is dropped. Exactly round(rate·N) samples, chosen by a
    hash of (seed, salt, sample_id), so the choice is stable across runs and methods."""
    n = len(sample_ids)
    k = int(round(rate * n))
    mask = torch.zeros(n, dtype=torch.bool)
    if k == 0:
        return mask
    keys = [hashlib.sha256(f"{seed}:{salt}:{sid}".encode()).digest()[:8] for sid in sample_ids]
    order = sorted(range(n), key=lambda i: keys[i])
    mask[order[:k]] = True
    return mask


class TrainData:
    """Cached train/test splits on the device side of the trainer: index → :class:`Batch`.

    Holds the memory-mapped tensors, the modality-absence masks and the frozen-tower embeddings.
    ``batch(idx)`` gathers by tensor indexing only (no per-sample Python).
    """

    def __init__(self, train, test, spec, device: torch.device, frozen: dict[str, dict[str, torch.Tensor]], cfg: RunConfig):
        self.splits = {"train": train, "test": test}
        self.spec = spec
        self.device = device
        self.frozen = frozen  # split -> tower -> (N, D)
        d = cfg.data
        self.has_image, self.has_audio = {}, {}
        for name, split in self.splits.items():
            drop_a = absence_mask(split.sample_ids, getattr(d, f"missing_audio_{name}"), d.absence_seed, f"audio-{name}")
            drop_i = absence_mask(split.sample_ids, getattr(d, f"missing_image_{name}"), d.absence_seed, f"image-{name}")
            self.has_audio[name] = split.has_audio.clone() & ~drop_a
            self.has_image[name] = split.has_image.clone() & ~drop_i
        self.labels = {name: split.labels.long() for name, split in self.splits.items()}

    def indices_of(self, split: str, classes) -> torch.Tensor:
        """Row indices of ``split`` whose label is in ``classes`` (ascending)."""
        labels = self.labels[split]
        mask = torch.isin(labels, torch.as_tensor(list(classes), dtype=labels.dtype))
        return torch.nonzero(mask, as_tuple=False).flatten()

    def batch(self, split: str, idx: torch.Tensor, audio_idx: torch.Tensor | None = None, need_raw: frozenset = frozenset({"image", "audio"})):
        """Batch of rows ``idx``; ``audio_idx`` (official-shuffled pairing) takes audio from other rows."""
        from mcil.data.spec import normalise_images, scale_audio
        from mcil.learners.base import Batch

        s = self.splits[split]
        a_idx = idx if audio_idx is None else audio_idx
        has_image = self.has_image[split][idx]
        has_audio = self.has_audio[split][a_idx]
        image = audio = image_emb = audio_emb = None
        frozen = self.frozen.get(split, {})
        if "image" in frozen:
            image_emb = frozen["image"][idx].to(self.device) * has_image.to(self.device).unsqueeze(1)
        if "image" in need_raw:
            image = normalise_images(s.images[idx].to(self.device), self.spec)
            image = image * has_image.to(self.device).view(-1, 1, 1, 1)
        if "audio" in frozen:
            audio_emb = frozen["audio"][a_idx].to(self.device) * has_audio.to(self.device).unsqueeze(1)
        if "audio" in need_raw:
            audio = scale_audio(s.audio[a_idx].to(self.device), self.spec)
            audio = audio * has_audio.to(self.device).unsqueeze(1)
        return Batch(
            labels=self.labels[split][idx].to(self.device),
            has_image=has_image.to(self.device),
            has_audio=has_audio.to(self.device),
            index=idx.to(self.device),
            image=image,
            audio=audio,
            image_emb=image_emb,
            audio_emb=audio_emb,
        )


def epoch_order(idx: torch.Tensor, seed: int, task: int, epoch: int) -> torch.Tensor:
    """Shuffled copy of ``idx``, a pure function of (seed, task, epoch) so resume replays it."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + task * 1009 + epoch)
    return idx[torch.randperm(len(idx), generator=g)]


def concat_batches(a, b):
    from mcil.learners.base import Batch

    def cat(x, y):
        if x is None or y is None:
            return None
        return torch.cat([x, y.to(x.device)])

    return Batch(**{f.name: cat(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(Batch)})
