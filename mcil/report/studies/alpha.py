"""Study ``alpha``: question, answer rule and figure in :func:`study_alpha`; how to read it: docs/studies.md."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd

from mcil.report.studies.common import (
    _empty,
    _errorbar_lines,
    _finding,
    _fmt_cmp,
    _paragraph,
    _per_dataset,
    _wide_ci,
    compare,
    per_seed,
    summarise_ci,
)
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


@register_study("alpha", title="Loss weight α",
                question="Does L_MI help (α < 1 vs α = 1), and is α = 0.7 special?")
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
