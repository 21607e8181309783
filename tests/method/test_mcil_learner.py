"""The ``mcil`` learner end to end on a small random tiny backbone."""

from __future__ import annotations

import dataclasses
import io
import json
import math

import pytest
import torch

from mcil.config import ConfigError, RunConfig, apply_overrides, parse_dataclass
from mcil.errors import UserError
from mcil.learners.base import Batch, Task
from mcil.learners.registry import available_methods, get_learner_class, get_preset
from mcil.method.losses import NonFiniteLossError
from mcil.method.mcil_learner import OFFICIAL_LOGIT_SCALE, McilLearner

TASK0 = Task(index=0, classes=(0, 1, 2), seen_classes=(0, 1, 2), n_tasks=2, steps=4)
TASK1 = Task(index=1, classes=(3, 4, 5), seen_classes=(0, 1, 2, 3, 4, 5), n_tasks=2, steps=4)
ALL = list(range(6))


def run_task(learner: McilLearner, task: Task, batches: list[Batch], steps: int, lr: float = 1e-2) -> list[dict]:
    """Drive ``learner`` through one task exactly as the trainer does."""
    learner.start_task(task)
    opt = torch.optim.AdamW(learner.trainable_parameters(), lr=lr)
    learner.train()
    outs = []
    for i in range(steps):
        out = learner.train_step(batches[i % len(batches)])
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        outs.append({k: float(v.detach()) for k, v in out.items()})
    learner.eval()
    learner.end_task(task, lambda: iter(batches))
    return outs


def task_batches(mk, task: Task, seed: int = 0) -> list[Batch]:
    labels = list(task.classes) * 2
    return [mk.batch(labels, seed=seed), mk.batch(labels[::-1], seed=seed + 1)]


# --------------------------------------------------------------------------------------------------
# construction
# --------------------------------------------------------------------------------------------------
def test_registered_with_options(mk):
    assert get_learner_class("mcil") is McilLearner
    assert McilLearner.FROZEN_FEATURES == {"audio"} and McilLearner.MODALITIES == {"image", "audio", "text"}
    learner = mk.learner(options={"top_k": 3, "experts_per_task": 1})
    assert learner.options.top_k == 3 and learner.mife.cfg.top_k == 3
    with pytest.raises(ConfigError, match="method.options.nope"):
        mk.learner(options={"nope": 1})
    with pytest.raises(ConfigError, match="official_freeze_hack"):
        mk.learner(options={"official_freeze_hack": True})
    with pytest.raises(ConfigError, match="top_k"):
        mk.learner(options={"top_k": 0})


def test_adapter_lr_scale_applies_to_the_experts_and_routers_only(mk):
    learner = mk.learner(options={"adapter_lr_scale": 10.0})
    learner.start_task(TASK0)
    params = learner.trainable_parameters()
    scales = learner.lr_scales(params)
    mife = {id(p) for p in learner.mife.parameters()}
    fusion = {id(p) for p in learner.fusion.parameters()}
    assert mife and fusion and len(scales) == len(params)
    assert all(s == (10.0 if id(p) in mife else 1.0) for p, s in zip(params, scales))
    assert any(id(p) in fusion for p in params)
    one = mk.learner(options={"adapter_lr_scale": 1.0})  # 1 (mcil-official): one step size for everything
    one.start_task(TASK0)
    assert one.lr_scales(one.trainable_parameters()) == [1.0] * len(one.trainable_parameters())
    with pytest.raises(ConfigError, match="adapter_lr_scale"):
        mk.learner(options={"adapter_lr_scale": 0.0})


