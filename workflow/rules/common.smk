# Lookups and target lists of the loaded `config` (validated in the Snakefile), the check of user paths
# and the wildcard constraints. No rule lives here. What a run is (groups -> runs, folder names, the th
# axis, overrides and their hash) is defined once, without Snakemake, in mcil/grid.py, and the check runs
# of the validation studies in mcil/study_grid.py; the functions here bind them to the config.

import os
import shlex
import sys
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod

# This checkout's package: the folder names and hashes must be the ones of the workflow's own code.
sys.path.insert(0, workflow.basedir)

from mcil import grid, study_grid
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
CHECKS_SCHEMA = os.path.join(workflow.basedir, "workflow", "schemas", "checks.schema.yaml")

DATA_DIR = config["data_dir"]
CACHE_DIR = config["cache_dir"]
RUNS_DIR = "results/runs"
# A run's folder: readable wildcards plus the hash of its overrides (mcil/grid.py RUN_NAME, overrides_hash).
# Changing what a run means (run:, a dataset's split, method_run:) changes its folder, so a stale result
# is never taken for a new one; code changes do not (results record git SHA and version).
RUN_RESULT = os.path.join(RUNS_DIR, RUN_NAME, "result.json")


def _grid(fn, *args, **kwargs):
    """Call a mcil.grid or mcil.study_grid function; its config errors stop the workflow with their message."""
    try:
        return fn(*args, **kwargs)
    except GridError as exc:
        raise WorkflowError(str(exc)) from None


# The validation studies' file (checks.config, e.g. config/checks.yaml; workflow/rules/checks.smk), loaded
# here because its datasets join the dataset table that every rule looks names up in.
CHECKS_FILE = _grid(study_grid.find_checks_file, (config.get("checks") or {}).get("config"), workflow.basedir)
CHECKS = (
    _grid(study_grid.load_checks, CHECKS_FILE, config["datasets"], lambda data: validate(data, CHECKS_SCHEMA))
    if CHECKS_FILE
    else {}
)
# Every dataset that a job may be asked to build: the main config's and the checks file's.
DATASETS = {**CHECKS.get("datasets", {}), **config["datasets"]}

# A misspelt override key fails here, before any job runs, rather than in every `mcil train`.
_grid(grid.check_run_keys, grid.run_key_sections(config, DATASETS, CHECKS, CHECKS_FILE))
# Its studies: study -> its runs (dicts of wildcards, with their variant), in file order; variant name -> its
# overrides; study -> the kind of report it gets.
STUDY_RUNS, CHECK_VARIANTS = (
    _grid(study_grid.study_runs, config, CHECKS, CHECKS_FILE, DATASETS)
    if CHECKS
    else ({}, {study_grid.BASE_VARIANT: {}})
)
CHECK_STUDIES = list(STUDY_RUNS)
STUDY_KINDS = _grid(study_grid.study_kinds, CHECKS, CHECKS_FILE, CHECKS_SCHEMA) if CHECKS else {}


# ---- Lookups ------------------------------------------------------------------------------------------


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


def noisy_datasets():
    return grid.noisy_datasets(config)


def synth_options(dataset):
    """`mcil synth` options of a synth dataset (grid.synth_options)."""
    return grid.synth_options(config, CHECKS, DATASETS, dataset)


def synth_args(dataset):
    """`mcil synth` flags of a synth dataset's options; options left out take mcil synth's defaults."""
    return grid.cli_flags(synth_options(dataset))


# ---- Main runs ----------------------------------------------------------------------------------------


def all_runs():
    """Every run of the enabled groups, each once, in a stable order (no hash yet: computing it
    resolves user paths, which check_inputs reports first)."""
    return _grid(grid.all_runs, config)


def run_overrides_dict(run):
    """Ordered overrides of one run (a dict of wildcards); see grid.run_overrides."""
    return grid.run_overrides(config, DATASETS[run["dataset"]], run)


def run_targets():
    return grid.run_targets(RUN_RESULT, all_runs(), run_overrides_dict)


def run_overrides(wc):
    """The overrides as one shell-quoted string (params of the train rule), hash checked."""
    return _grid(grid.checked_overrides, run_overrides_dict(dict(wc.items())), wc.hash)


def expected_cells():
    """`mcil aggregate --expected-methods` (grid.expected_cells)."""
    return grid.expected_cells(config, all_runs())


# ---- Validation studies (rules in checks.smk): their folders, targets and lookups ---------------------

CHECKS_RUNS_DIR = "results/checks/runs"
CHECKS_OUT = "results/checks"
CHECKS_FIGURES = "figures/checks"
CHECK_RUN_NAME = os.path.join("{variant}", RUN_NAME)
CHECK_RESULT = os.path.join(CHECKS_RUNS_DIR, CHECK_RUN_NAME, "result.json")


def check_targets(wildcards=None):
    """Every run of the selected studies, each once (studies share runs)."""
    return _grid(
        study_grid.check_targets, CHECK_RESULT, config, DATASETS, CHECKS, CHECKS_FILE, STUDY_RUNS, CHECK_VARIANTS
    )


def check_overrides(wc):
    """`mcil train` overrides of a check run (params of the train_check rule), hash checked."""
    items = study_grid.check_overrides(config, DATASETS, CHECKS, CHECK_VARIANTS, dict(wc.items()))
    return _grid(grid.checked_overrides, items, wc.hash)


def studies_args():
    """The arguments of `mcil studies` that come from the config (quoted)."""
    levels = {ds: study_grid.noise_level(ds, DATASETS[ds], synth_options) for ds in CHECKS.get("datasets") or {}}
    return study_grid.studies_args(config, CHECKS, DATASETS, levels, STUDY_RUNS, STUDY_KINDS)


# ---- Inputs of data, train and tune rules -------------------------------------------------------------


def prepare_args(wc):
    return grid.prepare_args(DATASETS[wc.dataset]["prepare"], config.get("paths"))


def prepare_inputs(wc):
    """Raw paths of a prepared dataset (mtime inputs); empty when they are not set."""
    return grid.prepare_inputs(DATASETS[wc.dataset].get("prepare"), config.get("paths"))


def train_inputs(wc):
    return dict(manifest=dataset_manifest(wc.dataset), cache=cache_report(wc.dataset), checkpoint=checkpoint_path())


def tune_inputs(wc):
    """What `mcil tune` reads: its spec and the tune dataset's manifest, cache and backbone."""
    ds = _grid(grid.tune_dataset, config)
    return {"spec": config["tune"]["spec"], **train_inputs(SimpleNamespace(dataset=ds))}


def tune_overrides():
    """`mcil tune` overrides of the tune dataset, quoted (grid.tune_overrides)."""
    return grid.tune_overrides(config, DATASETS[config["tune"]["dataset"]])


# Check that what the runs need exists, before any job starts (also on --dry-run).
_grid(grid.check_inputs, config, sorted({r["dataset"] for r in all_runs()}))


# Wildcards: only the configured names, readable numbers and the gate words.
wildcard_constraints:
    dataset=names_regex(DATASETS),
    method="[a-z][a-z0-9-]*",
    T="[0-9]+",
    th=NUMBER_RE + "|" + "|".join(GATE_WORDS),
    alpha=NUMBER_RE,
    seed="[0-9]+",
    hash=HASH_RE,
