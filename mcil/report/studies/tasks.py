"""Study ``tasks``: question, answer rule and figure in :func:`study_tasks`; how to read it: docs/studies.md."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import matplotlib.ticker
import pandas as pd
import seaborn as sns

from mcil.report.stats import fmt_ci, mean_ci_n
from mcil.report.studies.common import (
    _empty,
    _errorbar_lines,
    _finding,
    _fmt_cmp,
    _material_loss,
    _paragraph,
    _wide_ci,
    compare,
    per_seed,
    summarise_ci,
)
from mcil.report.studies.data import EQUIVALENT, HIGHER, INCONCLUSIVE, StudyData, StudyResult, StudySettings, _select
from mcil.report.studies.registry import register_study

LONG_SPLIT = 50  # "past 50 tasks"


@register_study("tasks", title="Number of tasks",
                question="How do accuracy, forgetting, parameters, routing and time per task behave as T grows; "
              "does MIFE hit a bottleneck past 50 tasks?")
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
        r_m, r_lo, r_hi, r_n = mean_ci_n(ratio.tolist(), s.confidence)
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
