"""How hard L_MI pushes compared with L_CW: gradient norms on generated features.

``python -m mcil.method.gradient_scale`` logs, for several widths D and batch sizes B, the values
of L_CW (cross-entropy over cosine logits) and of each L_MI variant, and the ratio
``‖∂L_MI/∂f‖ / ‖∂L_CW/∂f‖`` w.r.t. the fused features ``f`` (unit rows). Runs in about a second;
docs/method.md quotes its table. The features are generated so that the classifier is neither
random nor saturated: ``f_v, f_a = normalise(t_y + σ·z)`` around the class prototype ``t_y`` of a
random label, ``f = normalise(f_v + f_a)`` (the fused feature at initialisation).
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mcil.method.losses import cosine_logits, grad_norm_scale, mi_loss

__all__ = ["MiVariant", "VARIANTS", "GradientScale", "feature_gradient_scale"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MiVariant:
    """One setting of ``loss.mi_estimator`` / ``loss.mi_input`` / ``loss.mi_scale``."""

    estimator: str = "official"
    inputs: str = "unit-rms"
    scale: str = "none"

    @property
    def label(self) -> str:
        base = f"official/{self.inputs}" if self.estimator == "official" else self.estimator
        return base if self.scale == "none" else f"{base}+{self.scale}"


VARIANTS = (
    MiVariant("official", "official"),
    MiVariant("official", "unit-rms"),
    MiVariant("infonce"),
    MiVariant("official", "unit-rms", "grad-norm"),
    MiVariant("infonce", "unit-rms", "grad-norm"),
)


@dataclass(frozen=True)
class GradientScale:
    l_cw: float
    l_mi: float  # the MI term as it enters the loss (times the grad-norm weight)
    grad_cw: float  # ‖∂L_CW/∂f‖
    grad_mi: float  # ‖∂(MI term)/∂f‖

    @property
    def ratio(self) -> float:
        return self.grad_mi / self.grad_cw


def feature_gradient_scale(
    variant: MiVariant, dim: int, batch: int, n_classes: int = 4, scale: float = 1 / 0.07, noise: float = 6.0, seed: int = 0
) -> GradientScale:
    """L_CW and L_MI and their gradient norms w.r.t. the fused features ``f`` ``(batch, dim)``.

    ``scale`` is the classifier's logit scale s; the InfoNCE estimator runs at τ = 1/s, as in the
    learner. ``noise`` σ: spread of the generated features around their class prototype.
    """
    g = torch.Generator().manual_seed(seed)
    protos = F.normalize(torch.randn(n_classes, dim, generator=g), dim=-1)  # (C, D)
    y = torch.randint(n_classes, (batch,), generator=g)
    f_v = F.normalize(protos[y] + noise * torch.randn(batch, dim, generator=g) / math.sqrt(dim), dim=-1)
    f_a = F.normalize(protos[y] + noise * torch.randn(batch, dim, generator=g) / math.sqrt(dim), dim=-1)
    f = F.normalize(f_v + f_a, dim=-1).requires_grad_()
    l_cw = F.cross_entropy(cosine_logits(f, protos, scale), y)
    l_mi = mi_loss(f, f_v, f_a, "mean", variant.inputs, variant.estimator, 1.0 / scale)
    if variant.scale == "grad-norm":
        l_mi = grad_norm_scale(l_cw, l_mi, f) * l_mi
    (g_cw,) = torch.autograd.grad(l_cw, f, retain_graph=True)
    (g_mi,) = torch.autograd.grad(l_mi, f)
    return GradientScale(float(l_cw.detach()), float(l_mi.detach()), float(g_cw.norm()), float(g_mi.norm()))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, nargs="+", default=[32, 128, 512])
    p.add_argument("--batches", type=int, nargs="+", default=[4, 16, 64])
    p.add_argument("--scale", type=float, default=1 / 0.07, help="logit scale s (τ = 1/s for InfoNCE)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    header = f"{'variant':32s}" + "".join(f"  D={d:<4d}B={b:<3d}" for d in args.dims for b in args.batches)
    log.info("‖∂L_MI/∂f‖ / ‖∂L_CW/∂f‖ (s = %.3g)\n%s", args.scale, header)
    for v in VARIANTS:
        cells = [feature_gradient_scale(v, d, b, scale=args.scale) for d in args.dims for b in args.batches]
        log.info("%-32s%s", v.label, "".join(f"  {c.ratio:11.3g}" for c in cells))
    log.info("values L_CW | L_MI at D=%d, B=%d:", args.dims[-1], args.batches[-1])
    for v in VARIANTS:
        c = feature_gradient_scale(v, args.dims[-1], args.batches[-1], scale=args.scale)
        log.info("%-32s %.4g | %.4g", v.label, c.l_cw, c.l_mi)


if __name__ == "__main__":
    main()
