"""Class-incremental scenarios: a class order cut into T tasks.

A :class:`Scenario` is pure data (which labels each task holds); the trainer walks its tasks and
evaluates on every class seen so far. Task sizes follow either ``n_tasks`` (as even as possible,
remainder to the first task) or continuum's ``initial`` + ``increment``. The paper's class orders
and its (initial, increment) per T are data files under ``mcil/resources/class_orders/``.

A random order can be asked to keep given pairs of classes apart (``separate``: synav's look-alike
twins, which only the other modality tells apart): a twin learnt in a later task is what makes
forgetting and fusion both matter, while two twins side by side in one task test neither.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import yaml

from mcil.config import ConfigError
from mcil.errors import DataError

__all__ = [
    "Scenario", "make_scenario", "paper_order", "paper_split", "PAPER_DATASETS", "separate_pairs", "task_sizes",
]

#: Datasets with a stored paper class order (file stem under resources/class_orders).
PAPER_DATASETS: tuple[str, ...] = ("miniaric", "imagenet-esc-19", "imagenet-esc-27")


@dataclass(frozen=True)
class Scenario:
    """class_order: permutation of ``0..n_classes-1``; tasks: consecutive slices of it."""

    class_order: tuple[int, ...]
    tasks: tuple[tuple[int, ...], ...]
    n_classes: int

    def __post_init__(self) -> None:
        flat = tuple(c for task in self.tasks for c in task)
        if flat != self.class_order:
            raise ConfigError(f"scenario: tasks {self.tasks} do not concatenate to the class order {self.class_order}")
        if sorted(self.class_order) != list(range(self.n_classes)):
            raise ConfigError(
                f"scenario: class order {self.class_order} is not a permutation of 0..{self.n_classes - 1}"
            )
        if any(len(t) == 0 for t in self.tasks):
            raise ConfigError(f"scenario: a task is empty: {self.tasks}")

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def task_sizes(self) -> tuple[int, ...]:
        return tuple(len(t) for t in self.tasks)

    def seen_classes(self, t: int) -> tuple[int, ...]:
        """Labels of tasks ``0..t`` (0-based), in class order: the evaluation classes after task t."""
        return tuple(c for task in self.tasks[: t + 1] for c in task)

    def task_of(self, label: int) -> int:
        """0-based index of the task that introduces ``label``."""
        for i, task in enumerate(self.tasks):
            if label in task:
                return i
        raise KeyError(label)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (enters result.json)."""
        return {
            "class_order": list(self.class_order),
            "tasks": [list(t) for t in self.tasks],
            "n_classes": self.n_classes,
        }


# --------------------------------------------------------------------------------------------
# Paper data
# --------------------------------------------------------------------------------------------


@functools.cache
def _paper_file(dataset: str) -> dict[str, Any]:
    if dataset not in PAPER_DATASETS:
        raise ConfigError(
            f"scenario.order: 'paper' needs a dataset with a stored class order; {dataset!r} has none "
            f"(available: {', '.join(PAPER_DATASETS)}); use 'random', 'sorted' or a list of labels"
        )
    path = resources.files("mcil") / "resources" / "class_orders" / f"{dataset}.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:  # a broken install, not bad user input
        raise DataError(f"cannot read the packaged class order {path} ({exc}); reinstall mcil") from exc
    return data


