"""`mcil aggregate`: every ``result.json`` under a folder → one tidy table, tables, figures, claims.md.

One row per run in ``all_runs.csv``: the run's identity (dataset, method, T, th, α, seed), every
field of its config flattened to dotted columns (``config.optim.lr``), every scalar metric
(``aia``, ``last``, ``forgetting``, ..., ``paper.official.m1``, ``compat.pilot.aia``), the mean
fusion rate, parameter counts, timings and provenance. ``all_steps.csv`` has one row per run and
task (accuracy over all seen classes after that task, per modality path where recorded).

The identity comes from the run's folder name when it follows the pipeline's pattern
``{dataset}/{method}/T{T}_th{th}_a{alpha}_s{seed}[-{hash}]``, otherwise from the result itself: ``th`` is the
threshold as text, or the gate word (``always``, ``never``, ``adaptive``, ``sample-0.8``) when the
gate is not ``batch``.

Runs made by different code (another ``git_sha`` or ``mcil_version``) are flagged: column
``mixed_code`` is True on every row when more than one code version is present, and claims.md
says so. Runs installed from different dependency locks (``provenance.lock_sha256``) set
``mixed_lock`` and make ``mcil aggregate`` warn; so do runs from more than one kind of CPU (column
``cpu``: model name, family, model, the instruction set PyTorch dispatched to and any ISA caps;
``mixed_cpu``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from mcil.atomic import atomic_write_text
from mcil.grid import RUN_DIR_RE, th_fusion, th_label

__all__ = [
    "RESULT_FILE",
    "find_results",
    "th_label",
    "flatten",
    "run_row",
    "step_rows",
    "collect",
    "code_versions",
    "add_forgetting_beyond_zs",
    "load_runs",
    "configure_parser",
    "run_cli",
]

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
IDENTITY = ["dataset", "method", "T", "th", "alpha", "seed"]
CORE_METRICS = ["aia", "aia_task_balanced", "last", "forgetting", "forgetting_beyond_zs", "bwt", "fwt"]
# The frozen reference whose forgetting comes from label-space growth alone (docs/metrics.md §2.1).
ZERO_SHOT = "zeroshot"
# Same class order and test split as the run: forgetting_beyond_zs pairs on these columns (present ones).
ZS_PAIR = ["dataset", "T", "seed", "config.scenario.order_seed", "config.scenario.order"]
# Preferred sources of the paper's M1/M2 (first present wins): the official variant is what the
# paper's code computes; `full` is the corrected one (docs/metrics.md).
M_KEYS = {
    "m1": ["paper.official.m1", "paper.m1", "paper.full.m1"],
    "m2": ["paper.official.m2", "paper.m2", "paper.full.m2"],
}


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


def find_results(paths: Iterable[str | Path]) -> list[Path]:
    """Every ``result.json`` under the given folders (or the files themselves), sorted."""
    found: set[Path] = set()
    for p in map(Path, paths):
        if p.is_file():
            found.add(p)
        elif p.is_dir():
            found.update(p.rglob(RESULT_FILE))
        else:
            log.warning("%s does not exist; skipped", p)
    return sorted(found)


def default_th_label() -> str:
    """The threshold label of mcil's default fusion config (``always`` since the gate default
    changed; the CLIs' fallback when the pipeline does not pass its main setting)."""
    from mcil.config import FusionConfig

    return th_label(dataclasses.asdict(FusionConfig()))


