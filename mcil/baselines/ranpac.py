"""RanPAC: random projection of frozen features + a ridge-regression classifier in closed form.

McDonnell, Gong, Parvaneh, Abbasnejad, van den Hengel, "RanPAC: Random Projections and
Pre-trained Models for Continual Learning" (NeurIPS 2023). Frozen features f are lifted by a fixed
random matrix and a ReLU, h = ReLU(f·W_rand) ∈ R^M, which decorrelates class prototypes; the
classifier W_o = (G + λI)⁻¹ Q is solved from the Gram matrix G = Σ h hᵀ and Q = Σ h yᵀ, both of
which are sums over samples and therefore updated task by task without storing any data — the
incremental solution equals the batch ridge solution on all data seen so far.

Left out (documented in docs/methods.md): RanPAC's optional first-session parameter-efficient
fine-tuning of the backbone — here the backbone stays exactly as pre-trained, as for SimpleCIL.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mcil.baselines._common import (
    BaselineLearner,
    FeatureChoice,
    FuseMode,
    columns,
    feature_view,
    opt,
    tower_embedding,
)
from mcil.config import ConfigError
from mcil.learners.base import Batch, BatchLoader, Prediction, Task
from mcil.learners.registry import register_learner

__all__ = ["RanPAC", "RanPACOptions", "select_ridge"]

log = logging.getLogger(__name__)

#: λ grid of the automatic choice (RanPAC's own search spans 1e-8 … 1e14 in decades).
RIDGE_GRID: tuple[float, ...] = tuple(10.0**e for e in range(-8, 15))


@dataclass(frozen=True)
class RanPACOptions:
    """The frozen embedding (as SimpleCIL), the random projection and the ridge parameter."""

    features: FeatureChoice = opt("fused", "image | audio | fused: the frozen embedding that is projected")
    fuse: FuseMode = opt("concat", "concat | average of the normalised embeddings (features=fused)")
    M: int = opt(2000, "random-projection width (RanPAC: 2000; must exceed the feature width to help)")
    proj_seed: int = opt(0, "seed of the fixed projection W_rand (regenerated, not checkpointed)")
    ridge: float | None = opt(
        None, "ridge λ; null: chosen per task as RanPAC does (decade grid, held-out 20% of the task's features)"
    )

    def validate(self, prefix: str) -> None:
        if self.M < 1:
            raise ConfigError(f"{prefix}.M: {self.M} is out of range; allowed: >= 1")
        if self.ridge is not None and not self.ridge > 0:
            raise ConfigError(f"{prefix}.ridge: {self.ridge!r} must be > 0 or null (automatic choice)")


def select_ridge(h: torch.Tensor, y: torch.Tensor, grid: Sequence[float] = RIDGE_GRID, seed: int = 0) -> float:
    """λ minimising the held-out MSE of ridge regression h (N, M) → y (N, K), on an 80/20 split
    (a fixed permutation seeded by ``seed``). Falls back to 1.0 when there are fewer than 5 rows.

    One eigendecomposition serves every λ: of the Gram matrix HᵀH (M×M) when M ≤ N_train,
    W(λ) = V diag(1/(e + λ)) Vᵀ HᵀY; otherwise of the kernel HHᵀ (N×N) with the identical
    dual solution W(λ) = Hᵀ U diag(1/(e + λ)) Uᵀ Y — so the grid costs one eigh of the smaller side.
    """
    n = h.shape[0]
    if n < 5:
        return 1.0
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(h.device)
    cut = int(math.floor(0.8 * n))
    h_tr, y_tr, h_va, y_va = h[perm[:cut]], y[perm[:cut]], h[perm[cut:]], y[perm[cut:]]
    if h.shape[1] <= cut:  # primal
        evals, vecs = torch.linalg.eigh(h_tr.t() @ h_tr)
        left, right = h_va @ vecs, vecs.t() @ (h_tr.t() @ y_tr)
    else:  # dual
        evals, vecs = torch.linalg.eigh(h_tr @ h_tr.t())
        left, right = (h_va @ h_tr.t()) @ vecs, vecs.t() @ y_tr
    evals = evals.clamp_min(0.0)
    best, best_err = 1.0, float("inf")
    for lam in grid:
        err = float(((left @ (right / (evals + lam).unsqueeze(1)) - y_va) ** 2).mean())
        if err < best_err:
            best, best_err = float(lam), err
    return best


@register_learner
class RanPAC(BaselineLearner):
    """RanPAC (McDonnell et al., NeurIPS 2023): random projection + incremental ridge classifier, no steps.

    Buffers: ``G`` (M, M) and ``Q`` (M, K) float64 running sums; ``W`` (M, K) the solved
    classifier; ``lam`` the λ of the last solve; ``count`` (K,) samples per class.
    ``W_rand`` (D', M) is regenerated from ``proj_seed`` (non-persistent).
    """

    NAME = "ranpac"
    MODALITIES = frozenset({"image", "audio"})
    FROZEN_FEATURES = frozenset({"image", "audio"})
    Options = RanPACOptions
    NEEDS_GRAD = False

    def __init__(self, backbone: Any, class_names: Sequence[str], templates: str, cfg: Any,
                 options: RanPACOptions = RanPACOptions()) -> None:
        super().__init__(backbone, class_names, templates, cfg, options)
        d_in = backbone.embed_dim * (2 if options.features == "fused" and options.fuse == "concat" else 1)
        m, k = options.M, self.n_classes
        gen = torch.Generator().manual_seed(options.proj_seed)
        self.register_buffer("W_rand", torch.randn(d_in, m, generator=gen), persistent=False)
        self.register_buffer("G", torch.zeros(m, m, dtype=torch.float64))
        self.register_buffer("Q", torch.zeros(m, k, dtype=torch.float64))
        self.register_buffer("W", torch.zeros(m, k))
        self.register_buffer("lam", torch.tensor(float("nan"), dtype=torch.float64))
        self.register_buffer("count", torch.zeros(k, dtype=torch.long))

    def project(self, batch: Batch) -> torch.Tensor:
        """(B, M) lifted features h = ReLU(f · W_rand), f the normalised (fused) frozen embedding."""
        img = tower_embedding(self.backbone, batch, "image")
        aud = tower_embedding(self.backbone, batch, "audio")
        f = feature_view(img, aud, self.options.features, self.options.fuse)
        return torch.relu(f.to(self.W_rand) @ self.W_rand)

    @torch.no_grad()
    def end_task(self, task: Task, loader: BatchLoader) -> None:
        """G += Σ h hᵀ, Q += Σ h yᵀ over the task's samples, then W = (G + λI)⁻¹ Q."""
        hs, ys = [], []
        for batch in loader():
            h = self.project(batch).double()
            y = torch.nn.functional.one_hot(batch.labels.to(h.device), self.n_classes).double()
            self.G += h.t() @ h
            self.Q += h.t() @ y
            self.count += y.sum(0).long()
            if self.options.ridge is None:
                hs.append(h)
                ys.append(y)
        if self.options.ridge is None:
            lam = select_ridge(torch.cat(hs), torch.cat(ys), seed=task.index) if hs else 1.0
        else:
            lam = float(self.options.ridge)
        self.lam.fill_(lam)
        self.W.copy_(self.solve(lam).to(self.W))
        log.info("ranpac task %d: λ = %g over %d samples", task.index + 1, lam, int(self.count.sum()))

    def solve(self, lam: float) -> torch.Tensor:
        """(M, K) float64 ridge solution (G + λI)⁻¹ Q of the sums accumulated so far
        (Cholesky: G + λI is symmetric positive definite for λ > 0)."""
        a = self.G + lam * torch.eye(self.G.shape[0], dtype=self.G.dtype, device=self.G.device)
        chol, info = torch.linalg.cholesky_ex(a)
        if int(info) == 0:
            return torch.cholesky_solve(self.Q, chol)
        log.warning("ranpac: G + %gI is numerically not positive definite; solving by LU instead", lam)
        return torch.linalg.solve(a, self.Q)

    @torch.no_grad()
    def predict(self, batch: Batch, classes: Sequence[int]) -> Prediction:
        scores = self.project(batch) @ self.W
        return Prediction(logits=columns(scores, classes, self.count > 0))

    def statistics(self) -> dict[str, Any]:
        return {
            **super().statistics(),
            "M": self.options.M,
            "ridge": float(self.lam) if torch.isfinite(self.lam) else None,
            "n_classes_fitted": int((self.count > 0).sum()),
        }
