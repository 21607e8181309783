"""Name → backbone constructor, in the style of timm's model registry.

A concrete backbone registers its constructor in its own module::

    @register_backbone("tiny")
    def _build_tiny(checkpoint: str | Path | None, **kwargs) -> TinyBackbone: ...

and every caller builds one by name with :func:`build_backbone` (learners never import a concrete
backbone). The built-in backbones are named in :data:`BUILTIN_MODULES` and imported on first use,
so ``import mcil.backbones.base`` (the interface) stays cheap and imports no concrete backbone:
the concrete modules import ``base`` and this module, never the other way round.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from mcil.backbones.base import Backbone, BackboneError

__all__ = ["BUILTIN_MODULES", "register_backbone", "build_backbone", "available_backbones"]

# Modules whose import registers the built-in backbones (each calls @register_backbone).
BUILTIN_MODULES = ("mcil.backbones.audioclip", "mcil.backbones.tiny")

_REGISTRY: dict[str, Callable[..., Backbone]] = {}


def register_backbone(name: str) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator: register a constructor ``fn(checkpoint: str | None, **kw) -> Backbone``."""

    def deco(fn: Callable[..., Backbone]) -> Callable[..., Backbone]:
        _REGISTRY[name] = fn
        return fn

    return deco


def _import_builtin() -> None:
    # Imported lazily so that importing the interface (and this registry) stays cheap.
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def available_backbones() -> list[str]:
    _import_builtin()
    return sorted(_REGISTRY)


def build_backbone(name: str, checkpoint: str | Path | None = None, **kwargs) -> Backbone:
    """Build a registered backbone, load its checkpoint, freeze it and return it.

    The returned model carries its preprocessing spec (``model.preprocess``), so callers never
    pick transforms separately from weights.
    """
    _import_builtin()
    if name not in _REGISTRY:
        raise BackboneError(f"backbone.name: {name!r} is not registered; available: {', '.join(sorted(_REGISTRY))}")
    model = _REGISTRY[name](checkpoint, **kwargs)
    return model.freeze()
