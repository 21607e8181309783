"""Statistics shared by ``claims.md`` (:mod:`mcil.report.claims`) and the validation studies
(:mod:`mcil.report.studies`): pure functions of numbers and per-seed series.

- :func:`mean_ci`, :func:`mean_ci_n`: a mean and its two-sided t-interval over seeds;
- :func:`paired_stats`: A − B paired by seed (mean, t-interval, d_z, paired t-test, Wilcoxon);
- :func:`mde`, :func:`seeds_for_power`, :func:`power_note`: the minimum detectable effect of a paired
  t-interval and the seeds an observed effect needs (80 % power by default);
- :func:`kendall_tau`, :func:`bootstrap_tau`: Kendall τ-b between two rankings and its percentile
  bootstrap interval over seeds;
- :func:`fmt_num`, :func:`fmt_ci`: how the reports write a number and an interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "POWER",
    "mean_ci",
    "mean_ci_n",
    "paired_stats",
    "mde",
    "seeds_for_power",
    "power_note",
    "kendall_tau",
    "bootstrap_tau",
    "fmt_num",
    "fmt_ci",
]

POWER = 0.8


def mean_ci(values: Any, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided t-interval; the interval is (nan, nan) for fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if n < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
    return m, m - half, m + half


def mean_ci_n(values: Sequence[float], confidence: float) -> tuple[float, float, float, int]:
    """:func:`mean_ci` of the values that are not None or NaN, and how many there were."""
    x = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], dtype=float)
    m, lo, hi = mean_ci(x, confidence)
    return m, lo, hi, len(x)


def paired_stats(a: pd.Series, b: pd.Series, confidence: float = 0.95) -> dict[str, Any]:
    """Paired comparison of two per-seed series (index = seed) on their common seeds.

    Returns n, seeds, mean_a, mean_b, diff (mean of a − b), ci_low, ci_high, sd, cohen_d (d_z),
    p_t (paired t-test, two-sided), p_wilcoxon (n >= 6, else nan).
    """
    common = sorted(set(a.dropna().index) & set(b.dropna().index))
    xa = a.loc[common].to_numpy(dtype=float)
    xb = b.loc[common].to_numpy(dtype=float)
    d = xa - xb
    n = len(d)
    diff, lo, hi = mean_ci(d, confidence)
    sd = float(d.std(ddof=1)) if n >= 2 else math.nan
    if n >= 2 and sd > 0:
        cohen_d = diff / sd
        p_t = float(stats.ttest_rel(xa, xb).pvalue)
    elif n >= 2:  # identical differences: the sign is certain, the size unbounded
        cohen_d = math.copysign(math.inf, diff) if diff != 0 else 0.0
        p_t = 0.0 if diff != 0 else 1.0
    else:
        cohen_d = p_t = math.nan
    p_w = math.nan
    if n >= 6 and np.any(d != 0):
        try:
            p_w = float(stats.wilcoxon(xa, xb).pvalue)
        except ValueError:
            p_w = math.nan
    return {
        "n": n,
        "seeds": common,
        "mean_a": float(xa.mean()) if n else math.nan,
        "mean_b": float(xb.mean()) if n else math.nan,
        "diff": diff,
        "ci_low": lo,
        "ci_high": hi,
        "sd": sd,
        "cohen_d": cohen_d,
        "p_t": p_t,
        "p_wilcoxon": p_w,
    }


def _power_factor(n: int, confidence: float, power: float) -> float:
    """``t_{(1+c)/2, n−1} + t_{power, n−1}``: the shift, in standard errors, that a two-sided
    t-interval at confidence c excludes 0 with probability ``power`` (normal-shift approximation)."""
    return float(stats.t.ppf((1 + confidence) / 2, n - 1) + stats.t.ppf(power, n - 1))


def mde(sd: float, n: int, confidence: float = 0.95, power: float = POWER) -> float:
    """Minimum detectable effect of a paired (or one-sample) t-interval with ``n`` seeds:
    ``(t_{(1+c)/2, n−1} + t_{power, n−1}) · sd / √n``; nan for n < 2 or an unknown sd.

    Example (hand): sd = 1, n = 3, 95 %, 80 %: (4.3027 + 1.0607) / √3 = 3.0965.
    """
    if n < 2 or sd is None or not math.isfinite(sd):
        return math.nan
    return _power_factor(n, confidence, power) * sd / math.sqrt(n)


def seeds_for_power(effect: float, sd: float, confidence: float = 0.95, power: float = POWER,
                    max_n: int = 10_000) -> int | None:
    """Smallest n ≥ 2 whose :func:`mde` is ≤ ``|effect|`` (seeds to detect the observed effect at
    ``power``); None when the effect is 0 or needs more than ``max_n`` seeds, or sd is unknown.

    Example (hand): effect = sd = 1: n = 9 gives (2.3060 + 0.8889)/3 = 1.065 > 1, n = 10 gives
    (2.2622 + 0.8834)/√10 = 0.995 ≤ 1, so 10.
    """
    if sd is None or not math.isfinite(sd) or not math.isfinite(effect) or effect == 0:
        return None
    if sd == 0:
        return 2
    lo, hi = 2, 2
    while mde(sd, hi, confidence, power) > abs(effect):
        if hi >= max_n:
            return None
        lo, hi = hi, min(hi * 2, max_n)
    while lo < hi:  # mde decreases with n
        mid = (lo + hi) // 2
        if mde(sd, mid, confidence, power) <= abs(effect):
            hi = mid
        else:
            lo = mid + 1
    return hi


def power_note(effect: float, sd: float, n: int, confidence: float, power: float = POWER, what: str = "") -> str:
    """The sentence an inconclusive verdict carries: MDE at n seeds and seeds for the observed effect."""
    pct = f"{power * 100:g} %"
    if n < 2 or not math.isfinite(sd):
        return f"{what}fewer than 2 paired seeds: no minimum detectable effect; run ≥ 2 seeds"
    text = f"{what}detectable at n = {n}: |effect| ≥ {mde(sd, n, confidence, power):.2f} points ({pct} power)"
    need = seeds_for_power(effect, sd, confidence, power)
    if need is None:
        text += f"; the observed {effect:+.2f} needs more than 10000 seeds" if effect else "; the observed effect is 0"
    else:
        text += f"; the observed {effect:+.2f} needs {need} seeds"
    return text


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ-b between two score vectors (NaN with fewer than 3 pairs or a constant vector).

    τ-b = Σ_{i<j} sx·sy / sqrt(Σ sx² · Σ sy²) with sx = sign(x_i − x_j), sy = sign(y_i − y_j);
    equal to ``scipy.stats.kendalltau`` (variant b), computed directly because the bootstrap calls it
    thousands of times on a handful of methods.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    i, j = np.triu_indices(len(x), k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    return float((sx * sy).sum() / math.sqrt((sx * sx).sum() * (sy * sy).sum()))


def bootstrap_tau(values: Mapping[str, tuple[Sequence[float], Sequence[float]]], n_boot: int, confidence: float,
                  seed: int = 0) -> tuple[float, float, float]:
    """τ between two metrics over methods, with a percentile bootstrap interval over seeds.

    ``values``: method → (per-seed values of metric X, per-seed values of metric Y), the two
    lists paired by seed. Each resample draws, for every method, its seeds with replacement and
    recomputes both means. Returns (τ of the means, low, high); the interval is NaN when fewer
    than half the resamples give a defined τ.
    """
    methods = [m for m, (xs, ys) in values.items() if len(xs) and len(xs) == len(ys)]
    if len(methods) < 3:
        return math.nan, math.nan, math.nan
    xs = [np.asarray(values[m][0], dtype=float) for m in methods]
    ys = [np.asarray(values[m][1], dtype=float) for m in methods]
    tau = kendall_tau([x.mean() for x in xs], [y.mean() for y in ys])
    rng = np.random.default_rng(seed)
    mx, my = np.empty((n_boot, len(xs))), np.empty((n_boot, len(xs)))
    for k, (x, y) in enumerate(zip(xs, ys)):
        pick = rng.integers(0, len(x), (n_boot, len(x)))  # the same seeds for both metrics
        mx[:, k], my[:, k] = x[pick].mean(axis=1), y[pick].mean(axis=1)
    i, j = np.triu_indices(len(xs), k=1)
    sx, sy = np.sign(mx[:, i] - mx[:, j]), np.sign(my[:, i] - my[:, j])
    den = np.sqrt((sx * sx).sum(axis=1) * (sy * sy).sum(axis=1))
    taus = np.divide((sx * sy).sum(axis=1), den, out=np.full(n_boot, np.nan), where=den > 0)
    taus = taus[~np.isnan(taus)]
    if len(taus) < n_boot / 2:
        return tau, math.nan, math.nan
    a = (1 - confidence) / 2
    return tau, float(np.quantile(taus, a)), float(np.quantile(taus, 1 - a))


def fmt_num(x: float, digits: int = 2, signed: bool = False) -> str:
    """``"61.20"`` (``"+1.50"`` signed); ``"–"`` for None or NaN, ``"+∞"`` / ``"−∞"`` for infinities."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float) and math.isinf(x):
        return "+∞" if x > 0 else "−∞"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def fmt_ci(mean: float, lo: float, hi: float, digits: int = 2, signed: bool = False) -> str:
    """``"61.20 [58.10, 64.30]"``; the mean alone when there is no interval."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if lo is None or math.isnan(lo):
        return fmt_num(mean, digits, signed)
    return f"{fmt_num(mean, digits, signed)} [{fmt_num(lo, digits, signed)}, {fmt_num(hi, digits, signed)}]"
