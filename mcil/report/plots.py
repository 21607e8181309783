"""Figures (PNG + PDF, seaborn on the Agg backend) from the tidy run and step tables.

- ``accuracy_curves``: accuracy over all seen classes after each task; one row of panels per
  (dataset, T), one column per method family (mcil and its ablations; adapter/prompt baselines;
  prototype/closed-form baselines), mcil highlighted in every panel, zero-shot and joint as
  reference lines, colours fixed per method (:data:`METHOD_COLOURS`), 95 % t-interval bands over
  seeds; main setting (th, α = defaults);
- ``threshold_sweep``: AIA of ``mcil`` against the masking threshold, one line per dataset;
- ``alpha_sweep``: AIA of ``mcil`` against α;
- ``fusion_rate``: fraction of test samples whose audio was fused, against th;
- ``expert_usage``: how often each MIFE expert was routed to, per task (heatmap; from the runs'
  ``learner_statistics`` when the learner records it).

Every figure is always written: without the runs it needs it says so in the panel, so the
pipeline's outputs are the same whatever the grid.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from mcil.atomic import atomic_write  # noqa: E402
from mcil.report.tables import main_setting, method_order, th_order  # noqa: E402

__all__ = [
    "FIGURES",
    "placeholder",
    "accuracy_curves",
    "FAMILIES",
    "METHOD_COLOURS",
    "method_colour",
    "method_family",
    "t_band",
    "curve_summary",
    "threshold_sweep",
    "alpha_sweep",
    "fusion_rate",
    "expert_usage_matrix",
    "expert_usage",
    "save",
    "write_figures",
]

log = logging.getLogger(__name__)

FIGURES = ["accuracy_curves", "threshold_sweep", "alpha_sweep", "fusion_rate", "expert_usage"]
EXPERT_KEYS = ("expert_usage", "router_usage", "expert_counts", "expert_fractions")


def _theme() -> None:
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.0)


def placeholder(title: str, message: str) -> plt.Figure:
    """A figure that only says why it is empty."""
    fig, ax = plt.subplots(figsize=(5, 2.5))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes)
    return fig


# Families of methods (one column of panels each) and the reference lines drawn in every panel.
FAMILIES = {
    "MCIL and its ablations": ("mcil", "mcil-no-mife", "mcil-no-aavfm", "mcil-no-text-diversity", "mcil-no-mi",
                               "mcil-cw-weighted", "mcil-gate-always", "mcil-gate-batch", "mcil-gate-sample",
                               "mcil-official"),
    "Adapter and prompt baselines": ("finetune", "lwf", "ewc", "replay", "coop", "moe-adapters", "av-concat"),
    "Prototype and closed-form baselines": ("simplecil", "ranpac"),
}
REFERENCES = ("zeroshot", "joint")
HIGHLIGHT = "mcil"
# One colour per method, the same in every figure (Tableau for mcil's presets, Dark2 for the adapter
# baselines, Paired for the prototype ones; greys for the references; mcil is black).
METHOD_COLOURS = {
    "mcil": "#000000",
    "mcil-no-mife": "#1f77b4", "mcil-no-aavfm": "#ff7f0e", "mcil-no-text-diversity": "#2ca02c",
    "mcil-no-mi": "#d62728", "mcil-cw-weighted": "#9467bd", "mcil-gate-always": "#8c564b",
    "mcil-gate-batch": "#e377c2", "mcil-gate-sample": "#bcbd22", "mcil-official": "#17becf",
    "finetune": "#1b9e77", "lwf": "#d95f02", "ewc": "#7570b3", "replay": "#e7298a", "coop": "#66a61e",
    "moe-adapters": "#e6ab02", "av-concat": "#a6761d",
    "simplecil": "#1f78b4", "ranpac": "#e31a1c",
    "zeroshot": "#7f7f7f", "joint": "#404040",
}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


def method_colour(method: str) -> str:
    """The fixed colour of ``method`` (:data:`METHOD_COLOURS`; a stable tab20 pick for unknown names)."""
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    import zlib

    return matplotlib.colors.to_hex(plt.get_cmap("tab20")(zlib.crc32(method.encode()) % 20))


def method_family(method: str) -> str:
    """The family (panel column) of ``method``; mcil presets by prefix, unknown baselines with the adapters."""
    for family, members in FAMILIES.items():
        if method in members:
            return family
    if method.startswith("mcil-"):
        return next(iter(FAMILIES))
    return "reference" if method in REFERENCES else list(FAMILIES)[1]


# The range each plotted metric can take (t_band cuts its intervals to it).
ACCURACY_RANGE = (0.0, 100.0)
RATE_RANGE = (0.0, 1.0)


def t_band(values: Any, confidence: float = 0.95,
           bounds: tuple[float, float] | None = None) -> tuple[float, float, float]:
    """Mean and two-sided t-interval over seeds (nan bounds for one seed).

    ``bounds``: the range the metric can take (accuracy 0–100, a fusion rate 0–1). A mean of such
    values lies in it, so the part of a symmetric t-interval beyond it (3 seeds, a wide spread) is
    impossible and is cut off; the figures' titles say so.
    """
    from scipy import stats

    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if len(x) < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf((1 + confidence) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    lo, hi = m - half, m + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return m, lo, hi


def curve_summary(data: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per (panel, method, step): mean accuracy over seeds with its t-interval (``lo``, ``hi``; cut to 0–100) and n."""
    rows = []
    for (panel, method, step), g in data.groupby(["panel", "method", "step"]):
        m, lo, hi = t_band(g["acc"], confidence, ACCURACY_RANGE)
        rows.append({"panel": panel, "method": method, "step": int(step), "mean": m, "lo": lo, "hi": hi,
                     "n": int(g["acc"].notna().sum())})
    return pd.DataFrame(rows, columns=["panel", "method", "step", "mean", "lo", "hi", "n"])


