"""AAVFM: the adaptive audio-visual fusion module (masking threshold + dynamic fusion).

Two parts, as in the paper figure:

1. **Masking threshold** ("calculate r", "modality feature selection"): the Pearson correlation
   ``r`` between a sample's image and audio embeddings decides whether its audio is trusted.
   :func:`pearson_r` and :func:`gate_decision` are pure functions of tensors.
2. **Dynamic fusion** (:class:`DynamicFusion`): learnable modality weights, weighted
   concatenation, cross-attention, MLP. Only samples whose gate is open go through it; the
   others keep the image feature (or the audio feature when they have no image).

Missing modalities: a sample without audio never fuses; a sample without image never fuses and
is classified from its audio feature alone (the audio tower shares the text-embedding space).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mcil.config import AttentionMode, GateMode

__all__ = [
    "AttentionMode",
    "pearson_r",
    "gate_decision",
    "adaptive_threshold",
    "select_features",
    "DynamicFusion",
]

def pearson_r(f_v: torch.Tensor, f_a: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-sample Pearson correlation across feature dimensions.

    f_v, f_a: ``(B, D)`` → ``(B,)`` in [-1, 1]. A row with zero variance (e.g. an all-zero
    missing-modality embedding) gives 0, not NaN. Invariant to per-row scaling, so it does not
    matter whether the embeddings are L2-normalised.
    """
    if f_v.shape != f_a.shape or f_v.dim() != 2:
        raise ValueError(f"pearson_r expects two (B, D) tensors of equal shape, got {tuple(f_v.shape)}, {tuple(f_a.shape)}")
    v = f_v.float() - f_v.float().mean(dim=1, keepdim=True)
    a = f_a.float() - f_a.float().mean(dim=1, keepdim=True)
    cov = (v * a).sum(dim=1)
    return cov / (v.norm(dim=1) * a.norm(dim=1)).clamp_min(eps)


def gate_decision(
    r: torch.Tensor,
    th: float,
    mode: GateMode,
    has_audio: torch.Tensor,
    has_image: torch.Tensor,
) -> torch.Tensor:
    """Which samples take the fusion path: ``(B,)`` bool.

    r: ``(B,)`` Pearson r (entries of samples lacking a modality are ignored, may be NaN);
    th: threshold (for ``adaptive`` the caller passes the estimated one);
    mode: ``batch`` (official: the mean r over the batch's samples that have both modalities
    opens or closes the gate for all of them), ``sample`` / ``adaptive`` (per sample
    ``r >= th``), ``always``, ``never``. Only samples with both modalities can fuse; a batch in
    which none has both gives all False.
    """
    both = has_audio.bool() & has_image.bool()
    if mode == "never":
        return torch.zeros_like(both)
    if mode == "always":
        return both
    if mode in ("sample", "adaptive"):
        return both & (r >= th)
    if mode == "batch":
        n = int(both.sum())
        if n == 0:
            return torch.zeros_like(both)
        mean_r = torch.where(both, r, torch.zeros_like(r)).sum() / n
        return both & bool(mean_r >= th)
    raise ValueError(f"fusion.gate: unknown mode {mode!r}; allowed: batch, sample, always, never, adaptive")


def adaptive_threshold(r: torch.Tensor, quantile: float) -> float:
    """The ``quantile`` of the finite values of ``r`` (``(N,)``); NaN when there are none.

    With gate ``adaptive`` a fraction ``1 − quantile`` of the task's samples fuses: the threshold
    follows the backbone's actual r distribution instead of a hand-set 0.8 (official), which the
    random audio projection of the official code never reaches.
    """
    r = r.detach().float().flatten()
    r = r[torch.isfinite(r)]
    if r.numel() == 0:
        return float("nan")
    return float(torch.quantile(r.cpu(), quantile))


def select_features(
    f_v: torch.Tensor, f_a: torch.Tensor, fused: torch.Tensor, f_fused: torch.Tensor, has_image: torch.Tensor
) -> torch.Tensor:
    """The feature the classifier sees, ``(B, D)``.

    f_v, f_a: ``(B, D)``; fused: ``(B,)`` bool; f_fused: ``(n_fused, D)`` rows for the fused
    samples in batch order; has_image: ``(B,)`` bool. Fused samples take ``f_fused``; the others
    take ``f_v``, or ``f_a`` where the sample has no image.
    """
    base = torch.where(has_image.bool().unsqueeze(1), f_v, f_a)
    if f_fused.shape[0] == 0:
        return base
    idx = torch.nonzero(fused, as_tuple=False).flatten()
    return base.index_put((idx,), f_fused.to(base.dtype))


