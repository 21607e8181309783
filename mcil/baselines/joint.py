"""``joint``: the method under study trained on every class at once, the non-incremental upper bound.

Joint training is the reference every CIL table closes with: the same model and recipe without
the incremental constraint. It is the paper's own learner (``mcil`` with its defaults: MIFE,
AAVFM, text diversity, L_CW + L_MI), so the gap ``joint − mcil`` (compare with mcil's *last*
accuracy: joint has one step, over all classes) is what the incremental setting costs the method.
A preset, not a learner: one task is *fixed* (``Preset.fixed``), so a config's or the pipeline's
``scenario.n_tasks`` cannot turn it into an incremental run; the run's folder keeps the T it is
compared at.
"""

from __future__ import annotations

from mcil.learners.registry import register_preset

register_preset(
    "joint",
    learner="mcil",
    fixed={"scenario.n_tasks": 1, "scenario.initial": None, "scenario.increment": None},
    doc="mcil on all classes in one task: the non-incremental upper bound of the method under study",
)
