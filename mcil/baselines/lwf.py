"""LwF: fine-tuning plus distillation to the previous model's predictions on old classes.

Li & Hoiem, "Learning without Forgetting" (ECCV 2016; TPAMI 2017). Before task t the current
adapters are snapshotted as a frozen *teacher*; while task t trains, each batch's image is also
scored by the teacher against the old classes' text prototypes, and the student is pulled
towards that distribution with a temperature-softened KL term (T = 2 as in the paper):

    L = CE(current classes) + λ · T² · KL(softmax(z_old^teacher / T) ‖ softmax(z_old^student / T)).

No data of old tasks is stored: the only memory is the teacher (one adapter set).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mcil.baselines._common import AdapterOptions, AdapterTextLearner, cosine_logits, opt
from mcil.config import ConfigError
from mcil.learners.base import Batch, Task
from mcil.learners.registry import register_learner
from mcil.method.mife import MIFE

__all__ = ["LwF", "LwFOptions", "distillation"]


@dataclass(frozen=True)
class LwFOptions(AdapterOptions):
    """Distillation settings, plus the shared adapter options."""

    temperature: float = opt(2.0, "distillation temperature T (LwF: 2)")
    lam: float = opt(1.0, "weight of the distillation term (LwF's λ_o = 1: old and new tasks weigh the same)")

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        if not self.temperature > 0:
            raise ConfigError(f"{prefix}.temperature: {self.temperature!r} must be > 0")
        if self.lam < 0:
            raise ConfigError(f"{prefix}.lam: {self.lam!r} is out of range; allowed: >= 0")


def distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)), averaged over rows.

    student, teacher: (B, C) logits over the same classes → scalar. The T² factor keeps the
    gradient magnitude independent of T (Hinton et al., 2015).
    """
    t = temperature
    log_p_s = F.log_softmax(student / t, dim=1)
    log_p_t = F.log_softmax(teacher / t, dim=1)
    return (t * t) * F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


@register_learner
class LwF(AdapterTextLearner):
    """LwF (Li & Hoiem, ECCV 2016): fine-tuning + distillation to the previous model on old classes.

    ``teacher`` is a submodule created in ``begin_task`` (t ≥ 1) as a copy of the adapters, so a
    resumed run (replayed ``start_task`` + ``load_state_dict``) restores it exactly.
    """

    NAME = "lwf"
    Options = LwFOptions

    def __init__(self, backbone: Any, class_names: Sequence[str], templates: str, cfg: Any,
                 options: LwFOptions = LwFOptions()) -> None:
        super().__init__(backbone, class_names, templates, cfg, options)
        self.teacher: MIFE | None = None
        self._old: tuple[int, ...] = ()
        self._teacher_protos: torch.Tensor | None = None

    def begin_task(self, task: Task) -> None:
        super().begin_task(task)
        self._teacher_protos = None
        current = set(task.classes)
        self._old = tuple(c for c in task.seen_classes if c not in current)
        if task.index == 0:
            return
        if self.teacher is not None:
            self.teacher.detach()
        teacher = MIFE(list(self.backbone.image_sites()) + list(self.backbone.text_sites()), self.adapter_config())
        for a in teacher.adapters:
            a.recording = False
        teacher.to(self.device)
        teacher.load_state_dict(self.adapter.state_dict())
        teacher.requires_grad_(False)
        teacher.eval()
        self.teacher = teacher

    def train(self, mode: bool = True) -> LwF:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher is a fixed function: no dropout
        return self

    def teacher_logits(self, batch: Batch) -> torch.Tensor:
        """(B, C_old) logits of the frozen teacher on the old classes (no gradient)."""
        assert self.teacher is not None
        with torch.no_grad():
            feats = self.image_features(batch, self.teacher)
            if self._teacher_protos is None:  # fixed for the whole task: computed once
                self._teacher_protos = self.text_features(self._old, "train", self.teacher)
            return cosine_logits(feats, self._teacher_protos, self.scale)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        self._teacher_protos = None
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if self.teacher is not None:  # loading re-applies MIFE's trainable flags: freeze again
            self.teacher.requires_grad_(False)
            self.teacher.eval()
        return result

    def extra_loss(self, batch: Batch, features: torch.Tensor, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.teacher is None or not self._old or self.options.lam == 0:
            return {}
        keep = batch.has_image.to(features.device).bool()
        if not bool(keep.any()):
            return {}
        student = cosine_logits(features, self.text_features(self._old, "train"), self.scale)
        teacher = self.teacher_logits(batch)
        return {"kd": self.options.lam * distillation(student[keep], teacher[keep], self.options.temperature)}

    def statistics(self) -> dict[str, Any]:
        return {**super().statistics(), "temperature": self.options.temperature, "lam": self.options.lam}
