"""Claims: statistics by hand, a verdict in each direction, missing runs, headline numbers, mixed code."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mcil.errors import UserError
from mcil.report import aggregate, claims
from mcil.report.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, ClaimSettings

from results_factory import write_run


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
    configured = ClaimSettings(noisy=["synav-noisy"], default_th="0.8", baselines=("finetune", "lwf", "joint"))
    _, table, _ = _grade(runs_root, configured)
    c1 = _row(table, "C1")
    assert c1["verdict"] == INCONCLUSIVE
    assert c1["vs"] == "lwf (best baseline)"
    assert "against 2 of 2 configured baselines" in c1["note"] and "inconclusive against lwf" in c1["note"]
    assert "detectable at n = 3" in c1["note"]


def test_headline_numbers_on_real_data(runs_root):
    for seed, (m, base) in enumerate([(67.0, 49.0), (68.0, 50.0), (68.5, 48.0)]):
        # AIA = mean of the two steps: choose the steps so that AIA = m
        write_run(runs_root, dataset="miniaric", method="mcil", T=5, seed=seed,
                  acc=[m + 2, m + 1, m, m - 1, m - 2])
        write_run(runs_root, dataset="miniaric", method="finetune", T=5, seed=seed,
                  acc=[base + 2, base + 1, base, base - 1, base - 2])
    _, table, not_here = _grade(runs_root, ClaimSettings(noisy=["miniaric"], default_th="0.8", baselines=("finetune",)))
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
    assert "| C1: " in md  # graded (partial: one baseline of the registry list)
    for claim in ("C2", "C4", "C5", "C6", "C7"):  # only mcil and one baseline ran: listed once, at the end
        assert f"| {claim}: " not in md
    tail = md.split("## Not evaluated", 1)[1]
    assert tail.count("not evaluated (runs missing:") == 5
    assert "Verdicts: 0 reproduced, 0 not reproduced, 0 inconclusive, 1 partial, 5 not evaluated." in md


def test_no_runs_no_crash(tmp_path):
    empty, _ = aggregate.collect([])
    md_path, _ = claims.write_claims(empty, tmp_path)
    text = md_path.read_text()
    assert "No runs" in text and "no runs on miniaric" in text


def test_every_baseline_claim_is_partial_when_a_configured_baseline_is_missing(runs_root):
    # T = 3: mcil beats finetune clearly, but lwf is configured too and has no runs
    for seed, (m, ft) in enumerate([(80.0, 40.0), (82.0, 42.0), (84.0, 41.0)]):
        write_run(runs_root, method="mcil", T=3, seed=seed, acc=[90.0, m, m])
        write_run(runs_root, method="finetune", T=3, seed=seed, acc=[90.0, ft, ft])
    expected = claims.parse_expected(["synav-clean:3:mcil", "synav-clean:3:finetune", "synav-clean:3:lwf",
                                      "synav-clean:5:ewc", "synav-clean:5:joint"])
    s = ClaimSettings(noisy=[], default_th="0.8", expected=expected)
    _, table, _ = _grade(runs_root, s)
    c1 = _row(table, "C1", T=3)
    assert c1["verdict"] == claims.PARTIAL
    assert "against 1 of 3 configured baselines" in c1["note"]  # finetune, lwf, ewc (joint: upper bound)
    assert "reproduced against those present" in c1["note"]
    assert "missing: ewc, lwf (configured, no result)" in c1["note"]
    # without configured cells: mcil's registry list (config/default.yaml method_sets.baselines)
    _, table, _ = _grade(runs_root, ClaimSettings(noisy=[], default_th="0.8"))
    c1 = _row(table, "C1", T=3)
    assert c1["verdict"] == claims.PARTIAL and "against 1 of 10 configured baselines" in c1["note"]
    # a baseline that beats mcil refutes the claim even with others missing
    for seed in range(3):
        write_run(runs_root, method="ewc", T=3, seed=seed, acc=[90.0, 95.0, 95.0])
    _, table, _ = _grade(runs_root, s)
    assert _row(table, "C1", T=3)["verdict"] == NOT_REPRODUCED


def test_default_baselines_equal_the_pipeline_config():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    for name in ("default.yaml", "paper.yaml"):
        cfg = yaml.safe_load((root / "config" / name).read_text())
        assert tuple(cfg["method_sets"]["baselines"]) == claims.DEFAULT_BASELINES, name


def test_parse_expected_tokens_and_json(tmp_path):
    f = tmp_path / "cells.json"
    f.write_text('[{"dataset": "synav-noisy", "T": "5", "method": "lwf", "seed": "0"}]')
    cells = claims.parse_expected(["synav-clean:3:mcil", f"@{f}"])
    assert cells == {("synav-clean", 3, "mcil"), ("synav-noisy", 5, "lwf")}
    assert claims.parse_expected(None) is None
    with pytest.raises(UserError, match="DATASET:T:METHOD"):
        claims.parse_expected(["synav-clean-lwf"])


def test_mde_and_seeds_for_power_by_hand():
    # t_{0.975,2} = 4.302653, t_{0.8,2} = 1.060660 (t table): (4.302653 + 1.060660) / √3
    assert claims.mde(1.0, 3) == pytest.approx(5.363313 / math.sqrt(3), abs=1e-5)  # 3.0965
    assert claims.mde(2.0, 3) == pytest.approx(2 * 3.096511, abs=1e-5)
    assert math.isnan(claims.mde(1.0, 1))
    # effect = sd = 1: n = 9: (2.306004 + 0.888889) / 3 = 1.0650 > 1; n = 10: (2.262157 + 0.883404) / √10 = 0.9947
    assert claims.mde(1.0, 9) == pytest.approx(3.194893 / 3, abs=1e-5)
    assert claims.mde(1.0, 10) == pytest.approx(3.145561 / math.sqrt(10), abs=1e-5)
    assert claims.seeds_for_power(1.0, 1.0) == 10
    assert claims.seeds_for_power(-1.0, 1.0) == 10
    assert claims.seeds_for_power(0.0, 1.0) is None
    note = claims.power_note(1.0, 1.0, 3, 0.95)
    assert "|effect| ≥ 3.10 points (80 % power)" in note and "needs 10 seeds" in note


def test_inconclusive_directional_claim_states_power(runs_root):
    # paired AIA differences 1, -1, 3 (acc after task 1 equal): mean 1, sd 2
    for seed, (m, b) in enumerate([(72.0, 70.0), (70.0, 72.0), (76.0, 70.0)]):
        write_run(runs_root, method="mcil", seed=seed, acc=[90.0, m])
        write_run(runs_root, method="mcil-no-aavfm", seed=seed, acc=[90.0, b])
    _, table, _ = _grade(runs_root)
    c2 = _row(table, "C2")
    assert c2["verdict"] == INCONCLUSIVE
    assert f"|effect| ≥ {claims.mde(2.0, 3):.2f}" in c2["note"]
    assert f"needs {claims.seeds_for_power(1.0, 2.0)} seeds" in c2["note"]


def test_joint_is_compared_on_last_accuracy(runs_root, tmp_path):
    import json

    from results_factory import make_result, run_dir

    for seed, (m_last, j) in enumerate([(60.0, 90.0), (62.0, 92.0)]):
        write_run(runs_root, method="mcil", seed=seed, acc=[95.0, m_last])  # last 60, 62 far below joint; AIA would mix in step 1
        folder = run_dir(runs_root, "synav-clean", "joint", 2, "0.8", 0.7, seed)
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(json.dumps(make_result(method="joint", T=1, seed=seed, acc=[j])))
    runs, _ = aggregate.load_runs([runs_root])
    rows = claims.upper_bound_rows(runs, ClaimSettings(default_th="0.8"))
    assert len(rows) == 1 and rows[0]["best"] == "mcil"
    assert rows[0]["joint"][0] == pytest.approx(91.0) and rows[0]["best_last"][0] == pytest.approx(61.0)
    assert rows[0]["above"] == "yes"
    md = claims.write_claims(runs, tmp_path, ClaimSettings(default_th="0.8", noisy=[]))[0].read_text()
    assert "## Reference: joint training (upper bound), on last accuracy" in md
