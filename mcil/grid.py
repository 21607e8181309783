"""The pipeline's run grid as pure functions of its config: no Snakemake here.

``workflow/rules/common.smk`` binds these to the loaded config; ``mcil.report`` parses the folder
names they build; the validation studies' check runs are :mod:`mcil.study_grid`. What they define:

- a **group** (``groups:`` of the main config, or one part of a checks-file study) is the cross
  product of its lists (datasets × methods × T × th × α × seeds); a list it leaves out takes
  ``defaults:``;
- a run's **folder** is :data:`RUN_NAME`: readable fields plus ``hash``, the first 8 hex digits of
  the SHA-256 of its ``mcil train`` overrides (:func:`overrides_hash`), locations left out;
- the **th axis**: a number means ``fusion.th=<x> fusion.gate=batch``, a gate word (:data:`GATE_WORDS`)
  means ``fusion.gate=<word>`` (:func:`th_fusion`); :func:`th_label` goes back from a fusion config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shlex
import string
import typing
from collections.abc import Callable, Iterable, Mapping
from itertools import product
from typing import Any

from mcil.config import GateMode, RunConfig
from mcil.errors import UserError

__all__ = [
    "GridError",
    "MissingPath",
    "GATE_WORDS",
    "NUMBER_RE",
    "HASH_RE",
    "RUN_STEM",
    "RUN_NAME",
    "RUN_DIR_RE",
    "LOCATION_KEYS",
    "label",
    "names_regex",
    "run_name",
    "parse_run_name",
    "th_fusion",
    "th_label",
    "expand_methods",
    "task_counts",
    "expand_group",
    "group_runs",
    "enabled_groups",
    "all_runs",
    "yaml_value",
    "cli_flags",
    "quote_overrides",
    "overrides_hash",
    "resolve",
    "dataset_root",
    "noisy_datasets",
    "synth_options",
    "pretrained_by_pipeline",
    "checkpoint_path",
    "run_overrides",
    "run_targets",
    "checked_overrides",
    "expected_cells",
    "run_key_problem",
    "check_run_keys",
    "missing_inputs",
    "run_key_sections",
    "missing_inputs_hint",
    "check_inputs",
    "prepare_args",
    "prepare_inputs",
    "tune_dataset",
    "tune_overrides",
]


class GridError(UserError, ValueError):
    """The pipeline config asks for a run that cannot exist; the message names the key and the fix."""


class MissingPath(KeyError):
    """A ``{name}`` reference to a ``paths:`` entry that is not set (``args[0]``: the name)."""


# Gates that need no threshold: a th value that is one of these words sets fusion.gate to it.
_THRESHOLD_GATES = ("batch", "sample")
GATE_WORDS: tuple[str, ...] = tuple(g for g in typing.get_args(GateMode) if g not in _THRESHOLD_GATES)
NUMBER_RE = r"[0-9]+(?:\.[0-9]+)?"
HASH_RE = r"[0-9a-f]{8}"

# The folder of a run (relative to results/runs, or to a check variant's folder).
RUN_STEM = "{dataset}/{method}/T{T}_th{th}_a{alpha}_s{seed}"
RUN_NAME = RUN_STEM + "-{hash}"
# What each field of a folder name may hold when it is parsed back (folders of hand-made runs too).
_PARSE_FIELDS = {"dataset": r"[^/]+", "method": r"[^/]+", "T": r"\d+", "th": r"[^_/]+", "alpha": r"[^_/]+",
                 "seed": r"\d+"}


def _template_regex(template: str, fields: Mapping[str, str]) -> str:
    parts = []
    for literal, name, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if name:
            parts.append(f"(?P<{name}>{fields[name]})")
    return "".join(parts)


# A run folder at the end of a path; the hash is optional (folders written before it existed).
RUN_DIR_RE = re.compile(_template_regex(RUN_STEM, _PARSE_FIELDS) + f"(?:-(?P<hash>{HASH_RE}))?$")

# Where things are, not what a run is: moving the data or the checkpoint keeps a run's folder.
LOCATION_KEYS = ("data.root", "data.cache_dir", "backbone.checkpoint")


def label(value: Any) -> str:
    """A th/alpha value as it appears in file names: the text given in the config."""
    return value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)


def names_regex(names: Iterable[str]) -> str:
    """A regex matching exactly one of ``names`` (longest first); one that matches nothing when empty."""
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) or "(?!)"


def run_name(run: Mapping[str, Any], hash: str = "") -> str:
    """The folder of a run (dataset, method, T, th, alpha, seed; other keys ignored)."""
    return RUN_NAME.format(**{**run, "hash": hash})


def parse_run_name(path: str | None) -> dict[str, str] | None:
    """The fields of the run folder that ends ``path`` (``hash`` None when absent), or None."""
    m = RUN_DIR_RE.search(path or "")
    return m.groupdict() if m else None


# ------------------------------------------------------------------------------------------------
# The th axis
# ------------------------------------------------------------------------------------------------


def th_fusion(th: str) -> dict[str, str]:
    """The fusion settings a th label means: ``{"gate": word}`` or ``{"th": th, "gate": "batch"}``."""
    return {"gate": th} if th in GATE_WORDS else {"th": th, "gate": "batch"}


def _number_text(value: Any) -> str:
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


def th_label(fusion: Mapping[str, Any] | None, default_th: str | None = None) -> str:
    """The th label of a fusion config: the number for the batch gate, ``sample-<th>`` for the
    sample gate (``sample`` alone when th is ``default_th``), else the gate word.

    ``th_label(th_fusion(x))`` is the canonical form of label ``x`` (``"0.80"`` → ``"0.8"``).
    """
    fusion = fusion or {}
    gate = fusion.get("gate", "batch")
    th = fusion.get("th", 0.8)
    if gate == "batch":
        return _number_text(th)
    if gate == "sample":
        return "sample" if default_th is not None and str(th) == str(default_th) else f"sample-{_number_text(th)}"
    return str(gate)


# ------------------------------------------------------------------------------------------------
# Groups -> runs
# ------------------------------------------------------------------------------------------------


def expand_methods(items: Iterable[str], where: str, method_sets: Mapping[str, list[str]]) -> list[str]:
    """Method names with ``@set`` references replaced by the set's methods, each once, in order."""
    out: list[str] = []
    for item in items:
        if item.startswith("@"):
            name = item[1:]
            if name not in method_sets:
                raise GridError(
                    f"{where}.methods: {item!r} names no method set; defined sets: {', '.join(sorted(method_sets))}"
                )
            out.extend(method_sets[name])
        else:
            out.append(item)
    return list(dict.fromkeys(out))