def flatten(value: Any, prefix: str = "", keep_lists: bool = False) -> dict[str, Any]:
    """Nested mappings → ``{"a.b.c": scalar}``. Lists become JSON text (``keep_lists``) or are dropped."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k), keep_lists))
    elif isinstance(value, (list, tuple)):
        if keep_lists:
            out[prefix] = json.dumps(value)
    else:
        out[prefix] = value
    return out


def _mean(values: Iterable[Any]) -> float:
    xs = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(xs) / len(xs) if xs else math.nan


def _identity(result: dict[str, Any], run_dir: str | None) -> dict[str, Any]:
    """dataset, method, T, th, alpha, seed of a run (folder name first, then the result)."""
    cfg = result.get("config", {})
    ident = {
        "dataset": result.get("dataset", {}).get("name"),
        "method": result.get("method", {}).get("name"),
        "T": int(result.get("scenario", {}).get("n_tasks")),
        "th": th_label(cfg.get("fusion")),
        "alpha": float(cfg.get("loss", {}).get("alpha", math.nan)),
        "seed": int(cfg.get("train_seed", 0)),
    }
    m = RUN_DIR_RE.search(run_dir or "")
    if m:
        ident["dataset"] = m["dataset"]
        ident["method"] = m["method"]
        ident["T"] = int(m["T"])
        ident["th"] = th_label(th_fusion(m["th"]))
        try:
            ident["alpha"] = float(m["alpha"])
        except ValueError:
            pass
        ident["seed"] = int(m["seed"])
    return ident


def code_version(provenance: dict[str, Any]) -> str:
    """``<mcil_version>@<sha[:10]>`` plus ``+dirty`` when the tree had uncommitted changes."""
    sha = str(provenance.get("git_sha") or "unknown")
    text = f"{provenance.get('mcil_version', '?')}@{sha[:10]}"
    return text + ("+dirty" if provenance.get("git_dirty") else "")


def run_row(result: dict[str, Any], run_dir: str | None = None) -> dict[str, Any]:
    """One flat row of ``all_runs.csv`` from a parsed ``result.json``."""
    row: dict[str, Any] = {"run": run_dir or "", **_identity(result, run_dir)}
    method = result.get("method", {})
    row.update(
        {
            "learner": method.get("learner"),
            "preset": method.get("preset"),
            "dataset_name": result.get("dataset", {}).get("name"),
            "run_id": result.get("run_id"),
            "config_hash": result.get("config_hash"),
        }
    )
    metrics = dict(result.get("metrics", {}))
    paper = metrics.pop("paper", None) or {}
    compat = metrics.pop("compat", None) or {}
    for key, value in metrics.items():
        if not isinstance(value, (dict, list)):
            row[key] = value
    row.update(flatten(paper, "paper"))
    row.update(flatten(compat, "compat"))
    for name, candidates in M_KEYS.items():
        row[name] = next((row[c] for c in candidates if row.get(c) is not None), None)
    # ours (docs/metrics.md §5), never the paper's: informative replacements of M1's and M2's weak halves
    row["m1_ours"] = row.get("paper.ours.m1_ours_weighted")
    row["m2_ours"] = row.get("paper.ours.m2_ours_cka")
    steps = result.get("fusion", {}).get("per_step", [])
    rates = [s.get("fusion_rate") for s in steps]
    row["fusion_rate"] = _mean(rates)
    row["fusion_rate_last"] = rates[-1] if rates and rates[-1] is not None else math.nan
    per_task = result.get("params", {}).get("per_task", [])
    row["params.backbone_frozen"] = result.get("params", {}).get("backbone_frozen")
    row["params.trainable"] = per_task[-1].get("trainable") if per_task else None
    row["params.learner_total"] = per_task[-1].get("learner_total") if per_task else None
    row.update(flatten(result.get("timings", {}), "timings"))
    prov = result.get("provenance", {})
    row.update(flatten(prov, "provenance"))
    row["code_version"] = code_version(prov)
    row["cpu"] = cpu_label(prov.get("cpu"), prov.get("cpu_signature"))
    row.update(flatten(result.get("config", {}), "config", keep_lists=True))
    row["learner_statistics"] = json.dumps(result.get("learner_statistics", {}), sort_keys=True)
    return row


def step_rows(result: dict[str, Any], ident: dict[str, Any], run_dir: str | None = None) -> list[dict[str, Any]]:
    """One row per (task, modality path) with the accuracy over all seen classes after that task."""
    rows = []
    series = {"all": result.get("acc_per_step", [])}
    series.update(result.get("acc_per_step_by_modality", {}) or {})
    fusion = result.get("fusion", {}).get("per_step", [])
    for modality, values in series.items():
        for t, acc in enumerate(values):
            rows.append(
                {
                    "run": run_dir or "",
                    **ident,
                    "step": t + 1,
                    "modality": modality,
                    "acc": acc,
                    "fusion_rate": fusion[t].get("fusion_rate") if t < len(fusion) else None,
                }
            )
    return rows


def cpu_label(model: Any, signature: dict[str, Any] | None) -> str:
    """One line for the CPU a run came from (``provenance.cpu`` and ``provenance.cpu_signature``):
    ``"AMD EPYC (family 25, model 17, AVX512)"``, with any ISA caps that were set appended; the model
    name alone for results written before :func:`mcil.result.cpu_signature` was recorded."""
    name = str(model) if model else "unknown CPU"
    if not signature:
        return name
    parts = [f"{key} {signature[key]}" for key in ("family", "model") if signature.get(key) is not None]
    if signature.get("isa"):
        parts.append(str(signature["isa"]))
    caps = signature.get("isa_caps") or {}
    if caps:       # capped kernels compute as another CPU does: the label says so
        parts.append("caps " + " ".join(f"{k}={v}" for k, v in sorted(caps.items())))
    return f"{name} ({', '.join(parts)})" if parts else name


def code_versions(runs: pd.DataFrame) -> pd.DataFrame:
    """Add ``mixed_code``, ``mixed_lock`` and ``mixed_cpu``: True everywhere when the runs come from more
    than one code version, dependency lock or kind of CPU (column ``cpu``)."""
    runs = runs.copy()
    if runs.empty:
        runs["mixed_code"] = pd.Series(dtype=bool)
        runs["mixed_lock"] = pd.Series(dtype=bool)
        runs["mixed_cpu"] = pd.Series(dtype=bool)
        return runs
    unknown = pd.Series("unknown", index=runs.index)
    key = runs.get("provenance.git_sha", unknown).astype(str) + "|" + runs.get("provenance.mcil_version", unknown).astype(str)
    runs["mixed_code"] = key.nunique() > 1
    locks = runs.get("provenance.lock_sha256", unknown).fillna("none").astype(str)
    runs["mixed_lock"] = locks.nunique() > 1
    runs["mixed_cpu"] = runs.get("cpu", unknown).fillna("unknown CPU").astype(str).nunique() > 1
    return runs


def _runs_per_value(values: pd.Series) -> str:
    """``"a: 2 runs, b: 1 runs"``: how many runs have each value, in sorted order."""
    return ", ".join(f"{k}: {v} runs" for k, v in values.value_counts().sort_index().items())


def provenance_warnings(runs: pd.DataFrame) -> list[str]:
    """What a reader of the tables must know about where the runs came from: more than one code version,
    more than one dependency lock (then differences may be the libraries', not the methods'), or more
    than one kind of CPU (then they differ in the last digits)."""
    messages = []
    if runs.empty:
        return messages
    if bool(runs["mixed_code"].iloc[0]):
        messages.append(f"the runs come from {runs['code_version'].nunique()} code versions: "
                        + ", ".join(sorted(runs["code_version"].unique())))
    if bool(runs["mixed_lock"].iloc[0]):
        locks = runs["provenance.lock_sha256"].fillna("none").astype(str).str[:12]
        messages.append(f"the runs in these tables come from {locks.nunique()} dependency locks ("
                        + _runs_per_value(locks)
                        + "): their environments differ, so differences between runs may be the libraries', "
                          "not the methods'")
    if bool(runs["mixed_cpu"].iloc[0]):
        cpus = runs["cpu"].fillna("unknown CPU").astype(str)
        messages.append(f"the runs in these tables come from {cpus.nunique()} kinds of CPU ("
                        + _runs_per_value(cpus)
                        + "): float32 kernels round differently across CPUs, so compare rows by their spread "
                          "over seeds, not by their last digits (docs/environment.md, \"Numbers across CPUs\")")
    return messages


def add_forgetting_beyond_zs(runs: pd.DataFrame) -> pd.DataFrame:
    """Add ``forgetting_beyond_zs`` = forgetting − the zero-shot run's forgetting on the same dataset,
    T, seed and class order (:data:`ZS_PAIR`; mean over duplicate zero-shot runs). The frozen
    zero-shot model learns nothing, so its forgetting is label-space growth alone; the difference is
    the forgetting caused by training. NaN without a matching zero-shot run."""
    runs = runs.copy()
    runs["forgetting_beyond_zs"] = math.nan
    if runs.empty or "forgetting" not in runs:
        return runs
    keys = [k for k in ZS_PAIR if k in runs.columns]
    f = pd.to_numeric(runs["forgetting"], errors="coerce")
    zs = runs.assign(_f=f)[runs["method"] == ZERO_SHOT].dropna(subset=["_f"])
    if zs.empty:
        return runs
    ref = zs.groupby(keys, dropna=False)["_f"].mean()
    idx = pd.MultiIndex.from_frame(runs[keys]) if len(keys) > 1 else pd.Index(runs[keys[0]])
    runs["forgetting_beyond_zs"] = f.to_numpy() - ref.reindex(idx).to_numpy()
    return runs


def collect(results: list[tuple[dict[str, Any], str | None]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Parsed results (with their run folder names) → (runs, steps) DataFrames."""
    rows, steps = [], []
    for result, run_dir in results:
        row = run_row(result, run_dir)
        rows.append(row)
        steps.extend(step_rows(result, {k: row[k] for k in IDENTITY}, run_dir))
    runs = pd.DataFrame(rows)
    if not runs.empty:
        runs = runs.sort_values(IDENTITY, kind="stable").reset_index(drop=True)
        runs = add_forgetting_beyond_zs(runs)
        front = ["run", *IDENTITY, "learner", "preset", *[m for m in CORE_METRICS if m in runs], "m1", "m2",
                 "m1_ours", "m2_ours",
                 "fusion_rate", "code_version"]
        runs = runs[[c for c in front if c in runs] + [c for c in runs.columns if c not in front]]
    runs = code_versions(runs) if not runs.empty else pd.DataFrame(columns=["run", *IDENTITY, "mixed_code", "mixed_lock", "mixed_cpu"])
    dup = runs.duplicated(IDENTITY, keep=False) if not runs.empty else pd.Series(dtype=bool)
    if dup.any():
        log.warning(
            "%d runs share their (dataset, method, T, th, alpha, seed) with another run, e.g. %s: results "
            "of an earlier configuration (another hash in the folder name)? All are kept and count as "
            "extra seeds; pass only the result files you want (the pipeline passes its own targets)",
            int(dup.sum()), ", ".join(runs.loc[dup, "run"].astype(str).head(2)),
        )
    steps_df = pd.DataFrame(steps, columns=["run", *IDENTITY, "step", "modality", "acc", "fusion_rate"])
    return runs, steps_df


