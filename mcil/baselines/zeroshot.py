"""Zero-shot: the frozen pre-trained model, classes scored by their text prototypes.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision" (CLIP,
ICML 2021) for image–text zero-shot classification; Guzhov, Raue, Hees, Dengel, "AudioCLIP:
Extending CLIP to Image, Text and Audio" (ICASSP 2022) for the audio tower in the same space.
Nothing is trained, so nothing is forgotten: every accuracy in the matrix equals the untrained
model's, the reference any continual method has to stay above on old classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from mcil.baselines._common import BaselineLearner, TextPrototypes, opt, tower_embedding
from mcil.learners.base import Batch, Prediction
from mcil.learners.registry import register_learner

__all__ = ["ZeroShot", "ZeroShotOptions", "combine_modalities"]


@dataclass(frozen=True)
class ZeroShotOptions:
    """Which tower is compared with the text prototypes."""

    modality: Literal["image", "audio", "average"] = opt(
        "average", "image | audio | average: mean of the two cosines where a sample has both, else the one it has"
    )


def combine_modalities(cos_image: torch.Tensor, cos_audio: torch.Tensor, has_image: torch.Tensor,
                       has_audio: torch.Tensor) -> torch.Tensor:
    """Per-sample average of (B, C) cosine scores over the modalities the sample has.

    A sample with neither modality gets zeros (every class ties)."""
    wi = has_image.to(cos_image.dtype).unsqueeze(1)
    wa = has_audio.to(cos_audio.dtype).unsqueeze(1)
    return (wi * cos_image + wa * cos_audio) / (wi + wa).clamp_min(1.0)


@register_learner
class ZeroShot(BaselineLearner):
    """Zero-shot CLIP/AudioCLIP: frozen towers scored against frozen text prototypes; nothing trains."""

    NAME = "zeroshot"
    MODALITIES = frozenset({"image", "audio", "text"})
    FROZEN_FEATURES = frozenset({"image", "audio"})
    Options = ZeroShotOptions
    NEEDS_GRAD = False

    def __init__(self, backbone: Any, class_names: Sequence[str], templates: str, cfg: Any,
                 options: ZeroShotOptions = ZeroShotOptions()) -> None:
        super().__init__(backbone, class_names, templates, cfg, options)
        eval_mode = getattr(cfg, "eval_template", "single") if cfg is not None else "single"
        self.text = TextPrototypes(backbone, self.class_names, templates, False, eval_mode)
        self.scale = float(backbone.logit_scale_value())

    def prototypes(self, classes: Sequence[int]) -> torch.Tensor:
        """(C, D) unnormalised text prototypes of ``classes`` (computed once: nothing changes)."""
        key = tuple(int(c) for c in classes)
        device = next(self.backbone.parameters()).device
        return self.cached(("eval", key, str(device)), lambda: self.text.embed(key, "eval", device))

    @torch.no_grad()
    def predict(self, batch: Batch, classes: Sequence[int]) -> Prediction:
        img = tower_embedding(self.backbone, batch, "image")
        aud = tower_embedding(self.backbone, batch, "audio")
        t = F.normalize(self.prototypes(classes), dim=-1)
        ci, ca = F.normalize(img, dim=-1) @ t.t(), F.normalize(aud, dim=-1) @ t.t()
        avg = combine_modalities(ci, ca, batch.has_image.bool(), batch.has_audio.bool())
        main = {"image": ci, "audio": ca, "average": avg}[self.options.modality]
        return Prediction(
            logits=self.scale * main,
            by_modality={"image": self.scale * ci, "audio": self.scale * ca, "fused": self.scale * avg},
            features={"image": F.normalize(img, dim=-1), "audio": F.normalize(aud, dim=-1)},
        )

    @torch.no_grad()
    def class_text_embeddings(self, classes: Sequence[int]) -> torch.Tensor:
        """(C, D) raw mean evaluation-prompt embeddings (metric M1)."""
        device = next(self.backbone.parameters()).device
        return self.text.embed(list(classes), "eval", device, normalize_templates=False)

    def statistics(self) -> dict[str, Any]:
        return {**super().statistics(), "modality": self.options.modality}
