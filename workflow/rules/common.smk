# Helpers that turn the config into target lists, paths and `mcil train` overrides, the check of
# user paths, and the wildcard constraints. No rule lives here; everything is a function of
# `config` (validated in the Snakefile).

import hashlib
import json
import os
import re
import shlex
from itertools import product
from types import SimpleNamespace

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod

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
# The folder of a run: readable wildcards plus `hash`, the first 8 hex digits of the SHA-256 of its
# `mcil train` overrides (overrides_hash). Changing what a run means (the config's run: values, a
# dataset's split, method_run:) changes its folder, so a stale result is never taken for a new one;
# code changes do not (results record git SHA and version; `mcil aggregate` flags mixed code).
RUN_NAME = "{dataset}/{method}/T{T}_th{th}_a{alpha}_s{seed}-{hash}"
RUN_RESULT = os.path.join(RUNS_DIR, RUN_NAME, "result.json")
GATE_WORDS = ("always", "never", "adaptive")
NUMBER_RE = r"[0-9]+(?:\.[0-9]+)?"

# What `mcil aggregate` writes (mcil/report/tables.py TABLE_SPECS, mcil/report/plots.py FIGURES).
TABLES = ["main", "ablation", "threshold", "alpha", "tasks", "reproduced"]
FIGURES = ["accuracy_curves", "threshold_sweep", "alpha_sweep", "fusion_rate", "expert_usage"]


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
        raise WorkflowError(f"{path}: datasets {', '.join(clash)} are also defined, differently, in the main config; rename them")
    return path, data


CHECKS_FILE, CHECKS = _load_checks()
# Every dataset that a job may be asked to build: the main config's and the checks file's.
DATASETS = {**CHECKS.get("datasets", {}), **config["datasets"]}


def _names_regex(names):
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) or "(?!)"


def label(value):
    """A th/alpha value as it appears in file names: the text given in the config."""
    return value if isinstance(value, str) else repr(value) if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------------------------
# Paths
# ------------------------------------------------------------------------------------------------

class _MissingPath(KeyError):
    pass


def _paths():
    return config.get("paths") or {}


def resolve(value):
    """Substitute "{name}" references to `paths:` entries; raise _MissingPath(name) if unset."""

    def sub(match):
        key = match.group(1)
        path = _paths().get(key)
        if not path:
            raise _MissingPath(key)
        return str(path)

    return re.sub(r"\{([A-Za-z0-9_]+)\}", sub, str(value))


def dataset_root(dataset):
    return f"{DATA_DIR}/{dataset}"


def dataset_manifest(dataset):
    return f"{dataset_root(dataset)}/manifest.csv"


def cache_report(dataset):
    return f"{CACHE_DIR}/{dataset}.cache.json"


def pretrained_by_pipeline():
    """True when the backbone checkpoint is the one the `pretrain` rule builds."""
    return "pretrain" in config and config["backbone"]["checkpoint"] == config["pretrain"]["out"]


def checkpoint_path():
    return config["backbone"]["checkpoint"] if pretrained_by_pipeline() else resolve(config["backbone"]["checkpoint"])


def datasets_by_source(source):
    return sorted(n for n, d in DATASETS.items() if d["source"] == source)


def dataset_kind(dataset):
    d = DATASETS[dataset]
    return d.get("kind") or d.get("regime") or "clean"


def synth_options(dataset):
    """`mcil synth` options of a synth dataset: the file's `synth:` (main config or checks file), then the dataset's own."""
    base = config.get("synth", {}) if dataset in config["datasets"] else CHECKS["synth"]
    return {**base, **(DATASETS[dataset].get("synth") or {})}


# ------------------------------------------------------------------------------------------------
# Runs: a group is the cross product of its lists; missing lists take `defaults`
# ------------------------------------------------------------------------------------------------

def _flag(key):
    dashed = key.replace("_", "-")
    return f"--{dashed}"


def synth_args(dataset):
    """`mcil synth` flags of a synth dataset's options (key `n_classes` -> `--n-classes`); options
    left out take mcil synth's defaults."""
    return " ".join(f"{_flag(k)} {v}" for k, v in synth_options(dataset).items())


