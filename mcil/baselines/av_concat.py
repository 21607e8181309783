"""AV-concat: audio-visual late fusion by concatenation, no gate.

The plain multimodal baseline the paper's adaptive fusion (AAVFM) must beat: the adapted image
embedding and the frozen audio embedding are L2-normalised, concatenated and projected back to
the text space by one linear map, for every sample — no correlation test, no attention, no
gate. Concatenation followed by a projection is the textbook late-fusion baseline of
audio-visual learning (audio-visual CIL work such as AV-CIL, Pian et al., ICCV 2023, compares
continual methods on fused audio-visual features).

The projection starts as [I | I]: on normalised inputs that is the sum of the two embeddings,
whose cosine to the text prototypes ranks the classes exactly as the average of the two
modalities' cosines does (the zero-shot ``average`` rule), so training starts from the
pre-trained alignment of both towers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from mcil.baselines._common import AdapterOptions, AdapterTextLearner, cosine_logits, opt, tower_embedding
from mcil.learners.base import Batch, Prediction
from mcil.learners.registry import register_learner

__all__ = ["AVConcat", "AVConcatOptions"]


@dataclass(frozen=True)
class AVConcatOptions(AdapterOptions):
    """Projection initialisation, plus the shared adapter options."""

    proj_init: Literal["sum", "random"] = opt(
        "sum", "sum: W = [I | I], the sum of the normalised embeddings (zero-shot average) | random: Linear init"
    )


@register_learner
class AVConcat(AdapterTextLearner):
    """Audio-visual late fusion: adapted image + frozen audio, concatenated and projected (no gate)."""

    NAME = "av-concat"
    MODALITIES = frozenset({"image", "audio", "text"})
    FROZEN_FEATURES = frozenset({"audio"})
    Options = AVConcatOptions

    def __init__(self, backbone: Any, class_names: Sequence[str], templates: str, cfg: Any,
                 options: AVConcatOptions = AVConcatOptions()) -> None:
        super().__init__(backbone, class_names, templates, cfg, options)
        d = backbone.embed_dim
        self.proj = nn.Linear(2 * d, d, bias=False)
        if options.proj_init == "sum":
            with torch.no_grad():
                self.proj.weight.copy_(torch.cat([torch.eye(d), torch.eye(d)], dim=1))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return super().trainable_parameters() + list(self.proj.parameters())

    def modality_features(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) adapted image and frozen audio embeddings (zero rows where absent)."""
        return self.image_features(batch), tower_embedding(self.backbone, batch, "audio")

    def fuse(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """(B, D) = W · [n(image); n(audio)], W (D, 2D)."""
        return self.proj(torch.cat([F.normalize(image, dim=-1), F.normalize(audio, dim=-1)], dim=-1))

    def query_features(self, batch: Batch) -> torch.Tensor:
        return self.fuse(*self.modality_features(batch))

    def has_query(self, batch: Batch) -> torch.Tensor:
        return batch.has_image.bool() | batch.has_audio.bool()

    @torch.no_grad()
    def predict(self, batch: Batch, classes: Sequence[int]) -> Prediction:
        img, aud = self.modality_features(batch)
        fused = self.fuse(img, aud)
        protos = self.eval_prototypes(classes)
        logits = cosine_logits(fused, protos, self.scale)
        return Prediction(
            logits=logits,
            by_modality={
                "image": cosine_logits(img, protos, self.scale),
                "audio": cosine_logits(aud, protos, self.scale),
                "fused": logits,
            },
            features={"image": F.normalize(img, dim=-1), "audio": F.normalize(aud, dim=-1),
                      "fused": F.normalize(fused, dim=-1)},
            fused=batch.has_image.bool() & batch.has_audio.bool(),
        )