# --------------------------------------------------------------------------------------------------
# training and prediction
# --------------------------------------------------------------------------------------------------
def test_train_step_is_finite_and_the_loss_decreases_on_a_fixed_batch(mk):
    learner = mk.learner(fusion__gate="always")
    batch = mk.batch([0, 1, 2, 0, 1, 2])
    outs = run_task(learner, TASK0, [batch], steps=12)
    assert set(outs[0]) == {"loss", "loss_cw", "loss_mi", "mi_weight", "fusion_rate"}  # mi_scale=grad-norm
    assert all(math.isfinite(v) for o in outs for v in o.values())
    assert outs[0]["fusion_rate"] == 1.0 and outs[0]["loss_mi"] < 0 and outs[0]["mi_weight"] > 0
    assert outs[-1]["loss"] < outs[0]["loss"] - 0.05
    o = outs[0]
    assert math.isclose(o["loss"], 0.7 * o["loss_cw"] + 0.3 * o["mi_weight"] * o["loss_mi"], rel_tol=1e-5)
    plain = run_task(mk.learner(fusion__gate="always", loss__mi_scale="none"), TASK0, [batch], steps=1)[0]
    assert set(plain) == {"loss", "loss_cw", "loss_mi", "fusion_rate"}
    assert math.isclose(plain["loss"], 0.7 * plain["loss_cw"] + 0.3 * plain["loss_mi"], rel_tol=1e-5)


def test_predict_shapes_and_gate_always(mk):
    learner = mk.learner(fusion__gate="always")
    batch = mk.batch([0, 1, 2, 3])
    pred = learner.predict(batch, ALL)
    assert pred.logits.shape == (4, 6) and set(pred.by_modality) == {"image", "audio", "fused"}
    assert set(pred.features) == {"image", "audio", "fused"}
    for f in pred.features.values():
        assert torch.allclose(f.norm(dim=1), torch.ones(4), atol=1e-5)
    assert pred.fused.dtype == torch.bool and pred.fused.all() and pred.r.shape == (4,)
    # the fusion MLP's last layer starts at zero: fused feature = normalise(f_v + f_a), so its
    # cosine logits rank classes like the mean of the image and audio cosines
    f = torch.nn.functional.normalize(pred.features["image"] + pred.features["audio"], dim=-1)
    assert torch.allclose(pred.features["fused"], f, atol=1e-5)
    mean_cos = pred.by_modality["image"] + pred.by_modality["audio"]
    assert torch.equal(pred.logits.argmax(1), mean_cos.argmax(1))
    run_task(learner, TASK0, task_batches(mk, TASK0), steps=3)
    pred = learner.predict(batch, ALL)
    assert pred.fused.all()
    assert not torch.allclose(pred.logits, pred.by_modality["image"], atol=1e-4)
    # the score of a class does not depend on the other requested classes
    assert torch.allclose(learner.predict(batch, [4, 1]).logits, pred.logits[:, [4, 1]], atol=1e-6)


def test_gate_never_is_image_only(mk):
    learner = mk.learner(fusion__gate="never")
    assert learner.fusion is None
    outs = run_task(learner, TASK0, task_batches(mk, TASK0), steps=2)
    assert outs[0]["loss_mi"] == 0.0 and outs[0]["fusion_rate"] == 0.0
    pred = learner.predict(mk.batch([0, 4]), ALL)
    assert not pred.fused.any() and torch.equal(pred.logits, pred.by_modality["image"])


def test_missing_modalities(mk):
    learner = mk.learner(fusion__gate="always")
    batch = mk.batch([0, 1, 2], has_image=[True, True, False], has_audio=[True, False, True])
    pred = learner.predict(batch, ALL)
    assert pred.fused.tolist() == [True, False, False]
    assert torch.isfinite(pred.r[0]) and torch.isnan(pred.r[1:]).all()
    assert torch.allclose(pred.logits[1], pred.by_modality["image"][1])  # no audio: image path
    assert torch.allclose(pred.logits[2], pred.by_modality["audio"][2])  # no image: audio path
    assert torch.equal(pred.features["audio"][1], torch.zeros(32))


def test_cached_audio_embedding_gives_the_raw_audio_result(mk):
    learner = mk.learner(fusion__gate="always")
    raw = mk.batch([0, 1, 2, 0], has_audio=[True, True, False, True])
    with torch.no_grad():  # what the trainer's feature cache holds: zeros where audio is absent
        emb = learner.backbone.encode_audio(raw.audio) * raw.has_audio.unsqueeze(1)
    cached = dataclasses.replace(raw, audio=None, audio_emb=emb)
    a, b = learner.predict(raw, ALL), learner.predict(cached, ALL)
    assert torch.allclose(a.logits, b.logits, atol=1e-5) and torch.equal(a.fused, b.fused)
    learner.start_task(TASK0)
    learner.train()
    torch.manual_seed(0)
    la = learner.train_step(raw)
    torch.manual_seed(0)
    lb = learner.train_step(cached)
    assert torch.allclose(la["loss"], lb["loss"], atol=1e-5)


