"""CoOp: continual prompt learning — learnable context vectors in front of the class name.

Zhou, Yang, Loy, Liu, "Learning to Prompt for Vision-Language Models" (IJCV 2022). The text
prompt of class c is ``[SOT] v_1 … v_M <name of c> . [EOT]``: the M context vectors v replace
word embeddings and are the *only* trained parameters; both towers stay frozen, the image
embedding is the frozen one. Continual use: one shared context trained task after task (default,
the sequential-CoOp baseline of the CL literature), or one context per task (old contexts frozen,
a class always uses the context of the task that introduced it; classes not yet introduced use
the newest context).

Mechanics: the prompt ``"x x … x <name>."`` is tokenised, its token embeddings are taken with
``backbone.token_embedding`` and positions 1…M are overwritten by v before
``backbone.encode_text(tokens, embeddings=...)`` (positions, padding and EOT pooling still come
from the tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from mcil.backbones.base import BackboneError
from mcil.baselines._common import BaselineLearner, cosine_logits, label_positions, opt, tower_embedding
from mcil.config import ConfigError
from mcil.learners.base import Batch, BatchLoader, Prediction, Task
from mcil.learners.registry import register_learner

__all__ = ["CoOp", "CoOpOptions"]

PLACEHOLDER = "x"


@dataclass(frozen=True)
class CoOpOptions:
    """Prompt-context settings."""

    n_ctx: int = opt(4, "context vectors M (CoOp: 16 on CLIP; tiny's 24-token context + 7-word names leave room for 4)")
    context: Literal["shared", "per-task"] = opt(
        "shared", "shared: one context trained in every task | per-task: a new context per task, old ones frozen"
    )
    init_std: float = opt(0.02, "std of the random context initialisation (CoOp: 0.02)")

    def validate(self, prefix: str) -> None:
        if self.n_ctx < 1:
            raise ConfigError(f"{prefix}.n_ctx: {self.n_ctx} is out of range; allowed: >= 1")
        if not self.init_std > 0:
            raise ConfigError(f"{prefix}.init_std: {self.init_std!r} must be > 0")


@register_learner
class CoOp(BaselineLearner):
    """CoOp (Zhou et al., IJCV 2022): learnable prompt context on the frozen text tower.

    ``contexts``: ParameterList of (M, W) tensors — one ('shared') or one per begun task (at least
    one), so the structure is a function of the ``begin_task`` calls (resume contract).
    """

    NAME = "coop"
    MODALITIES = frozenset({"image", "text"})
    FROZEN_FEATURES = frozenset({"image"})
    Options = CoOpOptions

    def __init__(self, backbone: Any, class_names: Sequence[str], templates: str, cfg: Any,
                 options: CoOpOptions = CoOpOptions()) -> None:
        super().__init__(backbone, class_names, templates, cfg, options)
        prefix = " ".join([PLACEHOLDER] * options.n_ctx)
        self.tokens = backbone.tokenize([f"{prefix} {name}." for name in self.class_names]).cpu()
        ctx_ids = self.tokens[:, 1 : 1 + options.n_ctx]
        placeholder = backbone.tokenize([PLACEHOLDER]).cpu()[0, 1]
        if not bool((ctx_ids == placeholder).all()):
            raise BackboneError(
                f"coop: the tokenizer of backbone {getattr(backbone, 'name', '?')!r} does not map the context "
                f"placeholder {PLACEHOLDER!r} to one token per slot; this backbone cannot host CoOp prompts"
            )
        self.width = int(backbone.token_embedding(self.tokens[:1].to(self._bb_device())).shape[-1])
        # Context 0 exists from the start (the trainer evaluates before the first task); per-task
        # mode appends one per further task in begin_task.
        self.contexts = nn.ParameterList([self._new_context()])
        self.scale = float(backbone.logit_scale_value())
        self._owner: dict[int, int] = {}
        self._task: Task | None = None

    def _bb_device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def _new_context(self) -> nn.Parameter:
        return nn.Parameter(torch.randn(self.options.n_ctx, self.width) * self.options.init_std)

    # -- tasks --------------------------------------------------------------------------------------
    def begin_task(self, task: Task) -> None:
        self._task = task
        self.invalidate()
        if self.options.context == "per-task":
            while len(self.contexts) <= task.index:
                self.contexts.append(self._new_context().to(self.device))
            for i, ctx in enumerate(self.contexts):
                ctx.requires_grad_(i == task.index)
            for c in task.classes:
                self._owner[c] = task.index

    def context_of(self, c: int) -> int:
        """Index of the context class ``c`` uses: its task's (per-task) or 0 (shared)."""
        if self.options.context == "shared":
            return 0
        return self._owner.get(int(c), len(self.contexts) - 1)

    # -- text ---------------------------------------------------------------------------------------
    def text_features(self, classes: Sequence[int]) -> torch.Tensor:
        """(C, D) prompt embeddings with the learned context (gradient into the context if enabled)."""
        device = self._bb_device()
        idx = torch.as_tensor(list(classes), dtype=torch.long)
        tokens = self.tokens.index_select(0, idx).to(device)
        emb = self.backbone.token_embedding(tokens)
        ctx = torch.stack([self.contexts[self.context_of(int(c))] for c in idx.tolist()]).to(emb.dtype)
        m = self.options.n_ctx
        emb = torch.cat([emb[:, :1], ctx, emb[:, 1 + m :]], dim=1)
        return self.backbone.encode_text(tokens, embeddings=emb).float()

    # -- training / evaluation ------------------------------------------------------------------------
    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self._task is None:
            raise RuntimeError("train_step before start_task")
        self.invalidate()
        classes = self._task.classes
        target = label_positions(batch.labels, classes, self.n_classes)
        rows = batch.has_image.bool() & (target >= 0)
        logits = cosine_logits(tower_embedding(self.backbone, batch, "image"), self.text_features(classes), self.scale)
        loss = F.cross_entropy(logits[rows], target[rows]) if bool(rows.any()) else logits.sum() * 0.0
        return {"loss": loss, "ce": loss.detach()}

    def end_task(self, task: Task, loader: BatchLoader) -> None:
        self.invalidate()

    @torch.no_grad()
    def predict(self, batch: Batch, classes: Sequence[int]) -> Prediction:
        img = tower_embedding(self.backbone, batch, "image")
        key = tuple(int(c) for c in classes)
        protos = self.cached(("eval", key), lambda: self.text_features(key))
        return Prediction(logits=cosine_logits(img, protos, self.scale), features={"image": F.normalize(img, dim=-1)})

    @torch.no_grad()
    def class_text_embeddings(self, classes: Sequence[int]) -> torch.Tensor:
        return self.text_features(list(classes))

    def statistics(self) -> dict[str, Any]:
        return {**super().statistics(), "n_ctx": self.options.n_ctx, "contexts": len(self.contexts)}
