"""The validation studies' check runs as pure functions of the checks file: no Snakemake here.

``workflow/rules/common.smk`` loads the checks file (``checks.config``, e.g. config/checks.yaml)
with :func:`find_checks_file` and :func:`load_checks` and binds the rest to it;
``workflow/rules/checks.smk`` trains the runs and writes the studies' report. What they define:

- a study's **parts** are groups like a main-config group (:func:`mcil.grid.expand_group`, over the
  checks file's datasets, defaults and method sets) times their :func:`grid_combos`;
- a check run's **variant** is :data:`BASE_VARIANT` or the grid values that differ from the base
  setting (:func:`variant_of`), and names the folder its run lives under
  (``results/checks/runs/<variant>/<run folder>``);
- the studies a ``snakemake checks`` reports (:func:`selected_studies`), the kind of report each
  gets (:func:`study_kinds`) and the arguments of ``mcil studies`` (:func:`studies_args`).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from itertools import product
from typing import Any

from mcil.grid import GridError, expand_group, label, run_overrides, run_targets

__all__ = [
    "BASE_VARIANT",
    "find_checks_file",
    "load_checks",
    "same_value",
    "variant_of",
    "grid_combos",
    "study_runs",
    "study_kinds",
    "selected_studies",
    "check_overrides",
    "check_targets",
    "noise_level",
    "studies_args",
]

BASE_VARIANT = "base"


# ------------------------------------------------------------------------------------------------
# The checks file
# ------------------------------------------------------------------------------------------------


def find_checks_file(name: str | None, repo: str) -> str | None:
    """The checks file named by checks.config (cwd first, then the repository ``repo``), or None when unset."""
    if not name:
        return None
    for base in ("", repo):
        path = os.path.join(base, name) if base else name
        if os.path.isfile(path):
            return path
    raise GridError(f"checks.config: {name} does not exist (looked in {os.getcwd()} and {repo})")


def load_checks(path: str, main_datasets: Mapping[str, Any], validate: Callable[[dict], Any]) -> dict[str, Any]:
    """The checks file at ``path``, passed through ``validate`` (the workflow's schema check, which
    fills in defaults); its datasets may not redefine, differently, those of the main config."""
    import yaml

    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    validate(data)
    clash = sorted(n for n, d in data["datasets"].items() if n in main_datasets and main_datasets[n] != d)
    if clash:
        raise GridError(
            f"{path}: datasets {', '.join(clash)} are also defined, differently, in the main config; rename them"
        )
    return data


# ------------------------------------------------------------------------------------------------
# Check runs: a part's grid -> variants
# ------------------------------------------------------------------------------------------------


def same_value(a: Any, b: Any) -> bool:
    """Equal as numbers when both are numbers, else as text."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def variant_of(values: Mapping[str, Any], base: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(name, overrides) of one grid combination: only the values that differ from ``base`` count;
    the name is ``base`` or ``lr=1e-05,batch_size=8`` (last key component = value)."""
    changed = {k: v for k, v in values.items() if not (k in base and same_value(base[k], v))}
    if not changed:
        return BASE_VARIANT, {}
    name = ",".join(f"{k.rsplit('.', 1)[-1]}={label(v)}" for k, v in changed.items())
    return name, changed


def grid_combos(part: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every combination of a part's ``variants:`` (explicit sets) times its ``grid:`` (keys crossed)."""
    grid = part.get("grid") or {}
    combos = [dict(zip(grid, values)) for values in product(*grid.values())] if grid else [{}]
    return [{**v, **g} for v in (part.get("variants") or [{}]) for g in combos]


def study_runs(config: Mapping[str, Any], checks: Mapping[str, Any], checks_file: str,
               datasets: Mapping[str, Any]) -> tuple[dict[str, list[dict[str, str]]], dict[str, dict[str, Any]]]:
    """The check runs of every study of a checks file, and what each variant name means.

    A part is a group (over the checks file's datasets, defaults and method sets, the main config's
    sets too) times its :func:`grid_combos`; each run gets the :func:`variant_of` its values against the
    base setting (main run: < checks run: < dataset run:). Returns (study -> runs with ``variant``,
    in file order; variant name -> overrides).
    """
    sets = {**config["method_sets"], **(checks.get("method_sets") or {})}
    variants: dict[str, dict[str, Any]] = {BASE_VARIANT: {}}
    out: dict[str, list[dict[str, str]]] = {}
    for study, spec in (checks.get("studies") or {}).items():
        runs: list[dict[str, str]] = []
        for i, part in enumerate(spec["runs"]):
            where = f"{checks_file}: studies.{study}.runs[{i}]"
            for run in expand_group(part, where, part["datasets"], checks["datasets"], checks["defaults"], sets):
                base = {**(config.get("run") or {}), **(checks.get("run") or {}),
                        **(datasets[run["dataset"]].get("run") or {})}
                for values in grid_combos(part):
                    name, overrides = variant_of(values, base)
                    known = variants.setdefault(name, overrides)
                    if known != overrides:
                        raise GridError(
                            f"{where}.grid: variant {name!r} means {known} elsewhere and {overrides} here; "
                            "two grid keys share their last component; rename one"
                        )
                    runs.append({**run, "variant": name})
        out[study] = runs
    return out, variants


