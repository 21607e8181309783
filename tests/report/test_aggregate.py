"""mcil aggregate: result.json files -> tidy run table, step table, mixed-code flag, all outputs."""

from __future__ import annotations

import argparse
import json

import pandas as pd
import pytest

from mcil.report import aggregate

from results_factory import make_result, write_run


def test_fixture_is_schema_valid():
    # make_result validates; a broken field must be caught by the same validator.
    from mcil.schemas import ResultSchemaError, validate_result

    result = make_result()
    result["metrics"]["aia"] = 140.0
    with pytest.raises(ResultSchemaError, match="metrics/aia"):
        validate_result(result)


def test_one_row_per_run_with_identity_config_and_metrics(runs_root):
    write_run(runs_root, method="mcil", seed=0, acc=[90.0, 70.0])
    write_run(runs_root, method="mcil", seed=1, acc=[80.0, 60.0])
    write_run(runs_root, method="finetune", seed=0, acc=[90.0, 40.0])
    runs, steps = aggregate.load_runs([runs_root])

    assert len(runs) == 3
    row = runs[(runs["method"] == "mcil") & (runs["seed"] == 1)].iloc[0]
    assert row["run"] == "synav-clean/mcil/T2_th0.8_a0.7_s1"
    assert (row["dataset"], row["T"], row["th"], row["alpha"]) == ("synav-clean", 2, "0.8", 0.7)
    assert row["aia"] == pytest.approx(70.0)
    assert row["last"] == pytest.approx(60.0)
    assert row["m1"] == pytest.approx(0.6)  # from metrics.paper.official.m1
    assert row["paper.full.m1"] == pytest.approx(0.6)
    assert row["compat.pilot.aia"] == pytest.approx(70.0)
    assert row["config.optim.lr"] == pytest.approx(1e-3)  # every config field, flattened
    assert row["config.scenario.order"] == "random"
    assert row["config.method.name"] == "mcil"
    assert row["fusion_rate"] == pytest.approx(0.5)
    assert row["params.trainable"] == 20
    assert row["timings.wall_s"] == pytest.approx(3.0)
    assert row["provenance.git_sha"] == "a" * 40
    assert row["code_version"] == "0.1.0@aaaaaaaaaa"
    assert not runs["mixed_code"].any()

    # steps: per run, T rows of all-class accuracy plus T rows per recorded modality path.
    assert len(steps) == 3 * (2 + 2)
    s = steps[(steps["method"] == "finetune") & (steps["modality"] == "all")]
    assert s["acc"].tolist() == [90.0, 40.0]
    assert s["step"].tolist() == [1, 2]


def test_identity_from_result_when_folder_is_not_the_pipeline_pattern(tmp_path):
    folder = tmp_path / "elsewhere" / "run1"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps(make_result(method="ewc", th="never", alpha=1.0, seed=4, T=3,
                                                               acc=[50.0, 40.0, 30.0])))
    runs, _ = aggregate.load_runs([tmp_path])
    row = runs.iloc[0]
    assert (row["dataset"], row["method"], row["T"], row["th"], row["alpha"], row["seed"]) == (
        "synav-clean", "ewc", 3, "never", 1.0, 4)


@pytest.mark.parametrize(
    "fusion, expected",
    [({"gate": "batch", "th": 0.8}, "0.8"), ({"gate": "batch", "th": 0.60}, "0.6"), ({"gate": "always", "th": 0.8}, "always"),
     ({"gate": "sample", "th": 0.7}, "sample-0.7"), (None, "0.8")],
)
def test_th_label(fusion, expected):
    assert aggregate.th_label(fusion) == expected


def test_mixed_code_versions_are_flagged(runs_root):
    write_run(runs_root, seed=0, git_sha="a" * 40)
    write_run(runs_root, seed=1, git_sha="b" * 40)
    runs, _ = aggregate.load_runs([runs_root])
    assert runs["mixed_code"].all()
    assert set(runs["code_version"]) == {"0.1.0@aaaaaaaaaa", "0.1.0@bbbbbbbbbb"}


