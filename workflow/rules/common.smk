# Helpers that turn the config into target lists, paths and `mcil train` overrides, the check of
# user paths, and the wildcard constraints. No rule lives here; everything is a function of
# `config` (validated in the Snakefile).

import json
import os
import re
import shlex
from itertools import product

from snakemake.exceptions import WorkflowError

DATA_DIR = config["data_dir"]
CACHE_DIR = config["cache_dir"]
RUNS_DIR = "results/runs"
RUN_NAME = "{dataset}/{method}/T{T}_th{th}_a{alpha}_s{seed}"
RUN_RESULT = RUNS_DIR + "/" + RUN_NAME + "/result.json"
GATE_WORDS = ("always", "never", "adaptive")
NUMBER_RE = r"[0-9]+(?:\.[0-9]+)?"

# What `mcil aggregate` writes (mcil/report/tables.py TABLE_SPECS, mcil/report/plots.py FIGURES).
TABLES = ["main", "ablation", "threshold", "alpha", "tasks"]
FIGURES = ["accuracy_curves", "threshold_sweep", "alpha_sweep", "fusion_rate", "expert_usage"]


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
    return sorted(n for n, d in config["datasets"].items() if d["source"] == source)


def dataset_kind(dataset):
    d = config["datasets"][dataset]
    return d.get("kind") or d.get("regime") or "clean"


# ------------------------------------------------------------------------------------------------
# Runs: a group is the cross product of its lists; missing lists take `defaults`
# ------------------------------------------------------------------------------------------------

def expand_methods(items, group):
    out = []
    for item in items:
        if item.startswith("@"):
            name = item[1:]
            if name not in config["method_sets"]:
                raise WorkflowError(
                    f"groups.{group}.methods: {item!r} names no method set; "
                    f"defined sets: {', '.join(sorted(config['method_sets']))}"
                )
            out.extend(config["method_sets"][name])
        else:
            out.append(item)
    return list(dict.fromkeys(out))


def dataset_task_counts(dataset, requested):
    """The T values of a group for one dataset (as str): its main T, or the requested list."""
    ds = config["datasets"][dataset]
    tasks = {str(k) for k in (ds.get("tasks") or {})}
    main = str(ds.get("T", config["defaults"]["T"]))
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
    d = config["defaults"]
    datasets = g.get("datasets") or config.get("default_datasets") or sorted(config["datasets"])
    for ds in datasets:
        if ds not in config["datasets"]:
            raise WorkflowError(f"groups.{name}.datasets: {ds!r} is not under datasets:; defined: {', '.join(sorted(config['datasets']))}")
    methods = expand_methods(g["methods"], name)
    ths = [label(x) for x in g.get("th", [d["th"]])]
    alphas = [label(x) for x in g.get("alpha", [d["alpha"]])]
    seeds = [str(s) for s in g.get("seeds", d["seeds"])]
    for th in ths:
        if th not in GATE_WORDS and not re.fullmatch(NUMBER_RE, th):
            raise WorkflowError(f"groups.{name}.th: {th!r} is neither a number in [0, 1] nor one of {', '.join(GATE_WORDS)}")
    for alpha in alphas:
        if not re.fullmatch(NUMBER_RE, alpha):
            raise WorkflowError(f"groups.{name}.alpha: {alpha!r} is not a number in [0, 1]")
    runs = []
    for ds in datasets:
        try:
            Ts = dataset_task_counts(ds, g.get("T"))
        except WorkflowError as exc:
            raise WorkflowError(f"groups.{name}: {exc}") from None
        for method, T, th, alpha, seed in product(methods, Ts, ths, alphas, seeds):
            runs.append(dict(dataset=ds, method=method, T=T, th=th, alpha=alpha, seed=seed))
    return runs


def enabled_groups():
    names = config.get("run_groups")
    return list(config["groups"]) if names is None else list(names)


def all_runs():
    """Every run of the enabled groups, each once (groups overlap), in a stable order."""
    seen = {}
    for name in enabled_groups():
        for run in group_runs(name):
            seen.setdefault(RUN_NAME.format(**run), run)
    return [seen[k] for k in sorted(seen)]


def used_datasets():
    return sorted({r["dataset"] for r in all_runs()})


def run_targets():
    return [RUN_RESULT.format(**r) for r in all_runs()]


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


def run_overrides_dict(wc):
    """Ordered dotted overrides of one run: run: < dataset's run: < the wildcards < method_run:."""
    ds = config["datasets"][wc.dataset]
    items = {
        "data.name": wc.dataset,
        "data.root": dataset_root(wc.dataset),
        "data.cache_dir": CACHE_DIR,
        "backbone.name": config["backbone"]["name"],
        "backbone.checkpoint": checkpoint_path(),
    }
    items.update(config.get("run") or {})
    items.update(ds.get("run") or {})
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


def run_overrides(wc):
    """The overrides as one shell-quoted string (params of the train rule)."""
    return " ".join(shlex.quote(f"{k}={_yaml_value(v)}") for k, v in run_overrides_dict(wc).items())


# ------------------------------------------------------------------------------------------------
# Inputs of data rules
# ------------------------------------------------------------------------------------------------

def prepare_args(wc):
    p = config["datasets"][wc.dataset]["prepare"]
    args = [p["command"]]
    for flag, value in (p.get("inputs") or {}).items():
        args += [f"--{flag}", resolve(value)]
    for flag, value in (p.get("options") or {}).items():
        args += [f"--{flag}", _yaml_value(value)]
    return " ".join(shlex.quote(a) for a in args)


def prepare_inputs(wc):
    """Raw paths of a prepared dataset (mtime inputs); empty when they are not set."""
    p = config["datasets"][wc.dataset].get("prepare") or {}
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
            "The configured runs need files that are not there:\n  - " + "\n  - ".join(problems) + "\n" + hint
        )


# Stop before any job starts when a user path is missing (also on --dry-run).
check_inputs()


# Wildcards: only the configured names, readable numbers and the gate words.
wildcard_constraints:
    dataset=_names_regex(config["datasets"]),
    method="[a-z][a-z0-9-]*",
    T="[0-9]+",
    th=NUMBER_RE + "|" + "|".join(GATE_WORDS),
    alpha=NUMBER_RE,
    seed="[0-9]+",
