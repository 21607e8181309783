"""`mcil studies`: the validation studies (config/checks.yaml) → tables, figures and ``claims.md``.

The paper leaves gaps that its own text points at: th = 0.8 fixed without a sensitivity analysis,
lr and batch size unreported, MIFE never run beyond 8 tasks, a fusion rule that has to cope with
a missing modality, and M1/M2 never checked against standard metrics. Each study below answers
one of those questions from the check runs (``snakemake checks``) with one function::

    study_<name>(data: StudyData, datasets: list[str], s: StudySettings) -> StudyResult

that reads the tidy run table (and, for T scaling, the per-task table) and returns a tidy table
(CSV), its wide view (Markdown, LaTeX), a seaborn figure and a paragraph (a dict with the question,
the verdict, a text with the numbers and the individual findings). All of them are pure functions
of DataFrames; :func:`write_studies` renders them, :func:`run_cli` is the command.

Statistics (stated again at the top of claims.md): every comparison pairs the two settings by
seed; the difference A − B over seeds gets a two-sided t-interval at ``confidence`` (95 %).
Verdict of a comparison: **equivalent** when the interval lies inside ±``tolerance`` AIA points
(negligible, even if certainly not 0), else **higher** when it lies above 0, **lower** when below
0, otherwise **inconclusive** (the seeds disagree, or fewer than two pair up). A *material loss*
is an interval below 0 with a mean below −tolerance. Study-level answers combine these as each study
says; anything resting on an inconclusive comparison is inconclusive. Kendall τ intervals (metric
study) are percentile bootstrap intervals over seeds.

Which runs a study reads: its datasets (``--study NAME=DS1,DS2``) at their main T (``--task-counts``;
only the T study reads other T), its methods, and the "base" value of every knob that varies between check runs (any ``config.*`` column outside the run's
identity, e.g. ``optim.lr`` or ``data.missing_audio_test``) except the knobs it sweeps. The base
value is the one of the runs in the ``base`` variant folder (the checks' own ``run:`` setting).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from mcil.report.aggregate import IDENTITY, RUN_DIR_RE, collect, find_results  # noqa: E402
from mcil.report.claims import _num, mean_ci, paired_stats  # noqa: E402
from mcil.atomic import atomic_write_text  # noqa: E402
from mcil.report.plots import placeholder, save  # noqa: E402
from mcil.report.tables import th_order, to_latex, to_markdown  # noqa: E402

__all__ = [
    "STUDIES",
    "HIGHER",
    "LOWER",
    "EQUIVALENT",
    "INCONCLUSIVE",
    "StudySettings",
    "StudyData",
    "StudyResult",
    "variant_of",
    "task_rows",
    "collect_study_data",
    "load_study_data",
    "knob_columns",
    "base_values",
    "at_base",
    "compare_verdict",
    "compare",
    "summarise_ci",
    "kendall_tau",
    "bootstrap_tau",
    "study_hyperparams",
    "study_threshold_noise",
    "study_adaptive_threshold",
    "study_alpha",
    "study_components",
    "study_tasks",
    "study_absence",
    "study_metrics",
    "run_studies",
    "render_claims",
    "write_studies",
    "configure_parser",
    "run_cli",
]

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
PAPER_METRICS = {
    "paper.official.m1": "M1 (official)",
    "paper.full.m1": "M1 (full)",
    "paper.official.m2": "M2 (official)",
    "paper.full.m2": "M2 (full)",
    # ours (mcil.metrics.ours, docs/metrics.md §5), never the paper's
    "paper.ours.m1_ours_weighted": "M1 ours (weighted)",
    "paper.ours.m2_ours_cka": "M2 ours (CKA)",
    "paper.ours.m2_ours_posterior": "M2 ours (posterior)",
}
STANDARD_METRICS = {"aia": "AIA", "last": "last", "neg_forgetting": "−forgetting",
                    "neg_forgetting_zs": "−(forgetting − ZS)"}


# ---------------------------------------------------------------------------------------------
# Settings and containers
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Loading: result files → runs (aggregate's tidy rows + variant) and per-task rows
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Selecting runs: knobs and their base values
# ---------------------------------------------------------------------------------------------


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


def main_task_count(runs: pd.DataFrame, dataset: str, s: "StudySettings") -> int | None:
    """The dataset's main T: ``s.task_counts[dataset]``, else the T most of its runs have."""
    if dataset in s.task_counts:
        return int(s.task_counts[dataset])
    Ts = runs.loc[runs["dataset"] == dataset, "T"]
    return int(Ts.mode().iloc[0]) if not Ts.empty else None


def _select(runs: pd.DataFrame, datasets: Sequence[str], methods: Sequence[str] | None = None,
            th: str | None = None, alpha: float | None = None, free: Sequence[str] = (),
            s: "StudySettings | None" = None) -> pd.DataFrame:
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


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


def compare_verdict(n: int, lo: float, hi: float, tolerance: float) -> str:
    """equivalent (interval inside ±tolerance), else higher (above 0) or lower (below 0), else inconclusive.

    Equivalence comes first: a difference that is certainly smaller than the tolerance is
    negligible for the studies' questions even when it is certainly not 0.
    """
    if n < 2 or lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return INCONCLUSIVE
    if -tolerance <= lo and hi <= tolerance:
        return EQUIVALENT
    if lo > 0:
        return HIGHER
    if hi < 0:
        return LOWER
    return INCONCLUSIVE


def _material_loss(st: dict[str, Any], tolerance: float) -> bool:
    """A below B for certain (interval below 0) and by more than the tolerance on average."""
    return st["n"] >= 2 and not math.isnan(st["ci_high"]) and st["ci_high"] < 0 and st["diff"] < -tolerance


def per_seed(df: pd.DataFrame, metric: str = "aia") -> pd.Series:
    """One value per seed (mean over duplicates), index = seed."""
    if df.empty or metric not in df:
        return pd.Series(dtype=float)
    return pd.to_numeric(df[metric], errors="coerce").groupby(df["seed"]).mean().dropna().astype(float)


def compare(a: pd.Series, b: pd.Series, s: StudySettings) -> dict[str, Any]:
    """Paired comparison A − B over common seeds, with its verdict."""
    st = paired_stats(a, b, s.confidence)
    st["verdict"] = compare_verdict(st["n"], st["ci_low"], st["ci_high"], s.tolerance)
    return st


def _ci(values: Sequence[float], confidence: float) -> tuple[float, float, float, int]:
    x = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], dtype=float)
    m, lo, hi = mean_ci(x, confidence)
    return m, lo, hi, len(x)