def load_runs(paths: Iterable[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every result.json under ``paths`` (unreadable files are skipped with a warning)."""
    files = find_results(paths)
    roots = [Path(p) for p in paths]
    parsed = []
    for f in files:
        try:
            result = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("%s: unreadable (%s); skipped", f, exc)
            continue
        run_dir = _relative_run_dir(f, roots)
        parsed.append((result, run_dir))
    log.info("read %d result files", len(parsed))
    return collect(parsed)


def _relative_run_dir(result_file: Path, roots: list[Path]) -> str:
    folder = result_file.parent
    for root in roots:
        try:
            return folder.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
    return folder.as_posix()


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def configure_parser(p: argparse.ArgumentParser) -> None:
    from mcil.config import LossConfig

    p.add_argument("--runs", nargs="+", default=["results/runs"], help="folders (or result.json files) to collect")
    p.add_argument("--out", default="results", help="all_runs.csv, all_steps.csv, claims.md and tables/ go here")
    p.add_argument("--figures", default="figures", help="figure folder (PNG + PDF)")
    p.add_argument("--default-th", default=default_th_label(),
                   help="threshold label of the main setting (tables, claims)")
    p.add_argument("--default-alpha", type=float, default=LossConfig.alpha, help="alpha of the main setting")
    p.add_argument("--noisy", nargs="*", default=None,
                   help="datasets whose claims are the noisy-data ones ('none' for no dataset; "
                        "default: names containing 'noisy' or 'aric')")
    p.add_argument("--tolerance", type=float, default=2.0, help="± points around the paper's headline numbers")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals")
    p.add_argument("--expected-methods", nargs="*", default=None, metavar="DATASET:T:METHOD",
                   help="the configured (dataset, T, method) cells of the main setting, or @file.json (a list of "
                        "{dataset, T, method}); a claim over every baseline needs every configured baseline on its "
                        "dataset and T, else it is 'partial' (default: mcil's registry baseline list)")


def run_cli(args: argparse.Namespace) -> int:
    from mcil.report import claims, plots, tables

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs, steps = load_runs(args.runs)
    atomic_write_text(out / "all_runs.csv", runs.to_csv(index=False))
    atomic_write_text(out / "all_steps.csv", steps.to_csv(index=False))
    for message in provenance_warnings(runs):
        log.warning("%s", message)
    th = th_label(th_fusion(str(args.default_th)))
    alpha = float(args.default_alpha)
    tables.write_tables(runs, out / "tables", default_th=th, default_alpha=alpha)
    plots.write_figures(runs, steps, Path(args.figures), default_th=th, default_alpha=alpha)
    noisy = args.noisy
    if noisy is not None:
        noisy = [d for d in noisy if d != "none"]
    settings = claims.ClaimSettings(
        default_th=th, default_alpha=alpha, tolerance=args.tolerance, confidence=args.confidence, noisy=noisy,
        expected=claims.parse_expected(getattr(args, "expected_methods", None)),
    )
    claims.write_claims(runs, out, settings)
    log.info("aggregated %d runs into %s and %s", len(runs), out, args.figures)
    return 0
