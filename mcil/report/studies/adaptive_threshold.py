"""Study ``adaptive-threshold``: question, answer rule and figure in :func:`study_adaptive_threshold`; how to read it: docs/studies.md."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from mcil.report.studies.common import (
    _empty,
    _errorbar_lines,
    _finding,
    _fmt_cmp,
    _is_number,
    _material_loss,
    _paragraph,
    _wide_ci,
    compare,
    per_seed,
    summarise_ci,
)
from mcil.report.studies.data import (
    EQUIVALENT,
    HIGHER,
    INCONCLUSIVE,
    QUANTILE,
    StudyData,
    StudyResult,
    StudySettings,
    _select,
    at_base,
)
from mcil.report.studies.registry import register_study
from mcil.report.studies.threshold_noise import _noise_frame


def _estimated_th(stats_json: Any) -> float:
    try:
        st = json.loads(stats_json) if isinstance(stats_json, str) else (stats_json or {})
    except json.JSONDecodeError:
        return math.nan
    values = [float(v) for v in ((st.get("fusion") or {}).get("threshold_per_task") or {}).values() if v is not None]
    return float(np.mean(values)) if values else math.nan


@register_study("adaptive-threshold", title="Adaptive threshold",
                question="Can the hand-set th be replaced by a quantile of r estimated on the current task?")
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
