# Lookups and target lists of the loaded `config` (validated in the Snakefile), the check of user paths
# and the wildcard constraints. No rule lives here. What a run is (groups -> runs, folder names, the th
# axis, overrides and their hash) is defined once, without Snakemake, in mcil/grid.py.

import os
import shlex
import sys
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod

# This checkout's package: the folder names and hashes must be the ones of the workflow's own code.
sys.path.insert(0, workflow.basedir)

from mcil import grid
from mcil.grid import GATE_WORDS, GridError, HASH_RE, NUMBER_RE, RUN_NAME, label, names_regex
from mcil.report.plots import FIGURES
from mcil.report.tables import TABLES

# The `mcil` command of every job. Under --use-conda the job runs in envs/mcil.yaml's environment, which
# holds the locked dependencies but not this checkout, so the package is put on its path instead.
MCIL = (
    f"env PYTHONPATH={shlex.quote(workflow.basedir)} python -m mcil"
    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
    else "mcil"
)
# Every rule that runs a command declares this environment (snakemake --use-conda).
CONDA_ENV = "../../envs/mcil.yaml"

DATA_DIR = config["data_dir"]
CACHE_DIR = config["cache_dir"]
RUNS_DIR = "results/runs"
# A run's folder: readable wildcards plus the hash of its overrides (mcil/grid.py RUN_NAME, overrides_hash).
# Changing what a run means (run:, a dataset's split, method_run:) changes its folder, so a stale result
# is never taken for a new one; code changes do not (results record git SHA and version).
RUN_RESULT = os.path.join(RUNS_DIR, RUN_NAME, "result.json")


def _grid(fn, *args, **kwargs):
    """Call a mcil.grid function; its config errors stop the workflow with their message."""
    try:
        return fn(*args, **kwargs)
    except GridError as exc:
        raise WorkflowError(str(exc)) from None


# ------------------------------------------------------------------------------------------------
# The validation studies' file (checks.config, e.g. config/checks.yaml; workflow/rules/checks.smk).
# Loaded here because its datasets join the dataset table that every rule looks names up in.
# ------------------------------------------------------------------------------------------------


def _checks_file():
    """The checks file named by checks.config (cwd first, then the repository), or None when unset."""
    name = (config.get("checks") or {}).get("config")
    if not name:
        return None
    for base in ("", workflow.basedir):
        path = os.path.join(base, name) if base else name
        if os.path.isfile(path):
            return path
    raise WorkflowError(f"checks.config: {name} does not exist (looked in {os.getcwd()} and {workflow.basedir})")


def _load_checks():
    path = _checks_file()
    if path is None:
        return None, {}
    import yaml

    with open(path) as fh:
        data = yaml.safe_load(fh) or {}
    validate(data, os.path.join(workflow.basedir, "workflow", "schemas", "checks.schema.yaml"))
    clash = sorted(n for n, d in data["datasets"].items() if n in config["datasets"] and config["datasets"][n] != d)
    if clash:
        raise WorkflowError(
            f"{path}: datasets {', '.join(clash)} are also defined, differently, in the main config; rename them"
        )
    return path, data


CHECKS_FILE, CHECKS = _load_checks()
# Every dataset that a job may be asked to build: the main config's and the checks file's.
DATASETS = {**CHECKS.get("datasets", {}), **config["datasets"]}


# A misspelt override key fails here, before any job runs, rather than in every `mcil train`.
_grid(grid.check_run_keys, grid.run_key_sections(config, DATASETS, CHECKS, CHECKS_FILE))


# ------------------------------------------------------------------------------------------------
# Lookups
# ------------------------------------------------------------------------------------------------


def resolve(value):
    """Substitute "{name}" references to `paths:` entries; raise grid.MissingPath(name) if unset."""
    return grid.resolve(value, config.get("paths"))


def dataset_root(dataset):
    return grid.dataset_root(config, dataset)


def dataset_manifest(dataset):
    return f"{dataset_root(dataset)}/manifest.csv"


def cache_report(dataset):
    return f"{CACHE_DIR}/{dataset}.cache.json"


def checkpoint_path():
    return grid.checkpoint_path(config)


def datasets_by_source(source):
    return sorted(n for n, d in DATASETS.items() if d["source"] == source)