def summarise_ci(runs: pd.DataFrame, by: Sequence[str], metrics: Sequence[str], confidence: float = 0.95) -> pd.DataFrame:
    """Tidy: one row per group and metric with mean, t-interval (ci_low, ci_high) and n (seeds).

    Duplicate rows of one seed within a group are averaged first.
    """
    cols = [*by, "metric", "mean", "ci_low", "ci_high", "n"]
    metrics = [m for m in metrics if m in runs.columns and pd.to_numeric(runs[m], errors="coerce").notna().any()]
    if runs.empty or not metrics:
        return pd.DataFrame(columns=cols)
    rows = []
    for key, g in runs.groupby(list(by), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        for m in metrics:
            mean, lo, hi, n = _ci(per_seed(g, m).tolist(), confidence)
            if n:
                rows.append({**dict(zip(by, key)), "metric": m, "mean": mean, "ci_low": lo, "ci_high": hi, "n": n})
    return pd.DataFrame(rows, columns=cols)



def fmt_ci(mean: float, lo: float, hi: float, digits: int = 2, signed: bool = False) -> str:
    """``"61.20 [58.10, 64.30]"``; the mean alone when there is no interval."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if lo is None or math.isnan(lo):
        return _num(mean, digits, signed)
    return f"{_num(mean, digits, signed)} [{_num(lo, digits, signed)}, {_num(hi, digits, signed)}]"


def _fmt_cmp(st: dict[str, Any], digits: int = 2) -> str:
    return f"{fmt_ci(st['diff'], st['ci_low'], st['ci_high'], digits, signed=True)} (n = {st['n']})"


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ-b between two score vectors (NaN with fewer than 3 pairs or a constant vector).

    τ-b = Σ_{i<j} sx·sy / sqrt(Σ sx² · Σ sy²) with sx = sign(x_i − x_j), sy = sign(y_i − y_j);
    equal to ``scipy.stats.kendalltau`` (variant b), computed directly because the bootstrap calls it
    thousands of times on a handful of methods.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    i, j = np.triu_indices(len(x), k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    return float((sx * sy).sum() / math.sqrt((sx * sx).sum() * (sy * sy).sum()))


def bootstrap_tau(values: Mapping[str, tuple[Sequence[float], Sequence[float]]], n_boot: int, confidence: float,
                  seed: int = 0) -> tuple[float, float, float]:
    """τ between two metrics over methods, with a percentile bootstrap interval over seeds.

    ``values``: method → (per-seed values of metric X, per-seed values of metric Y), the two
    lists paired by seed. Each resample draws, for every method, its seeds with replacement and
    recomputes both means. Returns (τ of the means, low, high); the interval is NaN when fewer
    than half the resamples give a defined τ.
    """
    methods = [m for m, (xs, ys) in values.items() if len(xs) and len(xs) == len(ys)]
    if len(methods) < 3:
        return math.nan, math.nan, math.nan
    xs = [np.asarray(values[m][0], dtype=float) for m in methods]
    ys = [np.asarray(values[m][1], dtype=float) for m in methods]
    tau = kendall_tau([x.mean() for x in xs], [y.mean() for y in ys])
    rng = np.random.default_rng(seed)
    mx, my = np.empty((n_boot, len(xs))), np.empty((n_boot, len(xs)))
    for k, (x, y) in enumerate(zip(xs, ys)):
        pick = rng.integers(0, len(x), (n_boot, len(x)))  # the same seeds for both metrics
        mx[:, k], my[:, k] = x[pick].mean(axis=1), y[pick].mean(axis=1)
    i, j = np.triu_indices(len(xs), k=1)
    sx, sy = np.sign(mx[:, i] - mx[:, j]), np.sign(my[:, i] - my[:, j])
    den = np.sqrt((sx * sx).sum(axis=1) * (sy * sy).sum(axis=1))
    taus = np.divide((sx * sy).sum(axis=1), den, out=np.full(n_boot, np.nan), where=den > 0)
    taus = taus[~np.isnan(taus)]
    if len(taus) < n_boot / 2:
        return tau, math.nan, math.nan
    a = (1 - confidence) / 2
    return tau, float(np.quantile(taus, a)), float(np.quantile(taus, 1 - a))


# ---------------------------------------------------------------------------------------------
# Small helpers shared by the studies
# ---------------------------------------------------------------------------------------------


def _finding(study: str, dataset: str, what: str, st: dict[str, Any] | None = None, verdict: str = "",
             **extra: Any) -> dict[str, Any]:
    row = {"study": study, "dataset": dataset, "finding": what, "mean_a": math.nan, "mean_b": math.nan,
           "diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0, "verdict": verdict}
    if st is not None:
        row.update({"mean_a": st["mean_a"], "mean_b": st["mean_b"], "diff": st["diff"], "ci_low": st["ci_low"],
                    "ci_high": st["ci_high"], "n": st["n"], "verdict": verdict or st.get("verdict", "")})
    row.update(extra)
    return row


def _paragraph(study: str, verdict: str, text: list[str], findings: list[dict[str, Any]], n_runs: int) -> dict[str, Any]:
    title, question = STUDY_INFO[study]
    return {"study": study, "title": title, "question": question, "verdict": verdict,
            "text": " ".join(t for t in text if t), "findings": findings, "n_runs": int(n_runs)}


def _empty(study: str, datasets: Sequence[str], why: str) -> StudyResult:
    title, _q = STUDY_INFO[study]
    para = _paragraph(study, "not evaluated", [f"No runs: {why}."], [], 0)
    return StudyResult(study, pd.DataFrame(), pd.DataFrame(), placeholder(title, why), para)


def _per_dataset(verdicts: Sequence[tuple[str, str]]) -> str:
    """One verdict when every dataset gives it, else ``"ds1: v1, ds2: v2"`` (inconclusive when none)."""
    if not verdicts:
        return INCONCLUSIVE
    values = {v for _, v in verdicts}
    return values.pop() if len(values) == 1 else ", ".join(f"{ds}: {v}" for ds, v in verdicts)


def _wide_ci(summary: pd.DataFrame, row: str, col: str, metrics: Sequence[str] | None = None,
             labels: Mapping[str, str] | None = None, row_order: Sequence[Any] | None = None,
             row_name: str | None = None, digits: int = 2) -> pd.DataFrame:
    """Rows = ``row`` values, columns = "<col value> <metric>", cells "mean [low, high]"."""
    if summary.empty:
        return pd.DataFrame()
    s = summary if metrics is None else summary[summary["metric"].isin(list(metrics))]
    s = s.copy()
    s["cell"] = [fmt_ci(m, lo, hi, 3 if k in ("fusion_rate", "entropy_norm", "experts_active") else digits)
                 for m, lo, hi, k in zip(s["mean"], s["ci_low"], s["ci_high"], s["metric"])]
    s["column"] = [f"{c} {(labels or {}).get(k, k)}" for c, k in zip(s[col], s["metric"])]
    rows = list(row_order) if row_order is not None else list(dict.fromkeys(s[row]))
    cols = list(dict.fromkeys(s["column"]))
    table = s.pivot_table(index=row, columns="column", values="cell", aggfunc="first")
    table = table.reindex(index=[r for r in rows if r in table.index], columns=cols).fillna("–")
    table.index = [str(i) for i in table.index]
    table.index.name = row_name or row
    table.columns.name = None
    return table


def _errorbar_lines(ax: plt.Axes, summary: pd.DataFrame, x: str, hue: str, order: Sequence[Any] | None = None,
                    dodge: float = 0.0, palette: Mapping[Any, Any] | None = None, xcat: bool = False) -> None:
    """Means with their intervals, one line per ``hue`` value (x numeric or categorical)."""
    hues = list(order) if order is not None else list(dict.fromkeys(summary[hue]))
    colours = palette or dict(zip(hues, sns.color_palette("husl", max(len(hues), 1))))
    xs_all = list(dict.fromkeys(sorted(summary[x]))) if not xcat else list(dict.fromkeys(summary[x]))
    pos = {v: i for i, v in enumerate(xs_all)}
    for i, h in enumerate(hues):
        sub = summary[summary[hue] == h]
        if sub.empty:
            continue
        sub = sub.assign(_x=sub[x].map(pos) if xcat else sub[x].astype(float)).sort_values("_x")
        shift = (i - (len(hues) - 1) / 2) * dodge
        yerr = np.vstack([(sub["mean"] - sub["ci_low"]).fillna(0).clip(lower=0),
                          (sub["ci_high"] - sub["mean"]).fillna(0).clip(lower=0)])
        ax.errorbar(sub["_x"] + shift, sub["mean"], yerr=yerr, marker="o", capsize=3, label=str(h), color=colours[h])
    if xcat:
        ax.set_xticks(range(len(xs_all)))
        ax.set_xticklabels([str(v) for v in xs_all])


def _th_label(runs: pd.DataFrame, default_th: str) -> pd.Series:
    """The gate of a run as a label: th number / always / never / adaptive; ``sample`` for mcil-gate-sample
    at the default th (``sample-<th>`` at another)."""
    def one(method: str, th: str) -> str:
        if method == "mcil-gate-sample":
            return "sample" if th == str(default_th) else f"sample-{th}"
        return str(th)
    return pd.Series([one(m, str(t)) for m, t in zip(runs["method"], runs["th"])], index=runs.index, dtype=object)


def _gate_order(labels: Iterable[str]) -> list[str]:
    labels = list(dict.fromkeys(labels))
    words = [x for x in th_order([x for x in labels if not x.startswith("sample")])]
    return words + sorted(x for x in labels if x.startswith("sample"))


# ---------------------------------------------------------------------------------------------
# 1. Hyper-parameters: lr × batch size
# ---------------------------------------------------------------------------------------------


def study_hyperparams(data: StudyData, datasets: Sequence[str], s: StudySettings) -> StudyResult:
    """AIA of mcil over lr × batch size per dataset; sensitivity = best vs worst cell.

    Per dataset: **sensitive** when the best cell beats the worst one (interval above 0),
    **insensitive** when best − worst lies inside ±tolerance, else inconclusive. The answer is
    sensitive if any dataset is, insensitive if all are. The best and worst cells are picked by
    their means, which favours finding a difference (stated in the text).
    """
    name = "hyperparams"
    sel = _select(data.runs, datasets, ["mcil"], s.default_th, s.default_alpha, free=(LR, BATCH), s=s)
    if sel.empty or LR not in sel or BATCH not in sel or sel.groupby(["dataset"])[[LR, BATCH]].nunique().max().max() < 2:
        return _empty(name, datasets, "needs mcil runs at two or more lr or batch values")
    sel["lr"] = sel[LR].astype(float)
    sel["batch_size"] = sel[BATCH].astype(int)
    base = base_values(data.runs, [c for c in (LR, BATCH) if c in data.runs])
    summary = summarise_ci(sel, ["dataset", "lr", "batch_size"], ["aia", "last"], s.confidence)
    findings, text, verdicts = [], [], []
    for ds, g in sel.groupby("dataset"):
        cells = {k: per_seed(c) for k, c in g.groupby(["lr", "batch_size"])}
        means = {k: v.mean() for k, v in cells.items() if len(v)}
        best, worst = max(means, key=means.get), min(means, key=means.get)
        st = compare(cells[best], cells[worst], s)
        v = {HIGHER: "sensitive", EQUIVALENT: "insensitive"}.get(st["verdict"], INCONCLUSIVE)
        verdicts.append(v)
        findings.append(_finding(name, ds, f"best (lr {best[0]:g}, batch {best[1]}) − worst (lr {worst[0]:g}, batch {worst[1]}) AIA", st, v))
        line = (f"On {ds}, AIA ranges from {means[worst]:.2f} (lr {worst[0]:g}, batch {worst[1]}) to {means[best]:.2f} "
                f"(lr {best[0]:g}, batch {best[1]}) over the {len(means)} settings; best − worst = {_fmt_cmp(st)}: {v}.")
        key = (float(base.get(LR, math.nan)), int(base.get(BATCH, 0) or 0))
        if key in cells and key != best:
            sb = compare(cells[best], cells[key], s)
            findings.append(_finding(name, ds, f"best − main setting (lr {key[0]:g}, batch {key[1]}) AIA", sb))
            line += f" The main setting (lr {key[0]:g}, batch {key[1]}) is {_fmt_cmp(sb)} below the best ({sb['verdict']})."
        elif key == best:
            line += f" The main setting (lr {key[0]:g}, batch {key[1]}) is the best cell."
        text.append(line)
    verdict = "sensitive" if "sensitive" in verdicts else ("insensitive" if all(v == "insensitive" for v in verdicts) else INCONCLUSIVE)
    text.append("Best and worst cells are chosen by their means, so the spread is an upper estimate.")
    # figure: one heatmap of mean AIA per dataset
    aia = summary[summary["metric"] == "aia"]
    dss = sorted(aia["dataset"].unique())
    fig, axes = plt.subplots(1, len(dss), figsize=(4.4 * len(dss), 3.6), squeeze=False)
    for ax, ds in zip(axes.flat, dss):
        sub = aia[aia["dataset"] == ds]
        mean = sub.pivot(index="lr", columns="batch_size", values="mean").sort_index()
        half = sub.assign(h=(sub["ci_high"] - sub["mean"])).pivot(index="lr", columns="batch_size", values="h").reindex(mean.index)
        annot = mean.copy().astype(object)
        for i in mean.index:
            for j in mean.columns:
                m, h = mean.loc[i, j], half.loc[i, j]
                annot.loc[i, j] = "–" if pd.isna(m) else (f"{m:.1f}" if pd.isna(h) else f"{m:.1f}\n±{h:.1f}")
        sns.heatmap(mean, annot=annot.to_numpy(), fmt="", cmap="viridis", ax=ax, cbar_kws={"label": "AIA (%)"})
        ax.set_yticklabels([f"{v:g}" for v in mean.index], rotation=0)
        ax.set_xlabel("batch size")
        ax.set_ylabel("learning rate")
        ax.set_title(ds)
    fig.suptitle(f"MCIL AIA over lr × batch size (mean ± {s.conf} half-interval over seeds)")
    fig.tight_layout()
    summary = summary.assign(setting=[f"lr={a:g}, batch={b}" for a, b in zip(summary["lr"], summary["batch_size"])])
    wide = _wide_ci(summary, "setting", "dataset", labels={"aia": "AIA", "last": "last"}, row_name="setting")
    para = _paragraph(name, verdict, text, findings, len(sel))
    return StudyResult(name, summary, wide, fig, para)


# ---------------------------------------------------------------------------------------------
# 2. Threshold under noise
# ---------------------------------------------------------------------------------------------


def _noise_frame(runs: pd.DataFrame, s: StudySettings) -> pd.DataFrame:
    runs = runs.copy()
    runs["noise"] = runs["dataset"].map(lambda d: s.noise_levels.get(d, math.nan)).astype(float)
    return runs.dropna(subset=["noise"])


def study_threshold_noise(data: StudyData, datasets: Sequence[str], s: StudySettings) -> StudyResult:
    """AIA per gate (th values, always, never, sample) × noise level.

    Per level the best gate is the one with the highest mean. A gate **breaks** at a level when
    it is below that level's best (interval below 0) by more than the tolerance. The default
    th is **robust** when at no level it breaks and at every level it is the best or equivalent
    to it; **not robust** when it breaks somewhere; else inconclusive.
    """
    name = "threshold-noise"
    sel = _select(data.runs, datasets, ["mcil", "mcil-gate-sample"], alpha=s.default_alpha, s=s)
    sel = sel[sel["th"].astype(str) != "adaptive"] if not sel.empty else sel
    sel = _noise_frame(sel, s) if not sel.empty else sel
    if sel.empty or sel["th"].nunique() < 2:
        return _empty(name, datasets, "needs mcil runs at two or more thresholds on datasets with a known noise level")
    sel["gate"] = _th_label(sel, s.default_th)
    gates = _gate_order(sel["gate"])
    default = str(s.default_th)
    summary = summarise_ci(sel, ["noise", "dataset", "gate"], ["aia", "last", "fusion_rate"], s.confidence)
    findings, text = [], []
    breaks: dict[str, float | None] = {g: None for g in gates}
    default_status = []
    levels = sorted(sel["noise"].unique())
    for level in levels:
        g_level = sel[sel["noise"] == level]
        ds = g_level["dataset"].iloc[0]
        series = {g: per_seed(x) for g, x in g_level.groupby("gate")}
        means = {g: v.mean() for g, v in series.items() if len(v)}
        best = max(means, key=means.get)
        for g in gates:
            if g not in series or g == best:
                continue
            st = compare(series[g], series[best], s)
            broke = _material_loss(st, s.tolerance)
            if broke and breaks[g] is None:
                breaks[g] = level
            findings.append(_finding(name, ds, f"noise {level:g}: {g} − best ({best}) AIA", st, "breaks" if broke else st["verdict"],
                                     noise=level))
            if g == default:
                default_status.append("breaks" if broke else ("ok" if st["verdict"] == EQUIVALENT else INCONCLUSIVE))
        if default == best:
            default_status.append("ok")
        fusion = summary[(summary["noise"] == level) & (summary["gate"] == default) & (summary["metric"] == "fusion_rate")]
        fr = f", fusion rate {fusion['mean'].iloc[0]:.2f}" if not fusion.empty else ""
        text.append(f"Noise {level:g} ({ds}): best gate {best} ({means[best]:.2f}); th {default}: "
                    f"{means.get(default, math.nan):.2f}{fr}.")
    if default not in set(sel["gate"]):
        verdict = "not evaluated"
    elif "breaks" in default_status:
        verdict = "not robust"
    elif default_status and all(x == "ok" for x in default_status):
        verdict = "robust"
    else:
        verdict = INCONCLUSIVE
    lines = []
    for g in gates:
        lines.append(f"{g} breaks at noise {breaks[g]:g}" if breaks[g] is not None else f"{g} does not break up to noise {levels[-1]:g}")
    text.append("Where each gate breaks (below the best by more than ±"
                f"{s.tolerance:g} points, interval below 0): " + "; ".join(lines) + ".")
    # figure: AIA and fusion rate against the noise level
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    palette = dict(zip(gates, sns.color_palette("husl", len(gates))))
    for ax, metric, ylabel in zip(axes, ["aia", "fusion_rate"], ["AIA (%)", "fusion rate (test)"]):
        sub = summary[summary["metric"] == metric]
        _errorbar_lines(ax, sub, "noise", "gate", gates, dodge=0.015 * max(levels[-1], 1), palette=palette)
        ax.set_xlabel("noise level (corruption rates × level)")
        ax.set_ylabel(ylabel)
        ax.set_xticks(levels)
    axes[0].legend(title="gate / th", fontsize="small", frameon=False)
    fig.suptitle(f"Masking threshold under noise (mean, {s.conf} interval over seeds)")
    fig.tight_layout()
    summary = summary.assign(noise_label=[f"noise {x:g}" for x in summary["noise"]])
    wide = _wide_ci(summary, "gate", "noise_label", ["aia"], {"aia": "AIA"}, row_order=gates, row_name="gate")
    para = _paragraph(name, verdict, [f"Is th = {default} robust: {verdict}."] + text, findings, len(sel))
    return StudyResult(name, summary, wide, fig, para)


# ---------------------------------------------------------------------------------------------
# 3. Adaptive threshold
# ---------------------------------------------------------------------------------------------


def _estimated_th(stats_json: Any) -> float:
    try:
        st = json.loads(stats_json) if isinstance(stats_json, str) else (stats_json or {})
    except json.JSONDecodeError:
        return math.nan
    values = [float(v) for v in ((st.get("fusion") or {}).get("threshold_per_task") or {}).values() if v is not None]
    return float(np.mean(values)) if values else math.nan


def study_adaptive_threshold(data: StudyData, datasets: Sequence[str], s: StudySettings) -> StudyResult:
    """gate = adaptive (per quantile) against the best fixed th of each noise level.

    The best fixed th is the numeric th with the highest mean at that level (chosen after the
    fact, which favours it). Per quantile: **yes** (the tuning can go) when at every level
    adaptive − best fixed is higher or equivalent; **no** when at some level it is lower by more
    than the tolerance; else inconclusive. Answer: yes if some quantile says yes, no if all say no.
    """
    name = "adaptive-threshold"
    sel = _select(data.runs, datasets, ["mcil"], alpha=s.default_alpha, free=(QUANTILE,), s=s)
    sel = _noise_frame(sel, s) if not sel.empty else sel
    if sel.empty or not (sel["th"] == "adaptive").any() or not sel["th"].map(_is_number).any():
        return _empty(name, datasets, "needs mcil runs with gate adaptive and with fixed thresholds")
    adaptive = sel[sel["th"] == "adaptive"].copy()
    q = adaptive[QUANTILE].astype(float) if QUANTILE in adaptive else pd.Series(0.5, index=adaptive.index)
    adaptive["setting"] = [f"adaptive q={x:g}" for x in q]
    adaptive["th_estimated"] = adaptive["learner_statistics"].map(_estimated_th) if "learner_statistics" in adaptive else math.nan
    fixed = sel[sel["th"].map(_is_number)].copy()
    fixed = at_base(fixed) if QUANTILE in fixed else fixed
    fixed["setting"] = "th " + fixed["th"].astype(str)
    both = pd.concat([fixed, adaptive], ignore_index=True)
    summary = summarise_ci(both, ["noise", "dataset", "setting"], ["aia", "last", "fusion_rate", "th_estimated"], s.confidence)
    qs = sorted(adaptive["setting"].unique(), key=lambda x: float(x.split("=")[1]))
    findings, text = [], []
    per_q: dict[str, list[str]] = {x: [] for x in qs}
    best_rows = []
    for level in sorted(both["noise"].unique()):
        fl = fixed[fixed["noise"] == level]
        al = adaptive[adaptive["noise"] == level]
        if fl.empty or al.empty:
            continue
        ds = fl["dataset"].iloc[0]
        fseries = {t: per_seed(x) for t, x in fl.groupby("th")}
        fmeans = {t: v.mean() for t, v in fseries.items() if len(v)}
        best = max(fmeans, key=fmeans.get)
        best_rows.append({"noise": level, "th": best})
        parts = [f"noise {level:g}: best fixed th {best} ({fmeans[best]:.2f})"]
        for setting, g in al.groupby("setting"):
            st = compare(per_seed(g), fseries[best], s)
            v = "material loss" if _material_loss(st, s.tolerance) else st["verdict"]
            per_q[setting].append(v)
            est = g["th_estimated"].mean()
            findings.append(_finding(name, ds, f"noise {level:g}: {setting} − best fixed th {best} AIA", st, v, noise=level,
                                     th_estimated=est))
            parts.append(f"{setting} (estimated th {est:.2f}) {_fmt_cmp(st)} vs it: {v}")
            if s.default_th in fseries and s.default_th != best:
                sd = compare(per_seed(g), fseries[s.default_th], s)
                findings.append(_finding(name, ds, f"noise {level:g}: {setting} − th {s.default_th} AIA", sd, noise=level))
        text.append("; ".join(parts) + ".")
    answers = {}
    for setting, vs in per_q.items():
        if vs and all(v in (HIGHER, EQUIVALENT) for v in vs):
            answers[setting] = "yes"
        elif "material loss" in vs:
            answers[setting] = "no"
        else:
            answers[setting] = INCONCLUSIVE
    vals = list(answers.values())
    verdict = "yes" if "yes" in vals else ("no" if vals and all(v == "no" for v in vals) else INCONCLUSIVE)
    text.insert(0, "Can the tuning be removed: " + verdict + " (" + ", ".join(f"{k}: {v}" for k, v in answers.items()) + ").")
    text.append("The best fixed th is chosen per level after the fact, which favours it.")
    # figure
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    aia = summary[summary["metric"] == "aia"]
    bests = pd.DataFrame(best_rows)
    if not bests.empty:
        best_curve = pd.concat([aia[(aia["noise"] == r.noise) & (aia["setting"] == f"th {r.th}")] for r in bests.itertuples()])
        best_curve = best_curve.assign(setting="best fixed th")
        curves = pd.concat([best_curve, aia[aia["setting"].isin([f"th {s.default_th}", *qs])]], ignore_index=True)
    else:
        curves = aia[aia["setting"].isin([f"th {s.default_th}", *qs])]
    order = ["best fixed th", f"th {s.default_th}", *qs]
    levels = sorted(curves["noise"].unique())
    _errorbar_lines(ax, curves, "noise", "setting", [o for o in order if o in set(curves["setting"])],
                    dodge=0.015 * max(max(levels, default=1), 1))
    for r in best_rows:
        ax.annotate(f"th {r['th']}", (r["noise"], aia[(aia['noise'] == r['noise']) & (aia['setting'] == f"th {r['th']}")]["mean"].max()),
                    textcoords="offset points", xytext=(0, 8), ha="center", fontsize="x-small")
    ax.set_xticks(levels)
    ax.set_xlabel("noise level")
    ax.set_ylabel("AIA (%)")
    ax.legend(frameon=False, fontsize="small")
    ax.set_title(f"Adaptive threshold vs fixed th (mean, {s.conf} interval)")
    fig.tight_layout()
    summary = summary.assign(noise_label=[f"noise {x:g}" for x in summary["noise"]])
    row_order = sorted(fixed["setting"].unique(), key=lambda x: float(x.split()[1])) + qs
    wide = _wide_ci(summary, "setting", "noise_label", ["aia"], {"aia": "AIA"}, row_order=row_order, row_name="setting")
    para = _paragraph(name, verdict, text, findings, len(both))
    return StudyResult(name, summary, wide, fig, para)


def _is_number(text: Any) -> bool:
    try:
        float(str(text))
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# 4. α
# ---------------------------------------------------------------------------------------------


def study_alpha(data: StudyData, datasets: Sequence[str], s: StudySettings) -> StudyResult:
    """AIA against α per dataset and gate; does L_MI help (default α vs α = 1), is the default α special.

    L_MI acts through the fused features, so the study reads every gate (th) with two or more α
    values, e.g. th 0.8 and ``always``; the paragraph gives each setting's fusion rate. L_MI
    **helps** when default α − (α = 1) is higher, **hurts** when lower, has **no measurable effect**
    when equivalent. The default α is **special** when it beats every other α; **not special** when
    some other α is higher or equivalent; else inconclusive. An answer shared by every setting is
    given once, otherwise per setting.
    """
    name = "alpha"
    sel = _select(data.runs, datasets, ["mcil"], s=s)
    if not sel.empty:
        sel = sel[sel.groupby(["dataset", "th"])["alpha"].transform("nunique") >= 2].copy()
    if sel.empty:
        return _empty(name, datasets, "needs mcil runs at two or more α")
    a0 = float(s.default_alpha)
    sel["setting"] = sel["dataset"] + " (th " + sel["th"].astype(str) + ")"
    summary = summarise_ci(sel, ["setting", "dataset", "th", "alpha"], ["aia", "last", "fusion_rate"], s.confidence)
    findings, text, helps, special = [], [], [], []
    for setting, g in sel.groupby("setting"):
        ds = str(g["dataset"].iloc[0])
        series = {float(a): per_seed(x) for a, x in g.groupby("alpha")}
        means = {a: v.mean() for a, v in series.items() if len(v)}
        best = max(means, key=means.get)
        fr = pd.to_numeric(g["fusion_rate"], errors="coerce").mean()
        line = [f"On {setting} (fusion rate {fr:.2f}): best α = {best:g} ({means[best]:.2f})"]
        if a0 not in series:
            text.append(line[0] + f"; no runs at α = {a0:g}.")
            continue
        if 1.0 in series and a0 != 1.0:
            st = compare(series[a0], series[1.0], s)
            h = {HIGHER: "helps", LOWER: "hurts", EQUIVALENT: "no measurable effect"}.get(st["verdict"], INCONCLUSIVE)
            helps.append((setting, h))
            findings.append(_finding(name, ds, f"{setting}: α {a0:g} − α 1 (L_MI off) AIA", st, h))
            line.append(f"α = {a0:g} − α = 1 = {_fmt_cmp(st)}: L_MI {h}")
        others = []
        for a in sorted(series):
            if a == a0:
                continue
            st = compare(series[a0], series[a], s)
            others.append(st["verdict"])
            findings.append(_finding(name, ds, f"{setting}: α {a0:g} − α {a:g} AIA", st))
        if others and all(v == HIGHER for v in others):
            sp = "special"
        elif any(v in (LOWER, EQUIVALENT) for v in others):
            sp = "not special"
        else:
            sp = INCONCLUSIVE
        special.append((setting, sp))
        line.append(f"α = {a0:g} against the {len(others)} other values: {sp}")
        text.append("; ".join(line) + ".")
    verdict = f"L_MI: {_per_dataset(helps)}; α = {a0:g}: {_per_dataset(special)}"
    # figure
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    aia = summary[summary["metric"] == "aia"]
    _errorbar_lines(ax, aia, "alpha", "setting", sorted(aia["setting"].unique()), dodge=0.01)
    ax.axvline(a0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("α  (L = α L_CW + (1 − α) L_MI)")
    ax.set_ylabel("AIA (%)")
    ax.legend(frameon=False, fontsize="small", title="dataset (gate)")
    ax.set_title(f"Loss weight α (mean, {s.conf} interval over seeds)")
    fig.tight_layout()
    summary = summary.assign(alpha_label=[f"{a:g}" for a in summary["alpha"]])
    wide = _wide_ci(summary, "alpha_label", "setting", ["aia", "fusion_rate"], labels={"aia": "AIA", "fusion_rate": "fusion"},
                    row_order=[f"{a:g}" for a in sorted(summary["alpha"].unique())], row_name="α")
    para = _paragraph(name, verdict, text, findings, len(sel))
    return StudyResult(name, summary, wide, fig, para)


# ---------------------------------------------------------------------------------------------
# 5. Components (ablation presets)
# ---------------------------------------------------------------------------------------------


def study_components(data: StudyData, datasets: Sequence[str], s: StudySettings) -> StudyResult:
    """mcil − each preset (the gain the removed or changed part carries), paired by seed.

    Per preset: **helps** (mcil higher), **hurts** (mcil lower), **negligible** (equivalent),
    else inconclusive. The part that carries the gain is the preset with the largest gain among
    those that help.
    """
    name = "components"
    if data.runs.empty:
        return _empty(name, datasets, "no runs")
    presets = sorted(m for m in data.runs["method"].unique() if str(m).startswith("mcil-"))
    sel = _select(data.runs, datasets, ["mcil", *presets], s.default_th, s.default_alpha, s=s)
    if sel.empty or "mcil" not in set(sel["method"]) or sel["method"].nunique() < 2:
        return _empty(name, datasets, "needs mcil and at least one of its presets")
    rows, findings, text, carriers = [], [], [], []
    for ds, g in sel.groupby("dataset"):
        ref = per_seed(g[g["method"] == "mcil"])
        fr = pd.to_numeric(g.loc[g["method"] == "mcil", "fusion_rate"], errors="coerce").mean()
        gains = {}
        for p in sorted(set(g["method"]) - {"mcil"}):
            st = compare(ref, per_seed(g[g["method"] == p]), s)
            v = {HIGHER: "helps", LOWER: "hurts", EQUIVALENT: "negligible"}.get(st["verdict"], INCONCLUSIVE)
            rows.append({"dataset": ds, "preset": p, "aia_preset": st["mean_b"], "aia_mcil": st["mean_a"], "gain": st["diff"],
                         "ci_low": st["ci_low"], "ci_high": st["ci_high"], "n": st["n"], "verdict": v})
            findings.append(_finding(name, ds, f"mcil − {p} AIA", st, v))
            gains[p] = (st["diff"], v)
        helping = {p: d for p, (d, v) in gains.items() if v == "helps"}
        if helping:
            top = max(helping, key=helping.get)
            carriers.append(top)
            text.append(f"On {ds} (mcil AIA {ref.mean():.2f}, fusion rate {fr:.2f}), the largest gain is carried by the part "
                        f"{top} removes or changes: {helping[top]:+.2f}; helps: {', '.join(sorted(helping))}.")
        else:
            carriers.append(None)
            text.append(f"On {ds} (mcil AIA {ref.mean():.2f}, fusion rate {fr:.2f}), no preset is clearly below mcil.")
        text[-1] += " " + "; ".join(f"{p} {d:+.2f} ({v})" for p, (d, v) in gains.items()) + "."
    table = pd.DataFrame(rows)
    if carriers and all(c is not None and c == carriers[0] for c in carriers):
        verdict = f"{carriers[0]} (on every dataset)"
    elif any(c is not None for c in carriers):
        verdict = "differs by dataset: " + ", ".join(f"{ds}: {c or 'none'}" for ds, c in zip(sorted(sel["dataset"].unique()), carriers))
    else:
        verdict = "no single part shows a measurable gain"
    # figure
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(table["preset"].nunique(), 3) + 1.4))
    dss = sorted(table["dataset"].unique())
    palette = dict(zip(dss, sns.color_palette("husl", len(dss))))
    order = sorted(table["preset"].unique())
    for i, ds in enumerate(dss):
        sub = table[table["dataset"] == ds].set_index("preset").reindex(order)
        y = np.arange(len(order)) + (i - (len(dss) - 1) / 2) * 0.2
        xerr = np.vstack([(sub["gain"] - sub["ci_low"]).fillna(0).clip(lower=0), (sub["ci_high"] - sub["gain"]).fillna(0).clip(lower=0)])
        ax.errorbar(sub["gain"], y, xerr=xerr, fmt="o", capsize=3, color=palette[ds], label=ds)
    ax.axvline(0, color="grey", lw=0.8)
    for x in (-s.tolerance, s.tolerance):
        ax.axvline(x, color="grey", lw=0.5, ls=":")
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels(order)
    ax.set_xlabel("AIA gain of mcil over the preset (points)")
    ax.legend(frameon=False, fontsize="small")
    ax.set_title(f"What each part carries (mean, {s.conf} interval over seeds)")
    fig.tight_layout()
    t = table.copy()
    t["cell"] = [f"{fmt_ci(g, lo, hi, signed=True)} ({v})" for g, lo, hi, v in zip(t["gain"], t["ci_low"], t["ci_high"], t["verdict"])]
    wide = t.pivot(index="preset", columns="dataset", values="cell").fillna("–")
    wide.columns = [f"{c} mcil − preset" for c in wide.columns]
    wide.columns.name = None
    para = _paragraph(name, verdict, text, findings, len(sel))
    return StudyResult(name, table, wide, fig, para)


# ---------------------------------------------------------------------------------------------
# 6. Number of tasks and long sequences
# ---------------------------------------------------------------------------------------------

LONG_SPLIT = 50  # "past 50 tasks"


def study_tasks(data: StudyData, datasets: Sequence[str], s: StudySettings) -> StudyResult:
    """Accuracy, forgetting, parameters, routing and time against T, and late vs early tasks of long runs.

    For runs with T > 50: per seed, tasks 51..T against tasks 1..50 on new-task accuracy right
    after learning (plasticity: late − early, points), time per task (late / early) and the
    MIFE routing statistics. **Bottleneck** when plasticity is lower by more than the tolerance
    (interval below 0) or time per task grows by more than 50 % (interval of the ratio above
    1.5); **no bottleneck** when plasticity is equivalent or higher and the ratio's interval is
    below 1.5; else inconclusive.
    """
    name = "tasks"
    sel = _select(data.runs, datasets, ["mcil"], s.default_th, s.default_alpha)
    if sel.empty or sel.groupby("dataset")["T"].nunique().max() < 2:
        return _empty(name, datasets, "needs mcil runs at two or more T")
    tasks = data.tasks[data.tasks["run"].isin(set(sel["run"]))].copy() if not data.tasks.empty else pd.DataFrame()
    per_run = pd.DataFrame()
    if not tasks.empty:
        per_run = tasks.groupby("run").agg(
            params_added_per_task=("params_added", lambda x: pd.to_numeric(x.iloc[1:], errors="coerce").mean()),
            time_per_task=("time_s", "mean"),
            entropy_norm=("entropy_norm", "mean"),
            experts_active=("experts_active", lambda x: x.iloc[-1]),
        ).reset_index()
        sel = sel.merge(per_run, on="run", how="left")
    metrics = ["aia", "last", "forgetting", "params_added_per_task", "time_per_task", "entropy_norm", "experts_active"]
    summary = summarise_ci(sel, ["dataset", "T"], metrics, s.confidence)
    findings, text, trends = [], [], []
    for ds, g in summary[summary["metric"] == "aia"].groupby("dataset"):
        parts = [f"T={int(r.T)}: {fmt_ci(r.mean, r.ci_low, r.ci_high)}" for r in g.sort_values("T").itertuples()]
        Ts = sorted(int(t) for t in g["T"].unique())
        if len(Ts) < 2:
            text.append(f"AIA on {ds}: " + "; ".join(parts) + ".")
            continue
        gd = sel[sel["dataset"] == ds]
        st = compare(per_seed(gd[gd["T"] == Ts[-1]]), per_seed(gd[gd["T"] == Ts[0]]), s)
        findings.append(_finding(name, ds, f"AIA at T={Ts[-1]} − AIA at T={Ts[0]}", st))
        trends.append(f"{ds}: AIA at T={Ts[-1]} vs T={Ts[0]} {st['verdict']}")
        text.append(f"AIA on {ds}: " + "; ".join(parts) + f"; T={Ts[-1]} − T={Ts[0]} = {_fmt_cmp(st)} ({st['verdict']}).")
    verdict = "past 50 tasks: not run"
    long_runs = sel[sel["T"] > LONG_SPLIT]
    if not long_runs.empty and not tasks.empty:
        Tmax = int(long_runs["T"].max())
        lr = tasks[tasks["run"].isin(set(long_runs[long_runs["T"] == Tmax]["run"]))]
        early, late = lr[lr["task"] <= LONG_SPLIT], lr[lr["task"] > LONG_SPLIT]

        def by_seed(df: pd.DataFrame, col: str) -> pd.Series:
            return pd.to_numeric(df[col], errors="coerce").groupby(df["seed"]).mean().dropna()

        plast = compare(by_seed(late, "acc_new"), by_seed(early, "acc_new"), s)
        ratio = (by_seed(late, "time_s") / by_seed(early, "time_s")).dropna()
        r_m, r_lo, r_hi, r_n = _ci(ratio.tolist(), s.confidence)
        ent = compare(by_seed(late, "entropy_norm"), by_seed(early, "entropy_norm"), s)
        act = compare(by_seed(late, "experts_active"), by_seed(early, "experts_active"), s)
        added = compare(by_seed(late, "params_added"), by_seed(early[early["task"] > 1], "params_added"), s)
        ds = str(long_runs["dataset"].iloc[0])
        findings += [
            _finding(name, ds, f"T={Tmax}: new-task accuracy, tasks > {LONG_SPLIT} − tasks ≤ {LONG_SPLIT}", plast),
            _finding(name, ds, f"T={Tmax}: time per task, tasks > {LONG_SPLIT} / tasks ≤ {LONG_SPLIT}", None, "",
                     mean_a=r_m, diff=r_m, ci_low=r_lo, ci_high=r_hi, n=r_n),
            _finding(name, ds, f"T={Tmax}: normalised router entropy (eval), late − early", ent),
            _finding(name, ds, f"T={Tmax}: fraction of experts picked (eval), late − early", act),
            _finding(name, ds, f"T={Tmax}: parameters added per task, late − early", added),
        ]
        slow = r_n >= 2 and not math.isnan(r_lo) and r_lo > 1.5
        fast = r_n >= 2 and not math.isnan(r_hi) and r_hi < 1.5
        lost = _material_loss(plast, s.tolerance)
        kept = plast["verdict"] in (HIGHER, EQUIVALENT)
        verdict = "past 50 tasks: " + ("bottleneck" if (slow or lost) else ("no bottleneck" if (fast and kept) else INCONCLUSIVE))
        n_exp = lr.groupby("task")["n_experts"].mean()
        text.append(
            f"T={Tmax} on {ds} ({r_n} seeds), tasks {LONG_SPLIT + 1}–{Tmax} against tasks 1–{LONG_SPLIT}: "
            f"new-task accuracy {_fmt_cmp(plast)} points ({plast['verdict']}); time per task ×{fmt_ci(r_m, r_lo, r_hi)} "
            f"({by_seed(early, 'time_s').mean():.2f} s → {by_seed(late, 'time_s').mean():.2f} s); parameters added per task "
            f"{by_seed(early[early['task'] > 1], 'params_added').mean():,.0f} → {by_seed(late, 'params_added').mean():,.0f}; "
            f"learner parameters {pd.to_numeric(lr['learner_total']).groupby(lr['task']).mean().iloc[-1]:,.0f} after task {Tmax}"
            + (f" with {n_exp.iloc[-1]:.0f} experts per site" if n_exp.notna().any() else "")
            + f"; normalised router entropy {by_seed(early, 'entropy_norm').mean():.3f} → {by_seed(late, 'entropy_norm').mean():.3f}; "
            f"fraction of experts picked {by_seed(early, 'experts_active').mean():.3f} → {by_seed(late, 'experts_active').mean():.3f}."
        )
    verdict = "; ".join(trends + [verdict])
    # figure: summary against T, and per-task curves of every run (mean over seeds)
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.2))
    for ax, metric, ylabel in zip(axes[0], ["aia", "forgetting"], ["AIA / last (%)", "forgetting (points)"]):
        sub = summary[summary["metric"].isin([metric] + (["last"] if metric == "aia" else []))]
        sub = sub.assign(series=sub["dataset"] + " " + sub["metric"].astype(str))
        _errorbar_lines(ax, sub, "T", "series")
        Ts = sorted(sub["T"].unique())
        if Ts and max(Ts) / min(Ts) > 5:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(Ts)
        ax.set_xticklabels([str(int(t)) for t in Ts])
        ax.set_xlabel("T (tasks)")
        ax.set_ylabel(ylabel)
        ax.legend(frameon=False, fontsize="x-small")
    panels = [(axes[0][2], "acc", "accuracy on seen classes (%)"), (axes[1][0], "time_s", "time per task (s)"),
              (axes[1][1], "learner_total", "learner parameters"), (axes[1][2], "entropy_norm", "router entropy / log(#experts)")]
    if not tasks.empty:
        tasks["series"] = tasks["dataset"] + " T=" + tasks["T"].astype(str)
        for ax, col, ylabel in panels:
            d = tasks.assign(v=pd.to_numeric(tasks[col], errors="coerce")).dropna(subset=["v"])
            if d.empty:
                ax.text(0.5, 0.5, "not recorded", ha="center", transform=ax.transAxes)
            else:
                sns.lineplot(data=d, x="task", y="v", hue="series", errorbar=None, ax=ax, legend=col == "acc")
            ax.set_xlabel("task t")
            ax.set_ylabel(ylabel)
        if axes[0][2].get_legend() is not None:
            axes[0][2].legend(fontsize="x-small", frameon=False)
    fig.suptitle(f"Number of tasks (mcil; mean and {s.conf} interval over seeds; curves: mean over seeds)")
    fig.tight_layout()
    summary = summary.assign(T_label=[f"T={int(t)}" for t in summary["T"]])
    labels = {"aia": "AIA", "last": "last", "forgetting": "forgetting", "params_added_per_task": "params/task",
              "time_per_task": "s/task", "entropy_norm": "router H/log E", "experts_active": "experts used"}
    summary = summary.assign(row=summary["dataset"] + " " + summary["T_label"], col="")
    wide = _wide_ci(summary, "row", "col", labels=labels, row_name="dataset, T")
    if not wide.empty:
        wide.columns = [c.strip() for c in wide.columns]
    para = _paragraph(name, verdict, text, findings, len(sel))
    return StudyResult(name, summary, wide, fig, para)


# ---------------------------------------------------------------------------------------------
# 7. Modality absence
# ---------------------------------------------------------------------------------------------


def _absence_label(row: pd.Series) -> tuple[str, str, str, float]:
    """(condition label, modality, where, rate) of a run's missing_* settings."""
    vals = {k: float(row.get(c, 0.0) or 0.0) for k, c in MISSING.items()}
    nonzero = {k: v for k, v in vals.items() if v > 0}
    if not nonzero:
        return "none", "none", "", 0.0
    mods = {m for m, _ in nonzero}
    if len(mods) > 1:
        return ", ".join(f"{m} {w} {v:.0%}" for (m, w), v in sorted(nonzero.items())), "both", "mixed", max(nonzero.values())
    m = mods.pop()
    tr, te = vals[(m, "train")], vals[(m, "test")]
    if tr > 0 and te > 0 and tr == te:
        return f"{m} train+test {te:.0%}", m, "train+test", te
    if te > 0 and tr == 0:
        return f"{m} test {te:.0%}", m, "test", te
    if tr > 0 and te == 0:
        return f"{m} train {tr:.0%}", m, "train", tr
    return f"{m} train {tr:.0%}, test {te:.0%}", m, "mixed", max(tr, te)


def study_absence(data: StudyData, datasets: Sequence[str], s: StudySettings) -> StudyResult:
    """AIA per gate mode × absence condition (audio or image missing in part of test, or train+test).

    Graceful fallback (audio absent): with audio missing in 100 % of the test (or train+test)
    samples, a gate is **graceful** when its AIA is equivalent to or above the image-only model
    (gate never, no absence; never ignores audio), **not graceful** when lower by more than the
    tolerance, else inconclusive. Best gate (gate never, the reference, left out when two others
    ran): highest mean AIA over the absence conditions they all ran; compared with the runner-up,
    paired by seed.
    """
    name = "absence"
    cols = [c for c in MISSING.values() if c in data.runs]
    sel = _select(data.runs, datasets, ["mcil", "mcil-gate-sample"], alpha=s.default_alpha, free=cols, s=s)
    sel = sel[sel["th"].astype(str) != "adaptive"] if not sel.empty else sel
    if sel.empty or not cols:
        return _empty(name, datasets, "needs mcil runs with data.missing_* settings")
    labels = sel.apply(_absence_label, axis=1, result_type="expand")
    labels.columns = ["condition", "modality", "where", "rate"]
    sel = pd.concat([sel, labels], axis=1)
    sel = sel[sel["modality"] != "both"]
    if sel["condition"].nunique() < 2:
        return _empty(name, datasets, "needs mcil runs with and without a missing modality")
    sel["gate"] = _th_label(sel, s.default_th)
    # the gates run under absence, and gate never (the image-only reference)
    tested = set(sel.loc[sel["condition"] != "none", "gate"]) | {"never"}
    sel = sel[sel["gate"].isin(tested)]
    gates = _gate_order(sel["gate"])
    cond_order = ["none"] + sorted((c for c in sel["condition"].unique() if c != "none"),
                                   key=lambda c: (c.split()[0], c.split()[1], float(c.split()[-1].rstrip("%"))))
    summary = summarise_ci(sel, ["dataset", "gate", "condition"], ["aia", "last", "fusion_rate"], s.confidence)
    findings, text, graceful, winners = [], [], {}, []
    for ds, g in sel.groupby("dataset"):
        image_only = per_seed(g[(g["gate"] == "never") & (g["condition"] == "none")])
        for gate in gates:
            gg = g[g["gate"] == gate]
            ref = per_seed(gg[gg["condition"] == "none"])
            parts = []
            for where in ("test", "train+test"):
                full = gg[(gg["modality"] == "audio") & (gg["where"] == where) & (gg["rate"] == 1.0)]
                if full.empty:
                    continue
                drop = compare(per_seed(full), ref, s)
                findings.append(_finding(name, ds, f"{gate}: audio {where} 100 % − no absence AIA", drop))
                part = f"audio missing in {where} 100 %: {drop['mean_a']:.2f} ({_fmt_cmp(drop)} vs none)"
                if len(image_only) and gate != "never":
                    st = compare(per_seed(full), image_only, s)
                    v = "graceful" if st["verdict"] in (HIGHER, EQUIVALENT) else (
                        "not graceful" if _material_loss(st, s.tolerance) else INCONCLUSIVE)
                    graceful.setdefault(gate, []).append(v)
                    findings.append(_finding(name, ds, f"{gate}: audio {where} 100 % − image only (never, none) AIA", st, v))
                    part += f", vs image only {_fmt_cmp(st)}: {v}"
                parts.append(part)
            if parts:
                text.append(f"{ds}, gate {gate} (no absence {ref.mean():.2f}): " + "; ".join(parts) + ".")
        # best gate over the absence conditions (mean over conditions per seed); never is the reference
        absent = g[g["condition"] != "none"]
        ranked_gates = [x for x in gates if x != "never"] if len([x for x in gates if x != "never"]) >= 2 else gates
        common = set.intersection(*[set(absent[absent["gate"] == x]["condition"]) for x in ranked_gates
                                    if (absent["gate"] == x).any()]) if not absent.empty else set()
        scores = {}
        for gate in ranked_gates:
            sub = absent[(absent["gate"] == gate) & absent["condition"].isin(common)]
            if not sub.empty:
                scores[gate] = sub.groupby("seed")["aia"].mean()
        if len(scores) >= 2:
            ranked = sorted(scores, key=lambda x: scores[x].mean(), reverse=True)
            st = compare(scores[ranked[0]], scores[ranked[1]], s)
            findings.append(_finding(name, ds, f"best gate under absence {ranked[0]} − runner-up {ranked[1]} (mean AIA over "
                                               f"{len(common)} conditions)", st))
            text.append(f"Over the {len(common)} absence conditions run by every gate, {ranked[0]} has the highest mean AIA "
                        f"({scores[ranked[0]].mean():.2f}); against {ranked[1]}: {_fmt_cmp(st)} ({st['verdict']}).")
            winners.append(ranked[0] if st["verdict"] == HIGHER else None)
        else:
            winners.append(None)
    flat = [v for vs in graceful.values() for v in vs]
    if flat and all(v == "graceful" for v in flat):
        fb = "graceful for every gate"
    elif "not graceful" in flat:
        fb = "not graceful for " + ", ".join(sorted(g for g, vs in graceful.items() if "not graceful" in vs))
    else:
        fb = INCONCLUSIVE
    best_gate = winners[0] if winners and all(w is not None and w == winners[0] for w in winners) else None
    verdict = f"fallback: {fb}; best gate: {best_gate or 'no clear winner'}"
    # figure: AIA against the rate, one panel per (modality, where), one line per gate
    panels = [(m, w) for m in ("audio", "image") for w in ("test", "train+test")
              if ((sel["modality"] == m) & (sel["where"] == w)).any()]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.2 * max(len(panels), 1), 3.6), squeeze=False, sharey=True)
    palette = dict(zip(gates, sns.color_palette("husl", len(gates))))
    aia = summary[summary["metric"] == "aia"]
    rates = sel[["condition", "modality", "where", "rate"]].drop_duplicates().set_index("condition")
    for ax, (m, w) in zip(axes.flat, panels):
        conds = ["none"] + list(rates[(rates["modality"] == m) & (rates["where"] == w)].index)
        sub = aia[aia["condition"].isin(conds)].copy()
        sub["rate"] = sub["condition"].map(lambda c: 0.0 if c == "none" else rates.loc[c, "rate"]) * 100
        _errorbar_lines(ax, sub, "rate", "gate", [x for x in gates if x in set(sub["gate"])], dodge=1.2, palette=palette)
        ax.set_xlabel(f"{m} missing in {w} samples (%)")
        ax.set_title(f"{m} absent ({w})")
        ax.set_xticks(sorted(sub["rate"].unique()))
    axes.flat[0].set_ylabel("AIA (%)")
    axes.flat[0].legend(title="gate", frameon=False, fontsize="small")
    fig.suptitle(f"Modality absence (mcil; mean, {s.conf} interval over seeds)")
    fig.tight_layout()
    summary = summary.assign(row=summary["condition"])
    wide = _wide_ci(summary, "condition", "gate", ["aia"], {"aia": "AIA"}, row_order=cond_order, row_name="missing")
    para = _paragraph(name, verdict, text, findings, len(sel))
    return StudyResult(name, summary, wide, fig, para)


