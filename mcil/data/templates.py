"""Prompt template sets: dataset resources (``mcil/resources/templates/<name>.yaml``).

A template set has one ``test`` template (the single prompt of the official evaluation protocol)
and a ``train`` list (the text-diversity set), each with exactly one ``{}`` for the class name.
They live in the data layer because a dataset names its set (``templates`` in classes.json) and
both the backbone pre-training and the learners read them.

Prompt order is class-major everywhere: ``[c0·t0, c0·t1, …, c1·t0, …]``, so a ``(C·N, D)``
embedding matrix reshapes to ``(C, N, D)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import yaml

from mcil.errors import DataError

__all__ = ["TemplateSet", "load_templates", "available_template_sets", "fill_prompts"]


@dataclass(frozen=True)
class TemplateSet:
    """A named set of prompt templates, each with exactly one ``{}`` for the class name."""

    name: str
    test: str
    train: tuple[str, ...]

    def for_training(self, diversity: bool) -> tuple[str, ...]:
        """Templates averaged into the training prototypes: all of ``train`` (text diversity) or ``test`` only."""
        return self.train if diversity else (self.test,)

    def for_evaluation(self, mode: Literal["single", "average"]) -> tuple[str, ...]:
        """``single``: the official single test template; ``average``: the ``train`` set."""
        if mode == "single":
            return (self.test,)
        if mode == "average":
            return self.train
        raise ValueError(f"eval template mode must be 'single' or 'average', got {mode!r}")


def available_template_sets() -> list[str]:
    """Names of the shipped template sets."""
    root = resources.files("mcil.resources").joinpath("templates")
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_templates(name: str) -> TemplateSet:
    """Read ``mcil/resources/templates/<name>.yaml``; DataError if missing or malformed."""
    res = resources.files("mcil.resources").joinpath(f"templates/{name}.yaml")
    if not res.is_file():
        raise DataError(
            f"prompt template set {name!r} does not exist; set 'templates' in the dataset's classes.json "
            f"to one of: {', '.join(available_template_sets())}"
        )
    data = yaml.safe_load(res.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("test"), str) or not isinstance(data.get("train"), list):
        raise DataError(f"mcil/resources/templates/{name}.yaml: expected a 'test' string and a 'train' list")
    train = tuple(data["train"])
    bad = [t for t in (data["test"], *train) if not isinstance(t, str) or t.count("{}") != 1]
    if bad or not train:
        raise DataError(
            f"mcil/resources/templates/{name}.yaml: every template must be a string with exactly one '{{}}' "
            f"and 'train' must not be empty; offending: {bad[:3]}"
        )
    return TemplateSet(name=name, test=data["test"], train=train)


def fill_prompts(templates: Sequence[str], class_names: Sequence[str]) -> list[str]:
    """Class-major prompts: ``len(class_names) * len(templates)`` strings."""
    return [t.format(name) for name in class_names for t in templates]