def dataset_kind(dataset):
    d = DATASETS[dataset]
    return d.get("kind") or d.get("regime") or "clean"


def noisy_datasets():
    return [d for d in sorted(config["datasets"]) if dataset_kind(d) == "noisy"]


def synth_options(dataset):
    """`mcil synth` options of a synth dataset: the file's `synth:` (main config or checks file), then the dataset's own."""
    base = config.get("synth", {}) if dataset in config["datasets"] else CHECKS["synth"]
    return {**base, **(DATASETS[dataset].get("synth") or {})}


def synth_args(dataset):
    """`mcil synth` flags of a synth dataset's options; options left out take mcil synth's defaults."""
    return grid.cli_flags(synth_options(dataset))


# ------------------------------------------------------------------------------------------------
# Main runs
# ------------------------------------------------------------------------------------------------


def all_runs():
    """Every run of the enabled groups, each once, in a stable order (no hash yet: computing it
    resolves user paths, which check_inputs reports first)."""
    return _grid(grid.all_runs, config)


def used_datasets():
    return sorted({r["dataset"] for r in all_runs()})


def run_overrides_dict(run, extra_run=None, variant=None):
    """Ordered overrides of one run (a dict of wildcards); see grid.run_overrides."""
    return grid.run_overrides(config, DATASETS[run["dataset"]], run, extra_run=extra_run, variant=variant)


def run_targets():
    return [RUN_RESULT.format(hash=grid.overrides_hash(run_overrides_dict(r)), **r) for r in all_runs()]


def checked_overrides(wc, items):
    """`items` as one shell-quoted string, after checking that the folder's hash names them."""
    if grid.overrides_hash(items) != wc.hash:
        raise WorkflowError(
            f"run folder hash {wc.hash} does not match the configured overrides of this run "
            f"({grid.overrides_hash(items)}): the path was written by hand or by another config; "
            "ask for the targets the config defines (snakemake without a target)"
        )
    return grid.quote_overrides(items)


def run_overrides(wc):
    """The overrides as one shell-quoted string (params of the train rule)."""
    return checked_overrides(wc, run_overrides_dict(dict(wc.items())))


def expected_cells():
    """`mcil aggregate --expected-methods`: every configured (dataset, T, method) of the main setting, so a
    claim over every baseline is graded "partial" where one of them was not configured."""
    th, alpha = label(config["defaults"]["th"]), label(config["defaults"]["alpha"])
    cells = {f"{r['dataset']}:{r['T']}:{r['method']}" for r in all_runs() if r["th"] == th and r["alpha"] == alpha}
    return " ".join(sorted(cells))


# ------------------------------------------------------------------------------------------------
# Validation studies (rules in checks.smk): each study's parts -> check runs with their variant
# ------------------------------------------------------------------------------------------------

CHECKS_RUNS_DIR = "results/checks/runs"
CHECKS_OUT = "results/checks"
CHECKS_FIGURES = "figures/checks"
CHECK_RUN_NAME = os.path.join("{variant}", RUN_NAME)
CHECK_RESULT = os.path.join(CHECKS_RUNS_DIR, CHECK_RUN_NAME, "result.json")


# study -> its runs (dicts of wildcards, with their variant), in file order; variant name -> its overrides.
STUDY_RUNS, CHECK_VARIANTS = (
    _grid(grid.study_runs, config, CHECKS, CHECKS_FILE, DATASETS) if CHECKS else ({}, {grid.BASE_VARIANT: {}})
)
CHECK_STUDIES = list(STUDY_RUNS)


def _study_kinds():
    """study -> the kind of report it gets (`kind:`, else its name, which must then be a kind)."""
    import yaml

    with open(os.path.join(workflow.basedir, "workflow", "schemas", "checks.schema.yaml")) as fh:
        known = yaml.safe_load(fh)["properties"]["studies"]["additionalProperties"]["properties"]["kind"]["enum"]
    out = {}
    for study, spec in (CHECKS.get("studies") or {}).items():
        out[study] = spec.get("kind", study)
        if out[study] not in known:
            raise WorkflowError(f"{CHECKS_FILE}: studies.{study}: give kind: one of {', '.join(known)}")
    return out


STUDY_KINDS = _study_kinds() if CHECKS else {}


