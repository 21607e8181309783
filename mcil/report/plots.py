"""Figures (PNG + PDF, seaborn on the Agg backend) from the tidy run and step tables.

- ``accuracy_curves``: accuracy over all seen classes after each task, one line per method with a
  ±1 std band over seeds; one panel per (dataset, T), main setting (th, α = defaults);
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


def accuracy_curves(runs: pd.DataFrame, steps: pd.DataFrame, default_th: str, default_alpha: float) -> plt.Figure:
    """Accuracy after each task; panels = (dataset, T), hue = method, band = ±1 std over seeds."""
    title = "Accuracy on all seen classes after each task"
    if steps.empty or runs.empty:
        return placeholder(title, "no runs")
    keep = set(main_setting(runs, default_th, default_alpha)["run"])
    data = steps[(steps["modality"] == "all") & steps["run"].isin(keep)].copy()
    if data.empty:
        return placeholder(title, f"no runs at th={default_th}, α={default_alpha:g}")
    data["panel"] = data["dataset"] + "  T=" + data["T"].astype(str)
    panels = sorted(data["panel"].unique())
    methods = method_order(data["method"])
    palette = dict(zip(methods, sns.color_palette("husl", len(methods))))
    ncol = min(3, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), squeeze=False, sharey=True)
    for ax, panel in zip(axes.flat, panels):
        sub = data[data["panel"] == panel]
        sns.lineplot(data=sub, x="step", y="acc", hue="method", hue_order=[m for m in methods if m in set(sub["method"])],
                     palette=palette, errorbar="sd", marker="o", ax=ax, legend=False)
        ax.set_title(panel)
        ax.set_xlabel("task")
        ax.set_ylabel("accuracy (%)")
        ax.set_xticks(sorted(sub["step"].unique()))
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles = [plt.Line2D([0], [0], color=palette[m], marker="o", label=m) for m in methods]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, title="method")
    fig.suptitle(title + f" (th={default_th}, α={default_alpha:g}; band: ±1 std over seeds)")
    fig.tight_layout()
    return fig


def _sweep(runs: pd.DataFrame, axis: str, metric: str, fixed: pd.Series, title: str, xlabel: str, ylabel: str,
           order: list[str]) -> plt.Figure:
    data = runs[(runs["method"] == "mcil") & fixed].copy() if not runs.empty else runs
    if data.empty or data[axis].nunique() < 2 or data[metric].notna().sum() == 0:
        return placeholder(title, f"needs mcil runs at two or more values of {xlabel}")
    data["x"] = data[axis].astype(str)
    data["series"] = data["dataset"] + "  T=" + data["T"].astype(str)
    data = data.dropna(subset=[metric])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    sns.pointplot(data=data, x="x", y=metric, hue="series", order=[o for o in order if o in set(data["x"])],
                  errorbar="sd", dodge=0.2 if data["series"].nunique() > 1 else False, capsize=0.1, ax=ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(title="dataset", frameon=False, fontsize="small")
    fig.tight_layout()
    return fig


def threshold_sweep(runs: pd.DataFrame, default_alpha: float) -> plt.Figure:
    fixed = np.isclose(runs["alpha"].astype(float), default_alpha) if not runs.empty else None
    order = th_order(runs["th"]) if not runs.empty else []
    return _sweep(runs, "th", "aia", fixed, f"Masking threshold (α={default_alpha:g}; ±1 std over seeds)",
                  "threshold th", "AIA (%)", order)


def alpha_sweep(runs: pd.DataFrame, default_th: str) -> plt.Figure:
    fixed = (runs["th"].astype(str) == str(default_th)) if not runs.empty else None
    if runs.empty:
        return placeholder("Loss weight α", "no runs")
    runs = runs.assign(alpha_label=runs["alpha"].map(lambda a: f"{float(a):g}"))
    order = sorted(runs["alpha_label"].unique(), key=float)
    return _sweep(runs, "alpha_label", "aia", fixed, f"Loss weight α (th={default_th}; ±1 std over seeds)",
                  "α", "AIA (%)", order)


def fusion_rate(runs: pd.DataFrame, default_alpha: float) -> plt.Figure:
    fixed = np.isclose(runs["alpha"].astype(float), default_alpha) if not runs.empty else None
    order = th_order(runs["th"]) if not runs.empty else []
    return _sweep(runs, "th", "fusion_rate", fixed, "Fraction of test samples fused with audio",
                  "threshold th", "fusion rate", order)


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