def test_cached_image_embedding(mk):
    frozen = mk.learner(options={"mife": False})
    raw = mk.batch([0, 1])
    with torch.no_grad():
        emb = frozen.backbone.encode_image(raw.image)
    cached = dataclasses.replace(raw, image=None, image_emb=emb)
    assert torch.allclose(frozen.predict(raw, ALL).logits, frozen.predict(cached, ALL).logits, atol=1e-5)
    with pytest.raises(UserError, match="raw images"):
        mk.learner().predict(cached, ALL)


def test_non_finite_loss_names_the_term(mk):
    learner = mk.learner()
    learner.start_task(TASK0)
    batch = mk.batch([0, 1])
    batch.image[0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="loss_cw"):
        learner.train_step(batch)


def test_frozen_towers_and_closed_gate_still_give_a_differentiable_loss(mk):
    learner = mk.learner(options={"mife": False}, fusion__gate="batch", fusion__th=1.0)  # gate never opens
    learner.start_task(TASK0)
    before = [p.detach().clone() for p in learner.trainable_parameters()]
    out = learner.train_step(mk.batch([0, 1]))
    assert out["fusion_rate"] == 0.0 and out["loss"].requires_grad
    opt = torch.optim.AdamW(learner.trainable_parameters(), lr=0.1, weight_decay=0.0)
    out["loss"].backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, learner.trainable_parameters()))


def test_adaptive_threshold(mk):
    learner = mk.learner(fusion__gate="adaptive", fusion__adaptive_quantile=0.5)
    batches = task_batches(mk, TASK0)
    outs = run_task(learner, TASK0, batches, steps=1)
    assert outs[0]["fusion_rate"] == 0.5  # running median over the first batch: 3 of 6 above
    r = torch.cat([learner.predict(b, ALL).r for b in batches])
    assert math.isclose(float(learner.adaptive_th), float(torch.quantile(r, 0.5)), rel_tol=1e-5)
    assert learner.statistics()["fusion"]["threshold_per_task"]["0"] == pytest.approx(float(learner.adaptive_th))


def test_class_text_embeddings_are_the_unnormalised_test_prompt_embeddings(mk):
    learner = mk.learner()
    emb = learner.class_text_embeddings([1, 2])
    with torch.no_grad():
        ref = learner.backbone.encode_text(learner.backbone.tokenize(["a blue circle.", "a green square."]))
    assert torch.allclose(emb, ref, atol=1e-5)  # no experts yet: the bare text tower


# --------------------------------------------------------------------------------------------------
# task experts across tasks, statistics, resume
# --------------------------------------------------------------------------------------------------
def test_two_tasks_freeze_old_experts_count_parameters_and_resume_exactly(mk):
    backbone = mk.backbone()
    learner = mk.learner(backbone=backbone, fusion__gate="sample", fusion__th=-1.0)
    run_task(learner, TASK0, task_batches(mk, TASK0), steps=3)
    old = {k: v.clone() for k, v in learner.state_dict().items() if ".experts.0." in k or ".experts.1." in k or ".router.0" in k}
    assert old
    run_task(learner, TASK1, task_batches(mk, TASK1, seed=5), steps=3)
    state = learner.state_dict()
    for k, v in old.items():
        assert torch.equal(state[k], v), k
    assert not any(k.startswith("backbone.") for k in state)

    stats = learner.statistics()
    json.dumps(stats)
    # per site (4 sites, width 32, bottleneck 64): 2 experts × (32·64 + 64 + 64·32 + 32) + 2 router columns × 32
    per_task = 4 * (2 * (32 * 64 + 64 + 64 * 32 + 32) + 2 * 32)
    assert stats["parameters"]["added_per_task"]["1"] == per_task
    assert stats["parameters"]["trainable_per_task"]["1"] == per_task + sum(p.numel() for p in learner.fusion.parameters())
    usage = stats["experts"]["usage"]["train"]["1"]["image.blocks.0"]
    assert len(usage) == 4 and sum(usage) == 3 * 6 * 2  # 3 steps × 6 samples × top-2
    assert stats["fusion"]["train"]["1"]["fusion_rate"] == 1.0

    batch = mk.batch([0, 3, 5, 1], seed=9)
    expected = learner.predict(batch, ALL)
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    # as the trainer resumes: fresh learner, replay start_task, load
    fresh = mk.learner(backbone=backbone, seed=123, fusion__gate="sample", fusion__th=-1.0)
    fresh.start_task(TASK0)
    fresh.start_task(TASK1)
    fresh.load_state_dict(saved)
    got = fresh.predict(batch, ALL)
    assert torch.equal(got.logits, expected.logits) and torch.equal(got.fused, expected.fused)
    assert fresh.trainable_parameters() and len(fresh.trainable_parameters()) == len(learner.trainable_parameters())
    # without the replay: the adapters rebuild their experts from the checkpoint
    bare = mk.learner(backbone=backbone, seed=7, fusion__gate="sample", fusion__th=-1.0)
    bare.load_state_dict(saved)
    assert torch.equal(bare.predict(batch, ALL).logits, expected.logits)
    assert bare.statistics()["parameters"] == stats["parameters"]