def task_counts(dataset: str, spec: Mapping[str, Any], requested: list | None, default_T: Any) -> list[str]:
    """The T values of a group for one dataset (as str): its main T, or the requested list (``all``:
    every split under ``tasks:``)."""
    tasks = {str(k) for k in (spec.get("tasks") or {})}
    main = str(spec.get("T", default_T))
    if requested is None:
        values = [main]
    else:
        values = []
        for t in requested:
            if t == "all":
                values += sorted(tasks, key=int) if tasks else [main]
            else:
                values.append(str(t))
    for t in values:
        if tasks and t not in tasks:
            raise GridError(
                f"T={t} has no task split for dataset {dataset}; "
                f"datasets.{dataset}.tasks defines T = {', '.join(sorted(tasks, key=int))}"
            )
    return list(dict.fromkeys(values))


def expand_group(group: Mapping[str, Any], where: str, datasets: Iterable[str], known: Mapping[str, Any],
                 defaults: Mapping[str, Any], method_sets: Mapping[str, list[str]]) -> list[dict[str, str]]:
    """The cross product of one group (lists it leaves out take ``defaults``) over ``datasets``,
    each of which must be in ``known`` (name → dataset spec). Runs are dicts of str."""
    for ds in datasets:
        if ds not in known:
            raise GridError(f"{where}.datasets: {ds!r} is not under datasets:; defined: {', '.join(sorted(known))}")
    methods = expand_methods(group["methods"], where, method_sets)
    ths = [label(x) for x in group.get("th", [defaults["th"]])]
    alphas = [label(x) for x in group.get("alpha", [defaults["alpha"]])]
    seeds = [str(s) for s in group.get("seeds", defaults["seeds"])]
    for th in ths:
        if th not in GATE_WORDS and not re.fullmatch(NUMBER_RE, th):
            raise GridError(f"{where}.th: {th!r} is neither a number in [0, 1] nor one of {', '.join(GATE_WORDS)}")
    for alpha in alphas:
        if not re.fullmatch(NUMBER_RE, alpha):
            raise GridError(f"{where}.alpha: {alpha!r} is not a number in [0, 1]")
    runs = []
    for ds in datasets:
        try:
            Ts = task_counts(ds, known[ds], group.get("T"), defaults["T"])
        except GridError as exc:
            raise GridError(f"{where}: {exc}") from None
        for method, T, th, alpha, seed in product(methods, Ts, ths, alphas, seeds):
            runs.append(dict(dataset=ds, method=method, T=T, th=th, alpha=alpha, seed=seed))
    return runs