def _draw_curve(ax: plt.Axes, c: pd.DataFrame, method: str, marker: str, highlight: bool = False,
                dashed: bool = False) -> plt.Line2D:
    colour = method_colour(method)
    c = c.sort_values("step")
    (line,) = ax.plot(c["step"], c["mean"], color=colour, marker=None if dashed else marker,
                      markersize=3.5, lw=2.6 if highlight else 1.3, ls="--" if dashed else "-",
                      zorder=5 if highlight else 3, label=method)
    band = c.dropna(subset=["lo", "hi"])
    if not band.empty and not dashed:  # the zero-shot reference gets no band: it would hide the others'
        ax.fill_between(band["step"], band["lo"], band["hi"], color=colour, alpha=0.16 if highlight else 0.08,
                        lw=0, zorder=2)
    return line


def accuracy_curves(runs: pd.DataFrame, steps: pd.DataFrame, default_th: str, default_alpha: float,
                    confidence: float = 0.95) -> plt.Figure:
    """Accuracy after each task: rows = (dataset, T), columns = method families (:data:`FAMILIES`).

    mcil is the thick black line in every panel; zero-shot (dashed grey curve) and joint (dotted
    line at its last accuracy: it trains one task, so it has a single point) are references in
    every panel. Bands: ``confidence`` t-interval over seeds. Colours: :data:`METHOD_COLOURS`.
    """
    title = "Accuracy on all seen classes after each task"
    if steps.empty or runs.empty:
        return placeholder(title, "no runs")
    main = main_setting(runs, default_th, default_alpha)
    keep = set(main["run"])
    data = steps[(steps["modality"] == "all") & steps["run"].isin(keep)].copy()
    if data.empty:
        return placeholder(title, f"no runs at th={default_th}, α={default_alpha:g}")
    data["panel"] = data["dataset"] + "  T=" + data["T"].astype(str)
    # the panels with the most methods (the main grid) first, then by name
    width = data.groupby("panel")["method"].nunique()
    panels = sorted(width.index, key=lambda p: (-int(width[p]), p))
    summary = curve_summary(data[data["method"] != "joint"], confidence)
    joint = main[main["method"] == "joint"].assign(panel=lambda d: d["dataset"] + "  T=" + d["T"].astype(str))
    present = set(data["method"])
    families = [f for f in FAMILIES if any(method_family(m) == f for m in present if m not in REFERENCES)]
    families = families or [next(iter(FAMILIES))]
    ncol, nrow = len(families), len(panels)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, 3.0 * nrow + 1.4), squeeze=False, sharey="row")
    for i, panel in enumerate(panels):
        sub = summary[summary["panel"] == panel]
        for j, family in enumerate(families):
            ax = axes[i, j]
            members = [m for m in method_order(sub["method"]) if method_family(m) == family and m != HIGHLIGHT]
            for k, method in enumerate(members):
                _draw_curve(ax, sub[sub["method"] == method], method, _MARKERS[k % len(_MARKERS)])
            if HIGHLIGHT in set(sub["method"]):
                _draw_curve(ax, sub[sub["method"] == HIGHLIGHT], HIGHLIGHT, "o", highlight=True)
            if "zeroshot" in set(sub["method"]):
                _draw_curve(ax, sub[sub["method"] == "zeroshot"], "zeroshot", "", dashed=True)
            jp = joint[joint["panel"] == panel]
            if not jp.empty:
                jm, jlo, jhi = t_band(pd.to_numeric(jp["last"], errors="coerce"), confidence, ACCURACY_RANGE)
                ax.axhline(jm, color=method_colour("joint"), ls=":", lw=1.6, zorder=4)
                if not math.isnan(jlo):
                    ax.axhspan(jlo, jhi, color=method_colour("joint"), alpha=0.08, lw=0)
            ax.set_title(f"{panel}\n{family}", fontsize=9)
            ax.set_xlabel("task")
            ax.set_ylabel("accuracy (%)" if j == 0 else "")
            ax.set_xticks(sorted(sub["step"].unique()) if not sub.empty else [])
    # one legend per family column, under the bottom row; the references in every one
    for j, family in enumerate(families):
        members = [m for m in method_order(present) if method_family(m) == family and m != HIGHLIGHT]
        handles = [plt.Line2D([0], [0], color="#000000", lw=2.6, marker="o", markersize=3.5,
                              label="mcil (the paper's method)")] if HIGHLIGHT in present else []
        handles += [plt.Line2D([0], [0], color=method_colour(m), lw=1.3, marker=_MARKERS[k % len(_MARKERS)],
                               markersize=3.5, label=m) for k, m in enumerate(members)]
        if "zeroshot" in present:
            handles.append(plt.Line2D([0], [0], color=method_colour("zeroshot"), ls="--", lw=1.3,
                                      label="zeroshot (frozen reference)"))
        if not joint.empty:
            handles.append(plt.Line2D([0], [0], color=method_colour("joint"), ls=":", lw=1.6,
                                      label="joint (upper bound, last acc.)"))
        axes[-1, j].legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=2,
                           frameon=False, fontsize=7.5)
    conf = f"{confidence * 100:g} %"
    fig.suptitle(title + f" (th={default_th}, α={default_alpha:g}; bands: {conf} t-interval over seeds, within 0–100)")
    fig.tight_layout()
    return fig


