"""The classifier and the losses of the method: scaled cosine logits, L_CW, L_MI and their mix.

All pure functions of tensors. Shapes: B samples, C classes, D embedding width.

``L = α·L_CW + (1 − α)·L_MI`` (``loss.alpha``; official 0.7).

L_CW (``loss.cw``), the similarity-weighted class-incremental loss (``L_WCCL`` in the figure):

- ``official`` (default): the code's formula ``(1/B) Σ_i Σ_j w_ij CE_i / Σ_j w_ij`` with
  ``w_ij = (cos(f_v^i, f_v^j) + 1)/2``. ``CE_i`` does not depend on ``j``, so the weights cancel
  and this *is* mean cross-entropy (computed literally, to show it).
- ``weighted``: the weights act on the *targets*, in the spirit of continuously
  weighted contrastive losses: sample i's target distribution is
  ``q_i = Σ_j w_ij onehot(y_j) / Σ_j w_ij`` (``w_ii = 1`` included), and the loss is the
  soft-target cross-entropy ``mean_i −Σ_c q_ic log softmax(ℓ_i)_c``. A sample that looks like
  batch-mates of other classes is asked for a less confident prediction. The weights are
  detached (targets, not a path for gradients).

L_MI (``loss.mi_reduction``, ``loss.mi_input``): ``−MI(f_fused, f_v) − MI(f_fused, f_a)`` with the
official softmax MI estimator (:func:`mcil.metrics.paper.mutual_information`), over the samples
that took the fusion path; 0 when none did. The estimator takes a softmax over the D entries of
``x ⊙ y``; for unit vectors those entries are O(1/D), the softmax is almost uniform and the loss
and its gradient vanish (measured: max |∂L_MI/∂x| ≈ 0.004 vs ≈ 0.1 for L_CW). ``unit-rms``
(default) first rescales each unit vector by sqrt(D), so entries have unit RMS at any width;
``official`` keeps the unit vectors.
"""

from __future__ import annotations

import math
from typing import Literal, Mapping, Sequence

import torch
import torch.nn.functional as F

from mcil.errors import NonFiniteLossError
from mcil.metrics.paper import mutual_information

__all__ = [
    "NonFiniteLossError",
    "cosine_logits",
    "similarity_weights",
    "soft_cross_entropy",
    "cw_loss",
    "mi_loss",
    "total_loss",
    "check_finite",
    "grad_norm",
]

CwVariant = Literal["weighted", "official"]
Reduction = Literal["mean", "sum"]
MiInput = Literal["unit-rms", "official"]


def cosine_logits(
    features: torch.Tensor, prototypes: torch.Tensor, scale: float, normalize_prototypes: bool = True
) -> torch.Tensor:
    """``scale · ⟨f̂_b, t_c⟩``: features ``(B, D)`` (L2-normalised here), prototypes ``(C, D)``
    (normalised unless ``normalize_prototypes`` is False — the official training path) → ``(B, C)``."""
    f = F.normalize(features, dim=-1)
    t = F.normalize(prototypes, dim=-1) if normalize_prototypes else prototypes
    return scale * f @ t.t().to(f.dtype)


def similarity_weights(features: torch.Tensor) -> torch.Tensor:
    """``w_ij = (cos(f_i, f_j) + 1)/2`` in [0, 1]: ``(B, D)`` → ``(B, B)``, ``w_ii = 1``."""
    f = F.normalize(features.float(), dim=-1)
    return (f @ f.t() + 1.0) / 2.0


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample ``−Σ_c q_c log softmax(ℓ)_c``: logits ``(B, C)``, targets ``(B, C)`` rows summing to 1 → ``(B,)``."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=-1)


def cw_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    image_features: torch.Tensor,
    variant: CwVariant = "weighted",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """L_CW, a scalar. logits ``(B, C)`` over the current task's classes; targets ``(B,)`` local
    class indices; image_features ``(B, D)`` (the similarity weights' input)."""
    w = similarity_weights(image_features.detach())
    if variant == "official":
        ce = F.cross_entropy(logits.float(), targets, reduction="none", label_smoothing=label_smoothing)  # (B,)
        per_sample = (w * ce.unsqueeze(1)).sum(dim=1) / w.sum(dim=1)
        return per_sample.mean()
    if variant == "weighted":
        n_classes = logits.shape[1]
        onehot = F.one_hot(targets, n_classes).to(w.dtype)  # (B, C)
        q = (w @ onehot) / w.sum(dim=1, keepdim=True)
        if label_smoothing:
            q = (1.0 - label_smoothing) * q + label_smoothing / n_classes
        return soft_cross_entropy(logits, q).mean()
    raise ValueError(f"loss.cw: unknown variant {variant!r}; allowed: weighted, official")


def mi_loss(
    f_fused: torch.Tensor,
    f_v: torch.Tensor,
    f_a: torch.Tensor,
    reduction: Reduction = "mean",
    inputs: MiInput = "unit-rms",
) -> torch.Tensor:
    """``−MI(f_fused, f_v) − MI(f_fused, f_a)``; inputs ``(n, D)`` for the n fused samples.

    Minimising it maximises both MI terms (MI of this estimator is ≥ 0, so L_MI ≤ 0).
    ``inputs='unit-rms'`` multiplies every feature by sqrt(D) first (see the module docstring);
    ``'official'`` uses them as given. ``n == 0`` gives a zero scalar (no sample fused).
    """
    if f_fused.shape[0] == 0:
        return f_fused.new_zeros((), dtype=torch.float32)
    if inputs == "unit-rms":
        k = math.sqrt(f_fused.shape[1])
        f_fused, f_v, f_a = f_fused * k, f_v * k, f_a * k
    elif inputs != "official":
        raise ValueError(f"loss.mi_input: unknown value {inputs!r}; allowed: unit-rms, official")
    return -(mutual_information(f_fused, f_v, reduction) + mutual_information(f_fused, f_a, reduction))


def total_loss(l_cw: torch.Tensor, l_mi: torch.Tensor, alpha: float) -> torch.Tensor:
    """``α·L_CW + (1 − α)·L_MI``."""
    return alpha * l_cw + (1.0 - alpha) * l_mi


def grad_norm(term: torch.Tensor, inputs: Sequence[torch.Tensor]) -> float:
    """``‖∂term/∂(inputs)‖₂`` over all ``inputs`` together (any shapes), a float.

    Inputs that ``term`` does not depend on (or that need no gradient) count as zero; the graph is
    retained, so the caller can still backpropagate ``term``. Only the part of the graph between
    ``term`` and ``inputs`` is traversed, so asking for a small module's parameters is cheap.
    """
    inputs = [x for x in inputs if x.requires_grad]
    if not term.requires_grad or not inputs:
        return 0.0
    grads = torch.autograd.grad(term, inputs, retain_graph=True, allow_unused=True)
    return math.sqrt(sum(float(g.detach().double().pow(2).sum()) for g in grads if g is not None))


def check_finite(terms: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`NonFiniteLossError` naming the first non-finite term (the trainer adds task/step)."""
    for name, value in terms.items():
        if not bool(torch.isfinite(value.detach()).all()):
            raise NonFiniteLossError(
                f"loss term {name} is {float(value.detach().float().reshape(-1)[0])}; "
                "lower optim.lr, set optim.grad_clip, or check the input data"
            )
