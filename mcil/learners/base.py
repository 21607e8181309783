"""The learner interface shared by the paper's method and every baseline.

The trainer (``mcil.train``) owns the data, the optimiser and the schedule; a learner only says
what to compute. Per task the trainer calls::

    learner.begin_task(task)
    for batch in train batches:   out = learner.train_step(batch); (out["loss"].backward(); opt.step())
    learner.end_task(task, loader)         # loader(): iterable over the task's train batches (no shuffle)
    learner.predict(batch, classes)        # evaluation; logits over `classes` in that order

A learner is an ``nn.Module``: its parameters and buffers are checkpointed with ``state_dict``;
anything else it must resume (memory indices, Fisher, statistics) goes through
``get_extra_state`` / ``set_extra_state``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["Task", "Batch", "Prediction", "Learner", "NoOptions", "BatchLoader"]


@dataclass(frozen=True)
class Task:
    """One step of the class-incremental stream.

    index: 0-based task index; classes: global labels trained in this task (scenario order);
    seen_classes: labels of tasks 0..index, in scenario order (the evaluation scope);
    n_tasks: T; steps: optimiser steps the trainer will run in this task (0 for no-gradient methods).
    """

    index: int
    classes: tuple[int, ...]
    seen_classes: tuple[int, ...]
    n_tasks: int
    steps: int = 0


@dataclass
class Batch:
    """A paired mini-batch. Missing modalities are ``None`` or masked per sample.

    image:      (B, 3, H, W) float, normalised per the backbone's spec, or None
    audio:      (B, N) float waveform in the backbone's units, or None
    image_emb:  (B, D) frozen image-tower embeddings from the feature cache, or None
    audio_emb:  (B, D) frozen audio-tower embeddings from the feature cache, or None
    labels:     (B,) int64 global labels
    has_image:  (B,) bool — False where the sample has no image (absent or dropped)
    has_audio:  (B,) bool — False where the sample has no audio
    index:      (B,) int64 row index of each sample in its split (for memory selection)
    """

    labels: torch.Tensor
    has_image: torch.Tensor
    has_audio: torch.Tensor
    index: torch.Tensor
    image: torch.Tensor | None = None
    audio: torch.Tensor | None = None
    image_emb: torch.Tensor | None = None
    audio_emb: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        kw = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            kw[f.name] = v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        return Batch(**kw)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


BatchLoader = Callable[[], Iterable[Batch]]


@dataclass
class Prediction:
    """What a learner returns at evaluation.

    logits:      (B, C) scores over the requested classes (the learner's main prediction)
    by_modality: optional extra (B, C) scores, keys among 'image', 'audio', 'fused'
    features:    optional L2-normalised (B, D) features, keys among 'image', 'audio', 'fused'
                 (used by the paper's metrics M1/M2)
    fused:       optional (B,) bool — the sample took the audio-visual fusion path
    r:           optional (B,) float — Pearson r between image and audio embeddings
    """

    logits: torch.Tensor
    by_modality: dict[str, torch.Tensor] = field(default_factory=dict)
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    fused: torch.Tensor | None = None
    r: torch.Tensor | None = None


@dataclass(frozen=True)
class NoOptions:
    """For learners without options."""


class Learner(nn.Module):
    """Base class of every method. Subclasses set the class attributes and override the hooks.

    NAME: registry name; MODALITIES: subset of {'image', 'audio', 'text'} the method uses;
    FROZEN_FEATURES: towers the method never adapts, whose embeddings the trainer may precompute
    and pass as ``batch.image_emb`` / ``batch.audio_emb`` (the learner must give the same result
    with raw inputs); Options: dataclass of ``method.options``; NEEDS_GRAD: False for methods
    that never take an optimiser step (prototype and closed-form classifiers).
    """

    NAME: ClassVar[str] = ""
    MODALITIES: ClassVar[frozenset[str]] = frozenset()
    FROZEN_FEATURES: ClassVar[frozenset[str]] = frozenset()
    Options: ClassVar[type] = NoOptions
    NEEDS_GRAD: ClassVar[bool] = True

    @classmethod
    def from_config(cls, backbone: Any, class_names: list[str], templates: str, cfg: Any) -> Learner:
        """Build from a RunConfig: ``cfg.method.options`` is parsed into ``cls.Options`` (strict)."""
        from mcil.config import parse_dataclass

        options = parse_dataclass(cls.Options, cfg.method.options, "method.options")
        return cls(backbone, class_names, templates, cfg, options)

    def start_task(self, task: Task) -> None:
        """Called by the trainer (not overridden): records the task, then calls :meth:`begin_task`.

        Resume relies on this record: a fresh learner replays ``start_task`` for every task begun
        so far (cheap, no data) and then loads the checkpointed ``state_dict``. So a learner's
        *structure* (experts, heads, buffers) and its ``requires_grad`` flags must be a function
        of the sequence of ``begin_task`` calls; everything data-dependent (exemplars, Fisher,
        statistics) must live in parameters, buffers or ``get_extra_state``.
        """
        if not hasattr(self, "_tasks_begun"):
            self._tasks_begun: list[Task] = []
        self._tasks_begun.append(task)
        self.begin_task(task)

    @property
    def tasks_begun(self) -> list[Task]:
        return list(getattr(self, "_tasks_begun", []))

    def begin_task(self, task: Task) -> None:
        """Prepare for ``task`` (add experts, snapshot a teacher, ...). No data is available here."""

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Return a dict of scalar tensors; ``'loss'`` (if present) is back-propagated by the trainer."""
        return {}

    def end_task(self, task: Task, loader: BatchLoader) -> None:
        """After the last step of ``task`` (freeze experts, select exemplars, Fisher, ...)."""

    def predict(self, batch: Batch, classes: Sequence[int]) -> Prediction:
        """Scores over ``classes`` (column order = ``classes``). The score of a class must not
        depend on which other classes are requested: the trainer asks once for all classes and
        slices columns per evaluation scope. Classes a method cannot score yet get ``-inf``."""
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser of the current task updates."""
        return [p for p in self.parameters() if p.requires_grad]

    def lr_scales(self, params: Sequence[nn.Parameter]) -> list[float]:
        """One factor per parameter of ``params`` on the schedule's lr (default 1: one step size for all)."""
        return [1.0] * len(params)

    def bind_train_data(self, fetch: Callable[[torch.Tensor], Batch]) -> None:
        """The trainer hands over ``fetch(indices) -> Batch`` on the train split (for replay)."""
        self._fetch_train = fetch

    def replay_batch(self, batch_size: int) -> Batch | None:
        """Optional extra samples (from memory) that the trainer concatenates to a training batch."""
        return None

    def class_text_embeddings(self, classes: Sequence[int]) -> torch.Tensor | None:
        """(C, D) *unnormalised* text embeddings of the evaluation prompts of ``classes`` with the
        current text encoder (adapters included), or None for methods without a text tower.
        Used by the paper's metric M1 (task similarity)."""
        return None

    def statistics(self) -> dict[str, Any]:
        """JSON-serialisable per-run statistics (expert usage, parameters added per task, ...)."""
        return {}