def test_eval_prototypes_follow_training(mk):
    backbone = mk.backbone()
    learner = mk.learner(backbone=backbone)
    batch = mk.batch([0, 1, 2])
    learner.predict(batch, ALL)  # fills the prototype cache
    run_task(learner, TASK0, task_batches(mk, TASK0), steps=2)
    after = learner.predict(batch, ALL).logits
    fresh = mk.learner(backbone=backbone)
    fresh.load_state_dict(learner.state_dict())
    assert torch.equal(after, fresh.predict(batch, ALL).logits)  # no stale cached prototypes


# --------------------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------------------
PRESETS = {
    "mcil-no-mife": lambda lrn: lrn.mife is None,
    "mcil-no-aavfm": lambda lrn: lrn.fusion is None,
    "mcil-no-text-diversity": lambda lrn: lrn._train_tokens.shape[0] == 3,
    "mcil-no-mi": lambda lrn: lrn.cfg.loss.alpha == 1.0,
    "mcil-cw-weighted": lambda lrn: lrn.cfg.loss.cw == "weighted",
    "mcil-gate-always": lambda lrn: lrn.cfg.fusion.gate == "always",
    "mcil-gate-sample": lambda lrn: lrn.cfg.fusion.gate == "sample",
    "mcil-gate-batch": lambda lrn: lrn.cfg.fusion.gate == "batch" and lrn.cfg.fusion.th == 0.8,
    "mcil-official": lambda lrn: (
        lrn.mife.cfg.experts == "official"
        and lrn.mife.cfg.top_k == 1
        and lrn.mife.cfg.official_freeze_hack
        and lrn._scale() == OFFICIAL_LOGIT_SCALE
        and lrn.cfg.loss.mi_reduction == "sum"
        and lrn.cfg.loss.mi_input == "official"
        and (lrn.cfg.loss.mi_estimator, lrn.cfg.loss.mi_scale) == ("official", "none")
        and (lrn.cfg.fusion.gate, lrn.cfg.fusion.th) == ("batch", 0.8)
        and lrn.cfg.fusion.attention == "batch-official"
    ),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets(mk, name):
    preset = get_preset(name)
    assert preset is not None and preset.learner == "mcil" and preset.doc and name in available_methods()
    data = apply_overrides({}, [f"{k}={json.dumps(v)}" for k, v in preset.overrides.items()])
    cfg = parse_dataclass(RunConfig, data)
    learner = McilLearner.from_config(mk.backbone(), list(mk.class_names), "synav", cfg)
    learner.start_task(TASK0)
    out = learner.train_step(mk.batch([0, 1, 2, 0]))
    assert torch.isfinite(out["loss"])
    assert PRESETS[name](learner)


# --------------------------------------------------------------------------------------------------
# L_MI vs L_CW gradient scale
# --------------------------------------------------------------------------------------------------
def test_gradient_ratio_is_recorded_per_task_and_matches_a_hand_computation(mk):
    backbone = mk.backbone()
    kw = dict(fusion__gate="always", loss__mi_scale="none")
    learner = mk.learner(backbone=backbone, options={"dropout": 0.0, "grad_probe_steps": 2}, **kw)
    batches0, batches1 = task_batches(mk, TASK0), task_batches(mk, TASK1, seed=5)
    run_task(learner, TASK0, batches0, steps=3)
    run_task(learner, TASK1, batches1, steps=3)
    stats = learner.statistics()["loss_gradients"]
    json.dumps(stats)
    assert stats["probe_steps"] == 2 and set(stats["per_task"]) == {"0", "1"}
    for key, rec in stats["per_task"].items():
        assert [r["step"] for r in rec["steps"]] == [0, 1]  # only the first grad_probe_steps steps
        for where in ("ratio_fusion_params", "ratio_fused_features"):
            assert math.isfinite(rec[where]) and rec[where] > 0, (key, where)
    # by hand, on a fresh learner at the first step of task 0: with mi_scale=none the loss at
    # α = 1 is L_CW and at α = 0 it is L_MI; backpropagate each and compare the fusion gradients
    norms = {}
    for alpha in (1.0, 0.0):
        fresh = mk.learner(backbone=backbone, options={"dropout": 0.0, "grad_probe_steps": 0}, loss__alpha=alpha, **kw)
        fresh.start_task(TASK0)
        fresh.train()
        fresh.train_step(batches0[0])["loss"].backward()
        norms[alpha] = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in fresh.fusion.parameters() if p.grad is not None))
        assert fresh.statistics()["loss_gradients"]["per_task"] == {}  # grad_probe_steps=0: off
    first = stats["per_task"]["0"]["steps"][0]["fusion_params"]
    assert first["cw"] == pytest.approx(norms[1.0], rel=1e-4) and first["mi"] == pytest.approx(norms[0.0], rel=1e-4)
    assert stats["per_task"]["0"]["steps"][0]["fusion_params"]["ratio"] == pytest.approx(norms[0.0] / norms[1.0], rel=1e-4)
    # it is what result.json's schema describes (learner_statistics.loss_gradients)
    import jsonschema

    from mcil.schemas import result_schema

    jsonschema.Draft202012Validator(result_schema()["properties"]["learner_statistics"]).validate(learner.statistics())
    # the record survives a checkpoint (extra state)
    bare = mk.learner(backbone=backbone, options={"dropout": 0.0, "grad_probe_steps": 2}, **kw)
    bare.load_state_dict(learner.state_dict())
    assert bare.statistics()["loss_gradients"] == stats


