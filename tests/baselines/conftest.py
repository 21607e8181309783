"""Fixtures for the baseline tests: a small random TinyBackbone, a separable synthetic
audio-visual stream, and a minimal driver that calls a learner exactly as ``mcil.train`` does
(start_task → train_step (+ replay_batch) → end_task(loader) → predict over all classes)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch

from mcil.backbones.tiny import TinyBackbone
from mcil.config import RunConfig
from mcil.learners.base import Batch, Learner, Task

from tiny_kit import CLASS_NAMES, SMALL, random_backbone


@pytest.fixture(autouse=True)
def _seeded():
    """Adapters draw their initial weights (and dropout masks) from the global RNG."""
    torch.manual_seed(0)


def make_backbone(seed: int = 0) -> TinyBackbone:
    """A fresh frozen random tiny backbone (tiny_kit.random_backbone, position embeddings redrawn)."""
    return random_backbone(seed, redraw_positions=True)


def align_projections(bb: TinyBackbone, stream: Stream, steps: int = 150, lr: float = 0.05) -> TinyBackbone:
    """Stand-in for contrastive pre-training: fit the three towers' output projections so that
    image and audio embeddings of the stream's *train* split point at their class's prompt
    embedding ("a <name>."). Everything below the projections stays random. Returns ``bb`` frozen."""
    captured: dict[str, torch.Tensor] = {}

    def grab(name):
        def hook(module, inputs):
            captured[name] = inputs[0].detach()
        return hook

    towers = {"image": bb.image, "audio": bb.audio, "text": bb.text}
    handles = [t.proj.register_forward_pre_hook(grab(n)) for n, t in towers.items()]
    d = stream.splits["train"]
    with torch.no_grad():
        bb.encode_image(d["images"])
        bb.encode_audio(d["audio"])
        bb.encode_text(bb.tokenize([f"a {c}." for c in CLASS_NAMES[: stream.n_classes]]))
    for h in handles:
        h.remove()
    weights = {n: t.proj.weight.detach().clone().requires_grad_(True) for n, t in towers.items()}
    opt = torch.optim.Adam(weights.values(), lr=lr)
    labels = d["labels"]
    for _ in range(steps):
        text = torch.nn.functional.normalize(captured["text"] @ weights["text"].t(), dim=-1)
        loss = 0.0
        for m in ("image", "audio"):
            f = torch.nn.functional.normalize(captured[m] @ weights[m].t(), dim=-1)
            loss = loss + torch.nn.functional.cross_entropy(10.0 * f @ text.t(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        for n, t in towers.items():
            t.proj.weight.copy_(weights[n])
    return bb.freeze()


def run_config(**options) -> RunConfig:
    """A default RunConfig whose ``method.options`` are ``options``."""
    cfg = RunConfig()
    return dataclasses.replace(cfg, method=dataclasses.replace(cfg.method, options=dict(options)))


class Stream:
    """Separable paired data: class c has a fixed random image pattern and a tone at its own pitch.

    images (N, 3, 16, 16) = pattern_c + 0.5·noise; audio (N, 4000) = 0.5·sin(2π f_c t + φ) + noise.
    ``drop_audio`` / ``drop_image``: fraction of samples (every k-th) without that modality.
    """

    def __init__(self, n_classes: int = 6, n_train: int = 16, n_test: int = 8, seed: int = 0,
                 drop_audio: float = 0.0, drop_image: float = 0.0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.n_classes = n_classes
        s, n = SMALL.image_size, SMALL.num_samples
        patterns = torch.randn(n_classes, 3, s, s, generator=g)
        freqs = torch.tensor([300.0 * (c + 1) for c in range(n_classes)])
        self.splits: dict[str, dict[str, torch.Tensor]] = {}
        for split, per in (("train", n_train), ("test", n_test)):
            labels = torch.arange(n_classes).repeat_interleave(per)
            m = len(labels)
            images = patterns[labels] + 0.5 * torch.randn(m, 3, s, s, generator=g)
            t = torch.arange(n, dtype=torch.float32) / SMALL.sample_rate
            phase = 2 * math.pi * torch.rand(m, 1, generator=g)
            audio = 0.5 * torch.sin(2 * math.pi * freqs[labels].unsqueeze(1) * t + phase)
            audio = (audio + 0.02 * torch.randn(m, n, generator=g)).clamp(-1, 1)
            has_audio = torch.ones(m, dtype=torch.bool)
            has_image = torch.ones(m, dtype=torch.bool)
            if drop_audio:
                has_audio[:: max(1, round(1 / drop_audio))] = False
            if drop_image:
                has_image[1 :: max(1, round(1 / drop_image))] = False
            self.splits[split] = {
                "images": images * has_image.view(-1, 1, 1, 1),
                "audio": audio * has_audio.unsqueeze(1),
                "labels": labels,
                "has_image": has_image,
                "has_audio": has_audio,
            }
        self._frozen: dict[tuple[int, str, str], torch.Tensor] = {}

    # -- data access (what TrainData does) -------------------------------------------------------------
    def indices(self, split: str, classes: Sequence[int]) -> torch.Tensor:
        labels = self.splits[split]["labels"]
        return torch.nonzero(torch.isin(labels, torch.tensor(list(classes))), as_tuple=False).flatten()

    @torch.no_grad()
    def frozen(self, backbone, split: str, tower: str) -> torch.Tensor:
        """(N, D) frozen-tower embeddings of a whole split (the trainer's feature cache)."""
        key = (id(backbone), split, tower)
        if key not in self._frozen:
            d = self.splits[split]
            x = d["images"] if tower == "image" else d["audio"]
            enc = backbone.encode_image if tower == "image" else backbone.encode_audio
            present = d["has_image"] if tower == "image" else d["has_audio"]
            self._frozen[key] = enc(x) * present.unsqueeze(1)
        return self._frozen[key]

    def batch(self, split: str, idx: torch.Tensor, backbone=None, frozen: frozenset[str] = frozenset()) -> Batch:
        d = self.splits[split]
        kw = {}
        for tower, raw in (("image", "images"), ("audio", "audio")):
            if tower in frozen:
                kw[f"{tower}_emb"] = self.frozen(backbone, split, tower)[idx]
            else:
                kw[tower] = d[raw][idx]
        return Batch(labels=d["labels"][idx], has_image=d["has_image"][idx], has_audio=d["has_audio"][idx],
                     index=idx.clone(), **kw)

    # -- driving a learner --------------------------------------------------------------------------------
    @staticmethod
    def tasks(n_classes: int, n_tasks: int) -> list[tuple[int, ...]]:
        per = n_classes // n_tasks
        return [tuple(range(i * per, (i + 1) * per)) for i in range(n_tasks)]

    def start(self, learner: Learner, backbone, tasks: Sequence[Sequence[int]], t: int, steps: int) -> Task:
        seen = tuple(c for task in tasks[: t + 1] for c in task)
        task = Task(index=t, classes=tuple(tasks[t]), seen_classes=seen, n_tasks=len(tasks), steps=steps)
        learner.start_task(task)
        return task

    def train_task(self, learner: Learner, backbone, tasks: Sequence[Sequence[int]], t: int, epochs: int = 8,
                   lr: float = 1e-2, batch_size: int = 16, seed: int = 0,
                   on_step: Callable[[dict], None] | None = None) -> Task:
        """One task as ``mcil.train`` runs it (constant lr instead of the cosine schedule)."""
        frozen = frozenset(type(learner).FROZEN_FEATURES)
        idx_task = self.indices("train", tasks[t])
        steps_per_epoch = math.ceil(len(idx_task) / batch_size) if type(learner).NEEDS_GRAD else 0
        learner.bind_train_data(lambda idx: self.batch("train", idx, backbone, frozen))
        task = self.start(learner, backbone, tasks, t, steps_per_epoch * epochs)
        params = learner.trainable_parameters()
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0) if params else None
        learner.train()
        if opt is not None:
            for epoch in range(epochs):
                g = torch.Generator().manual_seed(seed * 1000 + t * 100 + epoch)
                perm = idx_task[torch.randperm(len(idx_task), generator=g)]
                for b in range(steps_per_epoch):
                    batch = self.batch("train", perm[b * batch_size : (b + 1) * batch_size], backbone, frozen)
                    extra = learner.replay_batch(len(batch))
                    if extra is not None:
                        batch = concat(batch, extra)
                    out = learner.train_step(batch)
                    if on_step is not None:
                        on_step(out)
                    if "loss" in out:
                        opt.zero_grad(set_to_none=True)
                        out["loss"].backward()
                        opt.step()
        learner.eval()
        loader = lambda: (self.batch("train", idx_task[i : i + batch_size], backbone, frozen)  # noqa: E731
                          for i in range(0, len(idx_task), batch_size))
        learner.end_task(task, loader)
        return task

    @torch.no_grad()
    def accuracy(self, learner: Learner, backbone, test_classes: Sequence[int], scope: Sequence[int]) -> float:
        """Top-1 (%) on the test samples of ``test_classes``, argmax over ``scope`` (class-IL)."""
        learner.eval()
        frozen = frozenset(type(learner).FROZEN_FEATURES)
        idx = self.indices("test", test_classes)
        batch = self.batch("test", idx, backbone, frozen)
        order = list(range(self.n_classes))
        logits = learner.predict(batch, order).logits[:, list(scope)]
        pred = torch.tensor(list(scope))[logits.argmax(1)]
        return 100.0 * float((pred == batch.labels).float().mean())

    def run(self, learner: Learner, backbone, tasks: Sequence[Sequence[int]], **kw) -> Record:
        """All tasks. ``A[t, j]``: class-IL accuracy (%) on task j after task t (NaN above the
        diagonal); ``learned[t]``: task-aware accuracy on task t right after training it (argmax
        over its own classes — whether the task was learnt, independent of old classes)."""
        T = len(tasks)
        A = np.full((T, T), np.nan)
        learned = []
        for t in range(T):
            self.train_task(learner, backbone, tasks, t, **kw)
            learned.append(self.accuracy(learner, backbone, tasks[t], tasks[t]))
            seen = [c for task in tasks[: t + 1] for c in task]
            for j in range(t + 1):
                A[t, j] = self.accuracy(learner, backbone, tasks[j], seen)
        return Record(A, learned)


