"""MoE-Adapters4CL: mixture-of-experts adapters on CLIP's image and text towers, plain CE.

Yu, Zhuge, Zhang, Hu, Wang, Lu, He, "Boosting Continual Learning of Vision-Language Models via
Mixture-of-Experts Adapters" (CVPR 2024) — the code base the paper's official implementation
modifies. Here it is the paper's MIFE (``mcil.method.mife``, same experts, routers and presets,
same defaults) *without* everything the paper adds: the audio tower is never called, there is no
fusion module and no mutual-information term — cross-entropy over the current task's classes
between the adapted image embedding and the adapted text prototypes. The difference to ``mcil``
is therefore exactly the audio-visual part of the method. (MoE-Adapters4CL's Distribution
Discriminative Auto-Selector, which routes out-of-distribution inputs to the frozen CLIP for
zero-shot transfer, serves its cross-domain setting and is not part of this baseline.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from mcil.baselines._common import AdapterOptions, AdapterTextLearner, opt
from mcil.config import ConfigError
from mcil.learners.registry import register_learner
from mcil.method.mife import MifeConfig
from mcil.method.options import McilOptions

__all__ = ["MoEAdapters", "MoEAdaptersOptions"]


_MCIL_FIELDS = {f.name: f for f in dataclasses.fields(McilOptions)}


def _same(name: str) -> Any:
    """The ``mcil`` learner's option ``name``: same default, same help."""
    f = _MCIL_FIELDS[name]
    return opt(f.default, f.metadata.get("help", ""))


@dataclass(frozen=True)
class MoEAdaptersOptions(AdapterOptions):
    """The MIFE options of the ``mcil`` learner, same names and defaults (taken from
    :class:`mcil.method.options.McilOptions`, so the two cannot drift apart): experts
    ('task-experts' | 'official'), n_experts, experts_per_task, top_k, route_current, freeze_old,
    official_freeze_hack, balance_loss, router_input, bottleneck, adapter_scale, dropout.
    text_diversity defaults to False (MoE-Adapters4CL trains on one template)."""

    experts: Literal["task-experts", "official"] = _same("experts")
    n_experts: int = _same("n_experts")
    experts_per_task: int = _same("experts_per_task")
    top_k: int = _same("top_k")
    route_current: bool = _same("route_current")
    freeze_old: bool = _same("freeze_old")
    official_freeze_hack: bool = _same("official_freeze_hack")
    balance_loss: float = _same("balance_loss")
    router_input: Literal["mean", "first-token"] = _same("router_input")
    bottleneck: int = _same("bottleneck")
    adapter_scale: float = _same("adapter_scale")
    dropout: float = _same("dropout")

    def validate(self, prefix: str) -> None:
        super().validate(prefix)
        for name in ("n_experts", "experts_per_task", "top_k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{prefix}.{name}: {getattr(self, name)} is out of range; allowed: >= 1")
        if self.balance_loss < 0:
            raise ConfigError(f"{prefix}.balance_loss: {self.balance_loss!r} is out of range; allowed: >= 0")
        if self.official_freeze_hack and self.experts != "official":
            raise ConfigError(f"{prefix}.official_freeze_hack: only applies with {prefix}.experts=official")


@register_learner
class MoEAdapters(AdapterTextLearner):
    """MoE-Adapters4CL (Yu et al., CVPR 2024): the MIFE experts on image + text, plain CE, no audio."""

    NAME = "moe-adapters"
    Options = MoEAdaptersOptions
    RECORD_USAGE = True  # expert usage is part of what this baseline reports

    def adapter_config(self) -> MifeConfig:
        o = self.options
        return MifeConfig(
            experts=o.experts, n_experts=o.n_experts, experts_per_task=o.experts_per_task, top_k=o.top_k,
            route_current=o.route_current, freeze_old=o.freeze_old, official_freeze_hack=o.official_freeze_hack,
            router_input=o.router_input, bottleneck=o.bottleneck, adapter_scale=o.adapter_scale, dropout=o.dropout,
            balance=o.balance_loss > 0,
        )

    def extra_loss(self, batch, features, rows) -> dict[str, torch.Tensor]:
        """The Switch load-balancing term over this step's routed site forwards (if enabled)."""
        term = self.adapter.pop_balance_loss()
        if term is None or self.options.balance_loss == 0:
            return {}
        return {"balance": self.options.balance_loss * term}

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Experts and routers of the current task (with top_k ≥ 2 the routers learn)."""
        return [p for p in self.adapter.parameters() if p.requires_grad]

    def statistics(self) -> dict[str, Any]:
        return {**super().statistics(), "mife": self.adapter.statistics()}
