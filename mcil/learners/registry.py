"""Name → learner class, and named presets (a learner plus config overrides).

A learner registers itself with ``@register_learner``; an ablation or variant that is only a
configuration of an existing learner registers as a preset::

    register_preset("mcil-no-aavfm", learner="mcil", overrides={"fusion.gate": "never"},
                    doc="without AAVFM: image feature only")

``method.name`` in a config may be either; :func:`mcil.learners.resolve.resolve_method` turns a
preset into its learner name and applies the overrides (explicit user overrides win) and then the
preset's ``fixed`` values, which nothing overrides: they define the preset (``joint`` *is* one task).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "register_learner",
    "register_preset",
    "get_learner_class",
    "available_methods",
    "get_preset",
    "Preset",
]

_LEARNERS: dict[str, type] = {}
_PRESETS: dict[str, Preset] = {}
_LOADED = False


@dataclass(frozen=True)
class Preset:
    name: str
    learner: str
    overrides: dict[str, Any] = field(default_factory=dict)
    doc: str = ""
    fixed: dict[str, Any] = field(default_factory=dict)


def register_learner(cls: type) -> type:
    """Class decorator: register a :class:`mcil.learners.base.Learner` subclass under ``cls.NAME``."""
    if not cls.NAME:
        raise ValueError(f"{cls.__name__} has no NAME")
    if cls.NAME in _LEARNERS and _LEARNERS[cls.NAME] is not cls:
        raise ValueError(f"learner name {cls.NAME!r} registered twice")
    _LEARNERS[cls.NAME] = cls
    return cls


def register_preset(
    name: str,
    learner: str,
    overrides: dict[str, Any] | None = None,
    doc: str = "",
    fixed: dict[str, Any] | None = None,
) -> None:
    """``overrides``: defaults of the preset (a value the user set wins); ``fixed``: always applied."""
    _PRESETS[name] = Preset(name, learner, dict(overrides or {}), doc, dict(fixed or {}))


def _load_all() -> None:
    """Import every module of mcil.method and mcil.baselines so their registrations run."""
    global _LOADED
    if _LOADED:
        return
    for pkg_name in ("mcil.method", "mcil.baselines"):
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{pkg_name}.{info.name}")
    _LOADED = True


def get_learner_class(name: str) -> type:
    _load_all()
    if name not in _LEARNERS:
        raise KeyError(
            f"method.name: {name!r} is not a registered learner or preset; available: {', '.join(available_methods())}"
        )
    return _LEARNERS[name]


def get_preset(name: str) -> Preset | None:
    _load_all()
    return _PRESETS.get(name)


def available_methods(include_presets: bool = True) -> list[str]:
    _load_all()
    names = set(_LEARNERS)
    if include_presets:
        names |= set(_PRESETS)
    return sorted(names)
