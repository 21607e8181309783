"""AdamW for the trainer, without ``torch.optim``'s start-up cost.

Every ``torch.optim`` optimizer imports ``torch._dynamo`` the first time one is built or stepped
(``add_param_group``, ``zero_grad`` and ``step`` are wrapped for the compiler): 1.8 s measured
with ``python -X importtime``, paid by every training job of the pipeline, whose runs last
≈ 8 s. Nothing in mcil compiles, so this module re-implements decoupled-weight-decay Adam
(Loshchilov & Hutter, ICLR 2019) with exactly the update of ``torch.optim.AdamW``'s
single-tensor path (its CPU default); ``tests/test_optim.py`` checks the parameters agree with
``torch.optim.AdamW`` after many steps, on CPU bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch

__all__ = ["AdamW"]


class AdamW:
    """``torch.optim.AdamW(params, lr, betas, eps, weight_decay)`` for one parameter group.

    ``lr`` is a plain attribute (the trainer sets it every step from its schedule). ``lr_scales``
    (one float per parameter, default all 1) multiplies it per parameter, as torch's parameter
    groups with their own ``lr`` would: a learner whose parts need different step sizes (zero-
    initialised adapters beside a fusion MLP) keeps one schedule. State per parameter: ``step``
    (int), ``exp_avg``, ``exp_avg_sq`` (tensors like the parameter).
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        lr_scales: Sequence[float] | None = None,
    ) -> None:
        self.params = [p for p in params]
        if not self.params:
            raise ValueError("AdamW got an empty parameter list")
        self.lr_scales = [1.0] * len(self.params) if lr_scales is None else [float(x) for x in lr_scales]
        if len(self.lr_scales) != len(self.params) or not all(x > 0 for x in self.lr_scales):
            raise ValueError(f"AdamW: lr_scales needs one positive factor per parameter ({len(self.params)})")
        if not (lr >= 0.0 and eps >= 0.0 and weight_decay >= 0.0 and 0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"AdamW: invalid lr={lr}, betas={betas}, eps={eps} or weight_decay={weight_decay}")
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), betas, float(eps), float(weight_decay)
        self.steps = [0] * len(self.params)
        self.exp_avg: list[torch.Tensor | None] = [None] * len(self.params)
        self.exp_avg_sq: list[torch.Tensor | None] = [None] * len(self.params)

    def zero_grad(self) -> None:
        """Drop the gradients (``set_to_none=True``)."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (others are skipped, as in torch)."""
        beta1, beta2 = self.betas
        eps = self.eps
        for i, p in enumerate(self.params):
            grad = p.grad
            if grad is None:
                continue
            if self.exp_avg[i] is None:
                self.exp_avg[i] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.exp_avg_sq[i] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avg, exp_avg_sq = self.exp_avg[i], self.exp_avg_sq[i]
            self.steps[i] += 1
            step = self.steps[i]
            lr = self.lr * self.lr_scales[i]
            p.mul_(1 - lr * self.weight_decay)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            bias_correction1 = 1 - beta1**step
            bias_correction2_sqrt = math.sqrt(1 - beta2**step)
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
            p.addcdiv_(exp_avg, denom, value=-(lr / bias_correction1))

    def state_dict(self) -> dict[str, Any]:
        """Hyper-parameters and per-parameter state, in parameter order (for resume)."""
        return {
            "lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay,
            "steps": list(self.steps), "exp_avg": list(self.exp_avg), "exp_avg_sq": list(self.exp_avg_sq),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the parameter list must be the same length."""
        if len(state["steps"]) != len(self.params):
            raise ValueError(
                f"optimizer state holds {len(state['steps'])} parameters, this optimizer {len(self.params)}: "
                "the checkpoint belongs to another configuration"
            )
        self.lr, self.betas = float(state["lr"]), tuple(state["betas"])
        self.eps, self.weight_decay = float(state["eps"]), float(state["weight_decay"])
        self.steps = [int(s) for s in state["steps"]]
        dev = [p.device for p in self.params]
        self.exp_avg = [None if t is None else t.to(d) for t, d in zip(state["exp_avg"], dev)]
        self.exp_avg_sq = [None if t is None else t.to(d) for t, d in zip(state["exp_avg_sq"], dev)]
