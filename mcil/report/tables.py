"""Paper-style tables from the tidy run table: mean ± std over seeds, as CSV, Markdown and LaTeX.

Every table is computed in two steps, both pure functions of DataFrames:

1. a **summary** (tidy; the CSV): one row per (row key, dataset, T, metric) with ``mean``, ``std``
   (sample standard deviation over seeds, ddof = 1; empty for a single seed) and ``n`` (seeds);
2. a **wide** view (the Markdown and LaTeX): rows = methods (or th / α values), columns =
   (dataset, T, metric), cells ``"mean ± std"``.

Tables (which runs each one reads):

- ``main``: every method in the main setting (th = default, α = default): AIA, last, forgetting,
  forgetting beyond zero-shot (``forgetting_beyond_zs``: what training adds to the forgetting that
  label-space growth alone causes), the paper's M1/M2 and our informative variants (M1 ours,
  M2 ours; docs/metrics.md §5);
- ``ablation``: ``mcil`` and its presets (``mcil-*``) in the main setting, with ``Δ AIA`` vs mcil,
  for each (dataset, T) that has at least two of them;
- ``threshold``: ``mcil`` at α = default over its th values (AIA, last, fusion rate);
- ``alpha``: ``mcil`` at th = default over its α values (AIA, last);
- ``tasks``: methods run with more than one T on a dataset, main setting: AIA and last per T.

A metric absent from every run (M1/M2 of learners without a text tower) is left out of the table.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mcil.atomic import atomic_write_text

__all__ = [
    "METRIC_LABELS",
    "TABLE_SPECS",
    "REPRODUCED",
    "TABLES",
    "is_mcil_family",
    "main_setting",
    "method_order",
    "th_order",
    "summarise",
    "format_pm",
    "wide",
    "main_summary",
    "ablation_summary",
    "threshold_summary",
    "alpha_summary",
    "tasks_summary",
    "to_markdown",
    "to_latex",
    "build_tables",
    "write_tables",
    "Reported",
    "REPORTED",
    "reproduced_table",
]

log = logging.getLogger(__name__)

METRIC_LABELS = {
    "aia": "AIA",
    "last": "Last",
    "m1": "M1",
    "m2": "M2",
    "delta_aia": "Δ AIA",
    "fusion_rate": "Fusion rate",
    "forgetting": "Forgetting",
    "forgetting_beyond_zs": "Forgetting − ZS",
    "m1_ours": "M1 ours (weighted)",
    "m2_ours": "M2 ours (CKA)",
}
MAIN_METRICS = ["aia", "last", "forgetting", "forgetting_beyond_zs", "m1", "m2", "m1_ours", "m2_ours"]
COLUMNS = ["dataset", "T"]


# ---------------------------------------------------------------------------------------------
# Ordering and filtering
# ---------------------------------------------------------------------------------------------


def is_mcil_family(method: str) -> bool:
    return method == "mcil" or method.startswith("mcil-")


def method_order(methods: Iterable[str]) -> list[str]:
    """``mcil`` first, then its presets, then the other methods, each alphabetically."""
    ms = sorted(set(methods))
    return (["mcil"] if "mcil" in ms else []) + [m for m in ms if m.startswith("mcil-")] + [
        m for m in ms if not is_mcil_family(m)
    ]


def th_order(labels: Iterable[str]) -> list[str]:
    """Numeric thresholds ascending, then the gate words (always, never, ...) alphabetically."""
    labels = sorted(set(map(str, labels)))
    nums = sorted((x for x in labels if _is_number(x)), key=float)
    return nums + [x for x in labels if not _is_number(x)]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def main_setting(runs: pd.DataFrame, default_th: str, default_alpha: float) -> pd.DataFrame:
    """Runs at the main threshold and α."""
    if runs.empty:
        return runs
    return runs[(runs["th"].astype(str) == str(default_th)) & np.isclose(runs["alpha"].astype(float), default_alpha)]


# ---------------------------------------------------------------------------------------------
# Summaries (tidy)
# ---------------------------------------------------------------------------------------------


def summarise(runs: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Mean, sample std (ddof 1) and number of seeds of each metric per group (tidy)."""
    cols = [*by, "metric", "mean", "std", "n"]
    metrics = [m for m in metrics if m in runs.columns and runs[m].notna().any()]
    if runs.empty or not metrics:
        return pd.DataFrame(columns=cols)
    long = runs.melt(id_vars=list(by), value_vars=metrics, var_name="metric", value_name="value")
    long["value"] = pd.to_numeric(long["value"], errors="coerce")
    long = long.dropna(subset=["value"])
    out = (
        long.groupby([*by, "metric"], sort=False)["value"]
        .agg(mean="mean", std=lambda s: s.std(ddof=1) if len(s) > 1 else math.nan, n="count")
        .reset_index()
    )
    out["metric"] = pd.Categorical(out["metric"], categories=list(metrics), ordered=True)
    return out.sort_values([*by, "metric"], kind="stable").reset_index(drop=True)[cols]