# ---------------------------------------------------------------------------------------------
# 8. Metric verification: M1/M2 against standard metrics
# ---------------------------------------------------------------------------------------------


def _tau_verdict(tau: float, lo: float, hi: float) -> str:
    """agree: τ > 0 and its interval above 0; disagree: τ < 0 and the interval below 0; else inconclusive.

    With few seeds a percentile bootstrap can leave τ itself outside its interval (ties, two-valued
    resamples); such a pair is inconclusive.
    """
    if any(math.isnan(x) for x in (tau, lo, hi)):
        return INCONCLUSIVE
    if tau > 0 and lo > 0:
        return "agree"
    if tau < 0 and hi < 0:
        return "disagree"
    return INCONCLUSIVE


def _metric_source(data: StudyData, datasets: Sequence[str], s: StudySettings) -> tuple[pd.DataFrame, str]:
    """The default pipeline's main-setting runs when they rank three or more methods, else the check runs."""
    main = data.main_runs
    if not main.empty:
        m = main[(main["th"].astype(str) == str(s.main_th)) & np.isclose(main["alpha"].astype(float), s.main_alpha)]
        ok = [key for key, g in m.groupby(["dataset", "T"]) if g["method"].nunique() >= 3] if not m.empty else []
        if ok:
            keep = pd.Series(False, index=m.index)
            for ds, T in ok:
                keep |= (m["dataset"] == ds) & (m["T"] == T)
            return m[keep].copy(), "the default pipeline's main-setting runs (results/runs)"
    sel = _select(data.runs, datasets, None, s.default_th, s.default_alpha, s=s)
    return sel, "the check runs"