def selected_studies():
    """checks.studies of the main config (null: every study of the checks file that is not optional)."""
    names = (config.get("checks") or {}).get("studies")
    if names is None:
        return [s for s in STUDY_RUNS if not CHECKS["studies"][s].get("optional", False)]
    unknown = [n for n in names if n not in STUDY_RUNS]
    if unknown:
        raise WorkflowError(
            f"checks.studies: {', '.join(unknown)} not in {CHECKS_FILE}; its studies: {', '.join(STUDY_RUNS) or 'none'}"
        )
    return list(names)


def check_overrides_dict(run):
    """The overrides of a check run: those of a main run, with the checks' run: and the variant's values."""
    return run_overrides_dict(run, extra_run=CHECKS.get("run"), variant=CHECK_VARIANTS[run["variant"]])


def study_targets(study):
    """The result files of one study's runs (each once)."""
    return list(
        dict.fromkeys(
            CHECK_RESULT.format(hash=grid.overrides_hash(check_overrides_dict(r)), **r) for r in STUDY_RUNS[study]
        )
    )


def check_targets(wildcards=None):
    """Every run of the selected studies, each once (studies share runs)."""
    if CHECKS_FILE is None:
        raise WorkflowError(
            "snakemake checks: no studies configured; set checks.config to a checks file, "
            'e.g. --config checks="{config: config/checks.yaml}"'
        )
    return sorted({t for s in selected_studies() for t in study_targets(s)})


def check_overrides(wc):
    """`mcil train` overrides of a check run (params of the train_check rule), hash checked."""
    return checked_overrides(wc, check_overrides_dict(dict(wc.items())))


def studies_args():
    """The arguments of `mcil studies` that come from the config (quoted)."""
    levels = {ds: grid.noise_level(ds, DATASETS[ds], synth_options) for ds in CHECKS.get("datasets") or {}}
    return grid.studies_args(config, CHECKS, DATASETS, levels, STUDY_RUNS, STUDY_KINDS)


# ------------------------------------------------------------------------------------------------
# Inputs of data, train and tune rules
# ------------------------------------------------------------------------------------------------


def prepare_args(wc):
    return grid.prepare_args(DATASETS[wc.dataset]["prepare"], config.get("paths"))


def prepare_inputs(wc):
    """Raw paths of a prepared dataset (mtime inputs); empty when they are not set."""
    p = DATASETS[wc.dataset].get("prepare") or {}
    try:
        return [resolve(v) for v in (p.get("inputs") or {}).values()]
    except grid.MissingPath:
        return []


def train_inputs(wc):
    return {
        "manifest": dataset_manifest(wc.dataset),
        "cache": cache_report(wc.dataset),
        "checkpoint": checkpoint_path(),
    }


def tune_inputs(wc):
    """What `mcil tune` reads: its spec and the tune dataset's manifest, cache and backbone."""
    if not config.get("tune"):
        raise WorkflowError(
            "snakemake tune: this config has no `tune:` section (spec, dataset); see config/default.yaml"
        )
    ds = config["tune"]["dataset"]
    return {"spec": config["tune"]["spec"], **train_inputs(SimpleNamespace(dataset=ds))}


def tune_overrides():
    """`mcil tune` overrides of the tune dataset, quoted (grid.tune_overrides)."""
    return grid.tune_overrides(config, DATASETS[config["tune"]["dataset"]])


# ------------------------------------------------------------------------------------------------
# Check that what the runs need exists, before any job starts (also on --dry-run)
# ------------------------------------------------------------------------------------------------


def check_inputs():
    problems = grid.missing_inputs(config, used_datasets())
    if problems:
        raise WorkflowError(
            "The configured runs need files that are not there:\n{}\n{}".format(
                "\n".join(f"  - {p}" for p in problems), grid.missing_inputs_hint(config)
            )
        )


check_inputs()


# Wildcards: only the configured names, readable numbers and the gate words.
wildcard_constraints:
    dataset=names_regex(DATASETS),
    method="[a-z][a-z0-9-]*",
    T="[0-9]+",
    th=NUMBER_RE + "|" + "|".join(GATE_WORDS),
    alpha=NUMBER_RE,
    seed="[0-9]+",
    hash=HASH_RE,