def test_grad_norm_makes_the_mi_term_push_the_fused_feature_as_hard_as_l_cw(mk):
    learner = mk.learner(fusion__gate="always")  # default: loss.mi_scale=grad-norm
    assert learner.cfg.loss.mi_scale == "grad-norm"
    run_task(learner, TASK0, task_batches(mk, TASK0), steps=2)
    run_task(learner, TASK1, task_batches(mk, TASK1, seed=5), steps=2)
    for rec in learner.statistics()["loss_gradients"]["per_task"].values():
        assert rec["ratio_fused_features"] == pytest.approx(1.0, rel=1e-4)
    plain = mk.learner(fusion__gate="always", loss__mi_scale="none")
    run_task(plain, TASK0, task_batches(mk, TASK0), steps=1)
    assert plain.statistics()["loss_gradients"]["per_task"]["0"]["ratio_fused_features"] > 2.0  # unit-rms dominates


def test_alpha_changes_training_with_grad_norm(mk):
    backbone = mk.backbone()
    batches = task_batches(mk, TASK0)
    params = {}
    for alpha in (0.3, 0.7):
        learner = mk.learner(backbone=backbone, options={"dropout": 0.0}, fusion__gate="always", loss__alpha=alpha)
        outs = run_task(learner, TASK0, batches, steps=3, lr=1e-3)
        assert all(o["mi_weight"] > 0 for o in outs)
        params[alpha] = torch.cat([p.detach().flatten() for p in learner.fusion.parameters()])
    assert float((params[0.3] - params[0.7]).abs().max()) > 1e-4  # α decides how much of the step L_MI gets