def _sweep(runs: pd.DataFrame, axis: str, metric: str, fixed: pd.Series, title: str, xlabel: str, ylabel: str,
           order: list[str], bounds: tuple[float, float], confidence: float = 0.95) -> plt.Figure:
    """mcil's ``metric`` against ``axis``: one line per (dataset, T), mean with a t-interval over seeds
    (cut to ``bounds``, the metric's range)."""
    data = runs[(runs["method"] == "mcil") & fixed].copy() if not runs.empty else runs
    if data.empty or data[axis].nunique() < 2 or data[metric].notna().sum() == 0:
        return placeholder(title, f"needs mcil runs at two or more values of {xlabel}")
    data["x"] = data[axis].astype(str)
    data["series"] = data["dataset"] + "  T=" + data["T"].astype(str)
    data = data.dropna(subset=[metric])
    xs = [o for o in order if o in set(data["x"])]
    series = sorted(data["series"].unique())
    colours = sns.color_palette("colorblind", len(series))
    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    width = 0.2 if len(series) > 1 else 0.0
    for k, (name, colour) in enumerate(zip(series, colours)):
        g = data[data["series"] == name]
        pts = [(i, *t_band(pd.to_numeric(g.loc[g["x"] == x, metric], errors="coerce"), confidence, bounds))
               for i, x in enumerate(xs) if (g["x"] == x).any()]
        off = (k - (len(series) - 1) / 2) * width / max(len(series) - 1, 1)
        pos = [p[0] + off for p in pts]
        mean = [p[1] for p in pts]
        err = [[m - lo if not math.isnan(lo) else 0 for _, m, lo, _ in pts],
               [hi - m if not math.isnan(hi) else 0 for _, m, _, hi in pts]]
        ax.errorbar(pos, mean, yerr=err, color=colour, marker="o", capsize=3, lw=1.4, label=name)
    ax.set_xticks(range(len(xs)))
    ax.set_xticklabels(xs)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    # beside the axes: inside, "best" still lands on a band's end (the α sweep's 0.3 point)
    ax.legend(title="dataset", frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def threshold_sweep(runs: pd.DataFrame, default_alpha: float) -> plt.Figure:
    fixed = np.isclose(runs["alpha"].astype(float), default_alpha) if not runs.empty else None
    order = th_order(runs["th"]) if not runs.empty else []
    return _sweep(runs, "th", "aia", fixed, f"AIA of mcil against the masking threshold (α={default_alpha:g}; 95 % t-interval over seeds)",
                  "threshold th", "AIA (%)", order, ACCURACY_RANGE)


def alpha_sweep(runs: pd.DataFrame, default_th: str) -> plt.Figure:
    fixed = (runs["th"].astype(str) == str(default_th)) if not runs.empty else None
    if runs.empty:
        return placeholder("Loss weight α", "no runs")
    runs = runs.assign(alpha_label=runs["alpha"].map(lambda a: f"{float(a):g}"))
    order = sorted(runs["alpha_label"].unique(), key=float)
    return _sweep(runs, "alpha_label", "aia", fixed, f"AIA of mcil against the loss weight α (th={default_th}; 95 % t-interval over seeds)",
                  "α", "AIA (%)", order, ACCURACY_RANGE)


def fusion_rate(runs: pd.DataFrame, default_alpha: float) -> plt.Figure:
    fixed = np.isclose(runs["alpha"].astype(float), default_alpha) if not runs.empty else None
    order = th_order(runs["th"]) if not runs.empty else []
    return _sweep(runs, "th", "fusion_rate", fixed, "Fraction of test samples fused with audio (mcil; 95 % t-interval, within 0–1)",
                  "threshold th", "fusion rate", order, RATE_RANGE)


def expert_usage_matrix(stats: dict[str, Any]) -> np.ndarray | None:
    """(tasks, experts) usage fractions from a run's ``learner_statistics``, or None.

    Reads the MIFE record ``stats["experts"]["usage"][phase][task][site] = [picks per expert]``
    (phase ``train`` preferred, else ``eval``; sites summed; the ``before`` key skipped), or a plain
    (tasks × experts) list under one of :data:`EXPERT_KEYS`. Each row is normalised to sum to 1.
    """
    mat = _mife_usage(stats.get("experts"))
    if mat is None:
        for key in EXPERT_KEYS:
            if _is_matrix(stats.get(key)):
                mat = np.asarray(stats[key], dtype=float)
                break
    if mat is None:
        return None
    sums = mat.sum(axis=1, keepdims=True)
    return np.divide(mat, sums, out=np.zeros_like(mat), where=sums > 0)


def _mife_usage(experts: Any) -> np.ndarray | None:
    if not isinstance(experts, dict) or not isinstance(experts.get("usage"), dict):
        return None
    usage = experts["usage"]
    per_task = usage.get("train") or usage.get("eval")
    if not isinstance(per_task, dict):
        return None
    tasks = sorted((k for k in per_task if str(k).isdigit()), key=int)
    if not tasks:
        return None
    width = max((len(c) for k in tasks for c in per_task[k].values()), default=0)
    if width == 0:
        return None
    mat = np.zeros((len(tasks), width))
    for i, k in enumerate(tasks):
        for counts in per_task[k].values():
            mat[i, : len(counts)] += np.asarray(counts, dtype=float)
    return mat


def _is_matrix(value: Any) -> bool:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return False
    return arr.ndim == 2 and arr.size > 0


def expert_usage(runs: pd.DataFrame, default_th: str, default_alpha: float) -> plt.Figure:
    """Mean over seeds of the per-task expert usage of ``mcil`` (main setting), one panel per (dataset, T)."""
    title = "MIFE expert usage per task"
    sel = main_setting(runs, default_th, default_alpha) if not runs.empty else runs
    sel = sel[sel["method"] == "mcil"] if not sel.empty else sel
    panels: dict[str, list[np.ndarray]] = {}
    for _, row in sel.iterrows():
        try:
            stats = json.loads(row.get("learner_statistics") or "{}")
        except (TypeError, json.JSONDecodeError):
            continue
        mat = expert_usage_matrix(stats)
        if mat is not None:
            panels.setdefault(f"{row['dataset']}  T={row['T']}", []).append(mat)
    panels = {k: v for k, v in panels.items() if len({m.shape for m in v}) == 1}
    if not panels:
        return placeholder(title, "no expert statistics in the mcil runs (learner_statistics)")
    names = sorted(panels)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes.flat, names):
        mean = np.mean(panels[name], axis=0)
        frame = pd.DataFrame(mean, index=[f"{t + 1}" for t in range(mean.shape[0])],
                             columns=[f"{e + 1}" for e in range(mean.shape[1])])
        sns.heatmap(frame, ax=ax, vmin=0, vmax=1, cmap="viridis", annot=mean.size <= 64, fmt=".2f",
                    cbar_kws={"label": "fraction of routed tokens"})
        ax.set_xlabel("expert")
        ax.set_ylabel("task")
        ax.set_title(f"{name} (n={len(panels[name])})")
    fig.suptitle(title + f" (mcil, th={default_th}, α={default_alpha:g}; mean over seeds)")
    fig.tight_layout()
    return fig