def group_runs(config: Mapping[str, Any], name: str) -> list[dict[str, str]]:
    """The runs of main-config group ``name``."""
    groups = config["groups"]
    if name not in groups:
        raise GridError(f"run_groups: {name!r} is not a group; defined groups: {', '.join(sorted(groups))}")
    g = groups[name]
    datasets = g.get("datasets") or config.get("default_datasets") or sorted(config["datasets"])
    return expand_group(g, f"groups.{name}", datasets, config["datasets"], config["defaults"], config["method_sets"])


def enabled_groups(config: Mapping[str, Any]) -> list[str]:
    """``run_groups`` of the config, every group when unset."""
    names = config.get("run_groups")
    return list(config["groups"]) if names is None else list(names)


def all_runs(config: Mapping[str, Any]) -> list[dict[str, str]]:
    """Every run of the enabled groups, each once (groups overlap), sorted by folder name."""
    seen: dict[str, dict[str, str]] = {}
    for name in enabled_groups(config):
        for run in group_runs(config, name):
            seen.setdefault(run_name(run), run)
    return [seen[k] for k in sorted(seen)]


# ------------------------------------------------------------------------------------------------
# One run -> `mcil train` overrides and their hash
# ------------------------------------------------------------------------------------------------


def yaml_value(value: Any) -> str:
    """A value as text that ``mcil train``'s overrides parse back (YAML scalars, JSON lists)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def cli_flags(options: Mapping[str, Any]) -> str:
    """Options as command-line flags: key ``n_classes`` → ``--n-classes <value>``."""
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in options.items())


def quote_overrides(items: Mapping[str, Any]) -> str:
    """``key=value`` overrides, shell-quoted, in order."""
    return " ".join(shlex.quote(f"{k}={yaml_value(v)}") for k, v in items.items())


def overrides_hash(items: Mapping[str, Any]) -> str:
    """8 hex digits naming a run's overrides but its locations (order-independent; values as
    ``mcil train`` reads them)."""
    canonical = json.dumps({k: yaml_value(v) for k, v in items.items() if k not in LOCATION_KEYS}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def resolve(value: Any, paths: Mapping[str, Any] | None) -> str:
    """Substitute ``{name}`` references to ``paths:`` entries; raise :class:`MissingPath` if unset."""

    def sub(match: re.Match) -> str:
        key = match.group(1)
        path = (paths or {}).get(key)
        if not path:
            raise MissingPath(key)
        return str(path)

    return re.sub(r"\{([A-Za-z0-9_]+)\}", sub, str(value))


def dataset_root(config: Mapping[str, Any], dataset: str) -> str:
    return f"{config['data_dir']}/{dataset}"


def noisy_datasets(config: Mapping[str, Any]) -> list[str]:
    """The main config's datasets of kind (else regime) ``noisy``, sorted."""
    kinds = {d: spec.get("kind") or spec.get("regime") or "clean" for d, spec in config["datasets"].items()}
    return [d for d in sorted(kinds) if kinds[d] == "noisy"]


