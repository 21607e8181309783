"""``method.options`` of the paper's method ``mcil`` (:class:`McilOptions`), validated and turned
into the MIFE config; the moe-adapters baseline takes its shared fields from here too."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mcil.config import ConfigError
from mcil.method.mife import MifeConfig

__all__ = ["McilOptions"]


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class McilOptions:
    """``method.options`` of ``mcil`` (see docs/method.md for the reasoning behind each default)."""

    mife: bool = _opt(True, "MoE adapters on the image and text towers (false: frozen towers, AAVFM only)")
    experts: Literal["task-experts", "official"] = _opt(
        "task-experts", "task-experts: each task adds its own experts + router columns; official: one shared pool"
    )
    n_experts: int = _opt(5, "pool size per site for experts=official")
    experts_per_task: int = _opt(2, "experts (and router columns) added per site per task for experts=task-experts")
    top_k: int = _opt(2, "experts picked per sample; 1 = official (the router then gets no gradient)")
    route_current: bool = _opt(True, "task-experts: keep one current-task expert among the picks while training")
    freeze_old: bool = _opt(True, "task-experts: freeze earlier tasks' experts and router columns")
    official_freeze_hack: bool = _opt(
        False, "experts=official: freeze for good every expert some sample of a training batch did not pick"
    )
    balance_loss: float = _opt(0.0, "weight of the Switch load-balancing loss (0 = off, as official)")
    router_input: Literal["mean", "first-token"] = _opt("mean", "router sees the token mean or token 0 (official)")
    text_router_input: Literal["same", "mean", "prompt-mean", "first-token"] = _opt(
        "prompt-mean",
        "router input of the text sites only. prompt-mean: the mean over each prompt's own tokens (<sot>..<eot>), "
        "so routing does not depend on the padding, and prompts are encoded trimmed to the longest one, exactly; "
        "same: router_input (mean then averages padding too); first-token with router_input=mean is the official "
        "text routing on a convolutional image tower (AudioCLIP RN50)",
    )
    bottleneck: int = _opt(64, "expert bottleneck width")
    adapter_scale: float = _opt(0.1, "fixed output scale of every expert")
    adapter_lr_scale: float = _opt(
        100.0,
        "lr of the MIFE experts and routers as a multiple of optim.lr (they start at zero output, the fusion MLP "
        "does not: Adam moves each by about lr per step); 100 chosen on validation (docs/tuning.md), 1 = official",
    )
    dropout: float = _opt(0.1, "dropout inside the experts")
    text_diversity: bool = _opt(True, "training prototypes average the template set's train list (false: test template)")
    logit_scale: Literal["backbone", "official-raw"] = _opt(
        "backbone", "backbone: s = exp(logit_scale) of the backbone; official-raw: s = ln(1/0.07), raw prototypes"
    )
    fusion_hidden: int | None = _opt(None, "hidden width of the fusion MLP (null: the embedding width)")
    grad_probe_steps: int = _opt(
        3, "first steps of each task on which ||grad L_MI|| / ||grad L_CW|| is measured (statistics; 0 = off)"
    )

    def validate(self, prefix: str) -> None:
        for name in ("n_experts", "experts_per_task", "top_k", "bottleneck"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{prefix}.{name}: {getattr(self, name)!r} is out of range; allowed: >= 1")
        if not (0.0 <= self.dropout < 1.0):
            raise ConfigError(f"{prefix}.dropout: {self.dropout!r} is out of range; allowed: [0, 1)")
        if self.balance_loss < 0:
            raise ConfigError(f"{prefix}.balance_loss: {self.balance_loss!r} is out of range; allowed: >= 0")
        if not self.adapter_lr_scale > 0:
            raise ConfigError(f"{prefix}.adapter_lr_scale: {self.adapter_lr_scale!r} is out of range; allowed: > 0")
        if self.grad_probe_steps < 0:
            raise ConfigError(f"{prefix}.grad_probe_steps: {self.grad_probe_steps!r} is out of range; allowed: >= 0")
        if self.fusion_hidden is not None and self.fusion_hidden < 1:
            raise ConfigError(f"{prefix}.fusion_hidden: {self.fusion_hidden!r} must be >= 1 or null")
        if self.official_freeze_hack and self.experts != "official":
            raise ConfigError(f"{prefix}.official_freeze_hack: only applies with {prefix}.experts=official")

    def mife_config(self) -> MifeConfig:
        return MifeConfig(
            experts=self.experts,
            n_experts=self.n_experts,
            experts_per_task=self.experts_per_task,
            top_k=self.top_k,
            route_current=self.route_current,
            freeze_old=self.freeze_old,
            official_freeze_hack=self.official_freeze_hack,
            router_input=self.router_input,
            bottleneck=self.bottleneck,
            adapter_scale=self.adapter_scale,
            dropout=self.dropout,
            balance=self.balance_loss > 0,
        )