def _order_rows(summary: pd.DataFrame, row: str) -> pd.DataFrame:
    """Sort rows by the table's row order (methods: mcil first; th: numbers then words), then dataset, T."""
    if summary.empty:
        return summary
    if row == "method":
        order = method_order(summary["method"])
    elif row == "th":
        order = th_order(summary["th"])
    else:
        order = sorted(summary[row].unique())
    rank = {v: i for i, v in enumerate(order)}
    out = summary.assign(_rank=summary[row].map(rank))
    out = out.sort_values(["_rank", "dataset", "T"], kind="stable").drop(columns="_rank")
    out["metric"] = out["metric"].astype(str)
    return out.reset_index(drop=True)


def main_summary(runs: pd.DataFrame, default_th: str, default_alpha: float) -> pd.DataFrame:
    sel = main_setting(runs, default_th, default_alpha)
    return _order_rows(summarise(sel, ["method", *COLUMNS], MAIN_METRICS), "method")


def ablation_summary(runs: pd.DataFrame, default_th: str, default_alpha: float) -> pd.DataFrame:
    """mcil and its presets; ``delta_aia`` = mean over seeds of (variant − mcil), paired by seed."""
    sel = main_setting(runs, default_th, default_alpha)
    sel = sel[sel["method"].map(is_mcil_family)] if not sel.empty else sel
    if sel.empty:
        return pd.DataFrame(columns=["method", *COLUMNS, "metric", "mean", "std", "n"])
    keep = sel.groupby(COLUMNS)["method"].transform("nunique") >= 2
    sel = sel[keep].copy()
    ref = sel[sel["method"] == "mcil"].set_index([*COLUMNS, "seed"])["aia"]
    key = pd.MultiIndex.from_frame(sel[[*COLUMNS, "seed"]])
    sel["delta_aia"] = sel["aia"].to_numpy() - ref.reindex(key).to_numpy()
    sel.loc[sel["method"] == "mcil", "delta_aia"] = np.nan
    return _order_rows(summarise(sel, ["method", *COLUMNS], ["aia", "last", "delta_aia"]), "method")


def threshold_summary(runs: pd.DataFrame, default_th: str, default_alpha: float) -> pd.DataFrame:
    if runs.empty:
        return pd.DataFrame(columns=["th", *COLUMNS, "metric", "mean", "std", "n"])
    sel = runs[(runs["method"] == "mcil") & np.isclose(runs["alpha"].astype(float), default_alpha)]
    sel = sel[sel.groupby(COLUMNS)["th"].transform("nunique") >= 2] if not sel.empty else sel
    return _order_rows(summarise(sel, ["th", *COLUMNS], ["aia", "last", "fusion_rate"]), "th")