def expand_methods(items, where, method_sets=None):
    sets = config["method_sets"] if method_sets is None else method_sets
    out = []
    for item in items:
        if item.startswith("@"):
            name = item[1:]
            if name not in sets:
                raise WorkflowError(
                    f"{where}.methods: {item!r} names no method set; "
                    f"defined sets: {', '.join(sorted(sets))}"
                )
            out.extend(sets[name])
        else:
            out.append(item)
    return list(dict.fromkeys(out))


def dataset_task_counts(dataset, requested, defaults=None):
    """The T values of a group for one dataset (as str): its main T, or the requested list."""
    ds = DATASETS[dataset]
    tasks = {str(k) for k in (ds.get("tasks") or {})}
    main = str(ds.get("T", (defaults or config["defaults"])["T"]))
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
            raise WorkflowError(
                f"T={t} has no task split for dataset {dataset}; "
                f"datasets.{dataset}.tasks defines T = {', '.join(sorted(tasks, key=int))}"
            )
    return list(dict.fromkeys(values))


def group_runs(name):
    """The runs of group `name`: a list of dicts with dataset, method, T, th, alpha, seed (all str)."""
    if name not in config["groups"]:
        raise WorkflowError(f"run_groups: {name!r} is not a group; defined groups: {', '.join(sorted(config['groups']))}")
    g = config["groups"][name]
    datasets = g.get("datasets") or config.get("default_datasets") or sorted(config["datasets"])
    return expand_group(g, f"groups.{name}", datasets, config["datasets"], config["defaults"], config["method_sets"])


def expand_group(g, where, datasets, known, d, method_sets):
    """The cross product of one group (lists it leaves out take `d`, the defaults), checked against `known` datasets."""
    for ds in datasets:
        if ds not in known:
            raise WorkflowError(f"{where}.datasets: {ds!r} is not under datasets:; defined: {', '.join(sorted(known))}")
    methods = expand_methods(g["methods"], where, method_sets)
    ths = [label(x) for x in g.get("th", [d["th"]])]
    alphas = [label(x) for x in g.get("alpha", [d["alpha"]])]
    seeds = [str(s) for s in g.get("seeds", d["seeds"])]
    for th in ths:
        if th not in GATE_WORDS and not re.fullmatch(NUMBER_RE, th):
            raise WorkflowError(f"{where}.th: {th!r} is neither a number in [0, 1] nor one of {', '.join(GATE_WORDS)}")
    for alpha in alphas:
        if not re.fullmatch(NUMBER_RE, alpha):
            raise WorkflowError(f"{where}.alpha: {alpha!r} is not a number in [0, 1]")
    runs = []
    for ds in datasets:
        try:
            Ts = dataset_task_counts(ds, g.get("T"), d)
        except WorkflowError as exc:
            raise WorkflowError(f"{where}: {exc}") from None
        for method, T, th, alpha, seed in product(methods, Ts, ths, alphas, seeds):
            runs.append(dict(dataset=ds, method=method, T=T, th=th, alpha=alpha, seed=seed))
    return runs


def enabled_groups():
    names = config.get("run_groups")
    return list(config["groups"]) if names is None else list(names)


def all_runs():
    """Every run of the enabled groups, each once (groups overlap), in a stable order (no hash yet:
    computing it resolves user paths, which check_inputs reports first)."""
    seen = {}
    for name in enabled_groups():
        for run in group_runs(name):
            seen.setdefault(RUN_NAME.format(hash="", **run), run)
    return [seen[k] for k in sorted(seen)]


def used_datasets():
    return sorted({r["dataset"] for r in all_runs()})


def run_targets():
    return [RUN_RESULT.format(hash=overrides_hash(run_overrides_dict(SimpleNamespace(**r))), **r) for r in all_runs()]


# ------------------------------------------------------------------------------------------------
# One run -> `mcil train` overrides
# ------------------------------------------------------------------------------------------------

