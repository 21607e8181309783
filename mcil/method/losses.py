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

L_MI: ``−MI(f_fused, f_v) − MI(f_fused, f_a)`` over the samples that took the fusion path; 0 when
none did (:func:`mi_loss`). ``loss.mi_estimator``: ``official`` (the official softmax estimator
over the D feature entries, :func:`mcil.metrics.paper.mutual_information`; unbounded) with
``loss.mi_input`` ``unit-rms`` (unit features × sqrt(D)) or ``official`` (unit features: the
softmax is almost uniform and the gradient ~1/200 of L_CW's), or ``infonce``
(:func:`infonce_mi`, cosines at τ = 1/s). ``loss.mi_scale=grad-norm`` (the learner; default)
weighs L_MI by :func:`grad_norm_scale`, so that α is L_CW's share of the gradient on the fused
features: no fixed estimator keeps ‖∇L_MI‖/‖∇L_CW‖ stable, because L_CW saturates on easy tasks
and the official estimator never does (docs/method.md, measured ratios per variant).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

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
    "infonce_mi",
    "grad_norm_scale",
    "total_loss",
    "check_finite",
    "grad_norm",
]

CwVariant = Literal["weighted", "official"]
Reduction = Literal["mean", "sum"]
MiInput = Literal["unit-rms", "official"]
MiEstimator = Literal["official", "infonce"]


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


def infonce_mi(x: torch.Tensor, y: torch.Tensor, temperature: float, reduction: Reduction = "mean") -> torch.Tensor:
    """InfoNCE estimate of MI(x; y) from ``n`` paired rows ``x, y`` ``(n, D)``, a scalar.

    ``ℓ_ij = cos(x_i, y_j) / τ``; per row ``log n − ½(CE(ℓ_i·, i) + CE(ℓ_·i, i))`` (both
    directions, as CLIP), summed over rows (``'sum'``) or averaged (``'mean'``). It is a lower
    bound on the true MI, at most ``log n``, and ``log n − log n = 0`` for a single pair. Cosines
    make it invariant to the features' norm and width D, and its gradient w.r.t. a unit feature is
    at most ``2/τ`` per row, like cross-entropy over cosine logits at scale ``s = 1/τ``.
    """
    n = x.shape[0]
    logits = F.normalize(x.float(), dim=-1) @ F.normalize(y.float(), dim=-1).t() / temperature  # (n, n)
    target = torch.arange(n, device=x.device)
    ce = 0.5 * (
        F.cross_entropy(logits, target, reduction="none") + F.cross_entropy(logits.t(), target, reduction="none")
    )  # (n,)
    rows = math.log(n) - ce
    return rows.sum() if reduction == "sum" else rows.mean()


def mi_loss(
    f_fused: torch.Tensor,
    f_v: torch.Tensor,
    f_a: torch.Tensor,
    reduction: Reduction = "mean",
    inputs: MiInput = "unit-rms",
    estimator: MiEstimator = "official",
    temperature: float = 1.0,
) -> torch.Tensor:
    """``−MI(f_fused, f_v) − MI(f_fused, f_a)``; inputs ``(n, D)`` for the n fused samples.

    Minimising it maximises both MI terms. ``estimator='official'``: the official softmax
    estimator over the D entries (≥ 0, unbounded); ``inputs='unit-rms'`` multiplies every feature
    by sqrt(D) first, ``'official'`` uses them as given. ``estimator='infonce'``:
    :func:`infonce_mi` at ``temperature`` (``inputs`` does not apply: cosines ignore the norm).
    ``n == 0`` gives a zero scalar (no sample fused).
    """
    if f_fused.shape[0] == 0:
        return f_fused.new_zeros((), dtype=torch.float32)
    if estimator == "infonce":
        if not temperature > 0:
            raise ValueError(f"infonce temperature must be > 0, got {temperature!r}")
        return -(infonce_mi(f_fused, f_v, temperature, reduction) + infonce_mi(f_fused, f_a, temperature, reduction))
    if estimator != "official":
        raise ValueError(f"loss.mi_estimator: unknown value {estimator!r}; allowed: official, infonce")
    if inputs == "unit-rms":
        k = math.sqrt(f_fused.shape[1])
        f_fused, f_v, f_a = f_fused * k, f_v * k, f_a * k
    elif inputs != "official":
        raise ValueError(f"loss.mi_input: unknown value {inputs!r}; allowed: unit-rms, official")
    return -(mutual_information(f_fused, f_v, reduction) + mutual_information(f_fused, f_a, reduction))


def grad_norm_scale(l_cw: torch.Tensor, l_mi: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """``stop-grad(‖∂L_CW/∂at‖ / ‖∂L_MI/∂at‖)``, a detached scalar (0 when ‖∂L_MI/∂at‖ = 0).

    ``at``: any tensor both losses depend on (the learner passes the fused features ``(n, D)``).
    ``c·L_MI`` then pushes ``at`` exactly as hard as ``L_CW`` does, so in ``α·L_CW + (1−α)·c·L_MI``
    α is the share of the gradient norm that L_CW gets, whatever the two losses' own scales.
    The graph is retained; no host synchronisation.
    """
    if not (l_cw.requires_grad and l_mi.requires_grad and at.requires_grad):
        return l_mi.new_zeros(())
    (g_cw,) = torch.autograd.grad(l_cw, at, retain_graph=True, allow_unused=True)
    (g_mi,) = torch.autograd.grad(l_mi, at, retain_graph=True, allow_unused=True)
    if g_cw is None or g_mi is None:
        return l_mi.new_zeros(())
    n_cw, n_mi = g_cw.detach().float().norm(), g_mi.detach().float().norm()
    return torch.where(n_mi > 0, n_cw / n_mi.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(n_mi))


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
