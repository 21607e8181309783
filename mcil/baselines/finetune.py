"""Fine-tuning: one adapter set trained task after task with nothing protecting old tasks.

The lower bound of the comparison (sequential fine-tuning, the "Finetune" row of every CIL
table since Li & Hoiem's LwF, TPAMI 2017): a single parallel bottleneck adapter per image and
text site — the paper's expert module, without mixture or routing — trained with cross-entropy
over the current task's classes. Old classes are never seen again, so their text prototypes and
the image features drift: it forgets. ``joint`` (a preset of this learner with one task) is the
non-incremental upper bound on the same architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

from mcil.baselines._common import AdapterOptions, AdapterTextLearner, opt
from mcil.config import ConfigError
from mcil.method.base import Task
from mcil.method.registry import register_learner, register_preset

__all__ = ["Finetune", "FinetuneOptions"]


@dataclass(frozen=True)
class FinetuneOptions(AdapterOptions):
    """The shared adapter options, and a guard used by the ``joint`` preset."""

    joint: bool = opt(
        False, "set by the joint preset: the run must be one task (an explicit scenario.n_tasks is an error)"
    )


@register_learner
class Finetune(AdapterTextLearner):
    """Sequential fine-tuning of one image+text adapter set, nothing protects old tasks: the lower bound."""

    NAME = "finetune"
    Options = FinetuneOptions

    def begin_task(self, task: Task) -> None:
        if self.options.joint and task.n_tasks != 1:
            raise ConfigError(
                f"method joint trains all classes in one task, but the scenario has {task.n_tasks} tasks: the "
                f"config sets scenario.n_tasks (or initial/increment), which wins over the preset; drop those keys "
                f"for this run or set scenario.n_tasks=1"
            )
        super().begin_task(task)


register_preset(
    "joint",
    learner="finetune",
    overrides={"scenario.n_tasks": 1, "scenario.initial": None, "scenario.increment": None,
               "method.options.joint": True},
    doc="all classes in one task: the non-incremental upper bound of the adapter architecture",
)
