"""Inputs of the studies: their settings and containers, result files → tidy run and per-task tables,
and the selection of the runs a study reads (knobs at their base value)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mcil.grid import RUN_DIR_RE
from mcil.report.aggregate import IDENTITY, collect, find_results

log = logging.getLogger(__name__)


HIGHER, LOWER, EQUIVALENT, INCONCLUSIVE = "higher", "lower", "equivalent", "inconclusive"
BASE = "base"

# config.* columns that name a run (its identity or follow from it): never knobs.
IDENTITY_CONFIG = {
    "config.data.name", "config.data.root", "config.method.name", "config.method.preset",
    "config.scenario.n_tasks", "config.scenario.initial", "config.scenario.increment", "config.scenario.order_seed",
    "config.fusion.th", "config.fusion.gate", "config.loss.alpha", "config.train_seed",
}
LR, BATCH = "config.optim.lr", "config.optim.batch_size"
QUANTILE = "config.fusion.adaptive_quantile"
MISSING = {
    ("audio", "train"): "config.data.missing_audio_train",
    ("audio", "test"): "config.data.missing_audio_test",
    ("image", "train"): "config.data.missing_image_train",
    ("image", "test"): "config.data.missing_image_test",
}


@dataclass(frozen=True)
class StudySettings:
    """The main setting of the check runs, the main pipeline's (metric study) and the statistics."""

    default_th: str = "0.8"
    default_alpha: float = 0.7
    main_th: str = "0.8"
    main_alpha: float = 0.7
    tolerance: float = 2.0
    confidence: float = 0.95
    bootstrap: int = 2000
    seed: int = 0
    noise_levels: Mapping[str, float] = field(default_factory=dict)
    task_counts: Mapping[str, int] = field(default_factory=dict)  # dataset -> its main T (other T: tasks study)

    @property
    def conf(self) -> str:
        return f"{self.confidence * 100:g} %"


@dataclass
class StudyData:
    """Inputs of every study: the check runs (one row per run), one row per run and task, the main runs."""

    runs: pd.DataFrame
    tasks: pd.DataFrame = field(default_factory=pd.DataFrame)
    main_runs: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass
class StudyResult:
    """What one study produces: tidy table (CSV), wide table (MD/LaTeX), figure, paragraph."""

    name: str
    table: pd.DataFrame
    wide: pd.DataFrame
    figure: plt.Figure
    paragraph: dict[str, Any]


def variant_of(run_dir: str) -> str:
    """The variant folder of a check run: the folder above ``{dataset}/`` (``base`` for a run
    directly under the root). ``run_dir`` is relative to the runs root, or a longer path when
    result files were given one by one (``.../runs/<variant>/<dataset>/...``)."""
    m = RUN_DIR_RE.search(run_dir or "")
    prefix = run_dir[: m.start()].strip("/") if m else ""
    return prefix.rsplit("/", 1)[-1] or BASE


def _sites_mean(per_site: Any) -> float:
    vals = [float(v) for v in (per_site or {}).values() if v is not None]
    return float(np.mean(vals)) if vals else math.nan


def task_rows(result: dict[str, Any], ident: dict[str, Any], run_dir: str = "") -> list[dict[str, Any]]:
    """One row per task of a run: accuracy, time, parameters and MIFE routing statistics.

    ``acc`` is the accuracy over all seen classes after task t, ``acc_new`` the accuracy on task
    t's own classes right after learning it (plasticity), ``time_s`` the wall time of the task
    (training, end of task, evaluation), ``train_s`` its training epochs, ``params_added`` the
    learner's parameters added by the task (MCIL's own count when recorded, else the growth of the
    learner's parameter count). From MIFE's statistics (None for other learners), per site then
    averaged: ``n_experts`` available at task t, router entropy in training and evaluation
    (nats), ``entropy_norm`` = evaluation entropy / log(n_experts), ``experts_active`` = fraction
    of the available experts picked at least once in evaluation, ``top_expert_share`` = share of
    the evaluation picks taken by the most used expert. ``threshold`` = the masking threshold in
    use after task t (the estimated one for gate ``adaptive``).
    """
    T = len(result.get("acc_per_step", []))
    A = result.get("accuracy_matrix", [])
    timings = result.get("timings", {})
    per_task_s = timings.get("per_task_s", []) or []
    per_epoch_s = timings.get("per_epoch_s", []) or []
    params = result.get("params", {}).get("per_task", []) or []
    ls = result.get("learner_statistics", {}) or {}
    own_added = (ls.get("parameters") or {}).get("added_per_task") or {}
    thresholds = (ls.get("fusion") or {}).get("threshold_per_task") or {}
    experts = ls.get("experts") or {}
    usage = experts.get("usage") or {}
    entropy = experts.get("router_entropy") or {}
    expert_task = experts.get("expert_task") or []
    rows = []
    for t in range(T):
        key = str(t)
        total = params[t].get("learner_total") if t < len(params) else None
        prev = params[t - 1].get("learner_total") if 0 < t <= len(params) else None
        if key in own_added:
            added = own_added[key]
        elif total is not None and prev is not None:
            added = total - prev
        else:
            added = None
        n_exp = sum(1 for g in expert_task if int(g) <= t) if expert_task else None
        ent_eval = _sites_mean((entropy.get("eval") or {}).get(key))
        picks = (usage.get("eval") or {}).get(key) or {}
        active, top = [], []
        for counts in picks.values():
            c = np.asarray(counts[: n_exp] if n_exp else counts, dtype=float)
            if c.size and c.sum() > 0:
                active.append(float((c > 0).mean()))
                top.append(float(c.max() / c.sum()))
        rows.append(
            {
                "run": run_dir,
                **ident,
                "task": t + 1,
                "acc": result["acc_per_step"][t],
                "acc_new": A[t][t] if t < len(A) and t < len(A[t]) else None,
                "time_s": per_task_s[t] if t < len(per_task_s) else None,
                "train_s": float(sum(per_epoch_s[t])) if t < len(per_epoch_s) else None,
                "learner_total": total,
                "params_added": added,
                "n_experts": n_exp,
                "entropy_train": _sites_mean((entropy.get("train") or {}).get(key)),
                "entropy_eval": ent_eval,
                "entropy_norm": ent_eval / math.log(n_exp) if n_exp and n_exp > 1 and not math.isnan(ent_eval) else math.nan,
                "experts_active": float(np.mean(active)) if active else math.nan,
                "top_expert_share": float(np.mean(top)) if top else math.nan,
                "threshold": thresholds.get(key),
            }
        )
    return rows