def _yaml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def run_overrides_dict(wc, extra_run=None, variant=None):
    """Ordered dotted overrides of one run: run: < extra_run < dataset's run: < variant < the wildcards < method_run:.

    `extra_run` and `variant` are the checks file's `run:` and a check run's grid values (checks.smk).
    """
    ds = DATASETS[wc.dataset]
    items = {
        "data.name": wc.dataset,
        "data.root": dataset_root(wc.dataset),
        "data.cache_dir": CACHE_DIR,
        "backbone.name": config["backbone"]["name"],
        "backbone.checkpoint": checkpoint_path(),
    }
    items.update(config.get("run") or {})
    items.update(extra_run or {})
    items.update(ds.get("run") or {})
    items.update(variant or {})
    tasks = ds.get("tasks")
    if tasks:
        split = {str(k): v for k, v in tasks.items()}[wc.T]
        items.update({"scenario.n_tasks": None, "scenario.initial": split["initial"], "scenario.increment": split["increment"]})
    else:
        items["scenario.n_tasks"] = int(wc.T)
    items["method.name"] = wc.method
    if wc.th in GATE_WORDS:
        items["fusion.gate"] = wc.th
    else:
        items["fusion.th"] = wc.th
        items["fusion.gate"] = "batch"
    items["loss.alpha"] = wc.alpha
    items["train_seed"] = int(wc.seed)
    if config.get("vary_class_order", True):
        items["scenario.order_seed"] = int(wc.seed)
    items.update((config.get("method_run") or {}).get(wc.method) or {})
    return items


def quote_overrides(items):
    return " ".join(shlex.quote(f"{k}={_yaml_value(v)}") for k, v in items.items())


# Where things are, not what a run is: moving the data or the checkpoint keeps a run's folder.
LOCATION_KEYS = ("data.root", "data.cache_dir", "backbone.checkpoint")