def save(fig: plt.Figure, out_dir: str | Path, name: str) -> list[Path]:
    """Write ``name.png`` (150 dpi) and ``name.pdf``; close the figure."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for p in paths:
        atomic_write(p, lambda tmp, p=p: fig.savefig(
            tmp, format=p.suffix[1:], dpi=150, bbox_inches="tight",
            metadata={"CreationDate": None} if p.suffix == ".pdf" else None,
        ))
    plt.close(fig)
    return paths


def write_figures(runs: pd.DataFrame, steps: pd.DataFrame, out_dir: str | Path, default_th: str,
                  default_alpha: float) -> list[Path]:
    """All figures of :data:`FIGURES` (PNG + PDF) into ``out_dir``."""
    _theme()
    figures = {
        "accuracy_curves": lambda: accuracy_curves(runs, steps, default_th, default_alpha),
        "threshold_sweep": lambda: threshold_sweep(runs, default_alpha),
        "alpha_sweep": lambda: alpha_sweep(runs, default_th),
        "fusion_rate": lambda: fusion_rate(runs, default_alpha),
        "expert_usage": lambda: expert_usage(runs, default_th, default_alpha),
    }
    written = []
    for name in FIGURES:
        written += save(figures[name](), out_dir, name)
        log.info("figure %s", name)
    return written