def metric_examination(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows (``kind = "examination"``) that show where the paper's M1/M2 lose their information.

    On generated L2-normalised features (:func:`mcil.metrics.ours.nmi_degeneracy`, D = 128 and 512):
    the official NMI of x with itself, with an independent y and with −x. From the runs (when they
    have the columns): the spread of the fusion half ½·(½·NMI_v + ½·NMI_a) across runs; M1 − AIA/2
    and the forgetting weight w = (1/T) Σ (1 − s_t) of each variant (M1 − AIA/2 ≤ 50·w).
    """
    from mcil.metrics.ours import nmi_degeneracy

    rows: list[dict[str, Any]] = []
    for D in (128, 512):
        r = nmi_degeneracy(D=D, B=256, seed=0)
        for key, what in (("nmi_self", "NMI(x, x)"), ("nmi_independent", "NMI(x, independent y)"),
                          ("nmi_negated", "NMI(x, −x)"), ("cka_independent", "CKA ours (x, independent y)")):
            rows.append({"kind": "examination", "dataset": "generated", "T": 0, "a": f"{what}, D = {D}", "b": "",
                         "value": r[key], "ci_low": math.nan, "ci_high": math.nan, "n": int(r["B"]), "verdict": ""})

    def num(col: str) -> pd.Series:
        return pd.to_numeric(runs[col], errors="coerce") if col in runs else pd.Series(math.nan, index=runs.index)

    for variant in ("official", "full"):
        half = 0.25 * (num(f"paper.{variant}.nmi_v") + num(f"paper.{variant}.nmi_a"))
        if half.notna().any():
            rows.append({"kind": "examination", "dataset": "runs", "T": 0, "a": f"M2 fusion half ({variant})",
                         "b": "", "value": float(half.mean()), "ci_low": float(half.min()),
                         "ci_high": float(half.max()), "n": int(half.notna().sum()), "verdict": "min–max over runs"})
        gap = num(f"paper.{variant}.m1") - num("aia") / 2
        if gap.notna().any():
            rows.append({"kind": "examination", "dataset": "runs", "T": 0, "a": f"M1 − AIA/2 ({variant})", "b": "",
                         "value": float(gap.mean()), "ci_low": float(gap.min()), "ci_high": float(gap.max()),
                         "n": int(gap.notna().sum()), "verdict": "min–max over runs"})
        w = num(f"paper.ours.m1_weight_{variant}")
        if w.notna().any():
            rows.append({"kind": "examination", "dataset": "runs", "T": 0, "a": f"forgetting weight w ({variant})",
                         "b": "", "value": float(w.mean()), "ci_low": float(w.min()), "ci_high": float(w.max()),
                         "n": int(w.notna().sum()), "verdict": "min–max over runs"})
    return rows


def study_metrics(data: StudyData, datasets: Sequence[str], s: StudySettings) -> StudyResult:
    """Kendall τ between method rankings by M1/M2 (both variants) and by AIA, last, −forgetting.

    Per (dataset, T): methods are ranked by their mean over seeds; τ-b with a percentile
    bootstrap interval over seeds. A pair **agrees** when τ and its interval lie above 0, **disagrees**
    when both lie below 0, else inconclusive. How much M1/M2 move between the official (one batch) and the
    full-test-set variant: full − official per run (mean over seeds per method) and τ between the
    two rankings.
    """
    name = "metrics"
    runs, source = _metric_source(data, datasets, s)
    if runs.empty:
        return _empty(name, datasets, "no runs to rank")
    runs = runs.copy()
    if "forgetting" in runs:
        runs["neg_forgetting"] = -pd.to_numeric(runs["forgetting"], errors="coerce")
    if "forgetting_beyond_zs" in runs and pd.to_numeric(runs["forgetting_beyond_zs"], errors="coerce").notna().any():
        runs["neg_forgetting_zs"] = -pd.to_numeric(runs["forgetting_beyond_zs"], errors="coerce")
    rows, findings, text, verdicts = [], [], [], []
    all_pairs = [(p, q) for p in PAPER_METRICS for q in STANDARD_METRICS] + [
        ("paper.official.m1", "paper.full.m1"), ("paper.official.m2", "paper.full.m2")]
    for (ds, T), g in runs.groupby(["dataset", "T"]):
        if g["method"].nunique() < 3:
            continue
        for a, b in all_pairs:
            if a not in g or b not in g:
                continue
            if not (pd.to_numeric(g[a], errors="coerce").notna().any() and pd.to_numeric(g[b], errors="coerce").notna().any()):
                continue  # a metric no run has (e.g. the posterior M2 before the trainer records posteriors)
            values = {}
            for method, gm in g.groupby("method"):
                xa, xb = per_seed(gm, a), per_seed(gm, b)
                common = sorted(set(xa.index) & set(xb.index))
                if common:
                    values[method] = (xa.loc[common].tolist(), xb.loc[common].tolist())
            tau, lo, hi = bootstrap_tau(values, s.bootstrap, s.confidence, s.seed)
            v = _tau_verdict(tau, lo, hi)
            la = PAPER_METRICS.get(a, a)
            lb = STANDARD_METRICS.get(b, PAPER_METRICS.get(b, b))
            rows.append({"kind": "tau", "dataset": ds, "T": int(T), "a": la, "b": lb, "value": tau, "ci_low": lo,
                         "ci_high": hi, "n": len(values), "verdict": v})
            findings.append(_finding(name, ds, f"T={int(T)}: Kendall τ({la}, {lb}) over {len(values)} methods", None, v,
                                     diff=tau, ci_low=lo, ci_high=hi, n=len(values)))
            if b in STANDARD_METRICS:
                verdicts.append(v)
        for m in ("m1", "m2"):
            off, full = f"paper.official.{m}", f"paper.full.{m}"
            if off not in g or full not in g:
                continue
            d = (pd.to_numeric(g[full], errors="coerce") - pd.to_numeric(g[off], errors="coerce"))
            shift = g.assign(shift=d).dropna(subset=["shift"])
            if shift.empty:
                continue
            per_method = shift.groupby("method")["shift"].mean()
            mean, lo, hi, n = _ci(shift.groupby("seed")["shift"].mean().tolist(), s.confidence)
            rows.append({"kind": "shift", "dataset": ds, "T": int(T), "a": f"{m.upper()} full − official", "b": "",
                         "value": mean, "ci_low": lo, "ci_high": hi, "n": n, "verdict": "",
                         "max_abs": float(per_method.abs().max())})
            findings.append(_finding(name, ds, f"T={int(T)}: {m.upper()} full − official (mean over methods)", None, "",
                                     diff=mean, ci_low=lo, ci_high=hi, n=n, max_abs=float(per_method.abs().max())))
    if not rows:
        return _empty(name, datasets, "needs three or more methods with M1/M2 on one dataset")
    exam = metric_examination(runs)
    table = pd.DataFrame(rows + exam)
    n_agree = verdicts.count("agree")
    n_dis = verdicts.count("disagree")
    verdict = (f"{n_agree} of {len(verdicts)} paper/standard pairs agree, {n_dis} disagree, "
               f"{len(verdicts) - n_agree - n_dis} inconclusive")
    text.append(f"Source: {source}.")
    for (ds, T), g in table[table["kind"] != "examination"].groupby(["dataset", "T"]):
        taus = g[g["kind"] == "tau"]
        main_pairs = taus[taus["b"].isin(["AIA"])]
        parts = [f"τ({r.a}, AIA) = {fmt_ci(r.value, r.ci_low, r.ci_high)} ({r.verdict})" for r in main_pairs.itertuples()]
        var = taus[taus["b"].str.contains("full", na=False)]
        parts += [f"τ({r.a}, {r.b}) = {fmt_ci(r.value, r.ci_low, r.ci_high)}" for r in var.itertuples()]
        sh = g[g["kind"] == "shift"]
        parts += [f"{r.a} = {fmt_ci(r.value, r.ci_low, r.ci_high, 3, signed=True)} (largest per method {r.max_abs:.3f})"
                  for r in sh.itertuples()]
        text.append(f"{ds} T={int(T)} ({int(taus['n'].max()) if not taus.empty else 0} methods): " + "; ".join(parts) + ".")
    text.append("M1 contains ½·AIA by construction, so part of its agreement with AIA is built in.")
    ex = {r["a"]: r for r in exam}
    gen = [f"{k.rsplit(', D', 1)[0]} = {ex[k]['value']:.4f}" for k in ex if k.endswith("D = 128") and "CKA" not in k]
    if gen:
        text.append("Examination on generated L2-normalised features (D = 128, B = 256): " + ", ".join(gen)
                    + f" (D = 512: {ex['NMI(x, x), D = 512']['value']:.4f}): the paper's NMI cannot tell a feature from an "
                    "independent one, so M2's fusion half is ≈ 0.50 for every method; our CKA gives "
                    f"{ex['CKA ours (x, independent y), D = 128']['value']:+.3f} for the independent pair and 1 for x and −x.")
    for key in ("M2 fusion half (official)", "M2 fusion half (full)", "M1 − AIA/2 (official)", "M1 − AIA/2 (full)",
                "forgetting weight w (official)", "forgetting weight w (full)"):
        if key in ex:
            r = ex[key]
            text.append(f"{key} over {r['n']} runs: mean {r['value']:.4f} (min {r['ci_low']:.4f}, max {r['ci_high']:.4f}).")
    vs_aia = table[(table["kind"] == "tau") & (table["b"] == "AIA")]
    differ = [f"{r.a} ({r.dataset} T={int(r.T)}: {r.verdict})" for r in vs_aia.itertuples() if r.verdict != "agree"]
    text.append("Rank methods differently from AIA (τ not above 0 with its interval): "
                + (", ".join(differ) if differ else "none") + ".")
    # figure: τ heatmap per (dataset, T)
    tau = table[table["kind"] == "tau"]
    keys = sorted({(d, t) for d, t in zip(tau["dataset"], tau["T"])})
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(6.4 * max(len(keys), 1), 3.8), squeeze=False)
    for ax, (ds, T) in zip(axes.flat, keys):
        sub = tau[(tau["dataset"] == ds) & (tau["T"] == T) & tau["b"].isin(list(STANDARD_METRICS.values()))]
        if sub.empty:
            ax.axis("off")
            continue
        mat = sub.pivot(index="a", columns="b", values="value").reindex(
            index=[v for v in PAPER_METRICS.values() if v in set(sub["a"])],
            columns=[v for v in STANDARD_METRICS.values() if v in set(sub["b"])])
        ann = sub.assign(t=[f"{v:.2f}\n[{lo:.2f}, {hi:.2f}]" if not math.isnan(lo) else (f"{v:.2f}" if not math.isnan(v) else "–")
                            for v, lo, hi in zip(sub["value"], sub["ci_low"], sub["ci_high"])]
                         ).pivot(index="a", columns="b", values="t").reindex(index=mat.index, columns=mat.columns)
        sns.heatmap(mat.astype(float), annot=ann.to_numpy(), fmt="", vmin=-1, vmax=1, cmap="vlag", ax=ax,
                    cbar_kws={"label": "Kendall τ"})
        ax.set_title(f"{ds} T={T}")
        ax.set_xlabel("standard metric")
        ax.set_ylabel("paper metric / ours")
        ax.set_yticklabels(ax.get_yticklabels(), rotation=0)
    fig.suptitle(f"Rank agreement of M1/M2 with standard metrics (τ, {s.conf} bootstrap interval over seeds)")
    fig.tight_layout()
    t = table.copy()
    t["pair"] = [f"{a} vs {b}" if b else a for a, b in zip(t["a"], t["b"])]
    t["cell"] = [fmt_ci(v, lo, hi, 4 if k == "examination" else 3) + (f" ({vd})" if vd else "")
                 for v, lo, hi, vd, k in zip(t["value"], t["ci_low"], t["ci_high"], t["verdict"], t["kind"])]
    t["col"] = [f"{d} T={int(T)}" if k != "examination" else ("generated features" if d == "generated" else "all runs")
                for d, T, k in zip(t["dataset"], t["T"], t["kind"])]
    wide = t.pivot_table(index="pair", columns="col", values="cell", aggfunc="first").reindex(list(dict.fromkeys(t["pair"]))).fillna("–")
    wide.index.name = "pair"
    wide.columns.name = None
    para = _paragraph(name, verdict, text, findings, len(runs))
    return StudyResult(name, table, wide, fig, para)


# ---------------------------------------------------------------------------------------------
# Registry, rendering, CLI
# ---------------------------------------------------------------------------------------------

STUDY_INFO: dict[str, tuple[str, str]] = {
    "hyperparams": ("Learning rate × batch size",
                    "How sensitive is MCIL to the learning rate and batch size, which the paper does not report?"),
    "threshold-noise": ("Masking threshold under noise",
                        "Is a fixed th = 0.8 robust as the share of corrupted samples grows, and where does each th break?"),
    "adaptive-threshold": ("Adaptive threshold",
                           "Can the hand-set th be replaced by a quantile of r estimated on the current task?"),
    "alpha": ("Loss weight α", "Does L_MI help (α < 1 vs α = 1), and is α = 0.7 special?"),
    "components": ("Components", "Which part of the method carries the gain (each ablation preset against the full method)?"),
    "tasks": ("Number of tasks",
              "How do accuracy, forgetting, parameters, routing and time per task behave as T grows; "
              "does MIFE hit a bottleneck past 50 tasks?"),
    "absence": ("Modality absence",
                "Does the gate fall back gracefully when audio (or image) is missing, and which gate handles absence best?"),
    "metrics": ("Metric verification",
                "Do M1/M2 rank methods like AIA, last accuracy and forgetting do, and how much do they move between the "
                "official (one batch) and the full-test-set variant?"),
}

STUDIES: dict[str, Callable[[StudyData, Sequence[str], StudySettings], StudyResult]] = {
    "hyperparams": study_hyperparams,
    "threshold-noise": study_threshold_noise,
    "adaptive-threshold": study_adaptive_threshold,
    "alpha": study_alpha,
    "components": study_components,
    "tasks": study_tasks,
    "absence": study_absence,
    "metrics": study_metrics,
}


def run_studies(data: StudyData, plan: Mapping[str, Sequence[str]], s: StudySettings,
                kinds: Mapping[str, str] | None = None) -> list[StudyResult]:
    """Run each study of ``plan`` (name → datasets) with the function of its kind (``kinds[name]``, else
    the name itself; e.g. a second ``tasks`` study on other datasets). Unknown kinds raise ValueError."""
    out = []
    for name, datasets in plan.items():
        kind = (kinds or {}).get(name, name)
        if kind not in STUDIES:
            raise ValueError(f"study {name!r}: unknown kind {kind!r}; known: {', '.join(STUDIES)}")
        r = STUDIES[kind](data, list(datasets), s)
        if name != kind:
            r.name = name
            r.paragraph["study"] = name
            r.paragraph["title"] = f"{r.paragraph['title']} ({name})"
            for f in r.paragraph["findings"]:
                f["study"] = name
        out.append(r)
        log.info("study %s: %s", name, r.paragraph["verdict"])
    return out


def _code_warning(runs: pd.DataFrame) -> list[str]:
    if runs.empty or "code_version" not in runs:
        return []
    versions = sorted(runs["code_version"].astype(str).unique())
    lines = []
    if len(versions) > 1:
        lines.append(f"> **Warning: mixed code versions.** The check runs come from {len(versions)} versions of the code "
                     f"({', '.join(f'`{v}`' for v in versions)}); delete the older result.json files and re-run.")
    dirty = int(runs["code_version"].astype(str).str.endswith("+dirty").sum())
    if dirty:
        lines.append(f"> Note: {dirty} of {len(runs)} runs were made from a working tree with uncommitted changes.")
    return lines


def render_claims(results: Sequence[StudyResult], data: StudyData, s: StudySettings) -> str:
    """The text of results/checks/claims.md."""
    conf = s.conf
    out = [
        "# Validation studies",
        "",
        f"Generated by `mcil studies` from {len(data.runs)} check runs (results/checks/runs); do not edit by hand. "
        f"Main setting of the check runs: th = {s.default_th}, α = {s.default_alpha:g}; grids and datasets: "
        "config/checks.yaml; how to read each study: docs/studies.md.",
        "",
        f"- Comparisons pair two settings by seed: A − B with its {conf} t-interval over seeds, written "
        "`diff [low, high] (n = seeds)`. **higher** / **lower**: the interval lies above / below 0; "
        f"**equivalent**: it lies inside ±{s.tolerance:g} AIA points; otherwise **inconclusive** (the seeds disagree).",
        "- Each study's answer combines its comparisons as stated in its paragraph; an answer that rests on an "
        "inconclusive comparison is inconclusive.",
        f"- Kendall τ: rankings of methods by their mean over seeds; {conf} percentile bootstrap interval "
        f"({s.bootstrap} resamples of each method's seeds).",
        "",
    ]
    code = _code_warning(data.runs)
    if code:
        out += code + [""]
    out += ["| Study | Answer | Runs |", "|---|---|---|"]
    for r in results:
        p = r.paragraph
        out.append(f"| [{p['title']}](#{_anchor(p['title'])}) | {p['verdict']} | {p['n_runs']} |")
    out.append("")
    for r in results:
        p = r.paragraph
        out += [f"## {p['title']}", "", f"**Question.** {p['question']}", "", f"**Answer: {p['verdict']}.** {p['text']}", "",
                f"Table: `tables/{r.name}.md` (CSV, LaTeX alongside); figure: `figures/checks/{r.name}.png`.", ""]
    return "\n".join(out)


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


def write_studies(results: Sequence[StudyResult], data: StudyData, out_dir: str | Path, figures_dir: str | Path,
                  s: StudySettings) -> list[Path]:
    """all_runs.csv, all_tasks.csv, tables/<study>.{csv,md,tex}, <figures>/<study>.{png,pdf}, claims.md, claims.csv."""
    out_dir, figures_dir = Path(out_dir), Path(figures_dir)
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    written = []
    atomic_write_text(out_dir / "all_runs.csv", data.runs.to_csv(index=False))
    atomic_write_text(out_dir / "all_tasks.csv", data.tasks.to_csv(index=False))
    written += [out_dir / "all_runs.csv", out_dir / "all_tasks.csv"]
    findings = []
    sns.set_theme(context="paper", style="whitegrid")
    for r in results:
        title = r.paragraph["title"]
        paths = [out_dir / "tables" / f"{r.name}.{ext}" for ext in ("csv", "md", "tex")]
        atomic_write_text(paths[0], r.table.to_csv(index=False))
        atomic_write_text(paths[1], to_markdown(r.wide, f"{title} ({s.conf} interval over seeds)"))
        atomic_write_text(paths[2], to_latex(r.wide, f"{title} ({s.conf} interval over seeds)", f"tab:check-{r.name}"))
        written += paths
        written += save(r.figure, figures_dir, r.name)
        findings += r.paragraph["findings"]
    cols = ["study", "dataset", "finding", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "n", "verdict"]
    frame = pd.DataFrame(findings)
    frame = frame[[c for c in cols if c in frame] + [c for c in frame.columns if c not in cols]] if not frame.empty else pd.DataFrame(columns=cols)
    atomic_write_text(out_dir / "claims.csv", frame.to_csv(index=False))
    atomic_write_text(out_dir / "claims.md", render_claims(results, data, s))
    written += [out_dir / "claims.csv", out_dir / "claims.md"]
    return written


def _pairs(items: Sequence[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"{what}: expected NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", nargs="+", default=["results/checks/runs"], help="folders of the check runs")
    p.add_argument("--main-runs", nargs="*", default=["results/runs"],
                   help="the default pipeline's runs (metric study: used when they rank three or more methods)")
    p.add_argument("--out", default="results/checks", help="claims.md, claims.csv, all_runs.csv, tables/ go here")
    p.add_argument("--figures", default="figures/checks", help="figure folder (PNG + PDF)")
    p.add_argument("--study", nargs="*", default=None, metavar="NAME[:KIND]=DS1,DS2",
                   help="studies to report and their datasets (default: every kind on every dataset); KIND (default: "
                        f"NAME) is one of {', '.join(STUDIES)}")
    p.add_argument("--noise-levels", nargs="*", default=[], metavar="DATASET=LEVEL",
                   help="corruption level of each dataset (threshold and adaptive studies)")
    p.add_argument("--task-counts", nargs="*", default=[], metavar="DATASET=T",
                   help="each dataset's main T (every study but the T study reads only those runs; default: the "
                        "T most runs of the dataset have)")
    p.add_argument("--default-th", default="0.8", help="threshold label of the check runs' main setting")
    p.add_argument("--default-alpha", type=float, default=0.7, help="α of the check runs' main setting")
    p.add_argument("--main-th", default="0.8", help="threshold label of the default pipeline's main setting")
    p.add_argument("--main-alpha", type=float, default=0.7, help="α of the default pipeline's main setting")
    p.add_argument("--tolerance", type=float, default=2.0, help="± AIA points inside which a difference is negligible")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--bootstrap", type=int, default=2000, help="resamples of the Kendall τ intervals")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")


def run_cli(args: argparse.Namespace) -> int:
    from mcil.errors import UserError

    try:
        levels = {k: float(v) for k, v in _pairs(args.noise_levels, "--noise-levels").items()}
        task_counts = {k: int(v) for k, v in _pairs(args.task_counts, "--task-counts").items()}
        plan_raw = _pairs(args.study, "--study") if args.study is not None else None
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise UserError(str(exc)) from None
    data = load_study_data(args.runs, args.main_runs or [])
    all_datasets = sorted(data.runs["dataset"].unique()) if not data.runs.empty else []
    plan, kinds = {}, {}
    for key, value in (plan_raw if plan_raw is not None else {k: ",".join(all_datasets) for k in STUDIES}).items():
        name, _, kind = key.partition(":")
        plan[name] = [d for d in value.split(",") if d]
        kinds[name] = kind or name
    unknown = sorted({k for k in kinds.values() if k not in STUDIES})
    if unknown:
        raise UserError(f"--study: unknown kind {', '.join(unknown)}; known: {', '.join(STUDIES)}")
    th = str(args.default_th)
    th = f"{float(th):g}" if _is_number(th) else th
    main_th = str(args.main_th)
    main_th = f"{float(main_th):g}" if _is_number(main_th) else main_th
    s = StudySettings(default_th=th, default_alpha=args.default_alpha, main_th=main_th, main_alpha=args.main_alpha,
                      tolerance=args.tolerance, confidence=args.confidence, bootstrap=args.bootstrap, seed=args.seed,
                      noise_levels=levels, task_counts=task_counts)
    results = run_studies(data, plan, s, kinds)
    write_studies(results, data, args.out, args.figures, s)
    log.info("wrote %d studies into %s and %s", len(results), args.out, args.figures)
    return 0
