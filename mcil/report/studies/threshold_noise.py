"""Study ``threshold-noise``: question, answer rule and figure in :func:`study_threshold_noise`; how to read it: docs/studies.md."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from mcil.report.studies.common import (
    _empty,
    _errorbar_lines,
    _finding,
    _gate_order,
    _material_loss,
    _paragraph,
    _th_label,
    _wide_ci,
    compare,
    per_seed,
    summarise_ci,
)
from mcil.report.studies.data import EQUIVALENT, INCONCLUSIVE, StudyData, StudyResult, StudySettings, _select
from mcil.report.studies.registry import register_study


def _noise_frame(runs: pd.DataFrame, s: StudySettings) -> pd.DataFrame:
    runs = runs.copy()
    runs["noise"] = runs["dataset"].map(lambda d: s.noise_levels.get(d, math.nan)).astype(float)
    return runs.dropna(subset=["noise"])


@register_study("threshold-noise", title="Masking threshold under noise",
                question="Is a fixed th = 0.8 robust as the share of corrupted samples grows, and where does each th break?")
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
