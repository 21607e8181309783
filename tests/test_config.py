"""Typed run configuration: loading, overrides, validation errors, canonical hashing."""

from __future__ import annotations

import pytest

from mcil.config import ConfigError, RunConfig, apply_overrides, config_hash, load_config


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("fusion:\n  th: 0.6\nloss:\n  alpha: 0.5\nmethod:\n  name: finetune\n  options: {lam: 3}\n")
    cfg = load_config(path, ["fusion.th=0.7", "scenario.n_tasks=3", "optim.lr=1e-4"])
    assert cfg.fusion.th == 0.7  # CLI override wins over the file
    assert cfg.loss.alpha == 0.5
    assert cfg.scenario.n_tasks == 3
    assert cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.method.options == {"lam": 3}


@pytest.mark.parametrize(
    "override, message",
    [
        ("fusion.th=1.5", "fusion.th: 1.5 is out of range; allowed: [-1.0, 1.0]"),
        ("loss.alpha=-0.1", "loss.alpha: -0.1 is out of range; allowed: [0.0, 1.0]"),
        ("fusion.gate=sometimes", "fusion.gate: 'sometimes' is not allowed"),
        ("optim.batch_size=abc", "optim.batch_size: 'abc' is not an integer"),
        ("optim.batch_size=0", "optim.batch_size: 0 is out of range"),
        ("fusion.thresh=0.8", "fusion.thresh: unknown key; allowed keys in fusion: adaptive_quantile, attention, gate, th"),
        ("bogus=1", "bogus: unknown key"),
        ("scenario.order=[0,0,1]", "scenario.order: the class order repeats a label"),
        ("data.missing_audio_test=1.5", "data.missing_audio_test: 1.5 is out of range"),
        ("optim.lr=0", "optim.lr: 0.0 must be > 0"),
        ("amp=fp8", "amp: 'fp8' is not allowed"),
        ("data.feature_cache=yes please", "data.feature_cache: 'yes please' is not a boolean"),
    ],
)
def test_invalid_values_name_key_value_and_allowed(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)


def test_bad_file_and_bad_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["fusion.th"])


def test_tasks_larger_than_classes_is_rejected():
    cfg = load_config(None, ["scenario.n_tasks=50"])
    with pytest.raises(ConfigError, match=r"scenario.n_tasks: 50 is larger than the 40 incremental classes.*1..40"):
        cfg.check_n_classes(40)
    cfg.check_n_classes(50)  # equal is fine
    cfg = load_config(None, ["scenario.order=[2,0,1]", "scenario.n_tasks=3"])
    with pytest.raises(ConfigError, match="permutation of 0..3"):
        cfg.check_n_classes(4)


def test_scenario_needs_tasks_or_increments():
    with pytest.raises(ConfigError, match="give n_tasks, or both initial and increment"):
        load_config(None, ["scenario.n_tasks=null"])
    cfg = load_config(None, ["scenario.n_tasks=null", "scenario.initial=7", "scenario.increment=6"])
    assert (cfg.scenario.initial, cfg.scenario.increment) == (7, 6)


def test_hash_is_canonical_and_ignores_non_result_fields(tmp_path):
    a = load_config(None, ["fusion.th=0.7", "loss.alpha=0.5"])
    b = load_config(None, ["loss.alpha=0.5", "fusion.th=0.70"])
    assert config_hash(a) == config_hash(b)
    # device, worker count, cache folder and checkpoint cadence do not change results
    c = load_config(None, ["fusion.th=0.7", "loss.alpha=0.5", "device=cpu", "data.num_workers=2",
                           "checkpoint_every=5", "data.cache_dir=/elsewhere"])
    assert config_hash(a) == config_hash(c)
    d = load_config(None, ["fusion.th=0.8", "loss.alpha=0.5"])
    assert config_hash(a) != config_hash(d)
    assert config_hash(RunConfig()) == config_hash(load_config(None))
    assert len(config_hash(a)) == 12


def test_int_given_for_float_and_union_types():
    cfg = load_config(None, ["optim.lr=1", "optim.grad_clip=null", "scenario.order=sorted"])
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == 1.0
    assert cfg.optim.grad_clip is None
    assert cfg.scenario.order == "sorted"
    cfg = load_config(None, ["scenario.order=[1,0,2]"])
    assert cfg.scenario.order == [1, 0, 2]