def study_kinds(checks: Mapping[str, Any], checks_file: str, schema: str) -> dict[str, str]:
    """study -> the kind of report it gets (``kind:``, else its name, which must then be a kind of
    the checks schema at path ``schema``)."""
    import yaml

    with open(schema) as fh:
        known = yaml.safe_load(fh)["properties"]["studies"]["additionalProperties"]["properties"]["kind"]["enum"]
    out = {}
    for study, spec in (checks.get("studies") or {}).items():
        out[study] = spec.get("kind", study)
        if out[study] not in known:
            raise GridError(f"{checks_file}: studies.{study}: give kind: one of {', '.join(known)}")
    return out


def selected_studies(names: list[str] | None, checks: Mapping[str, Any], checks_file: str,
                     runs: Mapping[str, list[dict[str, str]]]) -> list[str]:
    """checks.studies of the main config (``names``; None: every study of the checks file that is
    not optional)."""
    if names is None:
        return [s for s in runs if not checks["studies"][s].get("optional", False)]
    unknown = [n for n in names if n not in runs]
    if unknown:
        raise GridError(
            f"checks.studies: {', '.join(unknown)} not in {checks_file}; its studies: {', '.join(runs) or 'none'}"
        )
    return list(names)


def check_overrides(config: Mapping[str, Any], datasets: Mapping[str, Any], checks: Mapping[str, Any],
                    variants: Mapping[str, Mapping[str, Any]], run: Mapping[str, str]) -> dict[str, Any]:
    """The overrides of a check run: those of a main run, with the checks' run: and the variant's values."""
    return run_overrides(config, datasets[run["dataset"]], run, extra_run=checks.get("run"),
                         variant=variants[run["variant"]])


def check_targets(template: str, config: Mapping[str, Any], datasets: Mapping[str, Any], checks: Mapping[str, Any],
                  checks_file: str | None, runs: Mapping[str, list[dict[str, str]]],
                  variants: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every result file (``template``) of the runs of the studies selected by the main config's
    checks.studies (:func:`selected_studies`), each once, sorted (studies share runs)."""
    if checks_file is None:
        raise GridError(
            "snakemake checks: no studies configured; set checks.config to a checks file, "
            'e.g. --config checks="{config: config/checks.yaml}"'
        )
    names = selected_studies((config.get("checks") or {}).get("studies"), checks, checks_file, runs)

    def overrides(run: Mapping[str, str]) -> dict[str, Any]:
        return check_overrides(config, datasets, checks, variants, run)

    return sorted({t for s in names for t in run_targets(template, runs[s], overrides)})


# ------------------------------------------------------------------------------------------------
# The command line of the studies rule
# ------------------------------------------------------------------------------------------------


def noise_level(name: str, dataset: Mapping[str, Any], synth_options) -> float | None:
    """The corruption scale a synth dataset was generated with (0 for the clean regime), None for
    other sources; ``synth_options(name)`` gives a synth dataset's options."""
    if dataset["source"] != "synth":
        return None
    if dataset.get("regime", "clean") == "clean":
        return 0.0
    return float(synth_options(name).get("noise_level", 1.0))


def studies_args(config: Mapping[str, Any], checks: Mapping[str, Any], datasets: Mapping[str, Any],
                 noise_levels: Mapping[str, float | None], study_runs: Mapping[str, list[dict[str, str]]],
                 study_kinds: Mapping[str, str]) -> str:
    """The arguments of ``mcil studies`` that come from the config and the checks file (quoted)."""
    rep = checks.get("report") or {}
    d = checks.get("defaults") or {}
    args = [
        "--default-th", label(d.get("th", config["defaults"]["th"])),
        "--default-alpha", label(d.get("alpha", config["defaults"]["alpha"])),
        "--main-th", label(config["defaults"]["th"]),
        "--main-alpha", label(config["defaults"]["alpha"]),
        "--tolerance", str(rep.get("tolerance", 2.0)),
        "--confidence", str(rep.get("confidence", 0.95)),
        "--bootstrap", str(rep.get("bootstrap", 2000)),
    ]
    names = sorted(checks.get("datasets") or {})
    levels = [f"{ds}={noise_levels[ds]:g}" for ds in names if noise_levels[ds] is not None]
    if levels:
        args += ["--noise-levels", *levels]
    main_T = [f"{ds}={datasets[ds].get('T', d.get('T', config['defaults']['T']))}" for ds in names]
    if main_T:
        args += ["--task-counts", *main_T]
    studies = [
        f"{s}{'' if study_kinds[s] == s else f':{study_kinds[s]}'}={','.join(dict.fromkeys(r['dataset'] for r in runs))}"
        for s, runs in study_runs.items()
    ]
    if studies:
        args += ["--study", *studies]
    return " ".join(shlex.quote(a) for a in args)
