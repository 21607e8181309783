"""Fine-tuning: one adapter set trained task after task with nothing protecting old tasks.

The lower bound of the comparison (sequential fine-tuning, the "Finetune" row of every CIL
table since Li & Hoiem's LwF, TPAMI 2017): a single parallel bottleneck adapter per image and
text site — the paper's expert module, without mixture or routing — trained with cross-entropy
over the current task's classes. Old classes are never seen again, so their text prototypes and
the image features drift: it forgets.
"""

from __future__ import annotations

from mcil.baselines._common import AdapterOptions, AdapterTextLearner
from mcil.learners.registry import register_learner

__all__ = ["Finetune"]


@register_learner
class Finetune(AdapterTextLearner):
    """Sequential fine-tuning of one image+text adapter set, nothing protects old tasks: the lower bound."""

    NAME = "finetune"
    Options = AdapterOptions
