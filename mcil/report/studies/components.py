"""Study ``components``: question, answer rule and figure in :func:`study_components`; how to read it: docs/studies.md."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from mcil.report.stats import fmt_ci
from mcil.report.studies.common import _empty, _finding, _paragraph, compare, per_seed
from mcil.report.studies.data import (
    EQUIVALENT,
    HIGHER,
    INCONCLUSIVE,
    LOWER,
    StudyData,
    StudyResult,
    StudySettings,
    _select,
)
from mcil.report.studies.registry import register_study


@register_study("components", title="Components",
                question="Which part of the method carries the gain (each ablation preset against the full method)?")
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
