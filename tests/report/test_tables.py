"""Tables: mean ± std over seeds checked against hand-computed values; row orders; renderers."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from mcil.report import aggregate, tables

from results_factory import write_run


@pytest.fixture
def runs(runs_root) -> pd.DataFrame:
    # mcil: AIA per seed 72, 74, 76 (acc after task 1 / task 2 chosen so that AIA = their mean)
    for seed, (a1, a2) in enumerate([(80.0, 64.0), (80.0, 68.0), (80.0, 72.0)]):
        write_run(runs_root, method="mcil", seed=seed, acc=[a1, a2])
    # finetune: AIA 60 and 62 (two seeds)
    for seed, (a1, a2) in enumerate([(80.0, 40.0), (80.0, 44.0)]):
        write_run(runs_root, method="finetune", seed=seed, acc=[a1, a2])
    # ablation preset: AIA 70, 71, 72 -> paired deltas vs mcil: -2, -3, -4
    for seed, a2 in enumerate([60.0, 62.0, 64.0]):
        write_run(runs_root, method="mcil-no-aavfm", seed=seed, acc=[80.0, a2])
    # threshold sweep of mcil (always, 0.6) and alpha sweep (1.0), one seed each
    write_run(runs_root, method="mcil", th="always", seed=0, acc=[80.0, 50.0], fusion_rate=1.0)
    write_run(runs_root, method="mcil", th="0.6", seed=0, acc=[80.0, 70.0], fusion_rate=0.75)
    write_run(runs_root, method="mcil", alpha=1.0, seed=0, acc=[80.0, 60.0])
    # a second T for mcil
    write_run(runs_root, method="mcil", T=3, seed=0, acc=[90.0, 80.0, 70.0])
    df, _ = aggregate.load_runs([runs_root])
    return df


def _cell(summary: pd.DataFrame, **where) -> pd.Series:
    sel = summary
    for k, v in where.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def test_main_table_mean_std_by_hand(runs):
    s = tables.main_summary(runs, "0.8", 0.7)
    mcil = _cell(s, method="mcil", T=2, metric="aia")
    assert mcil["mean"] == pytest.approx(74.0)  # (72 + 74 + 76) / 3
    assert mcil["std"] == pytest.approx(2.0)  # sqrt(((-2)^2 + 0 + 2^2) / 2)
    assert mcil["n"] == 3
    ft = _cell(s, method="finetune", T=2, metric="last")
    assert ft["mean"] == pytest.approx(42.0)
    assert ft["std"] == pytest.approx(math.sqrt(8.0))  # values 40, 44
    # sweeps and other T are not in the main table's T=2 cells; the T=3 run is its own column
    assert _cell(s, method="mcil", T=3, metric="aia")["n"] == 1
    # no zero-shot run and no "ours" values in these runs: those columns are left out
    assert set(s["metric"]) == {"aia", "last", "forgetting", "m1", "m2"}

    wide = tables.wide(s, "method")
    assert list(wide.index) == ["mcil", "mcil-no-aavfm", "finetune"]  # mcil, presets, then the others
    assert wide.loc["mcil", "synav-clean T=2 AIA"] == "74.00 ± 2.00"
    assert wide.loc["mcil", "synav-clean T=3 AIA"] == "80.00"  # one seed: no std
    assert wide.loc["finetune", "synav-clean T=3 AIA"] == "–"


def test_ablation_table_has_paired_delta(runs):
    s = tables.ablation_summary(runs, "0.8", 0.7)
    delta = _cell(s, method="mcil-no-aavfm", T=2, metric="delta_aia")
    assert delta["mean"] == pytest.approx(-3.0)
    assert delta["std"] == pytest.approx(1.0)
    assert set(s["method"]) == {"mcil", "mcil-no-aavfm"}
    assert "finetune" not in set(s["method"])
    assert set(s["T"]) == {2}  # T=3 has only mcil: no ablation there


def test_threshold_and_alpha_tables(runs):
    th = tables.threshold_summary(runs, "0.8", 0.7)
    assert list(dict.fromkeys(th["th"])) == ["0.6", "0.8", "always"]
    assert _cell(th, th="always", metric="aia")["mean"] == pytest.approx(65.0)
    assert _cell(th, th="0.8", metric="fusion_rate")["mean"] == pytest.approx(0.5)
    al = tables.alpha_summary(runs, "0.8", 0.7)
    assert sorted(set(al["alpha"])) == [0.7, 1.0]
    assert _cell(al, alpha=1.0, metric="aia")["mean"] == pytest.approx(70.0)


def test_tasks_table_only_methods_with_several_T(runs):
    s = tables.tasks_summary(runs, "0.8", 0.7)
    assert set(s["method"]) == {"mcil"}
    assert set(s["T"]) == {2, 3}


def test_orders():
    assert tables.method_order(["lwf", "mcil-no-mi", "ewc", "mcil", "mcil-gate-always"]) == [
        "mcil", "mcil-gate-always", "mcil-no-mi", "ewc", "lwf"]
    assert tables.th_order(["never", "0.9", "always", "0.6", "0.8"]) == ["0.6", "0.8", "0.9", "always", "never"]


def test_format_pm():
    assert tables.format_pm(67.756, 1.2) == "67.76 ± 1.20"
    assert tables.format_pm(67.756, math.nan) == "67.76"
    assert tables.format_pm(math.nan, math.nan) == "–"


def test_renderers(runs):
    wide = tables.wide(tables.main_summary(runs, "0.8", 0.7), "method")
    md = tables.to_markdown(wide, "Main")
    assert md.startswith("## Main\n")
    assert "| mcil | 74.00 ± 2.00 |" in md
    tex = tables.to_latex(wide, "Main", "tab:main")
    assert r"74.00 $\pm$ 2.00" in tex and r"\begin{tabular}{lcccccccccc}" in tex
    assert "no runs" in tables.to_latex(pd.DataFrame(), "Empty")
    assert "_No runs for this table._" in tables.to_markdown(pd.DataFrame(), "Empty")


def test_empty_runs_give_empty_tables(tmp_path):
    empty, _ = aggregate.collect([])
    written = tables.write_tables(empty, tmp_path, "0.8", 0.7)
    assert len(written) == 18  # 5 tables + reproduced.{csv,md,tex}
    assert pd.read_csv(tmp_path / "main.csv").empty


def test_reproduced_table_sources_and_ours(runs_root):
    for seed, a in enumerate([66.0, 68.0, 70.0]):
        write_run(runs_root, dataset="miniaric", method="mcil", T=5, seed=seed, acc=[a] * 5)
    runs, _ = aggregate.load_runs([runs_root])
    t = tables.reproduced_table(runs, "0.8", 0.7)
    mini = t[(t.index == "mcil") & (t["setting"] == "miniARIC")].iloc[0]
    half = 4.302652729749462 * 2.0 / math.sqrt(3)
    assert mini["reported"] == "67.76" and "2506.09999" in mini["source"]
    assert mini["ours"] == f"mcil T=5: 68.00 [{68 - half:.2f}, {68 + half:.2f}] (n=3)"
    esc = t[(t.index == "mcil") & (t["setting"] == "ImageNet-ESC-19")].iloc[0]
    assert esc["ours"].startswith("not run here (needs imagenet-esc-19")
    moe = t.loc["moe-adapters"]
    assert moe["reported"] == "85.21" and moe["reproduced by"] == "LibContinual 85.49"
    assert "no published number" in t.loc["lwf", "source"]


def test_docs_list_every_reported_number():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "reproduced.md").read_text()
    for r in tables.REPORTED:
        assert f"{r.value:.2f}" in text and r.published_as in text, r
