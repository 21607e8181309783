"""EWC (online): fine-tuning plus a quadratic penalty that anchors important adapter weights.

Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks" (PNAS 2017); the
online variant of Schwarz et al., "Progress & Compress" (ICML 2018): one running Fisher
F ← γ·F + F_t and one anchor θ* (the weights after the last task) instead of one pair per task,
so memory stays constant. While task t > 0 trains,

    L = CE(current classes) + (λ/2) · Σ_i F_i (θ_i − θ*_i)².

F_t is the empirical Fisher of the task: the mean over (up to ``fisher_samples``) training
samples of the squared per-sample gradient of the log-likelihood of the true label, computed
after the task with the adapters in eval mode (no dropout).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mcil.baselines._common import AdapterOptions, AdapterTextLearner, cosine_logits, label_positions, opt
from mcil.config import ConfigError
from mcil.learners.base import Batch, BatchLoader, Task
from mcil.learners.registry import register_learner

__all__ = ["EWC", "EWCOptions"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EWCOptions(AdapterOptions):
    """Penalty settings, plus the shared adapter options."""

    lam: float = opt(1.0e4, "penalty weight λ (adapter Fisher values are ~1e-5: λ must be large to matter)")
    gamma: float = opt(0.9, "decay of the running Fisher, F ← γF + F_t (1: plain sum over tasks)")
    fisher_samples: int = opt(256, "training samples per task for the empirical Fisher (per-sample gradients)")

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        if self.lam < 0:
            raise ConfigError(f"{prefix}.lam: {self.lam!r} is out of range; allowed: >= 0")
        if not 0.0 <= self.gamma <= 1.0:
            raise ConfigError(f"{prefix}.gamma: {self.gamma!r} is out of range; allowed: [0, 1]")
        if self.fisher_samples < 1:
            raise ConfigError(f"{prefix}.fisher_samples: {self.fisher_samples} is out of range; allowed: >= 1")


@register_learner
class EWC(AdapterTextLearner):
    """Online EWC (Kirkpatrick et al. 2017; Schwarz et al. 2018): fine-tuning + Fisher penalty on the adapters.

    Buffers ``fisher_i`` / ``anchor_i`` (one pair per adapter weight, allocated at construction
    with zeros) and ``n_fisher`` (tasks folded into F) are checkpointed with the state dict.
    """

    NAME = "ewc"
    Options = EWCOptions

    def __init__(self, backbone: Any, class_names: Sequence[str], templates: str, cfg: Any,
                 options: EWCOptions = EWCOptions()) -> None:
        super().__init__(backbone, class_names, templates, cfg, options)
        for i, p in enumerate(self.ewc_parameters()):
            self.register_buffer(f"fisher_{i}", torch.zeros_like(p))
            self.register_buffer(f"anchor_{i}", torch.zeros_like(p))
        self.register_buffer("n_fisher", torch.zeros((), dtype=torch.long))

    def ewc_parameters(self) -> list[nn.Parameter]:
        """Every adapter weight, in a fixed order (the single expert per site never changes shape)."""
        return [p for a in self.adapter.adapters for p in a.experts.parameters()]

    def _pairs(self) -> list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]]:
        return [
            (p, getattr(self, f"fisher_{i}"), getattr(self, f"anchor_{i}")) for i, p in enumerate(self.ewc_parameters())
        ]

    def penalty(self) -> torch.Tensor:
        """(λ/2) Σ F (θ − θ*)² — a scalar with gradient to the adapters; 0 before the first Fisher."""
        total = torch.zeros((), device=self.device)
        for p, fisher, anchor in self._pairs():
            total = total + (fisher * (p - anchor) ** 2).sum()
        return 0.5 * self.options.lam * total

    def extra_loss(self, batch, features, rows) -> dict[str, torch.Tensor]:
        if int(self.n_fisher) == 0 or self.options.lam == 0:
            return {}
        return {"ewc": self.penalty()}

    def end_task(self, task: Task, loader: BatchLoader) -> None:
        super().end_task(task, loader)
        fisher = self.fisher_information(task, loader)
        with torch.no_grad():
            for (p, f_old, anchor), f_new in zip(self._pairs(), fisher):
                f_old.mul_(self.options.gamma if int(self.n_fisher) > 0 else 0.0).add_(f_new)
                anchor.copy_(p.detach())
            self.n_fisher += 1
        mean = float(torch.cat([f.flatten() for f in fisher]).mean())
        log.info("ewc task %d: Fisher mean %.3g", task.index + 1, mean)

    def fisher_information(self, task: Task, loader: BatchLoader) -> list[torch.Tensor]:
        """Empirical Fisher of ``task``: mean over samples of (∂ log p(y|x) / ∂θ)², one tensor per
        :meth:`ewc_parameters` entry. Per-sample gradients (image batch of 1) over the first
        ``fisher_samples`` samples with an image; the text prototypes' graph is shared."""
        params = self.ewc_parameters()
        acc = [torch.zeros_like(p) for p in params]
        n = 0
        classes = task.classes
        with torch.enable_grad():
            protos = self.text_features(classes, "train")
            for batch in loader():
                target = label_positions(batch.labels, classes, self.n_classes)
                for i in range(len(batch)):
                    if n >= self.options.fisher_samples:
                        break
                    if not bool(batch.has_image[i]) or int(target[i]) < 0:
                        continue
                    one = _row(batch, i)
                    logits = cosine_logits(self.image_features(one), protos, self.scale)
                    loss = F.cross_entropy(logits, target[i : i + 1])
                    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
                    for a, g in zip(acc, grads):
                        if g is not None:
                            a.add_(g.detach() ** 2)
                    n += 1
                if n >= self.options.fisher_samples:
                    break
        return [a / max(n, 1) for a in acc]

    def statistics(self) -> dict[str, Any]:
        with torch.no_grad():
            fisher_mean = float(torch.cat([f.flatten() for _, f, _ in self._pairs()]).mean()) if self._pairs() else 0.0
        o = self.options
        return {**super().statistics(), "lam": o.lam, "gamma": o.gamma, "fisher_mean": fisher_mean}


def _row(batch: Batch, i: int) -> Batch:
    """The i-th sample of a batch as a batch of one."""
    def pick(v: object) -> object:
        return v[i : i + 1] if isinstance(v, torch.Tensor) else v

    return Batch(**{f.name: pick(getattr(batch, f.name)) for f in fields(Batch)})
