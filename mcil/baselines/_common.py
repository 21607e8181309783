"""Pieces shared by the baselines (not a registered method: the leading underscore keeps the
registry from importing it as one).

- :class:`BaselineLearner`: holds the frozen backbone *outside* the module tree (it is built,
  moved and checkpointed by the trainer; a learner's ``state_dict`` holds only what it learns);
- frozen-tower features with the trainer's feature cache or raw inputs (same numbers either way);
- scaled cosine logits and the ``-inf`` convention for classes a method cannot score yet;
- herding (iCaRL's exemplar selection).

Text prototypes and the adapter-based learners live further down in this module.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from mcil.config import ConfigError
from mcil.learners.base import Batch, BatchLoader, Learner, Prediction, Task
from mcil.method.mife import MIFE, MifeConfig
from mcil.method.prompts import average_prototypes, fill_prompts, load_templates

__all__ = [
    "BaselineLearner",
    "tower_embedding",
    "fuse",
    "cosine_logits",
    "columns",
    "herding",
    "opt",
    "TextPrototypes",
    "label_positions",
    "AdapterOptions",
    "single_adapter_config",
    "AdapterTextLearner",
]

log = logging.getLogger(__name__)

Tower = Literal["image", "audio"]
FeatureChoice = Literal["image", "audio", "fused"]
FuseMode = Literal["concat", "average"]


def opt(default: Any, help: str) -> Any:
    """An option field with its one-line help (shown by ``mcil methods NAME``)."""
    return field(default=default, metadata={"help": help})


# ------------------------------------------------------------------------------------------------
# Base class
# ------------------------------------------------------------------------------------------------
class BaselineLearner(Learner):
    """Common constructor of the baselines: ``cls(backbone, class_names, templates, cfg, options)``.

    The backbone is stored with ``object.__setattr__`` so that it is *not* a submodule: the
    learner's ``state_dict`` (checkpointed every few hundred steps) then holds only what the
    method learns, ``learner.parameters()`` counts only the method's own parameters, and
    ``learner.to(device)`` does not re-move the frozen backbone (the trainer moves it).

    A small cache (:meth:`cached`) keeps evaluation-time tensors (text prototypes) between
    optimiser steps; it is dropped by ``train()``/``eval()`` and ``load_state_dict``, and
    subclasses drop it (:meth:`invalidate`) wherever their parameters may change.
    """

    def __init__(self, backbone: Any, class_names: Sequence[str], templates: str, cfg: Any, options: Any) -> None:
        super().__init__()
        object.__setattr__(self, "backbone", backbone)
        self.class_names: list[str] = list(class_names)
        self.templates = templates
        self.cfg = cfg
        self.options = options
        self.n_classes = len(self.class_names)
        self._cache: dict[Any, torch.Tensor] = {}

    @property
    def device(self) -> torch.device:
        """Where the learner's own tensors live (the backbone's device when it has none)."""
        for t in itertools.chain(self.parameters(), self.buffers(), self.backbone.parameters()):
            return t.device
        return torch.device("cpu")

    # -- cache --------------------------------------------------------------------------------------
    def cached(self, key: Any, compute: Any) -> torch.Tensor:
        """``compute()`` under no_grad, memoised by ``key`` until :meth:`invalidate`."""
        if key not in self._cache:
            with torch.no_grad():
                self._cache[key] = compute()
        return self._cache[key]

    def invalidate(self) -> None:
        self._cache.clear()

    def train(self, mode: bool = True) -> BaselineLearner:
        self.invalidate()
        return super().train(mode)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        self.invalidate()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # -- statistics ---------------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        """{'trainable': params the current optimiser updates, 'learner': all own parameters}."""
        return {
            "trainable": int(sum(p.numel() for p in self.trainable_parameters())),
            "learner": int(sum(p.numel() for p in self.parameters())),
        }

    def statistics(self) -> dict[str, Any]:
        return {"params": self.parameter_counts()}


# ------------------------------------------------------------------------------------------------
# Features of frozen towers
# ------------------------------------------------------------------------------------------------
def tower_embedding(backbone: Any, batch: Batch, tower: Tower) -> torch.Tensor:
    """(B, D) float32 embedding of a *frozen* tower, zeros where the sample lacks the modality.

    Uses ``batch.image_emb`` / ``batch.audio_emb`` (the trainer's feature cache) when present,
    otherwise encodes the raw input of the present samples only — both paths give the same
    numbers, which is the FROZEN_FEATURES contract.
    """
    present = batch.has_image if tower == "image" else batch.has_audio
    cached = batch.image_emb if tower == "image" else batch.audio_emb
    if cached is not None:
        return cached.float() * present.to(cached.device).unsqueeze(1).float()
    raw = batch.image if tower == "image" else batch.audio
    if raw is None:
        raise ValueError(f"batch has neither {tower}_emb nor raw {tower} input")
    out = torch.zeros(len(batch), backbone.embed_dim, device=raw.device)
    keep = present.to(raw.device).bool()
    if bool(keep.any()):
        enc = backbone.encode_image if tower == "image" else backbone.encode_audio
        out[keep] = enc(raw[keep]).float()
    return out


def fuse(image: torch.Tensor, audio: torch.Tensor, mode: FuseMode) -> torch.Tensor:
    """Fuse two (B, D) embeddings after L2 normalisation (a missing modality stays a zero row).

    concat → (B, 2D): each modality keeps its own coordinates (a cosine over the concatenation is
    the mean of the two per-modality cosines when both are unit norm); average → (B, D).
    """
    i, a = F.normalize(image, dim=-1), F.normalize(audio, dim=-1)
    return torch.cat([i, a], dim=-1) if mode == "concat" else 0.5 * (i + a)


def feature_view(image: torch.Tensor, audio: torch.Tensor, which: FeatureChoice, mode: FuseMode) -> torch.Tensor:
    """The classifier input chosen by a ``features`` option: (B, D) or (B, 2D) for concat fusion."""
    if which == "image":
        return F.normalize(image, dim=-1)
    if which == "audio":
        return F.normalize(audio, dim=-1)
    return fuse(image, audio, mode)


# ------------------------------------------------------------------------------------------------
# Classifier helpers
# ------------------------------------------------------------------------------------------------
def cosine_logits(features: torch.Tensor, prototypes: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """scale · cos(features (B, D), prototypes (C, D)) → (B, C). Zero rows give zero scores."""
    return scale * F.normalize(features, dim=-1) @ F.normalize(prototypes, dim=-1).t()


def columns(scores: torch.Tensor, classes: Sequence[int], known: torch.Tensor | None = None) -> torch.Tensor:
    """Pick the columns ``classes`` of per-class scores (B, K) → (B, C); classes not ``known``
    ((K,) bool) get ``-inf``, so a method never predicts a class it has not learnt."""
    idx = torch.as_tensor(list(classes), dtype=torch.long, device=scores.device)
    out = scores.index_select(1, idx)
    if known is not None:
        ok = known.to(scores.device).bool().index_select(0, idx)
        out = out.masked_fill(~ok.unsqueeze(0), float("-inf"))
    return out


@torch.no_grad()
def herding(features: torch.Tensor, m: int) -> torch.Tensor:
    """iCaRL herding: the ``m`` rows whose running mean best tracks the class mean, in pick order.

    features (N, D) → (min(m, N),) int64 row indices. Rows are L2-normalised first; the k-th pick
    minimises ‖μ − (Σ_{chosen} f + f_i)/k‖ over rows not yet chosen (ties: lowest index), so the
    result is a deterministic function of the features, and its prefix of length m' < m is the
    selection for budget m' (iCaRL's memory reduction keeps a prefix).
    """
    f = F.normalize(features.double(), dim=-1)
    n = f.shape[0]
    m = min(int(m), n)
    mu = f.mean(0)
    running = torch.zeros_like(mu)
    taken = torch.zeros(n, dtype=torch.bool, device=f.device)
    picks: list[int] = []
    for k in range(1, m + 1):
        dist = ((mu.unsqueeze(0) - (running.unsqueeze(0) + f) / k) ** 2).sum(1)
        dist = dist.masked_fill(taken, float("inf"))
        i = int(torch.argmin(dist))
        picks.append(i)
        taken[i] = True
        running += f[i]
    return torch.tensor(picks, dtype=torch.long)


# ------------------------------------------------------------------------------------------------
# Text prototypes
# ------------------------------------------------------------------------------------------------
class TextPrototypes:
    """Tokenised prompts of every class and their averaged embeddings (``mcil.method.prompts``).

    Two prompt sets: ``train`` (the single ``test`` template, or the text-diversity list when
    ``diversity``) and ``eval`` (``cfg.eval_template``: the single test template or the list).
    Tokens are built once (a class name that does not fit the context fails at construction);
    :meth:`embed` runs the text tower — adapters act if the caller is inside their context.
    """

    def __init__(self, backbone: Any, class_names: Sequence[str], templates: str, diversity: bool,
                 eval_mode: Literal["single", "average"]) -> None:
        tset = load_templates(templates)
        self.backbone = backbone
        self.sets = {"train": tset.for_training(diversity), "eval": tset.for_evaluation(eval_mode)}
        self.tokens = {
            split: backbone.tokenize(fill_prompts(tpl, class_names)).cpu() for split, tpl in self.sets.items()
        }

    def tokens_of(self, classes: Sequence[int], split: Literal["train", "eval"]) -> torch.Tensor:
        """(C·N, L) class-major token ids of ``classes`` for ``split`` (N templates per class)."""
        n = len(self.sets[split])
        rows = torch.tensor([c * n + j for c in classes for j in range(n)], dtype=torch.long)
        return self.tokens[split].index_select(0, rows)

    def embed(self, classes: Sequence[int], split: Literal["train", "eval"], device: torch.device,
              normalize_templates: bool = True) -> torch.Tensor:
        """(C, D) class prototypes (not re-normalised): the mean of the class's prompt embeddings,
        each L2-normalised first (``normalize_templates``, CLIP's prompt ensembling and the
        ``mcil`` learner's default) or raw (the unnormalised embeddings metric M1 asks for)."""
        if len(classes) == 0:
            return torch.zeros(0, self.backbone.embed_dim, device=device)
        emb = self.backbone.encode_text(self.tokens_of(classes, split).to(device)).float()
        return average_prototypes(emb, len(self.sets[split]), normalize_templates=normalize_templates)


def label_positions(labels: torch.Tensor, classes: Sequence[int], n_classes: int) -> torch.Tensor:
    """(B,) position of each global label in ``classes``; −1 for labels not in ``classes``."""
    lut = torch.full((n_classes,), -1, dtype=torch.long, device=labels.device)
    lut[torch.as_tensor(list(classes), dtype=torch.long, device=labels.device)] = torch.arange(
        len(classes), device=labels.device
    )
    return lut[labels.long()]


# ------------------------------------------------------------------------------------------------
# Adapter-based learners
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AdapterOptions:
    """Options shared by the adapter baselines (finetune, lwf, ewc, replay, moe-adapters, av-concat).

    The adapter is the paper's MIFE expert module with its official values, so that the baselines
    differ from the method in what they protect, not in the adapter. text_diversity is off by
    default: MoE-Adapters4CL trains on the evaluation template, and the text-diversity strategy
    is a contribution of the method.
    """

    bottleneck: int = opt(64, "bottleneck width of the adapter on every image and text site (official: 64)")
    adapter_scale: float = opt(0.1, "fixed output scale of the adapter (official: 0.1)")
    dropout: float = opt(0.1, "dropout inside the adapter (official: 0.1)")
    text_diversity: bool = opt(
        False, "train on prototypes averaged over the template list (the method's strategy); false: the test template"
    )

    def validate(self, prefix: str) -> None:
        if self.bottleneck < 1:
            raise ConfigError(f"{prefix}.bottleneck: {self.bottleneck} is out of range; allowed: >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{prefix}.dropout: {self.dropout} is out of range; allowed: [0, 1)")


def single_adapter_config(options: AdapterOptions) -> MifeConfig:
    """MIFE configured as ONE shared expert per site (no routing to learn): a plain adapter set."""
    return MifeConfig(
        experts="official", n_experts=1, top_k=1, route_current=False, freeze_old=False,
        official_freeze_hack=False, router_input="mean", bottleneck=options.bottleneck,
        adapter_scale=options.adapter_scale, dropout=options.dropout, balance=False,
    )


class AdapterTextLearner(BaselineLearner):
    """Adapters on the image and text towers, a text-prototype classifier, cross-entropy.

    logits (B, C) = s · cos(E_v(image; adapters), t_c), t_c the mean prompt embedding of class c
    through E_t with adapters (gradient flows into the text adapters during training), s the
    backbone's logit scale. Audio is ignored. Subclasses change :meth:`loss_classes` (which
    classes the CE runs over), add terms in :meth:`extra_loss`, or override
    :meth:`adapter_config` / :meth:`image_features`.

    Evaluation prototypes are cached between optimiser steps: the cache is dropped by
    ``train_step``, ``begin_task``, ``end_task``, ``train()``/``eval()`` and ``load_state_dict``.
    """

    MODALITIES = frozenset({"image", "text"})
    FROZEN_FEATURES: frozenset[str] = frozenset()
    Options = AdapterOptions
    #: Record MIFE's expert-usage statistics (meaningless for a single adapter; moe-adapters turns it on).
    RECORD_USAGE: ClassVar[bool] = False

    def __init__(self, backbone: Any, class_names: Sequence[str], templates: str, cfg: Any, options: Any) -> None:
        super().__init__(backbone, class_names, templates, cfg, options)
        self.adapter = MIFE(list(backbone.image_sites()) + list(backbone.text_sites()), self.adapter_config())
        for a in self.adapter.adapters:
            a.recording = self.RECORD_USAGE
        eval_mode = getattr(cfg, "eval_template", "single") if cfg is not None else "single"
        self.text = TextPrototypes(backbone, self.class_names, templates, options.text_diversity, eval_mode)
        self.scale = float(backbone.logit_scale_value())
        self._task: Task | None = None

    # -- structure ----------------------------------------------------------------------------------
    def adapter_config(self) -> MifeConfig:
        return single_adapter_config(self.options)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The experts' weights (a single expert's router gets no gradient and is left out)."""
        return [p for a in self.adapter.adapters for p in a.experts.parameters() if p.requires_grad]

    def begin_task(self, task: Task) -> None:
        self._task = task
        self.adapter.begin_task(task.index)
        self.invalidate()

    def loss_classes(self, task: Task) -> tuple[int, ...]:
        """Classes the training cross-entropy runs over: the current task's (no memory, no old heads)."""
        return task.classes

    # -- features -----------------------------------------------------------------------------------
    def image_features(self, batch: Batch, adapter: MIFE | None = None) -> torch.Tensor:
        """(B, D) image embeddings through the image tower with ``adapter`` (default: the learner's)
        acting, zeros for samples without image."""
        if batch.image is None:
            raise ValueError(f"{self.NAME} adapts the image tower and needs raw images (batch.image is None)")
        adapter = self.adapter if adapter is None else adapter
        keep = batch.has_image.to(batch.image.device).bool()
        out = torch.zeros(len(batch), self.backbone.embed_dim, device=batch.image.device)
        if bool(keep.any()):
            with adapter.active():
                out = out.index_put((keep.nonzero().flatten(),), self.backbone.encode_image(batch.image[keep]).float())
        return out

    def text_features(self, classes: Sequence[int], split: Literal["train", "eval"] = "train",
                      adapter: MIFE | None = None, normalize_templates: bool = True) -> torch.Tensor:
        """(C, D) prototypes through the text tower with ``adapter`` (default: the learner's)
        acting, with gradient if enabled (see :meth:`TextPrototypes.embed`)."""
        adapter = self.adapter if adapter is None else adapter
        with adapter.active():
            return self.text.embed(classes, split, self.device, normalize_templates)

    def query_features(self, batch: Batch) -> torch.Tensor:
        """(B, D) the feature compared with the text prototypes (image here; fused in av-concat)."""
        return self.image_features(batch)

    def has_query(self, batch: Batch) -> torch.Tensor:
        """(B,) bool: samples that carry the classifier's input (rows without it do not enter the loss)."""
        return batch.has_image.bool()

    # -- training -----------------------------------------------------------------------------------
    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self._task is None:
            raise RuntimeError("train_step before start_task")
        self.invalidate()
        classes = self.loss_classes(self._task)
        target = label_positions(batch.labels, classes, self.n_classes)
        rows = self.has_query(batch).to(target.device) & (target >= 0)
        feats = self.query_features(batch)
        logits = cosine_logits(feats, self.text_features(classes, "train"), self.scale)
        if bool(rows.any()):
            ce = F.cross_entropy(logits[rows], target[rows])
        else:
            ce = logits.sum() * 0.0
        out = {"ce": ce.detach()}
        extra = self.extra_loss(batch, feats, rows)
        loss = ce
        for name, term in extra.items():
            loss = loss + term
            out[name] = term.detach()
        out["loss"] = loss
        return out

    def extra_loss(self, batch: Batch, features: torch.Tensor, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Weighted loss terms added to the CE (LwF's distillation, EWC's penalty, ...)."""
        return {}

    def end_task(self, task: Task, loader: BatchLoader) -> None:
        self.invalidate()

    # -- evaluation ---------------------------------------------------------------------------------
    def eval_prototypes(self, classes: Sequence[int]) -> torch.Tensor:
        """(C, D) evaluation prototypes of ``classes`` (cached until the adapters may change)."""
        key = tuple(int(c) for c in classes)
        return self.cached(("eval", key), lambda: self.text_features(key, "eval"))

    @torch.no_grad()
    def predict(self, batch: Batch, classes: Sequence[int]) -> Prediction:
        feats = self.query_features(batch)
        logits = cosine_logits(feats, self.eval_prototypes(classes), self.scale)
        return Prediction(logits=logits, features={"image": F.normalize(feats, dim=-1)})

    @torch.no_grad()
    def class_text_embeddings(self, classes: Sequence[int]) -> torch.Tensor | None:
        """(C, D) raw mean evaluation-prompt embeddings with the current adapters (metric M1)."""
        was = self.training
        self.eval()
        try:
            with self.adapter.recording(False):
                return self.text_features(list(classes), "eval", normalize_templates=False)
        finally:
            self.train(was)

    def statistics(self) -> dict[str, Any]:
        return {**super().statistics(), "adapter_sites": list(self.adapter.site_names)}
