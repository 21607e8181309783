"""Figures: fixed colours and families, t-interval bands by hand, joint drawn as a reference line."""

from __future__ import annotations

import math

import matplotlib.colors as mcolors
import pandas as pd
import pytest

from mcil.report import aggregate, plots

from results_factory import make_result, run_dir, write_run


def test_every_configured_method_has_its_own_fixed_colour_and_a_family():
    from pathlib import Path

    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "default.yaml").read_text())
    methods = [*cfg["method_sets"]["mcil"], *cfg["method_sets"]["presets"], *cfg["method_sets"]["baselines"]]
    colours = [plots.method_colour(m) for m in methods]
    assert len(set(colours)) == len(methods)  # no two methods share a colour, in any figure
    assert plots.method_colour("mcil") == "#000000"
    assert plots.method_colour("some-new-method") == plots.method_colour("some-new-method")
    for m in methods:
        assert plots.method_family(m) in (*plots.FAMILIES, "reference"), m
    assert plots.method_family("zeroshot") == plots.method_family("joint") == "reference"
    assert plots.method_family("ranpac") == "Prototype and closed-form baselines"
    assert plots.method_family("mcil-something-new") == "MCIL and its ablations"


def test_curve_band_is_a_95_t_interval_over_seeds():
    data = pd.DataFrame({"panel": "p", "method": "mcil", "step": 1, "acc": [70.0, 72.0, 74.0]})
    c = plots.curve_summary(data).iloc[0]
    half = 4.302652729749462 * 2.0 / math.sqrt(3)  # t_{0.975, 2} · sd / √n
    assert (c["mean"], c["lo"], c["hi"], c["n"]) == (72.0, pytest.approx(72 - half), pytest.approx(72 + half), 3)
    one = plots.t_band([70.0])
    assert one[0] == 70.0 and math.isnan(one[1])


def test_band_is_cut_to_the_metrics_range():
    # 3 seeds with a wide spread: the symmetric interval of these fusion rates reaches below 0 and
    # above 1, which no mean of fractions can; with bounds it ends at the range, the mean unchanged.
    rates = [0.0, 0.05, 0.9]
    m, lo, hi = plots.t_band(rates)
    assert lo < 0 and hi > 1
    mb, lob, hib = plots.t_band(rates, bounds=plots.RATE_RANGE)
    assert (mb, lob, hib) == (m, 0.0, 1.0)
    inside = plots.t_band([0.4, 0.5, 0.6], bounds=plots.RATE_RANGE)
    assert inside == plots.t_band([0.4, 0.5, 0.6])
    data = pd.DataFrame({"panel": "p", "method": "mcil", "step": 1, "acc": [100.0, 100.0, 60.0]})
    c = plots.curve_summary(data).iloc[0]
    assert c["hi"] == 100.0 and c["lo"] > 0


def test_accuracy_curves_panels_per_family_and_joint_as_a_line(runs_root):
    for seed in (0, 1):
        write_run(runs_root, method="mcil", seed=seed, acc=[90.0, 70.0 + seed])
        write_run(runs_root, method="finetune", seed=seed, acc=[90.0, 40.0 + seed])
        write_run(runs_root, method="simplecil", seed=seed, acc=[85.0, 60.0])
        write_run(runs_root, method="zeroshot", seed=seed, acc=[60.0, 50.0])
        folder = run_dir(runs_root, "synav-clean", "joint", 2, "0.8", 0.7, seed)  # one task, compared at T = 2
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(__import__("json").dumps(
            make_result(method="joint", T=1, seed=seed, acc=[94.0 + 2 * seed])))
    runs, steps = aggregate.load_runs([runs_root])
    fig = plots.accuracy_curves(runs, steps, "0.8", 0.7)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().split("\n")[1] for ax in axes] == list(plots.FAMILIES)
    for ax in axes:
        lines = {mcolors.to_hex(line.get_color()): line for line in ax.get_lines()}
        mcil = lines["#000000"]
        assert mcil.get_linewidth() > 2  # highlighted in every panel
        joint = lines[plots.method_colour("joint")]
        assert list(joint.get_ydata()) == [95.0, 95.0]  # mean last accuracy of joint, a horizontal line
        assert lines[plots.method_colour("zeroshot")].get_linestyle() == "--"
    assert plots.method_colour("finetune") in {mcolors.to_hex(line.get_color()) for line in axes[1].get_lines()}
    assert plots.method_colour("finetune") not in {mcolors.to_hex(line.get_color()) for line in axes[2].get_lines()}
    assert "95 % t-interval" in fig._suptitle.get_text()
