"""``mcil methods``: list the registered learners and presets with their documentation.

Without arguments: one line per learner (name, modalities, first doc line) and per preset (name,
learner, overrides). With a name: the full entry, including every option with its default and
help. ``--json`` prints the same data machine-readably.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
from typing import Any

from mcil.errors import UserError
from mcil.learners.registry import available_methods, get_learner_class, get_preset

__all__ = ["describe_methods", "describe", "format_listing", "format_entry", "configure_parser", "run_cli"]


def _first_line(doc: str | None) -> str:
    return (inspect.cleandoc(doc).splitlines() or [""])[0] if doc else ""


def _options(cls: type) -> list[dict[str, Any]]:
    opts = getattr(cls, "Options", None)
    if opts is None or not dataclasses.is_dataclass(opts):
        return []
    out = []
    for f in dataclasses.fields(opts):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        out.append({"name": f.name, "type": str(f.type), "default": default, "help": f.metadata.get("help", "")})
    return out


def describe(name: str) -> dict[str, Any]:
    """The entry of one learner or preset (KeyError-free: UserError naming the available ones)."""
    preset = get_preset(name)
    if preset is not None:
        return {"kind": "preset", "name": name, "learner": preset.learner, "overrides": dict(preset.overrides),
                "fixed": dict(preset.fixed), "doc": preset.doc}
    if name not in available_methods(include_presets=False):
        raise UserError(f"{name!r} is not a registered method or preset; available: {', '.join(available_methods())}")
    cls = get_learner_class(name)
    return {
        "kind": "learner",
        "name": name,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "modalities": sorted(cls.MODALITIES),
        "frozen_features": sorted(cls.FROZEN_FEATURES),
        "doc": inspect.cleandoc(cls.__doc__ or ""),
        "options": _options(cls),
    }


def describe_methods() -> list[dict[str, Any]]:
    """Every learner, then every preset, each sorted by name."""
    learners = available_methods(include_presets=False)
    presets = [n for n in available_methods() if n not in learners]
    return [describe(n) for n in learners] + [describe(n) for n in presets]


def format_entry(entry: dict[str, Any]) -> str:
    """Multi-line text of one :func:`describe` entry."""
    if entry["kind"] == "preset":
        over = ", ".join(f"{k}={json.dumps(v)}" for k, v in entry["overrides"].items()) or "(none)"
        text = f"{entry['name']}  (preset of {entry['learner']})\n  {entry['doc']}\n  overrides: {over}\n"
        if entry["fixed"]:
            text += "  fixed (wins over any config value): " + ", ".join(
                f"{k}={json.dumps(v)}" for k, v in entry["fixed"].items()) + "\n"
        return text
    lines = [f"{entry['name']}  ({entry['class']}; modalities: {', '.join(entry['modalities'])})", ""]
    lines += ["  " + line for line in entry["doc"].splitlines()]
    if entry["options"]:
        lines += ["", "  method.options:"]
        for o in entry["options"]:
            lines.append(f"    {o['name']} = {json.dumps(o['default'])}  [{o['type']}]")
            if o["help"]:
                lines.append(f"        {o['help']}")
    return "\n".join(lines) + "\n"


def format_listing(entries: list[dict[str, Any]]) -> str:
    """One line per learner and per preset."""
    learners = [e for e in entries if e["kind"] == "learner"]
    presets = [e for e in entries if e["kind"] == "preset"]
    width = max((len(e["name"]) for e in entries), default=0)
    lines = ["learners:"]
    lines += [f"  {e['name']:<{width}}  [{'+'.join(e['modalities'])}] {_first_line(e['doc'])}" for e in learners]
    lines += ["", "presets:"]
    lines += [f"  {e['name']:<{width}}  = {e['learner']}: {e['doc']}" for e in presets]
    return "\n".join(lines) + "\n"


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="show one learner or preset in full (options, overrides)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def run_cli(args: argparse.Namespace) -> int:
    if args.name:
        entry = describe(args.name)
        text = json.dumps(entry, indent=1) + "\n" if args.json else format_entry(entry)
    else:
        entries = describe_methods()
        text = json.dumps(entries, indent=1) + "\n" if args.json else format_listing(entries)
    sys.stdout.write(text)
    return 0