def synth_options(config: Mapping[str, Any], checks: Mapping[str, Any], datasets: Mapping[str, Any],
                  dataset: str) -> dict[str, Any]:
    """``mcil synth`` options of a synth dataset: the ``synth:`` of the file that defines it (main
    config or checks file), then the dataset's own."""
    base = config.get("synth", {}) if dataset in config["datasets"] else checks["synth"]
    return {**base, **(datasets[dataset].get("synth") or {})}


def pretrained_by_pipeline(config: Mapping[str, Any]) -> bool:
    """True when the backbone checkpoint is the one the ``pretrain`` rule builds."""
    return "pretrain" in config and config["backbone"]["checkpoint"] == config["pretrain"]["out"]


def checkpoint_path(config: Mapping[str, Any]) -> str:
    checkpoint = config["backbone"]["checkpoint"]
    return checkpoint if pretrained_by_pipeline(config) else resolve(checkpoint, config.get("paths"))


def run_overrides(config: Mapping[str, Any], dataset: Mapping[str, Any], run: Mapping[str, str],
                  extra_run: Mapping[str, Any] | None = None,
                  variant: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Ordered dotted overrides of one run (``dataset``: its spec): run: < extra_run < dataset's run: <
    variant < the run's fields < method_run:.

    ``extra_run`` and ``variant`` are the checks file's ``run:`` and a check run's grid values.
    """
    items: dict[str, Any] = {
        "data.name": run["dataset"],
        "data.root": dataset_root(config, run["dataset"]),
        "data.cache_dir": config["cache_dir"],
        "backbone.name": config["backbone"]["name"],
        "backbone.checkpoint": checkpoint_path(config),
    }
    items.update(config.get("run") or {})
    items.update(extra_run or {})
    items.update(dataset.get("run") or {})
    items.update(variant or {})
    tasks = dataset.get("tasks")
    if tasks:
        split = {str(k): v for k, v in tasks.items()}[run["T"]]
        items.update({"scenario.n_tasks": None, "scenario.initial": split["initial"],
                      "scenario.increment": split["increment"]})
    else:
        items["scenario.n_tasks"] = int(run["T"])
    items["method.name"] = run["method"]
    items.update({f"fusion.{k}": v for k, v in th_fusion(run["th"]).items()})
    items["loss.alpha"] = run["alpha"]
    items["train_seed"] = int(run["seed"])
    if config.get("vary_class_order", True):
        items["scenario.order_seed"] = int(run["seed"])
    items.update((config.get("method_run") or {}).get(run["method"]) or {})
    return items


def run_targets(template: str, runs: Iterable[Mapping[str, str]],
                overrides: Callable[[Mapping[str, str]], Mapping[str, Any]]) -> list[str]:
    """``template`` (a run's fields and ``{hash}``) filled for each of ``runs``, the hash being that
    of its ``overrides(run)``; each path once, in order."""
    return list(dict.fromkeys(template.format(hash=overrides_hash(overrides(r)), **r) for r in runs))


def checked_overrides(items: Mapping[str, Any], hash: str) -> str:
    """``items`` as one shell-quoted string, after checking that a run folder's ``hash`` names them."""
    if overrides_hash(items) != hash:
        raise GridError(
            f"run folder hash {hash} does not match the configured overrides of this run "
            f"({overrides_hash(items)}): the path was written by hand or by another config; "
            "ask for the targets the config defines (snakemake without a target)"
        )
    return quote_overrides(items)


def expected_cells(config: Mapping[str, Any], runs: Iterable[Mapping[str, str]]) -> str:
    """``mcil aggregate --expected-methods``: every (dataset, T, method) of ``runs`` in the main setting
    (the default th and alpha), so a claim over every baseline is graded "partial" where one of them
    was not configured."""
    th, alpha = label(config["defaults"]["th"]), label(config["defaults"]["alpha"])
    cells = {f"{r['dataset']}:{r['T']}:{r['method']}" for r in runs if r["th"] == th and r["alpha"] == alpha}
    return " ".join(sorted(cells))




# ------------------------------------------------------------------------------------------------
# Checks before any job runs
# ------------------------------------------------------------------------------------------------


def _is_mapping_type(tp: Any) -> bool:
    return typing.get_origin(tp) in (dict, Mapping) or tp is dict


def run_key_problem(key: str) -> str | None:
    """Why dotted ``key`` is not a key of :class:`mcil.config.RunConfig` (None when it is).

    Keys below a free mapping (``method.options.*``) are the learner's to check.
    """
    node: Any = RunConfig
    for i, part in enumerate(key.split(".")):
        where = ".".join(key.split(".")[:i])
        if not dataclasses.is_dataclass(node):
            if _is_mapping_type(node):
                return None
            return f"{where} is a value, not a section"
        hints = typing.get_type_hints(node)
        if part not in hints:
            section = f"section {where}" if where else "the top level"
            return f"{part!r} is not a key of {section}; its keys: {', '.join(sorted(hints))}"
        node = hints[part]
    return None


def check_run_keys(sections: Iterable[tuple[str, Mapping[str, Any] | None]]) -> None:
    """Raise :class:`GridError` for the first key of the (where, overrides) sections that
    ``mcil train`` would reject, naming the config key and the fix."""
    for where, items in sections:
        for key in items or {}:
            problem = run_key_problem(key)
            if problem:
                raise GridError(
                    f"{where}: {key!r} is not a run configuration key ({problem}); fix or remove it "
                    "(the keys are the fields of RunConfig in mcil/config.py)"
                )


def missing_inputs(config: Mapping[str, Any], datasets: Iterable[str], exists=os.path.exists) -> list[str]:
    """Problems with user-provided paths that the runs on ``datasets`` need: one-line messages,
    unset ``paths:`` entries first."""
    problems: list[str] = []
    unset: dict[str, list[str]] = {}  # path key -> what needs it
    paths = config.get("paths")

    def need(value: Any, what: str) -> None:
        try:
            path = resolve(value, paths)
        except MissingPath as exc:
            unset.setdefault(exc.args[0], []).append(what)
            return
        if not exists(path):
            problems.append(f"{what}: {path} does not exist")

    if not pretrained_by_pipeline(config):
        need(config["backbone"]["checkpoint"], f"backbone.checkpoint ({config['backbone']['name']})")
    for ds in datasets:
        d = config["datasets"][ds]
        root = dataset_root(config, ds)
        manifest = f"{root}/manifest.csv"
        if exists(manifest):
            continue
        if d["source"] == "existing":
            problems.append(f"datasets.{ds}: {manifest} does not exist (source: existing); put the prepared dataset there")
        elif d["source"] == "prepare":
            if "prepare" not in d:
                problems.append(f"datasets.{ds}.prepare: missing; give command and inputs, or prepare it yourself into {root}")
                continue
            for flag, value in (d["prepare"].get("inputs") or {}).items():
                need(value, f"datasets.{ds}.prepare.inputs.{flag}")
    unset_lines = [f"paths.{key} is not set (needed by {', '.join(whats)})" for key, whats in sorted(unset.items())]
    return unset_lines + problems


def run_key_sections(config: Mapping[str, Any], datasets: Mapping[str, Any], checks: Mapping[str, Any] | None = None,
                     checks_file: str | None = None) -> Iterable[tuple[str, Mapping[str, Any] | None]]:
    """Every ``mcil train`` override section of the config and the checks file: (where, overrides)."""
    yield "run", config.get("run")
    for method, items in (config.get("method_run") or {}).items():
        yield f"method_run.{method}", items
    for name, d in datasets.items():
        yield f"datasets.{name}.run", d.get("run")
    if checks:
        yield f"{checks_file}: run", checks.get("run")
        for study, spec in (checks.get("studies") or {}).items():
            for i, part in enumerate(spec["runs"]):
                where = f"{checks_file}: studies.{study}.runs[{i}]"
                yield f"{where}.grid", part.get("grid")
                for j, v in enumerate(part.get("variants") or []):
                    yield f"{where}.variants[{j}]", v


def check_inputs(config: Mapping[str, Any], datasets: Iterable[str], exists=os.path.exists) -> None:
    """Raise :class:`GridError` listing the :func:`missing_inputs` of the runs on ``datasets``, with the hint."""
    problems = missing_inputs(config, datasets, exists)
    if problems:
        raise GridError(
            "The configured runs need files that are not there:\n{}\n{}".format(
                "\n".join(f"  - {p}" for p in problems), missing_inputs_hint(config)
            )
        )


def missing_inputs_hint(config: Mapping[str, Any]) -> str:
    """How to set the ``paths:`` entries that are empty (or to fix the paths when none is)."""
    paths = config.get("paths") or {}
    example = " ".join(f"{k}: /path/to/{k}," for k in sorted(k for k, v in paths.items() if not v))
    if not example:
        return "Fix the paths in your config file."
    return (
        "Set them under `paths:` in your config file, or on the command line, e.g.\n"
        f"  snakemake ... --config paths=\"{{{example.rstrip(',')}}}\""
    )


# ------------------------------------------------------------------------------------------------
# Command lines and inputs of the data and tune rules
# ------------------------------------------------------------------------------------------------


def prepare_args(prepare: Mapping[str, Any], paths: Mapping[str, Any] | None) -> str:
    """``mcil prepare`` arguments of a dataset's ``prepare:`` (command, inputs, options), quoted."""
    args = [prepare["command"]]
    for flag, value in (prepare.get("inputs") or {}).items():
        args += [f"--{flag}", resolve(value, paths)]
    for flag, value in (prepare.get("options") or {}).items():
        args += [f"--{flag}", yaml_value(value)]
    return " ".join(shlex.quote(a) for a in args)


def prepare_inputs(prepare: Mapping[str, Any] | None, paths: Mapping[str, Any] | None) -> list[str]:
    """Raw paths of a prepared dataset's ``prepare:`` (mtime inputs); empty when they are not set."""
    try:
        return [resolve(v, paths) for v in ((prepare or {}).get("inputs") or {}).values()]
    except MissingPath:
        return []


def tune_dataset(config: Mapping[str, Any]) -> str:
    """The dataset of the config's ``tune:`` section (:class:`GridError` when it has none)."""
    if not config.get("tune"):
        raise GridError("snakemake tune: this config has no `tune:` section (spec, dataset); see config/default.yaml")
    return config["tune"]["dataset"]


def tune_overrides(config: Mapping[str, Any], dataset: Mapping[str, Any]) -> str:
    """``mcil tune`` overrides: the tune dataset (``dataset``: its spec) and backbone, then the
    dataset's and the config's ``run:`` keys, quoted (the spec's steps set the keys they tune)."""
    items = {
        "data.root": dataset_root(config, config["tune"]["dataset"]),
        "data.cache_dir": config["cache_dir"],
        "backbone.name": config["backbone"]["name"],
        "backbone.checkpoint": checkpoint_path(config),
        **(dataset.get("run") or {}),
        **config.get("run", {}),
    }
    return quote_overrides(items)
