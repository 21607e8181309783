"""What every learner shares: the interface (:mod:`.base`), the registry of learners and presets
(:mod:`.registry`), the resolution of ``method.name`` into a learner and its config
(:mod:`.resolve`) and ``mcil methods`` (:mod:`.listing`).

The learners themselves live elsewhere: the paper's method in :mod:`mcil.method`, the baselines in
:mod:`mcil.baselines`; each registers itself with ``@register_learner`` when its module is imported.
"""