def paper_order(dataset: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """(class order, class names with index = label) of the official code for ``dataset``."""
    data = _paper_file(dataset)
    return tuple(int(c) for c in data["order"]), tuple(str(n) for n in data["class_names"])


def paper_split(dataset: str, n_tasks: int) -> tuple[int, int] | None:
    """(initial, increment) the official configs use for ``dataset`` with T = ``n_tasks``, else None."""
    splits = _paper_file(dataset).get("paper_splits") or {}
    entry = splits.get(n_tasks)
    return None if entry is None else (int(entry["initial"]), int(entry["increment"]))


# --------------------------------------------------------------------------------------------
# Construction
# --------------------------------------------------------------------------------------------


def task_sizes(
    n_classes: int, n_tasks: int | None = None, initial: int | None = None, increment: int | None = None
) -> list[int]:
    """Classes per task.

    ``n_tasks`` alone: ``n // T`` each, the remainder added to the first task (10, T=3 → 4/3/3).
    ``initial`` + ``increment``: continuum's rule, the last task may be smaller
    (T = 1 + ceil((n − initial) / increment)); ``n_tasks``, if also given, must agree.
    """
    if n_classes < 1:
        raise ConfigError(f"scenario: the dataset has {n_classes} incremental classes; need at least 1")
    if (initial is None) != (increment is None):
        raise ConfigError("scenario: give initial and increment together (or neither, with n_tasks)")
    if initial is not None and increment is not None:
        if not 1 <= initial <= n_classes:
            raise ConfigError(f"scenario.initial: {initial} is out of range; allowed: 1..{n_classes}")
        if increment < 1:
            raise ConfigError(f"scenario.increment: {increment} is out of range; allowed: >= 1")
        rest = n_classes - initial
        implied = 1 + math.ceil(rest / increment)
        if n_tasks is not None and n_tasks != implied:
            raise ConfigError(
                f"scenario: n_tasks={n_tasks} disagrees with initial={initial}, increment={increment} on "
                f"{n_classes} classes, which give {implied} tasks; drop n_tasks or make them agree"
            )
        sizes = [initial] + [increment] * (rest // increment)
        if rest % increment:
            sizes.append(rest % increment)
        return sizes
    if n_tasks is None:
        raise ConfigError("scenario: give n_tasks, or both initial and increment")
    if not 1 <= n_tasks <= n_classes:
        raise ConfigError(f"scenario.n_tasks: {n_tasks} is out of range; allowed: 1..{n_classes}")
    base, rem = divmod(n_classes, n_tasks)
    return [base + rem] + [base] * (n_tasks - 1)


def _resolve_order(
    n_classes: int,
    order: str | Sequence[int],
    order_seed: int,
    dataset: str | None,
    class_names: Sequence[str] | None,
) -> tuple[int, ...]:
    if isinstance(order, str):
        if order == "random":
            return tuple(int(c) for c in np.random.default_rng(order_seed).permutation(n_classes))
        if order == "sorted":
            return tuple(range(n_classes))
        if order == "paper":
            if dataset is None:
                raise ConfigError(
                    f"scenario.order: 'paper' needs the dataset name ({', '.join(PAPER_DATASETS)})"
                )
            stored, names = paper_order(dataset)
            if len(stored) != n_classes:
                raise ConfigError(
                    f"scenario.order: the paper order of {dataset!r} has {len(stored)} classes but the dataset has "
                    f"{n_classes}; prepare the full dataset or use order 'random'"
                )
            given = tuple(class_names[:n_classes]) if class_names is not None else names
            for label, (have, want) in enumerate(zip(given + (None,) * n_classes, names)):
                if have != want:
                    raise ConfigError(
                        f"scenario.order: the dataset's label {label} is {have!r} but the paper order of "
                        f"{dataset!r} expects {want!r}; labels must be the alphabetical folder index "
                        f"(re-run `mcil prepare`)"
                    )
            return stored
        raise ConfigError(
            f"scenario.order: {order!r} is not allowed; use 'random', 'sorted', 'paper' or a list of labels"
        )
    labels = [int(c) for c in order]
    if sorted(labels) != list(range(n_classes)):
        bad = sorted(set(labels) ^ set(range(n_classes)))
        dup = sorted({c for c in labels if labels.count(c) > 1})
        raise ConfigError(
            f"scenario.order: must be a permutation of 0..{n_classes - 1}; missing/extra labels {bad[:10]}, "
            f"repeated {dup[:10]}"
        )
    return tuple(labels)


def separate_pairs(
    order: Sequence[int], sizes: Sequence[int], pairs: Sequence[tuple[int, int]]
) -> tuple[int, ...]:
    """``order`` with every pair of ``pairs`` in two different tasks of ``sizes``, by swaps.

    Deterministic and minimal: pairs are visited in order position; when both classes of a pair
    fall in one task, the later one trades places with the first class (scanning forward,
    cyclically, from the next task) whose move creates no new conflict. A class may be in at most
    one pair. With one task, or pairs that cannot all be separated, raises :class:`ConfigError`.
    """
    order = [int(c) for c in order]
    partner: dict[int, int] = {}
    for a, b in pairs:
        a, b = int(a), int(b)
        if a == b or a in partner or b in partner:
            raise ConfigError(f"scenario: class pairs to separate must be disjoint; ({a}, {b}) overlaps another pair")
        partner[a], partner[b] = b, a
    if not partner:
        return tuple(order)
    task_at = [t for t, size in enumerate(sizes) for _ in range(size)]
    if len(task_at) != len(order):
        raise ValueError(f"separate_pairs: task sizes sum to {len(task_at)}, the order has {len(order)} classes")
    where = {c: i for i, c in enumerate(order)}

    def clash(c: int, task: int, leaving: int | None = None) -> bool:
        """Would class ``c`` in ``task`` share it with its partner (``leaving`` is moving out)?"""
        p = partner.get(c)
        return p is not None and p != leaving and task_at[where[p]] == task

    n = len(order)
    for i in range(n):
        a = order[i]
        b = partner.get(a)
        if b is None or where[b] < i or task_at[where[b]] != task_at[i]:
            continue
        k = where[b]  # the later twin, moved out of task_at[k]
        for step in range(1, n):
            j = (k + step) % n
            x = order[j]
            if task_at[j] == task_at[k] or x in (a, b):
                continue
            if clash(b, task_at[j]) or clash(x, task_at[k], leaving=b):
                continue
            order[k], order[j] = x, b
            where[x], where[b] = k, j
            break
        else:
            raise ConfigError(
                f"scenario: classes {a} and {b} cannot be placed in different tasks ({len(sizes)} task(s)); "
                "use more tasks or scenario.separate_twins=false"
            )
    return tuple(order)


def make_scenario(
    n_classes: int,
    n_tasks: int | None = None,
    initial: int | None = None,
    increment: int | None = None,
    order: str | Sequence[int] = "random",
    order_seed: int = 0,
    dataset: str | None = None,
    class_names: Sequence[str] | None = None,
    separate: Sequence[tuple[int, int]] = (),
) -> Scenario:
    """Build the scenario.

    order: ``random`` (``numpy.random.default_rng(order_seed).permutation``), ``sorted``,
    ``paper`` (stored order of ``dataset``) or an explicit permutation. With ``order='paper'``
    and only ``n_tasks``, the paper's (initial, increment) for that T is used when it has one
    (miniARIC T=3 → 13/10/10). ``class_names`` (index = label; extra pre-training names after the
    first ``n_classes`` are ignored), if given, are checked against the paper's table so the stored
    order is never applied to differently labelled data. ``separate``: pairs of labels a ``random``
    order puts in different tasks (:func:`separate_pairs`; ignored for other orders and for one task).
    """
    class_order = _resolve_order(n_classes, order, order_seed, dataset, class_names)
    use_paper_split = isinstance(order, str) and order == "paper" and dataset is not None
    if use_paper_split and n_tasks is not None and initial is None and increment is None:
        split = paper_split(dataset, n_tasks)
        if split is not None:
            initial, increment = split
    sizes = task_sizes(n_classes, n_tasks, initial, increment)
    if separate and order == "random" and len(sizes) > 1:
        class_order = separate_pairs(class_order, sizes, separate)
    tasks: list[tuple[int, ...]] = []
    start = 0
    for size in sizes:
        tasks.append(class_order[start : start + size])
        start += size
    return Scenario(class_order=class_order, tasks=tuple(tasks), n_classes=n_classes)
