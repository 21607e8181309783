"""Study ``metrics``: question, answer rule and figure in :func:`study_metrics`; how to read it: docs/studies.md."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from mcil.report.stats import bootstrap_tau, fmt_ci, mean_ci_n
from mcil.report.studies.common import _empty, _finding, _paragraph, per_seed
from mcil.report.studies.data import INCONCLUSIVE, StudyData, StudyResult, StudySettings, _select
from mcil.report.studies.registry import register_study

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


@register_study("metrics", title="Metric verification",
                question="Do M1/M2 rank methods like AIA, last accuracy and forgetting do, and how much do they move between the "
                "official (one batch) and the full-test-set variant?")
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
            mean, lo, hi, n = mean_ci_n(shift.groupby("seed")["shift"].mean().tolist(), s.confidence)
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