def overrides_hash(items):
    """8 hex digits naming a run's overrides but its locations (order-independent; values as
    `mcil train` reads them)."""
    canonical = json.dumps({k: _yaml_value(v) for k, v in items.items() if k not in LOCATION_KEYS}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def checked_overrides(wc, items):
    """`items` as one shell-quoted string, after checking that the folder's hash names them."""
    if overrides_hash(items) != wc.hash:
        raise WorkflowError(
            f"run folder hash {wc.hash} does not match the configured overrides of this run "
            f"({overrides_hash(items)}): the path was written by hand or by another config; "
            "ask for the targets the config defines (snakemake without a target)"
        )
    return quote_overrides(items)


def run_overrides(wc):
    """The overrides as one shell-quoted string (params of the train rule)."""
    return checked_overrides(wc, run_overrides_dict(wc))


# ------------------------------------------------------------------------------------------------
# Validation studies (rules in checks.smk): each study's parts -> check runs with their variant
# ------------------------------------------------------------------------------------------------

CHECKS_RUNS_DIR = "results/checks/runs"
CHECKS_OUT = "results/checks"
CHECKS_FIGURES = "figures/checks"
CHECK_RUN_NAME = os.path.join("{variant}", RUN_NAME)
CHECK_RESULT = os.path.join(CHECKS_RUNS_DIR, CHECK_RUN_NAME, "result.json")
BASE_VARIANT = "base"


def _same_value(a, b):
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _check_base(dataset):
    """The setting a check run starts from (before its variant): main run: < checks run: < dataset run:."""
    return {**(config.get("run") or {}), **(CHECKS.get("run") or {}), **(DATASETS[dataset].get("run") or {})}


def variant_of(values, dataset):
    """(name, overrides) of one grid combination: only the values that differ from the base setting count."""
    base = _check_base(dataset)
    changed = {k: v for k, v in values.items() if not (k in base and _same_value(base[k], v))}
    if not changed:
        return BASE_VARIANT, {}
    name = ",".join(f"{k.rsplit('.', 1)[-1]}={label(v)}" for k, v in changed.items())
    return name, changed


def part_runs(part, where):
    """The runs of one part: the group product of common.smk times its variants and grid, each with its variant name."""
    sets = {**config["method_sets"], **(CHECKS.get("method_sets") or {})}
    runs = expand_group(part, where, part["datasets"], CHECKS["datasets"], CHECKS["defaults"], sets)
    grid = part.get("grid") or {}
    grid_combos = [dict(zip(grid, values)) for values in product(*grid.values())] if grid else [{}]
    combos = [{**v, **g} for v in (part.get("variants") or [{}]) for g in grid_combos]
    out = []
    for run in runs:
        for values in combos:
            name, overrides = variant_of(values, run["dataset"])
            known = CHECK_VARIANTS.setdefault(name, overrides)
            if known != overrides:
                raise WorkflowError(
                    f"{where}.grid: variant {name!r} means {known} elsewhere and {overrides} here; "
                    "two grid keys share their last component; rename one"
                )
            out.append({**run, "variant": name})
    return out


def _study_runs():
    """study -> its runs (dicts with variant, dataset, method, T, th, alpha, seed; all str), in file order."""
    out = {}
    for study, spec in (CHECKS.get("studies") or {}).items():
        runs = []
        for i, part in enumerate(spec["runs"]):
            runs += part_runs(part, f"{CHECKS_FILE}: studies.{study}.runs[{i}]")
        out[study] = runs
    return out


CHECK_VARIANTS = {BASE_VARIANT: {}}  # variant name -> its overrides (filled by part_runs)
STUDY_RUNS = _study_runs() if CHECKS else {}


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


def check_overrides_dict(wc):
    """The overrides of a check run: those of a main run, with the checks' run: and the variant's values."""
    return run_overrides_dict(wc, extra_run=CHECKS.get("run"), variant=CHECK_VARIANTS[wc.variant])


def study_targets(study):
    """The result files of one study's runs (each once)."""
    return list(
        dict.fromkeys(
            CHECK_RESULT.format(hash=overrides_hash(check_overrides_dict(SimpleNamespace(**r))), **r)
            for r in STUDY_RUNS[study]
        )
    )


def check_targets(wildcards=None):
    """Every run of the selected studies, each once (studies share runs)."""
    if CHECKS_FILE is None:
        raise WorkflowError(
            "snakemake checks: no studies configured; set checks.config to a checks file, "
            "e.g. --config checks=\"{config: config/checks.yaml}\""
        )
    return sorted({t for s in selected_studies() for t in study_targets(s)})


def check_overrides(wc):
    """`mcil train` overrides of a check run (params of the train_check rule), hash checked."""
    return checked_overrides(wc, check_overrides_dict(wc))


def noise_level(dataset):
    """The corruption scale a synth dataset was generated with (0 for the clean regime), else None."""
    d = DATASETS[dataset]
    if d["source"] != "synth":
        return None
    return 0.0 if d.get("regime", "clean") == "clean" else float(synth_options(dataset).get("noise_level", 1.0))


def studies_args():
    """The arguments of `mcil studies` that come from the config (quoted)."""
    rep = CHECKS.get("report") or {}
    d = CHECKS.get("defaults") or {}
    args = [
        "--default-th", label(d.get("th", config["defaults"]["th"])),
        "--default-alpha", label(d.get("alpha", config["defaults"]["alpha"])),
        "--main-th", label(config["defaults"]["th"]),
        "--main-alpha", label(config["defaults"]["alpha"]),
        "--tolerance", str(rep.get("tolerance", 2.0)),
        "--confidence", str(rep.get("confidence", 0.95)),
        "--bootstrap", str(rep.get("bootstrap", 2000)),
    ]
    levels = [f"{ds}={noise_level(ds):g}" for ds in sorted(CHECKS.get("datasets") or {}) if noise_level(ds) is not None]
    if levels:
        args += ["--noise-levels", *levels]
    main_T = [f"{ds}={DATASETS[ds].get('T', d.get('T', config['defaults']['T']))}" for ds in sorted(CHECKS.get("datasets") or {})]
    if main_T:
        args += ["--task-counts", *main_T]
    studies = [
        f"{s}{'' if STUDY_KINDS[s] == s else f':{STUDY_KINDS[s]}'}={','.join(dict.fromkeys(r['dataset'] for r in runs))}"
        for s, runs in STUDY_RUNS.items()
    ]
    if studies:
        args += ["--study", *studies]
    return " ".join(shlex.quote(a) for a in args)


CHECK_STUDIES = list(STUDY_RUNS)


# ------------------------------------------------------------------------------------------------
# Inputs of data rules
# ------------------------------------------------------------------------------------------------

def prepare_args(wc):
    p = DATASETS[wc.dataset]["prepare"]
    args = [p["command"]]
    for flag, value in (p.get("inputs") or {}).items():
        args += [f"--{flag}", resolve(value)]
    for flag, value in (p.get("options") or {}).items():
        args += [f"--{flag}", _yaml_value(value)]
    return " ".join(shlex.quote(a) for a in args)


def prepare_inputs(wc):
    """Raw paths of a prepared dataset (mtime inputs); empty when they are not set."""
    p = DATASETS[wc.dataset].get("prepare") or {}
    try:
        return [resolve(v) for v in (p.get("inputs") or {}).values()]
    except _MissingPath:
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
        raise WorkflowError("snakemake tune: this config has no `tune:` section (spec, dataset); see config/default.yaml")
    ds = config["tune"]["dataset"]
    return {"spec": config["tune"]["spec"], **train_inputs(SimpleNamespace(dataset=ds))}


def tune_overrides():
    """`mcil tune` overrides: the tune dataset and backbone, then the config's `run:` keys (steps set the
    keys they tune, and data.eval_split=val comes from the spec), quoted."""
    ds = config["tune"]["dataset"]
    items = {
        "data.root": dataset_root(ds),
        "data.cache_dir": CACHE_DIR,
        "backbone.name": config["backbone"]["name"],
        "backbone.checkpoint": checkpoint_path(),
        **(DATASETS[ds].get("run") or {}),
        **config.get("run", {}),
    }
    return " ".join(shlex.quote(f"{k}={_yaml_value(v)}") for k, v in items.items())


def expected_cells():
    """`mcil aggregate --expected-methods`: every configured (dataset, T, method) of the main setting, so a
    claim over every baseline is graded "partial" where one of them was not configured."""
    th, alpha = label(config["defaults"]["th"]), label(config["defaults"]["alpha"])
    cells = {f"{r['dataset']}:{r['T']}:{r['method']}" for r in all_runs() if r["th"] == th and r["alpha"] == alpha}
    return " ".join(sorted(cells))


def noisy_datasets():
    return [d for d in sorted(config["datasets"]) if dataset_kind(d) == "noisy"]


# ------------------------------------------------------------------------------------------------
# Check that what the runs need exists, before any job starts
# ------------------------------------------------------------------------------------------------

def missing_inputs():
    """Problems with user-provided paths of the configured runs: list of one-line messages."""
    problems = []
    unset = {}  # path key -> what needs it

    def need(value, what):
        try:
            path = resolve(value)
        except _MissingPath as exc:
            unset.setdefault(exc.args[0], []).append(what)
            return
        if not os.path.exists(path):
            problems.append(f"{what}: {path} does not exist")

    if not pretrained_by_pipeline():
        need(config["backbone"]["checkpoint"], f"backbone.checkpoint ({config['backbone']['name']})")
    for ds in used_datasets():
        d = config["datasets"][ds]
        if os.path.exists(dataset_manifest(ds)):
            continue
        if d["source"] == "existing":
            problems.append(f"datasets.{ds}: {dataset_manifest(ds)} does not exist (source: existing); put the prepared dataset there")
        elif d["source"] == "prepare":
            if "prepare" not in d:
                problems.append(f"datasets.{ds}.prepare: missing; give command and inputs, or prepare it yourself into {dataset_root(ds)}")
                continue
            for flag, value in (d["prepare"].get("inputs") or {}).items():
                need(value, f"datasets.{ds}.prepare.inputs.{flag}")
    unset_lines = [f"paths.{key} is not set (needed by {', '.join(whats)})" for key, whats in sorted(unset.items())]
    return unset_lines + problems


def check_inputs():
    problems = missing_inputs()
    if problems:
        example = " ".join(f"{k}: /path/to/{k}," for k in sorted(k for k, v in _paths().items() if not v))
        hint = (
            "Set them under `paths:` in your config file, or on the command line, e.g.\n"
            f"  snakemake ... --config paths=\"{{{example.rstrip(',')}}}\""
            if example
            else "Fix the paths in your config file."
        )
        raise WorkflowError(
            "The configured runs need files that are not there:\n{}\n{}".format(
                "\n".join(f"  - {p}" for p in problems), hint
            )
        )


# Stop before any job starts when a user path is missing (also on --dry-run).
check_inputs()


# Wildcards: only the configured names, readable numbers and the gate words.
wildcard_constraints:
    dataset=_names_regex(DATASETS),
    method="[a-z][a-z0-9-]*",
    T="[0-9]+",
    th=NUMBER_RE + "|" + "|".join(GATE_WORDS),
    alpha=NUMBER_RE,
    seed="[0-9]+",
    hash="[0-9a-f]{8}",
