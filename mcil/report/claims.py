"""``results/claims.md``: each claim of the paper graded from the runs — never written by hand.

A claim compares two sets of runs of one dataset and task count T that differ in one thing (the
method, the threshold or α), paired by seed, on the average incremental accuracy (AIA, %):

- **directional** claims ("fusion helps on clean data"): the paired differences A − B over seeds
  give a mean, a t-interval at the chosen confidence, Cohen's d (d_z = mean / sd of the
  differences), a paired t-test and, with n ≥ 6 seeds, a Wilcoxon signed-rank test. Verdict:
  *reproduced* when the interval lies above 0, *not reproduced* when it lies below 0,
  *inconclusive* when it contains 0 or n < 2. "MCIL beats every baseline" needs that against
  each baseline (the row shows the strongest one, by mean AIA);
- **headline** claims (a number of the paper, real data only): the measured mean of mcil and
  its t-interval against the paper's value ± tolerance: *reproduced* when the mean is within the
  tolerance, *not reproduced* when the whole interval is outside it, *inconclusive* otherwise (or
  n < 2). Their effect size is against the best baseline.

A claim over every baseline (C1, and the margin H2) needs every *configured* baseline on that dataset
and T (``ClaimSettings.expected``: the pipeline's configured (dataset, T, method) cells, or without
them mcil's registry list :data:`DEFAULT_BASELINES`); with some missing and none contradicting it,
it is **partial** with what is missing. Every inconclusive verdict states the minimum detectable
effect at its number of seeds and the seeds that would detect the observed effect at 80 % power
(:func:`mde`, :func:`seeds_for_power`). A claim whose runs are missing is "not evaluated (runs
missing: …)"; claims.md lists those once, after the graded rows. A dataset
counts as *noisy* (miniARIC-like) or *clean* (ImageNet-ESC-like) as the pipeline says
(``--noisy``); without that, by its name.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mcil.atomic import atomic_write_text
from mcil.report.stats import POWER, fmt_num, mde, mean_ci, paired_stats, power_note, seeds_for_power
from mcil.report.tables import is_mcil_family

__all__ = [
    "PAPER_AIA",
    "PAPER_NEXT_BEST",
    "UPPER_BOUNDS",
    "ClaimSettings",
    "mean_ci",
    "paired_stats",
    "directional_verdict",
    "DEFAULT_BASELINES",
    "PARTIAL",
    "mde",
    "seeds_for_power",
    "power_note",
    "parse_expected",
    "required_baselines",
    "headline_verdict",
    "evaluate_claims",
    "render_markdown",
    "write_claims",
    "verdict_counts",
    "upper_bound_rows",
]

log = logging.getLogger(__name__)

# The paper's headline numbers (average top-1 %, paper-protocol.md; the T they refer to is unknown).
PAPER_AIA = {"miniaric": 67.76, "imagenet-esc-19": 95.37, "imagenet-esc-27": 96.74}
PAPER_NEXT_BEST = {"miniaric": 49.19}
# Not a continual learner: joint training on all classes is an upper bound, not a baseline.
UPPER_BOUNDS = frozenset({"joint"})
METRIC = "aia"

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
PARTIAL = "partial"
GRADED = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, PARTIAL)
# mcil's configured baselines (config/default.yaml and config/paper.yaml method_sets.baselines; a test
# keeps them equal). A claim over every baseline is partial while one of them has no runs.
DEFAULT_BASELINES = ("zeroshot", "finetune", "lwf", "ewc", "replay", "coop", "simplecil", "ranpac", "moe-adapters",
                     "av-concat", "joint")


@dataclass(frozen=True)
class ClaimSettings:
    default_th: str = "always"  # the main setting's th label (mcil's default gate)
    default_alpha: float = 0.7
    tolerance: float = 2.0
    confidence: float = 0.95
    noisy: list[str] | None = None  # datasets that are noisy-like; None: guess from the name
    # configured (dataset, T, method) cells of the main setting; None: only DEFAULT_BASELINES is known
    expected: frozenset[tuple[str, int, str]] | None = None
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    power: float = POWER

    def is_noisy(self, dataset: str) -> bool:
        if self.noisy is not None:
            return dataset in self.noisy
        return "noisy" in dataset or "aric" in dataset


# ---------------------------------------------------------------------------------------------
# Verdicts (pure; the statistics themselves are in mcil.report.stats)
# ---------------------------------------------------------------------------------------------


def directional_verdict(n: int, ci_low: float, ci_high: float) -> str:
    """reproduced: interval above 0; not reproduced: below 0; otherwise (or n < 2) inconclusive."""
    if n < 2 or math.isnan(ci_low) or math.isnan(ci_high):
        return INCONCLUSIVE
    if ci_low > 0:
        return REPRODUCED
    if ci_high < 0:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def headline_verdict(n: int, mean: float, ci_low: float, ci_high: float, target: float, tolerance: float) -> str:
    """reproduced: |mean − target| <= tolerance; not reproduced: the interval misses the band."""
    if n < 2 or math.isnan(ci_low) or math.isnan(ci_high):
        return INCONCLUSIVE
    lo, hi = target - tolerance, target + tolerance
    if lo <= mean <= hi:
        return REPRODUCED
    if ci_high < lo or ci_low > hi:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def combine_verdicts(verdicts: list[str]) -> str:
    """All reproduced → reproduced; any not reproduced → not reproduced; else inconclusive."""
    if not verdicts:
        return INCONCLUSIVE
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    if any(v == NOT_REPRODUCED for v in verdicts):
        return NOT_REPRODUCED
    return INCONCLUSIVE


# ---------------------------------------------------------------------------------------------
# Selecting runs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a method at a threshold label and α (None = the defaults)."""

    method: str
    th: str | None = None
    alpha: float | None = None

    def describe(self, s: ClaimSettings) -> str:
        return f"{self.method} (th {self.th or s.default_th}, α {self.alpha if self.alpha is not None else s.default_alpha:g})"