def test_another_mcil_version_alone_is_mixed(runs_root):
    write_run(runs_root, seed=0, mcil_version="0.1.0")
    write_run(runs_root, seed=1, mcil_version="0.2.0")
    runs, _ = aggregate.load_runs([runs_root])
    assert runs["mixed_code"].all()


def test_runs_from_different_locks_are_flagged_and_warned(runs_root):
    write_run(runs_root, seed=0)
    write_run(runs_root, seed=1)
    runs, _ = aggregate.load_runs([runs_root])
    assert not runs["mixed_lock"].any()
    assert aggregate.provenance_warnings(runs) == []
    write_run(runs_root, seed=2, lock_sha256="d" * 64)
    runs, _ = aggregate.load_runs([runs_root])
    assert runs["mixed_lock"].all()
    [message] = aggregate.provenance_warnings(runs)
    assert "2 dependency locks" in message and "cccccccccccc: 2 runs" in message and "dddddddddddd: 1 runs" in message


GENOA = {"vendor": "AuthenticAMD", "family": 25, "model": 17, "stepping": 1, "isa": "AVX512"}
MILAN = {"vendor": "AuthenticAMD", "family": 25, "model": 1, "stepping": 1, "isa": "AVX2"}


def test_cpu_label_names_family_model_and_isa():
    assert aggregate.cpu_label("AMD EPYC", GENOA) == "AMD EPYC (family 25, model 17, AVX512)"
    assert aggregate.cpu_label("AMD EPYC", None) == "AMD EPYC"           # a result from before the signature
    assert aggregate.cpu_label(None, None) == "unknown CPU"
    arm = {"vendor": None, "family": None, "model": None, "stepping": None, "isa": "DEFAULT"}
    assert aggregate.cpu_label("aarch64", arm) == "aarch64 (DEFAULT)"
    capped = {**GENOA, "isa": "AVX2", "isa_caps": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}
    assert aggregate.cpu_label("AMD EPYC", capped) == (
        "AMD EPYC (family 25, model 17, AVX2, caps ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2)")


def test_runs_from_two_cpus_of_one_model_name_are_told_apart_and_warned(runs_root):
    write_run(runs_root, seed=0, cpu="AMD EPYC", cpu_signature=GENOA)
    write_run(runs_root, seed=1, cpu="AMD EPYC", cpu_signature=GENOA)
    runs, _ = aggregate.load_runs([runs_root])
    assert not runs["mixed_cpu"].any() and aggregate.provenance_warnings(runs) == []
    assert set(runs["cpu"]) == {"AMD EPYC (family 25, model 17, AVX512)"}
    assert runs["provenance.cpu_signature.isa"].tolist() == ["AVX512", "AVX512"]
    write_run(runs_root, seed=2, cpu="AMD EPYC", cpu_signature=MILAN)   # same name, other arithmetic
    runs, _ = aggregate.load_runs([runs_root])
    assert runs["mixed_cpu"].all()
    [message] = aggregate.provenance_warnings(runs)
    assert "2 kinds of CPU" in message
    assert "AMD EPYC (family 25, model 1, AVX2): 1 runs" in message
    assert "AMD EPYC (family 25, model 17, AVX512): 2 runs" in message


def test_unreadable_result_is_skipped(runs_root):
    write_run(runs_root, seed=0)
    bad = runs_root / "synav-clean" / "mcil" / "T2_th0.8_a0.7_s9"
    bad.mkdir(parents=True)
    (bad / "result.json").write_text("{not json")
    runs, _ = aggregate.load_runs([runs_root])
    assert len(runs) == 1


def test_no_runs_gives_empty_tables():
    runs, steps = aggregate.collect([])
    assert runs.empty and steps.empty
    assert "mixed_code" in runs.columns


