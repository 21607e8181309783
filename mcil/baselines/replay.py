"""Replay: an iCaRL-style exemplar memory, rehearsed with cross-entropy over all seen classes.

Rebuffi, Kolesnikov, Sperl, Lampert, "iCaRL: Incremental Classifier and Representation
Learning" (CVPR 2017) for the memory: after each task, every new class keeps the exemplars chosen
by *herding* (the samples whose running mean best tracks the class mean), and the memory is
class-balanced under a fixed budget — m = min(per_class, total // n_seen) exemplars per class,
old classes shrinking to the first m of their herding order. While a task trains, every batch is
extended with a batch drawn from memory (``replay_batch``) and the cross-entropy runs over all
seen classes (experience replay with herding; iCaRL's own sigmoid + distillation loss is not
used). Classification: the text prototypes (default) or iCaRL's nearest-mean-of-exemplars (NME).

The memory is a buffer of train-split row indices (the data stays in the trainer's cache; the
trainer's ``fetch`` turns indices into a batch), so a checkpoint holds only integers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from mcil.baselines._common import AdapterOptions, AdapterTextLearner, columns, cosine_logits, herding, opt
from mcil.config import ConfigError
from mcil.learners.base import Batch, BatchLoader, Prediction, Task
from mcil.learners.registry import register_learner

__all__ = ["Replay", "ReplayOptions"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayOptions(AdapterOptions):
    """Memory budget, selection and classifier, plus the shared adapter options."""

    per_class: int = opt(20, "exemplars per class (iCaRL's CIFAR-100 budget: 2000 / 100 classes)")
    total: int = opt(2000, "cap on the whole memory: each class keeps min(per_class, total // n_seen)")
    herding_features: Literal["current", "frozen"] = opt(
        "current", "current: adapted image features after the task (iCaRL) | frozen: the pre-trained image tower"
    )
    classifier: Literal["text", "nme"] = opt(
        "text", "text: the text prototypes | nme: cosine to the mean feature of each class's exemplars (iCaRL)"
    )
    replay_batch_size: int = opt(0, "memory samples added to every training batch (0: as many as the batch)")

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        if self.per_class < 1:
            raise ConfigError(f"{prefix}.per_class: {self.per_class} is out of range; allowed: >= 1")
        if self.total < 1:
            raise ConfigError(f"{prefix}.total: {self.total} is out of range; allowed: >= 1")
        if self.replay_batch_size < 0:
            raise ConfigError(f"{prefix}.replay_batch_size: {self.replay_batch_size} is out of range; allowed: >= 0")


@register_learner
class Replay(AdapterTextLearner):
    """Exemplar replay with iCaRL herding (Rebuffi et al., CVPR 2017), CE over seen classes; text or NME head.

    Buffers: ``memory`` (K, per_class) int64 train-row indices in herding order, −1 = empty slot;
    ``nme_means`` (K, D) exemplar means for the NME classifier (recomputed after every task).
    """

    NAME = "replay"
    Options = ReplayOptions

    def __init__(self, backbone: Any, class_names: Sequence[str], templates: str, cfg: Any,
                 options: ReplayOptions = ReplayOptions()) -> None:
        super().__init__(backbone, class_names, templates, cfg, options)
        self.register_buffer("memory", torch.full((self.n_classes, options.per_class), -1, dtype=torch.long))
        self.register_buffer("nme_means", torch.zeros(self.n_classes, backbone.embed_dim))

    # -- memory -------------------------------------------------------------------------------------
    def budget_per_class(self, n_seen: int) -> int:
        """Class-balanced share of the budget: min(per_class, total // n_seen)."""
        return min(self.options.per_class, self.options.total // max(n_seen, 1))

    def memory_sizes(self) -> torch.Tensor:
        """(K,) exemplars held per class."""
        return (self.memory >= 0).sum(1)

    def memory_indices(self) -> torch.Tensor:
        """(M,) all stored train-row indices (class-major, herding order within a class)."""
        return self.memory[self.memory >= 0]

    def loss_classes(self, task: Task) -> tuple[int, ...]:
        """All seen classes: the memory brings old-class samples into every batch."""
        return task.seen_classes

    def replay_batch(self, batch_size: int) -> Batch | None:
        """A uniform draw (global RNG, so a resumed run draws the same) of stored exemplars."""
        stored = self.memory_indices()
        fetch = getattr(self, "_fetch_train", None)
        if stored.numel() == 0 or fetch is None:
            return None
        n = min(self.options.replay_batch_size or batch_size, stored.numel())
        pick = torch.randperm(stored.numel())[:n]
        return fetch(stored.cpu()[pick])

    @torch.no_grad()
    def herding_features(self, batch: Batch) -> torch.Tensor:
        """(B, D) features herding ranks: adapted or pre-trained image embeddings."""
        if self.options.herding_features == "current":
            return self.image_features(batch)
        keep = batch.has_image.bool()
        out = torch.zeros(len(batch), self.backbone.embed_dim, device=batch.image.device)
        if bool(keep.any()):
            out[keep] = self.backbone.encode_image(batch.image[keep]).float()  # adapters inactive
        return out

    @torch.no_grad()
    def end_task(self, task: Task, loader: BatchLoader) -> None:
        """Shrink old classes to the new per-class budget, herd exemplars of the new classes,
        refresh the NME means."""
        super().end_task(task, loader)
        m = self.budget_per_class(len(task.seen_classes))
        self.memory[:, m:] = -1
        feats: dict[int, list[torch.Tensor]] = {c: [] for c in task.classes}
        rows: dict[int, list[torch.Tensor]] = {c: [] for c in task.classes}
        for batch in loader():
            f = self.herding_features(batch).cpu()
            keep = batch.has_image.bool().cpu()
            for c in task.classes:
                sel = (batch.labels.cpu() == c) & keep
                feats[c].append(f[sel])
                rows[c].append(batch.index.cpu()[sel])
        for c in task.classes:
            if not feats[c] or sum(len(x) for x in feats[c]) == 0:
                log.warning("replay: class %d has no training sample with an image; no exemplars kept", c)
                continue
            f, r = torch.cat(feats[c]), torch.cat(rows[c])
            picks = herding(f, m)
            self.memory[c].fill_(-1)
            self.memory[c, : len(picks)] = r[picks].to(self.memory.device)
        self.refresh_nme()
        log.info("replay task %d: %d exemplars, %d per class", task.index + 1, int(self.memory_sizes().sum()), m)

    @torch.no_grad()
    def refresh_nme(self, batch_size: int = 64) -> None:
        """NME means: the mean normalised current image feature of each class's exemplars."""
        fetch = getattr(self, "_fetch_train", None)
        self.nme_means.zero_()
        if fetch is None:
            return
        stored = self.memory_indices()
        for start in range(0, stored.numel(), batch_size):
            batch = fetch(stored[start : start + batch_size].cpu())
            f = F.normalize(self.image_features(batch), dim=-1).to(self.nme_means)
            self.nme_means.index_add_(0, batch.labels.to(self.nme_means.device).long(), f)

    # -- evaluation ---------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, batch: Batch, classes: Sequence[int]) -> Prediction:
        if self.options.classifier == "text":
            return super().predict(batch, classes)
        feats = self.image_features(batch)
        known = self.memory_sizes() > 0
        logits = columns(cosine_logits(feats, self.nme_means, self.scale), classes, known)
        return Prediction(logits=logits, features={"image": F.normalize(feats, dim=-1)})

    def statistics(self) -> dict[str, Any]:
        sizes = self.memory_sizes().tolist()
        return {
            **super().statistics(),
            "memory_total": int(sum(sizes)),
            "memory_per_class": {str(c): int(n) for c, n in enumerate(sizes) if n > 0},
            "classifier": self.options.classifier,
        }