def per_seed(runs: pd.DataFrame, dataset: str, T: int, side: Side, s: ClaimSettings) -> pd.Series:
    """AIA per seed of one setting (mean over duplicates of a seed), index = seed."""
    th = side.th or s.default_th
    alpha = s.default_alpha if side.alpha is None else side.alpha
    sel = runs[
        (runs["dataset"] == dataset)
        & (runs["T"] == T)
        & (runs["method"] == side.method)
        & (runs["th"].astype(str) == str(th))
        & np.isclose(runs["alpha"].astype(float), alpha)
    ]
    return sel.groupby("seed")[METRIC].mean().astype(float)


def baselines_present(runs: pd.DataFrame, dataset: str, T: int, s: ClaimSettings) -> list[str]:
    sel = runs[(runs["dataset"] == dataset) & (runs["T"] == T)
               & (runs["th"].astype(str) == str(s.default_th)) & np.isclose(runs["alpha"].astype(float), s.default_alpha)]
    return sorted(m for m in sel["method"].unique() if _is_baseline(m))


def parse_expected(items: list[str] | None) -> frozenset[tuple[str, int, str]] | None:
    """Configured cells from ``DATASET:T:METHOD`` tokens, or ``@file.json`` (a list of objects with
    ``dataset``, ``T``, ``method``, e.g. the pipeline's runs). None when nothing is given."""
    if not items:
        return None
    import json

    from mcil.errors import UserError

    cells: set[tuple[str, int, str]] = set()
    for item in items:
        if item.startswith("@"):
            try:
                rows = json.loads(Path(item[1:]).read_text())
                cells.update((str(r["dataset"]), int(r["T"]), str(r["method"])) for r in rows)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise UserError(f"--expected-methods {item}: cannot read a JSON list of "
                                f"{{dataset, T, method}} objects ({exc})") from None
            continue
        parts = item.rsplit(":", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            raise UserError(f"--expected-methods: {item!r} is not DATASET:T:METHOD (e.g. synav-clean:5:lwf) or @file.json")
        cells.add((parts[0], int(parts[1]), parts[2]))
    return frozenset(cells)


def _is_baseline(method: str) -> bool:
    return not is_mcil_family(method) and method not in UPPER_BOUNDS


def required_baselines(s: ClaimSettings) -> list[str]:
    """The baselines a claim over every baseline needs: every baseline of the configured cells, or
    (no cells given) :data:`DEFAULT_BASELINES`; never mcil's family or the upper bounds."""
    names = {m for _, _, m in s.expected} if s.expected is not None else set(s.baselines)
    return sorted(m for m in names if _is_baseline(m))


def _missing_baselines(present: list[str], dataset: str, T: int, s: ClaimSettings) -> list[str]:
    """Required baselines without runs here, each with why (not configured here / no result)."""
    out = []
    for m in required_baselines(s):
        if m in present:
            continue
        if s.expected is not None and (dataset, T, m) in s.expected:
            out.append(f"{m} (configured, no result)")
        else:
            out.append(m)
    return out


def best_baseline(runs: pd.DataFrame, dataset: str, T: int, s: ClaimSettings) -> tuple[str | None, pd.Series]:
    best, best_series, best_mean = None, pd.Series(dtype=float), -math.inf
    for m in baselines_present(runs, dataset, T, s):
        series = per_seed(runs, dataset, T, Side(m), s)
        if len(series) and series.mean() > best_mean:
            best, best_series, best_mean = m, series, float(series.mean())
    return best, best_series


# ---------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A claim of the paper: a comparison (A vs B) or a number, on the datasets ``applies`` picks."""

    id: str
    text: str
    kind: str  # "directional" | "beats-baselines" | "headline" | "gap"
    applies: Callable[[str, ClaimSettings], bool]
    a: Side = Side("mcil")
    b: Side | None = None
    paper: Callable[[str], str] = field(default=lambda d: "")


def _paper_beats(d: str) -> str:
    if d in PAPER_NEXT_BEST:
        return f"{PAPER_AIA[d]:.2f} vs {PAPER_NEXT_BEST[d]:.2f} (next best)"
    return f"{PAPER_AIA[d]:.2f} (best reported)" if d in PAPER_AIA else "directional"


CLAIMS: list[Claim] = [
    Claim("C1", "MCIL has a higher AIA than every baseline", "beats-baselines",
          lambda d, s: True, paper=_paper_beats),
    Claim("C2", "Audio-visual fusion (AAVFM) helps on clean data", "directional",
          lambda d, s: not s.is_noisy(d), b=Side("mcil-no-aavfm"), paper=lambda d: "directional"),
    Claim("C3", "The masking threshold helps on noisy data (the paper's th 0.8 vs always fuse)", "directional",
          lambda d, s: s.is_noisy(d), a=Side("mcil", th="0.8"), b=Side("mcil", th="always"),
          paper=lambda d: "directional"),
    Claim("C4", "α = 0.7 beats α = 1 (the MI term helps)", "directional",
          lambda d, s: True, b=Side("mcil", alpha=1.0), paper=lambda d: "directional"),
    Claim("C5", "Text-diversity prompts help", "directional",
          lambda d, s: True, b=Side("mcil-no-text-diversity"), paper=lambda d: "directional"),
    Claim("C6", "The MoE adapters (MIFE) help", "directional",
          lambda d, s: True, b=Side("mcil-no-mife"), paper=lambda d: "directional"),
    Claim("C7", "The similarity weighting of L_CW helps (weighted vs plain cross-entropy)", "directional",
          lambda d, s: True, a=Side("mcil-cw-weighted"), b=Side("mcil"), paper=lambda d: "directional"),
    Claim("H1", "Headline AIA of MCIL", "headline",
          lambda d, s: d in PAPER_AIA, paper=lambda d: f"{PAPER_AIA[d]:.2f}"),
    Claim("H2", "MCIL's margin over the next best method", "gap",
          lambda d, s: d in PAPER_NEXT_BEST,
          paper=lambda d: f"{PAPER_AIA[d] - PAPER_NEXT_BEST[d]:+.2f} ({PAPER_AIA[d]:.2f} − {PAPER_NEXT_BEST[d]:.2f})"),
]


def _row(claim: Claim, dataset: str, T: int | None, paper: str, **values: Any) -> dict[str, Any]:
    base = {"claim": claim.id, "text": claim.text, "dataset": dataset, "T": T, "paper": paper, "vs": "",
            "n": 0, "mean": math.nan, "mean_low": math.nan, "mean_high": math.nan, "diff": math.nan,
            "diff_low": math.nan, "diff_high": math.nan, "cohen_d": math.nan, "p_t": math.nan,
            "p_wilcoxon": math.nan, "verdict": "", "note": ""}
    base.update(values)
    return base


def _missing(claim_row_args: tuple, what: list[str], **values: Any) -> dict[str, Any]:
    claim, dataset, T, paper = claim_row_args
    return _row(claim, dataset, T, paper, **values, verdict=f"not evaluated (runs missing: {'; '.join(what)})")


def _evaluate(claim: Claim, runs: pd.DataFrame, dataset: str, T: int, s: ClaimSettings) -> dict[str, Any]:
    paper = claim.paper(dataset)
    args = (claim, dataset, T, paper)
    a = per_seed(runs, dataset, T, claim.a, s)
    if a.empty:
        return _missing(args, [f"{claim.a.describe(s)} on {dataset} T={T}"])
    m, lo, hi = mean_ci(a.to_numpy(), s.confidence)
    common = {"mean": m, "mean_low": lo, "mean_high": hi, "n": len(a)}

    if claim.kind == "directional":
        b = per_seed(runs, dataset, T, claim.b, s)
        if b.empty:
            return _missing(args, [f"{claim.b.describe(s)} on {dataset} T={T}"], **common)
        st = paired_stats(a, b, s.confidence)
        if st["n"] == 0:
            return _missing(args, [f"runs of both sides with a common seed on {dataset} T={T}"], **common)
        values = {**common, "n": st["n"], "vs": claim.b.describe(s), "diff": st["diff"], "diff_low": st["ci_low"],
                  "diff_high": st["ci_high"], "cohen_d": st["cohen_d"], "p_t": st["p_t"], "p_wilcoxon": st["p_wilcoxon"]}
        verdict = directional_verdict(st["n"], st["ci_low"], st["ci_high"])
        note = _unpaired_note(a, b)
        if verdict == INCONCLUSIVE:
            note = _join(note, power_note(st["diff"], st["sd"], st["n"], s.confidence, s.power))
        return _row(claim, dataset, T, paper, **values, verdict=verdict, note=note)

    best, best_series = best_baseline(runs, dataset, T, s)
    if claim.kind in ("beats-baselines", "gap") and best is None:
        return _missing(args, [f"baselines on {dataset} T={T} (th {s.default_th}, α {s.default_alpha:g})"], **common)
    st = paired_stats(a, best_series, s.confidence) if best is not None else None
    effect = {}
    if st is not None and st["n"] > 0:
        effect = {"vs": f"{best} (best baseline)", "diff": st["diff"], "diff_low": st["ci_low"],
                  "diff_high": st["ci_high"], "cohen_d": st["cohen_d"], "p_t": st["p_t"], "p_wilcoxon": st["p_wilcoxon"]}
    present = baselines_present(runs, dataset, T, s)
    missing = _missing_baselines(present, dataset, T, s)
    n_req = len(set(required_baselines(s)) | set(present))
    coverage = f"against {len(present)} of {n_req} configured baselines"
    missing_text = f"missing: {', '.join(missing)}" if missing else ""

    if claim.kind == "beats-baselines":
        verdicts, failing, stats_of = [], {NOT_REPRODUCED: [], INCONCLUSIVE: []}, {}
        for m_name in present:
            sb = paired_stats(a, per_seed(runs, dataset, T, Side(m_name), s), s.confidence)
            v = directional_verdict(sb["n"], sb["ci_low"], sb["ci_high"])
            verdicts.append(v)
            stats_of[m_name] = sb
            if v in failing:
                failing[v].append(m_name)
        note = coverage
        for v, names in failing.items():
            if names:
                shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
                note += f"; {v} against {shown}"
        verdict = combine_verdicts(verdicts)
        if missing and verdict != NOT_REPRODUCED:  # one counter-example refutes; support needs every baseline
            verdict = PARTIAL
            note = _join(note, f"{combine_verdicts(verdicts)} against those present", missing_text)
        if failing[INCONCLUSIVE] and verdict in (INCONCLUSIVE, PARTIAL):
            # the power of the hardest inconclusive comparison (the most seeds needed)
            def need(m_name: str) -> float:
                sb = stats_of[m_name]
                k = seeds_for_power(sb["diff"], sb["sd"], s.confidence, s.power)
                return math.inf if k is None else k
            hardest = max(failing[INCONCLUSIVE], key=need)
            sb = stats_of[hardest]
            note = _join(note, power_note(sb["diff"], sb["sd"], sb["n"], s.confidence, s.power, f"vs {hardest}: "))
        return _row(claim, dataset, T, paper, **{**common, **effect, "n": st["n"]}, verdict=verdict, note=note)

    if claim.kind == "headline":
        target = PAPER_AIA[dataset]
        verdict = headline_verdict(len(a), m, lo, hi, target, s.tolerance)
        note = f"tolerance ±{s.tolerance:g} points; the paper does not say which T"
        if verdict == INCONCLUSIVE:
            sd = float(a.std(ddof=1)) if len(a) >= 2 else math.nan
            note = _join(note, power_note(m - target, sd, len(a), s.confidence, s.power, "mean − paper: "))
        return _row(claim, dataset, T, paper, **{**common, **effect, "n": len(a)}, verdict=verdict, note=note)

    if claim.kind == "gap":
        target = PAPER_AIA[dataset] - PAPER_NEXT_BEST[dataset]
        verdict = headline_verdict(st["n"], st["diff"], st["ci_low"], st["ci_high"], target, s.tolerance)
        note = (f"gap to our best baseline; tolerance ±{s.tolerance:g} points; the paper's baselines are unknown; "
                + coverage)
        if missing and verdict != NOT_REPRODUCED:
            note = _join(note, f"{verdict} with the baselines present", missing_text)
            verdict = PARTIAL
        if verdict == INCONCLUSIVE:
            note = _join(note, power_note(st["diff"] - target, st["sd"], st["n"], s.confidence, s.power,
                                          "gap − paper: "))
        return _row(claim, dataset, T, paper, **{**common, **effect, "n": st["n"]}, verdict=verdict, note=note)
    raise ValueError(f"unknown claim kind {claim.kind!r}")


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def _unpaired_note(a: pd.Series, b: pd.Series) -> str:
    only = sorted(set(a.index) ^ set(b.index))
    return f"seeds without a pair left out: {', '.join(map(str, only))}" if only else ""


def evaluate_claims(runs: pd.DataFrame, settings: ClaimSettings = ClaimSettings()) -> tuple[pd.DataFrame, list[str]]:
    """Grade every claim on every dataset and T of the runs.

    Returns (rows, not_here): one row per (claim, dataset, T) for the datasets present in the
    runs, and one line per headline claim whose dataset has no run at all.
    """
    rows: list[dict[str, Any]] = []
    not_here: list[str] = []
    datasets = sorted(runs["dataset"].unique()) if not runs.empty else []
    for claim in CLAIMS:
        for dataset in datasets:
            if not claim.applies(dataset, settings):
                continue
            Ts = sorted(int(t) for t in runs.loc[runs["dataset"] == dataset, "T"].unique())
            for T in Ts:
                rows.append(_evaluate(claim, runs, dataset, T, settings))
        if claim.kind in ("headline", "gap"):
            for dataset in sorted(set(PAPER_AIA if claim.kind == "headline" else PAPER_NEXT_BEST) - set(datasets)):
                not_here.append(f"{claim.id} {claim.text} on {dataset} (paper: {claim.paper(dataset)}): "
                                f"not evaluated (no runs on {dataset})")
    columns = list(_row(CLAIMS[0], "", None, "").keys())
    table = pd.DataFrame(rows, columns=columns)
    if not table.empty:
        table = table.sort_values(["dataset", "T"], kind="stable")
        table["_order"] = table["claim"].map({c.id: i for i, c in enumerate(CLAIMS)})
        table = table.sort_values(["_order", "dataset", "T"], kind="stable").drop(columns="_order").reset_index(drop=True)
    return table, not_here


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _interval(m: float, lo: float, hi: float, signed: bool = False) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "–"
    if math.isnan(lo):
        return fmt_num(m, signed=signed)
    return f"{fmt_num(m, signed=signed)} [{fmt_num(lo, signed=signed)}, {fmt_num(hi, signed=signed)}]"


def _p(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _code_lines(runs: pd.DataFrame, claim_runs: pd.DataFrame | None = None) -> list[str]:
    if runs.empty or "code_version" not in runs:
        return []
    counts = runs["code_version"].value_counts().sort_index()
    lines = []
    if len(counts) > 1 or ("mixed_code" in runs and bool(runs["mixed_code"].any())):
        parts = ", ".join(f"`{v}` ({n} runs)" for v, n in counts.items())
        lines.append(f"> **Warning: mixed code versions.** The runs were made by {len(counts)} versions of the code: "
                     f"{parts}. Comparisons across versions may reflect code changes, not the methods; "
                     "re-run the older runs (delete their result.json) before trusting the verdicts.")
    dirty = int(runs["code_version"].str.endswith("+dirty").sum())
    if dirty:
        lines.append(f"> Note: {dirty} of {len(runs)} runs were made from a working tree with uncommitted changes; "
                     "their git commit does not identify the code exactly.")
    return lines


def render_markdown(table: pd.DataFrame, not_here: list[str], runs: pd.DataFrame, s: ClaimSettings) -> str:
    """The text of claims.md."""
    conf = f"{s.confidence * 100:g} %"
    out = [
        "# Claims of the paper, graded from the runs",
        "",
        f"Generated by `mcil aggregate` from {len(runs)} result files; do not edit by hand. "
        f"Metric: average incremental accuracy (AIA, %) over all seen classes; the main setting is "
        f"th = {s.default_th}, α = {s.default_alpha:g}. Seeds are paired across the two sides of a comparison.",
        "",
        f"- *Directional* claims: difference A − B over seeds with its {conf} t-interval; **reproduced** when the "
        "interval lies above 0, **not reproduced** when it lies below 0, **inconclusive** when it contains 0 or "
        "fewer than 2 seeds pair up. C1 needs that against every baseline (joint training is an upper bound, not a "
        "baseline: compare it on last accuracy, see the main table).",
        "- A claim over every baseline (C1, H2) is **partial** while a configured baseline has no runs on that dataset "
        "and T (listed as missing); one baseline it loses to makes it **not reproduced** regardless.",
        f"- *Headline* numbers (H): the measured mean against the paper's value ± {s.tolerance:g} points; "
        "**reproduced** when the mean is inside, **not reproduced** when the whole interval is outside.",
        f"- Every inconclusive verdict states the minimum detectable effect at its seed count and the seeds that would "
        f"detect the observed effect with {s.power * 100:g} % power: (t_(1+c)/2,n−1 + t_power,n−1) · sd / √n.",
        "- Effect size: Cohen's d of the paired differences (d_z); p: paired t-test; Wilcoxon signed-rank with ≥ 6 seeds.",
        "",
    ]
    code = _code_lines(runs)
    if code:
        out += code + [""]
    graded = table[table["verdict"].isin(GRADED)] if not table.empty else table
    skipped = table[~table["verdict"].isin(GRADED)] if not table.empty else table
    if table.empty:
        out += ["_No runs: nothing to grade._", ""]
    elif graded.empty:
        out += ["_No claim could be graded from these runs (see below)._", ""]
    else:
        header = ["Claim", "Dataset", "T", "Paper", f"Measured A [{conf} CI]", "vs (B)", f"A − B [{conf} CI]",
                  "Cohen's d", "p (t)", "p (Wilcoxon)", "n", "Verdict"]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(["---"] * len(header)) + "|")
        for r in graded.itertuples(index=False):
            verdict = f"**{r.verdict}**"
            if r.note:
                verdict += f" ({r.note})"
            out.append("| " + " | ".join([
                f"{r.claim}: {r.text}", r.dataset, "–" if r.T is None or pd.isna(r.T) else str(int(r.T)), r.paper or "–",
                _interval(r.mean, r.mean_low, r.mean_high), r.vs or "–",
                _interval(r.diff, r.diff_low, r.diff_high, signed=True), fmt_num(r.cohen_d),
                _p(r.p_t), _p(r.p_wilcoxon), str(r.n), verdict,
            ]) + " |")
        out.append("")
    if not table.empty:
        out += [f"Verdicts: {verdict_counts(table)}.", ""]
    upper = upper_bound_rows(runs, s)
    if upper:
        out += ["## Reference: joint training (upper bound), on last accuracy", "",
                f"| Dataset | T | joint last [{conf} CI] | best incremental method | its last [{conf} CI] | joint above it |",
                "|---|---|---|---|---|---|"]
        out += [f"| {u['dataset']} | {u['T']} | {_interval(*u['joint'])} | {u['best']} | {_interval(*u['best_last'])} | "
                f"{u['above']} |" for u in upper]
        out.append("")
    lines = [f"{r.claim} {r.text} on {r.dataset} T={int(r.T)}: {r.verdict}" for r in skipped.itertuples(index=False)]
    not_here = lines + list(not_here)
    if not_here:
        out += ["## Not evaluated", ""] + [f"- {line}" for line in not_here] + [""]
    return "\n".join(out)


def upper_bound_rows(runs: pd.DataFrame, s: ClaimSettings) -> list[dict[str, Any]]:
    """Joint training against the incremental methods on **last** accuracy (not AIA: joint has one
    step over all classes, AIA also averages the easier early steps), per dataset and T, main setting.

    One row per (dataset, T) with a joint run: joint's last [CI], the incremental method with the
    highest mean last [CI], and whether joint is above it (its interval above the method's mean).
    """
    if runs.empty or "last" not in runs:
        return []
    sel = runs[(runs["th"].astype(str) == str(s.default_th)) & np.isclose(runs["alpha"].astype(float), s.default_alpha)]
    out = []
    for (dataset, T), g in sel.groupby(["dataset", "T"]):
        j = pd.to_numeric(g.loc[g["method"].isin(UPPER_BOUNDS), "last"], errors="coerce").dropna()
        others = g[~g["method"].isin(UPPER_BOUNDS)]
        if j.empty or others.empty:
            continue
        means = others.groupby("method")["last"].apply(lambda x: pd.to_numeric(x, errors="coerce").mean()).dropna()
        if means.empty:
            continue
        best = str(means.idxmax())
        jm, jlo, jhi = mean_ci(j.to_numpy(), s.confidence)
        bm, blo, bhi = mean_ci(pd.to_numeric(others.loc[others["method"] == best, "last"], errors="coerce").dropna(),
                               s.confidence)
        if math.isnan(jlo):
            above = "one joint seed: no interval"
        else:
            above = "yes" if jlo > bm else ("no" if jhi < bm else "within the interval")
        out.append({"dataset": dataset, "T": int(T), "joint": (jm, jlo, jhi), "best": best, "best_last": (bm, blo, bhi),
                    "above": above})
    return out


def verdict_counts(table: pd.DataFrame) -> str:
    """``"2 reproduced, 0 not reproduced, 3 inconclusive, 1 partial, 4 not evaluated"`` (every kind, in that order)."""
    kinds = table["verdict"].map(lambda v: v if v in GRADED else "not evaluated") if not table.empty else pd.Series(dtype=str)
    counts = kinds.value_counts()
    return ", ".join(f"{int(counts.get(k, 0))} {k}" for k in (*GRADED, "not evaluated"))


def write_claims(runs: pd.DataFrame, out_dir: str | Path, settings: ClaimSettings = ClaimSettings()) -> tuple[Path, Path]:
    """Write ``claims.md`` and ``claims.csv`` (the same rows, numbers unrounded) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table, not_here = evaluate_claims(runs, settings)
    md = out_dir / "claims.md"
    atomic_write_text(md, render_markdown(table, not_here, runs, settings))
    csv = out_dir / "claims.csv"
    atomic_write_text(csv, table.to_csv(index=False))
    log.info("claims: %d rows graded", len(table))
    return md, csv
