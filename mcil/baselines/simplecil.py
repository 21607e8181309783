"""SimpleCIL: class-mean prototypes of frozen features and a cosine classifier.

Zhou, Cai, Ye, Zhan, Liu, "Revisiting Class-Incremental Learning with Pre-Trained Models:
Generalizability and Adaptivity are All You Need" (IJCV 2024; arXiv 2303.07338). The pre-trained
model is never updated; after each task the mean embedding of every new class becomes that class's
prototype. It is the "no training at all" reference point: whatever a trained method adds must beat
it. Our multimodal reading: the prototype may be built from the image tower, the audio tower or
their fusion (concatenation or average of the L2-normalised embeddings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mcil.baselines._common import (
    BaselineLearner,
    FeatureChoice,
    FuseMode,
    columns,
    cosine_logits,
    feature_view,
    opt,
    tower_embedding,
)
from mcil.learners.base import Batch, BatchLoader, Prediction, Task
from mcil.learners.registry import register_learner

__all__ = ["SimpleCIL", "SimpleCILOptions"]


@dataclass(frozen=True)
class SimpleCILOptions:
    """Which frozen embedding the prototypes are built from."""

    features: FeatureChoice = opt("fused", "image | audio | fused: the embedding averaged into prototypes")
    fuse: FuseMode = opt(
        "concat", "concat (a cosine over it averages the per-modality cosines) | average of the normalised embeddings"
    )


@register_learner
class SimpleCIL(BaselineLearner):
    """SimpleCIL (Zhou et al., IJCV 2024): class-mean prototypes of frozen features, cosine classifier.

    State (buffers of fixed shape, so resume needs no replay of data):
    ``image_sum`` / ``audio_sum`` (K, D): per-class sums of L2-normalised embeddings;
    ``count`` (K,): training samples seen per class. A fused prototype is the class mean of the
    fused per-sample features, which is the concat/average of the per-modality means.
    """

    NAME = "simplecil"
    MODALITIES = frozenset({"image", "audio"})
    FROZEN_FEATURES = frozenset({"image", "audio"})
    Options = SimpleCILOptions
    NEEDS_GRAD = False

    def __init__(self, backbone: Any, class_names: Sequence[str], templates: str, cfg: Any,
                 options: SimpleCILOptions = SimpleCILOptions()) -> None:
        super().__init__(backbone, class_names, templates, cfg, options)
        d = backbone.embed_dim
        self.register_buffer("image_sum", torch.zeros(self.n_classes, d))
        self.register_buffer("audio_sum", torch.zeros(self.n_classes, d))
        self.register_buffer("count", torch.zeros(self.n_classes, dtype=torch.long))

    # -- features ----------------------------------------------------------------------------------
    def _embeddings(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) image and audio embeddings, unnormalised, zero where a modality is absent."""
        return tower_embedding(self.backbone, batch, "image"), tower_embedding(self.backbone, batch, "audio")

    def prototypes(self, which: FeatureChoice | None = None) -> torch.Tensor:
        """(K, D') class means of the per-sample features chosen by ``which`` (default: the option)."""
        which = which or self.options.features
        n = self.count.clamp_min(1).unsqueeze(1).float()
        mean_i, mean_a = self.image_sum / n, self.audio_sum / n
        if which == "image":
            return mean_i
        if which == "audio":
            return mean_a
        return torch.cat([mean_i, mean_a], 1) if self.options.fuse == "concat" else 0.5 * (mean_i + mean_a)

    # -- learner hooks ---------------------------------------------------------------------------------
    @torch.no_grad()
    def end_task(self, task: Task, loader: BatchLoader) -> None:
        """Add the normalised embeddings of the task's training samples to their class sums."""
        for batch in loader():
            img, aud = self._embeddings(batch)
            labels = batch.labels.to(self.count.device)
            self.image_sum.index_add_(0, labels, F.normalize(img, dim=-1).to(self.image_sum))
            self.audio_sum.index_add_(0, labels, F.normalize(aud, dim=-1).to(self.audio_sum))
            self.count.index_add_(0, labels, torch.ones_like(labels))

    @torch.no_grad()
    def predict(self, batch: Batch, classes: Sequence[int]) -> Prediction:
        img, aud = self._embeddings(batch)
        known = self.count > 0
        feats = feature_view(img, aud, self.options.features, self.options.fuse)
        logits = columns(cosine_logits(feats, self.prototypes()), classes, known)
        by_modality = {
            "image": columns(cosine_logits(img, self.image_sum), classes, known),
            "audio": columns(cosine_logits(aud, self.audio_sum), classes, known),
        }
        features = {"image": F.normalize(img, dim=-1), "audio": F.normalize(aud, dim=-1)}
        if self.options.features == "fused":
            by_modality["fused"] = logits
            if self.options.fuse == "average":  # features must be (B, D): a concatenation is 2D wide
                features["fused"] = F.normalize(feats, dim=-1)
        return Prediction(logits=logits, by_modality=by_modality, features=features)

    def statistics(self) -> dict[str, Any]:
        return {
            **super().statistics(),
            "features": self.options.features,
            "fuse": self.options.fuse,
            "n_prototypes": int((self.count > 0).sum()),
        }
