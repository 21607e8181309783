"""Helpers shared by the studies: paired comparisons and their verdicts, per-seed values, interval
summaries, findings and paragraphs, and the plotting and table helpers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from mcil.grid import th_label
from mcil.report.plots import placeholder
from mcil.report.stats import fmt_ci, mean_ci_n, paired_stats
from mcil.report.studies.data import EQUIVALENT, HIGHER, INCONCLUSIVE, LOWER, StudyResult, StudySettings
from mcil.report.studies.registry import STUDY_INFO
from mcil.report.tables import th_order


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
            mean, lo, hi, n = mean_ci_n(per_seed(g, m).tolist(), confidence)
            if n:
                rows.append({**dict(zip(by, key)), "metric": m, "mean": mean, "ci_low": lo, "ci_high": hi, "n": n})
    return pd.DataFrame(rows, columns=cols)


def _fmt_cmp(st: dict[str, Any], digits: int = 2) -> str:
    return f"{fmt_ci(st['diff'], st['ci_low'], st['ci_high'], digits, signed=True)} (n = {st['n']})"


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
        return th_label({"gate": "sample", "th": th}, default_th) if method == "mcil-gate-sample" else th
    return pd.Series([one(m, str(t)) for m, t in zip(runs["method"], runs["th"])], index=runs.index, dtype=object)


def _gate_order(labels: Iterable[str]) -> list[str]:
    labels = list(dict.fromkeys(labels))
    words = [x for x in th_order([x for x in labels if not x.startswith("sample")])]
    return words + sorted(x for x in labels if x.startswith("sample"))


def _is_number(text: Any) -> bool:
    try:
        float(str(text))
    except ValueError:
        return False
    return True
