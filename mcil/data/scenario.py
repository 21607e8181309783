"""Class-incremental scenarios: a class order cut into T tasks.

A :class:`Scenario` is pure data (which labels each task holds); the trainer walks its tasks and
evaluates on every class seen so far. Task sizes follow either ``n_tasks`` (as even as possible,
remainder to the first task) or continuum's ``initial`` + ``increment``. The paper's class orders
and its (initial, increment) per T are data files under ``mcil/resources/class_orders/``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any, Sequence

import numpy as np
import yaml

from mcil.config import ConfigError
from mcil.errors import DataError

__all__ = ["Scenario", "make_scenario", "paper_order", "paper_split", "PAPER_DATASETS", "task_sizes"]

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


@functools.lru_cache(maxsize=None)
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


def make_scenario(
    n_classes: int,
    n_tasks: int | None = None,
    initial: int | None = None,
    increment: int | None = None,
    order: str | Sequence[int] = "random",
    order_seed: int = 0,
    dataset: str | None = None,
    class_names: Sequence[str] | None = None,
) -> Scenario:
    """Build the scenario.

    order: ``random`` (``numpy.random.default_rng(order_seed).permutation``), ``sorted``,
    ``paper`` (stored order of ``dataset``) or an explicit permutation. With ``order='paper'``
    and only ``n_tasks``, the paper's (initial, increment) for that T is used when it has one
    (miniARIC T=3 → 13/10/10). ``class_names`` (index = label; extra pre-training names after the
    first ``n_classes`` are ignored), if given, are checked against the paper's table so the stored
    order is never applied to differently labelled data.
    """
    class_order = _resolve_order(n_classes, order, order_seed, dataset, class_names)
    use_paper_split = isinstance(order, str) and order == "paper" and dataset is not None
    if use_paper_split and n_tasks is not None and initial is None and increment is None:
        split = paper_split(dataset, n_tasks)
        if split is not None:
            initial, increment = split
    sizes = task_sizes(n_classes, n_tasks, initial, increment)
    tasks: list[tuple[int, ...]] = []
    start = 0
    for size in sizes:
        tasks.append(class_order[start : start + size])
        start += size
    return Scenario(class_order=class_order, tasks=tuple(tasks), n_classes=n_classes)
