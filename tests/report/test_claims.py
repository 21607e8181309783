"""Claims: statistics by hand, a verdict in each direction, missing runs, headline numbers, mixed code."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from results_factory import write_run
from scipy import stats

from mcil.report import aggregate, claims
from mcil.report.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, ClaimSettings


def test_paired_stats_by_hand():
    a = pd.Series([3.0, 4.0, 5.0], index=[0, 1, 2])
    b = pd.Series([1.0, 1.0, 1.0, 9.0], index=[0, 1, 2, 3])  # seed 3 has no pair
    st = claims.paired_stats(a, b, 0.95)
    # differences 2, 3, 4: mean 3, sd 1, half-width t_{0.975, 2} * 1 / sqrt(3)
    half = 4.302652729911275 / math.sqrt(3)
    assert st["n"] == 3 and st["seeds"] == [0, 1, 2]
    assert st["diff"] == pytest.approx(3.0)
    assert st["sd"] == pytest.approx(1.0)
    assert (st["ci_low"], st["ci_high"]) == (pytest.approx(3 - half), pytest.approx(3 + half))
    assert st["cohen_d"] == pytest.approx(3.0)
    assert st["p_t"] == pytest.approx(stats.ttest_rel([3, 4, 5], [1, 1, 1]).pvalue)
    assert math.isnan(st["p_wilcoxon"])  # only with n >= 6


def test_wilcoxon_from_six_seeds():
    a = pd.Series([5.0, 6.0, 7.0, 8.0, 9.0, 11.0])
    b = pd.Series([1.0, 1.5, 2.0, 2.5, 3.0, 3.0])
    st = claims.paired_stats(a, b)
    assert st["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a, b).pvalue)


def test_mean_ci():
    m, lo, hi = claims.mean_ci([1.0, 2.0, 3.0], 0.95)
    assert m == 2.0
    assert hi - m == pytest.approx(4.302652729911275 / math.sqrt(3))
    m, lo, hi = claims.mean_ci([5.0])
    assert m == 5.0 and math.isnan(lo) and math.isnan(hi)


@pytest.mark.parametrize(
    "n, lo, hi, verdict",
    [(3, 0.5, 2.0, REPRODUCED), (3, -2.0, -0.1, NOT_REPRODUCED), (3, -1.0, 1.0, INCONCLUSIVE),
     (1, math.nan, math.nan, INCONCLUSIVE)],
)
def test_directional_verdict(n, lo, hi, verdict):
    assert claims.directional_verdict(n, lo, hi) == verdict


@pytest.mark.parametrize(
    "mean, lo, hi, verdict",
    [(66.5, 65.0, 68.0, REPRODUCED), (60.0, 58.0, 62.0, NOT_REPRODUCED), (64.0, 62.0, 66.5, INCONCLUSIVE)],
)
def test_headline_verdict(mean, lo, hi, verdict):
    assert claims.headline_verdict(3, mean, lo, hi, target=67.76, tolerance=2.0) == verdict


def _grade(root, settings=ClaimSettings(noisy=["synav-noisy"], default_th="0.8")):
    runs, _ = aggregate.load_runs([root])
    table, not_here = claims.evaluate_claims(runs, settings)
    return runs, table, not_here


def _row(table, claim, dataset="synav-clean", T=2):
    sel = table[(table["claim"] == claim) & (table["dataset"] == dataset) & (table["T"] == T)]
    assert len(sel) == 1, table
    return sel.iloc[0]


def test_fusion_claim_reproduced_and_text_diversity_not_reproduced(runs_root):
    for seed, (m, no_fusion, no_text) in enumerate([(70.0, 60.0, 80.0), (72.0, 61.0, 83.0), (74.0, 64.0, 82.0)]):
        write_run(runs_root, method="mcil", seed=seed, acc=[90.0, m])
        write_run(runs_root, method="mcil-no-aavfm", seed=seed, acc=[90.0, no_fusion])
        write_run(runs_root, method="mcil-no-text-diversity", seed=seed, acc=[90.0, no_text])
    _, table, _ = _grade(runs_root)

    c2 = _row(table, "C2")
    assert c2["verdict"] == REPRODUCED
    d = np.array([70 - 60, 72 - 61, 74 - 64]) / 2  # AIA differences (acc after task 1 is equal)
    assert c2["diff"] == pytest.approx(d.mean())
    assert c2["cohen_d"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert c2["n"] == 3
    assert c2["vs"].startswith("mcil-no-aavfm")

    assert _row(table, "C5")["verdict"] == NOT_REPRODUCED
    assert _row(table, "C6")["verdict"].startswith("not evaluated (runs missing: mcil-no-mife")


def test_single_seed_is_inconclusive(runs_root):
    write_run(runs_root, method="mcil", seed=0, acc=[90.0, 80.0])
    write_run(runs_root, method="mcil-no-aavfm", seed=0, acc=[90.0, 40.0])
    _, table, _ = _grade(runs_root)
    assert _row(table, "C2")["verdict"] == INCONCLUSIVE


def test_masking_claim_only_on_noisy_data(runs_root):
    for seed, (m, always) in enumerate([(70.0, 60.0), (71.0, 62.0)]):
        for ds in ("synav-clean", "synav-noisy"):
            write_run(runs_root, dataset=ds, method="mcil", seed=seed, acc=[90.0, m])
            write_run(runs_root, dataset=ds, method="mcil", th="always", seed=seed, acc=[90.0, always])
    _, table, _ = _grade(runs_root)
    assert set(table.loc[table["claim"] == "C3", "dataset"]) == {"synav-noisy"}
    assert set(table.loc[table["claim"] == "C2", "dataset"]) == {"synav-clean"}
    assert _row(table, "C3", "synav-noisy")["verdict"] == REPRODUCED


def test_beats_every_baseline_needs_every_baseline(runs_root):
    # mcil beats finetune clearly; against lwf the interval crosses 0; joint (upper bound) is ignored.
    for seed, (m, ft, lwf) in enumerate([(80.0, 40.0, 79.0), (82.0, 42.0, 84.0), (84.0, 41.0, 83.0)]):
        write_run(runs_root, method="mcil", seed=seed, acc=[90.0, m])
        write_run(runs_root, method="finetune", seed=seed, acc=[90.0, ft])
        write_run(runs_root, method="lwf", seed=seed, acc=[90.0, lwf])
        write_run(runs_root, method="joint", seed=seed, acc=[95.0, 95.0])
    _, table, _ = _grade(runs_root)
    c1 = _row(table, "C1")
    assert c1["verdict"] == INCONCLUSIVE
    assert c1["vs"] == "lwf (best baseline)"
    assert "against 2 baselines" in c1["note"] and "inconclusive against lwf" in c1["note"]


def test_headline_numbers_on_real_data(runs_root):
    for seed, (m, base) in enumerate([(67.0, 49.0), (68.0, 50.0), (68.5, 48.0)]):
        # AIA = mean of the two steps: choose the steps so that AIA = m
        write_run(runs_root, dataset="miniaric", method="mcil", T=5, seed=seed,
                  acc=[m + 2, m + 1, m, m - 1, m - 2])
        write_run(runs_root, dataset="miniaric", method="finetune", T=5, seed=seed,
                  acc=[base + 2, base + 1, base, base - 1, base - 2])
    _, table, not_here = _grade(runs_root, ClaimSettings(noisy=["miniaric"], default_th="0.8"))
    h1 = _row(table, "H1", "miniaric", 5)
    assert h1["paper"] == "67.76"
    assert h1["mean"] == pytest.approx((67.0 + 68.0 + 68.5) / 3)
    assert h1["verdict"] == REPRODUCED
    assert h1["vs"] == "finetune (best baseline)"
    h2 = _row(table, "H2", "miniaric", 5)
    assert h2["diff"] == pytest.approx((18.0 + 18.0 + 20.5) / 3)
    assert h2["verdict"] == REPRODUCED  # 18.83 within 18.57 ± 2
    assert any(line.startswith("H1 Headline AIA of MCIL on imagenet-esc-19") for line in not_here)


def test_markdown_has_every_row_and_flags_mixed_code(runs_root, tmp_path):
    for seed in (0, 1):
        write_run(runs_root, method="mcil", seed=seed, acc=[90.0, 70.0 + seed], git_sha=("a" if seed else "b") * 40)
        write_run(runs_root, method="finetune", seed=seed, acc=[90.0, 30.0 + 3 * seed])
    runs, _ = aggregate.load_runs([runs_root])
    md_path, csv_path = claims.write_claims(runs, tmp_path, ClaimSettings(noisy=[], default_th="0.8"))
    md = md_path.read_text()
    assert "Warning: mixed code versions" in md and "0.1.0@bbbbbbbbbb" in md
    table = pd.read_csv(csv_path)
    assert len(table) == 6  # C1, C2, C4, C5, C6, C7 on synav-clean T=2 (C3 is for noisy data)
    for claim in ("C1", "C2", "C4", "C5", "C6", "C7"):
        assert f"| {claim}: " in md
    assert md.count("not evaluated (runs missing:") == 5  # C2, C4, C5, C6, C7: only mcil and one baseline ran


def test_no_runs_no_crash(tmp_path):
    empty, _ = aggregate.collect([])
    md_path, _ = claims.write_claims(empty, tmp_path)
    text = md_path.read_text()
    assert "No runs" in text and "no runs on miniaric" in text
