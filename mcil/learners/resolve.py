"""``method.name`` → the learner to build: a registered learner as it is, a preset turned into its
learner with the preset's overrides (explicit config values win) and its ``fixed`` values.

Used by the trainer (:func:`mcil.train.train`) and the throughput benchmark (:mod:`mcil.bench`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mcil.config import RunConfig, apply_overrides, config_to_dict, parse_dataclass
from mcil.learners.registry import get_learner_class, get_preset

__all__ = ["resolve_method"]

log = logging.getLogger(__name__)


def resolve_method(cfg: RunConfig) -> tuple[RunConfig, dict[str, Any]]:
    """Turn a preset name into its learner and apply its overrides (explicit config values win),
    then its ``fixed`` values (a config value they replace is logged)."""
    preset = get_preset(cfg.method.name)
    if preset is None:
        get_learner_class(cfg.method.name)  # raises with the list of names
        return cfg, {"name": cfg.method.name, "learner": cfg.method.name, "preset": None}
    data = config_to_dict(cfg)
    default = config_to_dict(RunConfig())
    overrides = []
    for key, value in preset.overrides.items():
        user, dflt = _lookup(data, key), _lookup(default, key)
        # The preset sets a value unless the user changed that key away from its default.
        if user is _ABSENT or user == dflt:
            overrides.append(f"{key}={json.dumps(value)}")
    for key, value in preset.fixed.items():
        user = _lookup(data, key)
        if user is not _ABSENT and user != value and user != _lookup(default, key):
            log.info("method %s fixes %s=%s; the config's value %s is not used", preset.name, key, value, user)
        overrides.append(f"{key}={json.dumps(value)}")
    data["method"]["name"] = preset.learner
    data = apply_overrides(data, overrides)
    new = parse_dataclass(RunConfig, data)
    info = {"name": cfg.method.name, "learner": preset.learner, "preset": preset.name, "preset_overrides": preset.overrides}
    if preset.fixed:
        info["preset_fixed"] = preset.fixed
    return new, info


_ABSENT = object()


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key of a nested dict, or ``_ABSENT``."""
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node
