"""Shared baseline pieces: herding, class columns, frozen-tower features, the registry entries."""

from __future__ import annotations

import pytest
import torch

from mcil.baselines._common import columns, cosine_logits, fuse, herding, label_positions, tower_embedding
from mcil.config import ConfigError
from mcil.learners.base import Learner
from mcil.learners.registry import get_learner_class, get_preset

BASELINES = ["zeroshot", "finetune", "lwf", "ewc", "replay", "coop", "simplecil", "ranpac", "moe-adapters", "av-concat"]


def test_herding_hand_example_and_prefix_property():
    # Normalised rows r0..r4, mean μ ≈ (0.344, 0.401). Hand-computed greedy steps:
    # k=1 r2 (closest to μ); k=2 r1 (‖μ − (r2+r1)/2‖² ≈ .205 < .234 for r4); k=3 r0 (.079 < .090);
    # k=4 r4 (.032 < .112: the outlier is part of the mean, so herding must balance it); k=5 r3.
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.1], [-1.0, 0.2]])
    picks = herding(f, 5)
    assert picks.tolist() == [2, 1, 0, 4, 3]
    assert torch.equal(herding(f, 3), picks[:3])  # smaller budget = prefix (iCaRL's reduction)
    assert torch.equal(herding(f, 9), picks)  # capped at N


def test_herding_is_deterministic_and_tracks_the_mean():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(50, 8, generator=g)
    a, b = herding(f, 10), herding(f.clone(), 10)
    assert torch.equal(a, b) and len(set(a.tolist())) == 10
    fn = torch.nn.functional.normalize(f.double(), dim=-1)
    mu = fn.mean(0)
    err_herd = (fn[a].mean(0) - mu).norm()
    err_first = (fn[:10].mean(0) - mu).norm()
    assert err_herd < err_first  # herding beats an arbitrary subset of the same size


def test_columns_select_and_mask_unknown():
    scores = torch.arange(12.0).view(2, 6)
    known = torch.tensor([True, True, False, True, False, False])
    out = columns(scores, [3, 0, 2], known)
    assert out[:, :2].tolist() == [[3.0, 0.0], [9.0, 6.0]]
    assert torch.isinf(out[:, 2]).all() and (out[:, 2] < 0).all()


def test_cosine_logits_scale_and_zero_rows():
    x = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    out = cosine_logits(x, p, scale=10.0)
    assert torch.allclose(out[0], torch.tensor([10.0, 10.0 / 2**0.5]))
    assert torch.equal(out[1], torch.zeros(2))  # a missing modality scores nothing


def test_fuse_concat_and_average():
    i = torch.tensor([[3.0, 0.0]])
    a = torch.tensor([[0.0, 0.0]])
    assert fuse(i, a, "concat").tolist() == [[1.0, 0.0, 0.0, 0.0]]
    assert fuse(i, a, "average").tolist() == [[0.5, 0.0]]


def test_label_positions():
    labels = torch.tensor([4, 1, 3])
    assert label_positions(labels, (3, 4), 6).tolist() == [1, -1, 0]


def test_tower_embedding_cached_and_raw_paths_agree(kit, stream):
    bb = kit.make_backbone()
    idx = torch.arange(0, 20)
    raw = stream.batch("train", idx)
    cached = stream.batch("train", idx, bb, frozenset({"image", "audio"}))
    raw.has_audio[::3] = False  # a missing modality is a zero row on both paths
    cached.has_audio[::3] = False
    for tower in ("image", "audio"):
        assert torch.allclose(tower_embedding(bb, raw, tower), tower_embedding(bb, cached, tower), atol=1e-5)
    assert tower_embedding(bb, raw, "audio")[::3].abs().sum() == 0


@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_is_registered_and_builds_from_config(kit, name):
    cls = get_learner_class(name)
    assert issubclass(cls, Learner) and cls.NAME == name
    assert cls.MODALITIES and cls.MODALITIES <= {"image", "audio", "text"}
    assert cls.FROZEN_FEATURES <= cls.MODALITIES | {"audio"}
    bb = kit.make_backbone()
    learner = cls.from_config(bb, list(kit.CLASS_NAMES), "synav", kit.run_config())
    assert isinstance(learner.options, cls.Options)
    # the backbone is not part of the learner's state (checkpoints hold only what is learnt)
    assert not any(k.startswith("backbone") for k in learner.state_dict())
    with pytest.raises(ConfigError, match=r"method\.options\.no_such_option: unknown key"):
        cls.from_config(bb, list(kit.CLASS_NAMES), "synav", kit.run_config(no_such_option=1))


def test_text_learners_give_unnormalised_text_embeddings_others_none(kit):
    bb = kit.make_backbone()
    for name in BASELINES:
        cls = get_learner_class(name)
        learner = cls.from_config(bb, list(kit.CLASS_NAMES), "synav", kit.run_config())
        emb = learner.class_text_embeddings([0, 3])
        if "text" in cls.MODALITIES:
            assert emb.shape == (2, bb.embed_dim), name
            assert not torch.allclose(emb.norm(dim=-1), torch.ones(2)), name
        else:
            assert emb is None, name


def test_joint_is_a_one_task_preset_of_mcil_that_no_config_can_make_incremental():
    from mcil.config import FusionConfig, MethodConfig, RunConfig, ScenarioConfig
    from mcil.learners.resolve import resolve_method

    preset = get_preset("joint")
    assert preset is not None and preset.learner == "mcil"
    cfg, info = resolve_method(RunConfig(method=MethodConfig(name="joint")))
    assert cfg.method.name == "mcil" and info["preset"] == "joint"
    assert cfg.scenario.n_tasks == 1 and cfg.scenario.initial is None
    # an explicit incremental scenario (the pipeline passes the T it compares at) is replaced
    cfg, info = resolve_method(RunConfig(method=MethodConfig(name="joint"), scenario=ScenarioConfig(n_tasks=5)))
    assert cfg.scenario.n_tasks == 1 and info["preset_fixed"]["scenario.n_tasks"] == 1
    cfg, _ = resolve_method(
        RunConfig(method=MethodConfig(name="joint"), scenario=ScenarioConfig(n_tasks=None, initial=4, increment=2))
    )
    assert (cfg.scenario.n_tasks, cfg.scenario.initial, cfg.scenario.increment) == (1, None, None)
    # an ordinary preset still lets an explicit user value win
    cfg, _ = resolve_method(RunConfig(method=MethodConfig(name="mcil-gate-always"), fusion=FusionConfig(gate="sample")))
    assert cfg.fusion.gate == "sample"
