"""Study ``absence``: question, answer rule and figure in :func:`study_absence`; how to read it: docs/studies.md."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from mcil.report.studies.common import (
    _empty,
    _errorbar_lines,
    _finding,
    _fmt_cmp,
    _gate_order,
    _material_loss,
    _paragraph,
    _th_label,
    _wide_ci,
    compare,
    per_seed,
    summarise_ci,
)
from mcil.report.studies.data import (
    EQUIVALENT,
    HIGHER,
    INCONCLUSIVE,
    MISSING,
    StudyData,
    StudyResult,
    StudySettings,
    _select,
)
from mcil.report.studies.registry import register_study


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


@register_study("absence", title="Modality absence",
                question="Does the gate fall back gracefully when audio (or image) is missing, and which gate handles absence best?")
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