@dataclasses.dataclass
class Record:
    A: np.ndarray
    learned: list[float]

    @property
    def forgetting(self) -> float:
        """Chaudhry forgetting after the last task: mean over j < T of max_{l<T} A[l, j] − A[T, j]."""
        T = self.A.shape[0]
        return float(np.mean([np.nanmax(self.A[j:T - 1, j]) - self.A[T - 1, j] for j in range(T - 1)]))


def concat(a: Batch, b: Batch) -> Batch:
    """What the trainer does with a replay batch: concatenate field by field."""
    def cat(x, y):
        return None if x is None or y is None else torch.cat([x, y])

    return Batch(**{f.name: cat(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(Batch)})


@pytest.fixture(scope="module")
def stream() -> Stream:
    return Stream()


@pytest.fixture
def backbone() -> TinyBackbone:
    return make_backbone()


@pytest.fixture(scope="session")
def kit():
    """The helpers above, for tests (importing from a conftest module by name is fragile)."""
    from types import SimpleNamespace

    return SimpleNamespace(CLASS_NAMES=CLASS_NAMES, make_backbone=make_backbone, run_config=run_config,
                           Stream=Stream, concat=concat, align_projections=align_projections,
                           state_fingerprint=state_fingerprint)


def state_fingerprint(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter and buffer (to assert that nothing changed)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}