class DynamicFusion(nn.Module):
    """Dynamic feature fusion of L2-normalised image and audio embeddings.

    ``fused = w_v·f_v + w_a·f_a + MLP(h)`` where
    ``z = [w_v·f_v ; w_a·f_a]`` (learnable scalars, init 1 — the official weighted concatenation),
    ``h`` = cross-attention with the image feature as query over ``z``, and ``MLP`` = Linear →
    LayerNorm → ReLU → Linear whose last layer starts at zero. So at initialisation the
    (re-normalised) fused feature is the direction of ``f_v + f_a``: its cosine scores against the
    text prototypes rank classes exactly as the mean of the image and audio cosines does (the
    zero-shot average of both modalities), and training moves the modality weights and the
    residual from there. (Starting from ``f_v`` alone would make the first fused predictions
    image-only and leave the audio to be learnt from a handful of steps per task.)

    attention:
      ``sample`` (default): per sample, the query ``W_q f_v`` attends over the two modality tokens
      ``{w_v f_v, w_a f_a}`` of that same sample (keys ``W_k·``, values ``W_v·``, all ``D×D``);
      ``h`` is ``(b, D)``.
      ``batch-official``: the official code's attention *across the samples of the batch*:
      ``A = softmax(q zᵀ / √(2D))`` is ``(b, b)`` with ``K = V = z`` and ``h = A z`` is
      ``(b, 2D)``. Made shape-correct: the official ``Q = f_v`` (D wide) cannot multiply
      ``z`` (2D wide), so ``q = W_q f_v`` with ``W_q: D → 2D``; the MLP input is ``2D`` (the code
      hard-codes 2·1024). Predictions then depend on which other samples share the batch.

    Input ``(b, D)`` × 2 → output ``(b, D)`` (not normalised).
    """

    def __init__(self, dim: int, hidden: int | None = None, attention: AttentionMode = "sample") -> None:
        super().__init__()
        if attention not in ("sample", "batch-official"):
            raise ValueError(f"fusion.attention: unknown mode {attention!r}; allowed: sample, batch-official")
        self.dim = dim
        self.attention = attention
        hidden = hidden or dim
        self.w_v = nn.Parameter(torch.ones(()))
        self.w_a = nn.Parameter(torch.ones(()))
        if attention == "sample":
            self.q = nn.Linear(dim, dim, bias=False)
            self.k = nn.Linear(dim, dim, bias=False)
            self.v = nn.Linear(dim, dim, bias=False)
            mlp_in = dim
        else:
            self.q = nn.Linear(dim, 2 * dim, bias=False)
            mlp_in = 2 * dim
        self.mlp = nn.Sequential(
            nn.Linear(mlp_in, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, dim)
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def attend(self, f_v: torch.Tensor, f_a: torch.Tensor) -> torch.Tensor:
        """The cross-attention output ``h``: ``(b, D)`` (sample) or ``(b, 2D)`` (batch-official)."""
        if self.attention == "sample":
            tokens = torch.stack([self.w_v * f_v, self.w_a * f_a], dim=1)  # (b, 2, D)
            q = self.q(f_v).unsqueeze(1)  # (b, 1, D)
            att = torch.softmax(q @ self.k(tokens).transpose(1, 2) / math.sqrt(self.dim), dim=-1)  # (b, 1, 2)
            return (att @ self.v(tokens)).squeeze(1)
        z = torch.cat([self.w_v * f_v, self.w_a * f_a], dim=1)  # (b, 2D)
        att = torch.softmax(self.q(f_v) @ z.t() / math.sqrt(2 * self.dim), dim=-1)  # (b, b)
        return att @ z

    def forward(self, f_v: torch.Tensor, f_a: torch.Tensor) -> torch.Tensor:
        if f_v.shape != f_a.shape or f_v.dim() != 2 or f_v.shape[1] != self.dim:
            raise ValueError(f"DynamicFusion expects two (b, {self.dim}) tensors, got {tuple(f_v.shape)}, {tuple(f_a.shape)}")
        return self.w_v * f_v + self.w_a * f_a + self.mlp(self.attend(f_v, f_a))
