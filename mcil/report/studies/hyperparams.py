"""Study ``hyperparams``: question, answer rule and figure in :func:`study_hyperparams`; how to read it: docs/studies.md."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from mcil.report.studies.common import _empty, _finding, _fmt_cmp, _paragraph, _wide_ci, compare, per_seed, summarise_ci
from mcil.report.studies.data import (
    BATCH,
    EQUIVALENT,
    HIGHER,
    INCONCLUSIVE,
    LR,
    StudyData,
    StudyResult,
    StudySettings,
    _select,
    base_values,
)
from mcil.report.studies.registry import register_study


@register_study("hyperparams", title="Learning rate × batch size",
                question="How sensitive is MCIL to the learning rate and batch size, which the paper does not report?")
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