def alpha_summary(runs: pd.DataFrame, default_th: str, default_alpha: float) -> pd.DataFrame:
    if runs.empty:
        return pd.DataFrame(columns=["alpha", *COLUMNS, "metric", "mean", "std", "n"])
    sel = runs[(runs["method"] == "mcil") & (runs["th"].astype(str) == str(default_th))]
    sel = sel[sel.groupby(COLUMNS)["alpha"].transform("nunique") >= 2] if not sel.empty else sel
    return _order_rows(summarise(sel, ["alpha", *COLUMNS], ["aia", "last"]), "alpha")


def tasks_summary(runs: pd.DataFrame, default_th: str, default_alpha: float) -> pd.DataFrame:
    sel = main_setting(runs, default_th, default_alpha)
    if not sel.empty:
        sel = sel[sel.groupby(["method", "dataset"])["T"].transform("nunique") >= 2]
    return _order_rows(summarise(sel, ["method", *COLUMNS], ["aia", "last"]), "method")


# ---------------------------------------------------------------------------------------------
# Wide view and renderers
# ---------------------------------------------------------------------------------------------


def format_pm(mean: float, std: float, digits: int = 2) -> str:
    """``"67.76 ± 1.20"``; just the mean for a single seed; ``"–"`` when there is no value."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _metric_digits(metric: str) -> int:
    return 3 if metric in ("m2", "m2_ours", "fusion_rate") else 2  # M1 is on the percent scale, M2 a fraction


def wide(summary: pd.DataFrame, row: str) -> pd.DataFrame:
    """Rows = ``row`` values, columns = "dataset T=… metric", cells "mean ± std"."""
    if summary.empty:
        return pd.DataFrame()
    s = summary.copy()
    s["cell"] = [format_pm(m, sd, _metric_digits(str(k))) for m, sd, k in zip(s["mean"], s["std"], s["metric"])]
    s["column"] = [
        f"{d} T={t} {METRIC_LABELS.get(str(k), str(k))}" for d, t, k in zip(s["dataset"], s["T"], s["metric"])
    ]
    row_order = list(dict.fromkeys(s[row]))
    col_order = list(dict.fromkeys(s.sort_values(["dataset", "T"], kind="stable")["column"]))
    table = s.pivot(index=row, columns="column", values="cell").reindex(index=row_order, columns=col_order)
    table = table.fillna("–")
    table.index.name = {"method": "Method", "th": "th", "alpha": "α"}.get(row, row)
    table.columns.name = None
    return table


def to_markdown(table: pd.DataFrame, title: str = "") -> str:
    """GitHub Markdown table (index as the first column)."""
    if table.empty:
        return (f"## {title}\n\n" if title else "") + "_No runs for this table._\n"
    header = [str(table.index.name or "")] + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":---:"] * len(table.columns)) + "|"]
    for idx, values in table.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [str(v) for v in values]) + " |")
    return (f"## {title}\n\n" if title else "") + "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def _latex(text: str) -> str:
    out = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))
    return out.replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("α", r"$\alpha$").replace("–", "--")


def to_latex(table: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    if table.empty:
        return f"% {caption}: no runs for this table\n"
    spec = "l" + "c" * len(table.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    if caption:
        lines.append(rf"\caption{{{_latex(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    lines.append(" & ".join([_latex(table.index.name or "")] + [_latex(c) for c in table.columns]) + r" \\")
    lines.append(r"\midrule")
    for idx, values in table.iterrows():
        lines.append(" & ".join([_latex(idx)] + [_latex(v) for v in values]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# All tables
# ---------------------------------------------------------------------------------------------

TABLE_SPECS = {
    # name: (summary function, row key, caption)
    "main": (main_summary, "method", "AIA, last accuracy, forgetting, forgetting beyond zero-shot (Forgetting − ZS), "
             "the paper's M1/M2 and our variants (M1/M2 ours; docs/metrics.md §5), mean ± std over seeds"),
    "ablation": (ablation_summary, "method", "Ablations and variants of MCIL (Δ AIA: paired difference to mcil)"),
    "threshold": (threshold_summary, "th", "Masking threshold th of MCIL"),
    "alpha": (alpha_summary, "alpha", "Loss weight α of MCIL"),
    "tasks": (tasks_summary, "method", "Number of tasks T"),
}
REPRODUCED = "reproduced"
# Every table write_tables writes (results/tables/<name>.{csv,md,tex}); the pipeline's outputs.
TABLES = [*TABLE_SPECS, REPRODUCED]


# ---------------------------------------------------------------------------------------------
# Reproduced vs reported (LibContinual-style)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reported:
    """A published number of a method mcil runs, and the mcil dataset (if any) with the same protocol.

    ``dataset``: the mcil dataset name that reproduces the setting (``None``: mcil has no such
    protocol, so only the published number is shown); ``metric``: ``aia`` or ``last``.
    """

    method: str
    published_as: str
    backbone: str
    setting: str
    metric: str
    value: float
    source: str
    reproduced_by: str = "–"
    dataset: str | None = None
    T: int | None = None
    note: str = ""


_LIBCONTINUAL = "LibContinual README, reproduce tables"
_ENGINE = "ENGINE (ICCV 2025), secondary: check against its table before quoting"
_PAPER = "arXiv 2506.09999, abstract (its tables are not public)"
_PAPER_NOTE = ("compare: mcil, sample-weighted AIA (the official code's continuum average_incremental_accuracy), "
               "main setting of config/paper.yaml; the paper does not say which T")
REPORTED: tuple[Reported, ...] = (
    Reported("moe-adapters", "MoE-Adapters4CL", "CLIP ViT-B/16", "CIFAR-100 B10 Inc10", "aia", 85.21, _LIBCONTINUAL,
             "LibContinual 85.49"),
    Reported("zeroshot", "ZS-CLIP", "CLIP ViT-B/16", "CIFAR-100 B0 Inc10", "last", 71.4, _ENGINE,
             note="approximate (~71.4)"),
    Reported("simplecil", "SimpleCIL", "CLIP ViT-B/16", "CIFAR-100 B0 Inc10", "last", 76.63, _ENGINE),
    Reported("simplecil", "SimpleCIL", "CLIP ViT-B/16", "ImageNet-R B0 Inc20", "last", 74.48, _ENGINE),
    Reported("ranpac", "RanPAC", "ViT-B/16 (not CLIP)", "CIFAR-100, 10 tasks", "aia", 92.11, _LIBCONTINUAL,
             "LibContinual 92.22", note="backbone not CLIP-like: context only"),
    Reported("mcil", "the paper (MIFE + AAVFM)", "AudioCLIP", "miniARIC", "aia", 67.76, _PAPER, dataset="miniaric",
             note=_PAPER_NOTE + "; next best method 49.19 (claim H2)"),
    Reported("mcil", "the paper (MIFE + AAVFM)", "AudioCLIP", "ImageNet-ESC-19", "aia", 95.37, _PAPER,
             dataset="imagenet-esc-19", note=_PAPER_NOTE),
    Reported("mcil", "the paper (MIFE + AAVFM)", "AudioCLIP", "ImageNet-ESC-27", "aia", 96.74, _PAPER,
             dataset="imagenet-esc-27", note=_PAPER_NOTE),
)
# Baselines of mcil without a published number on a CLIP-like backbone in the sources we read.
NO_PUBLISHED = ("finetune", "lwf", "ewc", "replay", "coop", "av-concat")


def reproduced_table(runs: pd.DataFrame, default_th: str, default_alpha: float, confidence: float = 0.95) -> pd.DataFrame:
    """One row per published number (:data:`REPORTED`): method, setting, reported, source, and ours:
    the mean [t-interval] over seeds of that method on the mcil dataset with the same protocol
    (main setting; every T run), or why there is none. Baselines without a published number close it."""
    from scipy import stats

    sel = main_setting(runs, default_th, default_alpha) if not runs.empty else runs
    rows = []
    for r in REPORTED:
        ours = "not runnable in mcil: no such protocol (published number for context)"
        if r.dataset is not None:
            # the paper's numbers: mcil, and the preset that reproduces the official code's behaviours
            methods = (r.method, "mcil-official") if r.method == "mcil" else (r.method,)
            parts = []
            for method in methods:
                got = sel[(sel["dataset"] == r.dataset) & (sel["method"] == method)] if not sel.empty else sel
                for T, g in got.groupby("T"):
                    x = pd.to_numeric(g[r.metric], errors="coerce").dropna().to_numpy()
                    if len(x) == 0:
                        continue
                    m = float(x.mean())
                    label = f"{method} T={int(T)}" if len(methods) > 1 else f"T={int(T)}"
                    if len(x) > 1:
                        half = float(stats.t.ppf((1 + confidence) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
                        parts.append(f"{label}: {m:.2f} [{m - half:.2f}, {m + half:.2f}] (n={len(x)})")
                    else:
                        parts.append(f"{label}: {m:.2f} (n=1)")
            ours = "; ".join(parts) if parts else f"not run here (needs {r.dataset}: config/paper.yaml with the real data)"
        rows.append({"method": r.method, "published as": r.published_as, "backbone": r.backbone,
                     "setting": r.setting, "metric": METRIC_LABELS.get(r.metric, r.metric), "reported": f"{r.value:.2f}",
                     "reproduced by": r.reproduced_by, "ours": ours, "source": r.source, "note": r.note})
    for m in NO_PUBLISHED:
        rows.append({"method": m, "published as": "–", "backbone": "–", "setting": "–", "metric": "–", "reported": "–",
                     "reproduced by": "–", "ours": "see the main table (synthetic or real data)",
                     "source": "no published number on a CLIP-like backbone found", "note": ""})
    return pd.DataFrame(rows).set_index("method")


def build_tables(runs: pd.DataFrame, default_th: str, default_alpha: float) -> dict[str, tuple[pd.DataFrame, pd.DataFrame, str]]:
    """name → (tidy summary, wide table, caption)."""
    out = {}
    for name, (fn, row, caption) in TABLE_SPECS.items():
        summary = fn(runs, default_th, default_alpha)
        out[name] = (summary, wide(summary, row), caption)
    return out


def write_tables(runs: pd.DataFrame, out_dir: str | Path, default_th: str, default_alpha: float) -> list[Path]:
    """Write ``<name>.csv`` (tidy), ``<name>.md`` and ``<name>.tex`` (wide) for every table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (summary, table, caption) in build_tables(runs, default_th, default_alpha).items():
        setting = f" (th = {default_th}, α = {default_alpha:g} unless swept)"
        paths = (out_dir / f"{name}.csv", out_dir / f"{name}.md", out_dir / f"{name}.tex")
        atomic_write_text(paths[0], summary.to_csv(index=False))
        atomic_write_text(paths[1], to_markdown(table, caption + setting))
        atomic_write_text(paths[2], to_latex(table, caption + setting, f"tab:{name}"))
        written.extend(paths)
        log.info("table %s: %d rows", name, len(table))
    rep = reproduced_table(runs, default_th, default_alpha)
    caption = "Reproduced vs reported: published numbers of the methods mcil runs, their sources, and ours on the same protocol"
    paths = (out_dir / f"{REPRODUCED}.csv", out_dir / f"{REPRODUCED}.md", out_dir / f"{REPRODUCED}.tex")
    atomic_write_text(paths[0], rep.reset_index().to_csv(index=False))
    atomic_write_text(paths[1], to_markdown(rep, caption))
    atomic_write_text(paths[2], to_latex(rep, caption, f"tab:{REPRODUCED}"))
    written.extend(paths)
    return written