def collect_study_data(results: list[tuple[dict[str, Any], str]],
                       main: list[tuple[dict[str, Any], str]] | None = None) -> StudyData:
    """Parsed check results (with their run folders relative to the root) → :class:`StudyData`."""
    runs, _steps = collect(results)
    if not runs.empty:
        runs.insert(1, "variant", runs["run"].map(variant_of))
    tasks = []
    for result, run_dir in results:
        row = runs.loc[runs["run"] == run_dir].iloc[0] if not runs.empty else None
        ident = {k: row[k] for k in IDENTITY} if row is not None else {}
        tasks.extend(task_rows(result, {"variant": variant_of(run_dir), **ident}, run_dir))
    main_runs = collect(main)[0] if main else pd.DataFrame()
    return StudyData(runs=runs, tasks=pd.DataFrame(tasks), main_runs=main_runs)


def _read(paths: Iterable[str | Path]) -> list[tuple[dict[str, Any], str]]:
    roots = [Path(p) for p in paths]
    out = []
    for f in find_results(roots):
        try:
            result = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("%s: unreadable (%s); skipped", f, exc)
            continue
        rel = f.parent.as_posix()
        for root in roots:
            try:
                rel = f.parent.resolve().relative_to(root.resolve()).as_posix()
                break
            except ValueError:
                continue
        out.append((result, rel))
    return out


def load_study_data(runs: Iterable[str | Path], main_runs: Iterable[str | Path] = ()) -> StudyData:
    """Read every result.json under the check-run folders (and the main runs, for the metric study)."""
    checks = _read(runs)
    main = _read([p for p in main_runs if Path(p).exists()])
    log.info("read %d check runs and %d main runs", len(checks), len(main))
    return collect_study_data(checks, main)


def _same(a: Any, b: Any) -> bool:
    if pd.isna(a) and pd.isna(b):
        return True
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return str(a) == str(b)


def knob_columns(runs: pd.DataFrame) -> list[str]:
    """``config.*`` columns outside the run identity whose value differs between runs."""
    out = []
    for c in runs.columns:
        if not c.startswith("config.") or c in IDENTITY_CONFIG:
            continue
        values = runs[c].dropna().astype(str).unique()
        if len(values) > 1 or (len(values) == 1 and runs[c].isna().any()):
            out.append(c)
    return out


def base_values(runs: pd.DataFrame, knobs: Sequence[str]) -> dict[str, Any]:
    """The base value of each knob: the most common one in the ``base`` variant (else in all runs)."""
    ref = runs[runs["variant"] == BASE] if "variant" in runs and (runs["variant"] == BASE).any() else runs
    out = {}
    for k in knobs:
        values = ref[k].dropna()
        out[k] = values.mode().iloc[0] if not values.empty else math.nan
    return out


def at_base(runs: pd.DataFrame, free: Sequence[str] = ()) -> pd.DataFrame:
    """Runs whose knobs, except those in ``free``, are at their base values."""
    if runs.empty:
        return runs
    knobs = [k for k in knob_columns(runs) if k not in free]
    base = base_values(runs, knobs)
    keep = pd.Series(True, index=runs.index)
    for k in knobs:
        keep &= runs[k].map(lambda v, b=base[k]: _same(v, b))
    return runs[keep]


def main_task_count(runs: pd.DataFrame, dataset: str, s: StudySettings) -> int | None:
    """The dataset's main T: ``s.task_counts[dataset]``, else the T most of its runs have."""
    if dataset in s.task_counts:
        return int(s.task_counts[dataset])
    Ts = runs.loc[runs["dataset"] == dataset, "T"]
    return int(Ts.mode().iloc[0]) if not Ts.empty else None


def _select(runs: pd.DataFrame, datasets: Sequence[str], methods: Sequence[str] | None = None,
            th: str | None = None, alpha: float | None = None, free: Sequence[str] = (),
            s: StudySettings | None = None) -> pd.DataFrame:
    """Runs of the datasets at the base value of every knob outside ``free``; with ``s``, only at each
    dataset's main T (so that runs of the T study never mix into another study)."""
    if runs.empty:
        return runs
    sel = at_base(runs, free)
    sel = sel[sel["dataset"].isin(list(datasets))]
    if s is not None and not sel.empty:
        main_T = {d: main_task_count(runs, d, s) for d in sel["dataset"].unique()}
        sel = sel[sel["T"] == sel["dataset"].map(main_T)]
    if methods is not None:
        sel = sel[sel["method"].isin(list(methods))]
    if th is not None:
        sel = sel[sel["th"].astype(str) == str(th)]
    if alpha is not None:
        sel = sel[np.isclose(sel["alpha"].astype(float), float(alpha))]
    return sel.copy()