def test_cli_writes_every_output(runs_root, tmp_path):
    for seed in (0, 1):
        write_run(runs_root, method="mcil", seed=seed, acc=[90.0, 70.0 + seed])
        write_run(runs_root, method="finetune", seed=seed, acc=[90.0, 30.0 + seed])
        write_run(runs_root, method="mcil", th="always", seed=seed, acc=[90.0, 60.0 + seed], fusion_rate=1.0)
    out, figs = tmp_path / "results", tmp_path / "figures"
    parser = argparse.ArgumentParser()
    aggregate.configure_parser(parser)
    args = parser.parse_args(["--runs", str(runs_root), "--out", str(out), "--figures", str(figs), "--noisy", "none",
                              "--default-th", "0.8", "--expected-methods", "synav-clean:2:mcil",
                              "synav-clean:2:finetune", "synav-clean:2:lwf"])
    assert aggregate.run_cli(args) == 0

    runs = pd.read_csv(out / "all_runs.csv")
    assert len(runs) == 6
    assert len(pd.read_csv(out / "all_steps.csv")) == 6 * 4
    for name in ("main", "ablation", "threshold", "alpha", "tasks"):
        for ext in ("csv", "md", "tex"):
            assert (out / "tables" / f"{name}.{ext}").is_file()
    for name in ("accuracy_curves", "threshold_sweep", "alpha_sweep", "fusion_rate", "expert_usage"):
        for ext in ("png", "pdf"):
            assert (figs / f"{name}.{ext}").stat().st_size > 0
    claims = (out / "claims.md").read_text()
    assert "C1: MCIL has a higher AIA than every baseline" in claims
    assert "**partial** (against 1 of 2 configured baselines" in claims
    assert "missing: lwf (configured, no result)" in claims
    assert (out / "claims.csv").is_file()


def test_expert_usage_matrix_from_mife_statistics():
    from mcil.report.plots import expert_usage_matrix

    stats = {"experts": {"usage": {
        "train": {"0": {"image.0": [3, 1], "text.0": [1, 3]}, "1": {"image.0": [0, 2, 2]}},
        "eval": {"before": {"image.0": [5]}},
    }}}
    mat = expert_usage_matrix(stats)
    assert mat.shape == (2, 3)
    assert mat[0].tolist() == [0.5, 0.5, 0.0]  # sites summed: [4, 4, 0]
    assert mat[1].tolist() == [0.0, 0.5, 0.5]
    assert expert_usage_matrix({}) is None


def test_default_th_label_follows_the_fusion_default():
    from mcil.config import FusionConfig

    assert aggregate.default_th_label() == aggregate.th_label(
        {"gate": FusionConfig.gate, "th": FusionConfig.th}) == "always"


def test_forgetting_beyond_zero_shot_pairs_on_dataset_T_and_seed(runs_root):
    # zero-shot forgets 9 and 5 points (seeds 0, 1) from label-space growth alone
    for seed, f in enumerate([9.0, 5.0]):
        write_run(runs_root, method="zeroshot", seed=seed, forgetting=f)
    for seed, f in enumerate([17.5, 6.0, 30.0]):
        write_run(runs_root, method="finetune", seed=seed, forgetting=f)
    write_run(runs_root, method="finetune", T=3, seed=0, acc=[90.0, 80.0, 70.0], forgetting=12.0)
    runs, _ = aggregate.load_runs([runs_root])
    got = runs.set_index(["method", "T", "seed"])["forgetting_beyond_zs"]
    assert got[("finetune", 2, 0)] == pytest.approx(8.5)
    assert got[("finetune", 2, 1)] == pytest.approx(1.0)
    assert pd.isna(got[("finetune", 2, 2)])  # no zero-shot run with seed 2
    assert pd.isna(got[("finetune", 3, 0)])  # nor at T = 3
    assert got[("zeroshot", 2, 0)] == 0.0
