"""moe-adapters: the MIFE experts on image and text, plain cross-entropy, the audio tower never runs."""

from __future__ import annotations

import dataclasses

import torch

from mcil.baselines.moe_adapters import MoEAdapters, MoEAdaptersOptions
from mcil.method.options import McilOptions


def make(kit, bb, **opts):
    return MoEAdapters(bb, kit.CLASS_NAMES, "synav", kit.run_config(), MoEAdaptersOptions(**opts))


def _forbid_audio(bb):
    def boom(*_args, **_kwargs):
        raise AssertionError("the audio tower was called")

    bb.encode_audio = boom
    bb.audio.forward = boom


def test_learns_and_never_calls_the_audio_tower(kit, stream, backbone):
    _forbid_audio(backbone)
    learner = make(kit, backbone)
    assert "audio" not in MoEAdapters.MODALITIES
    tasks = stream.tasks(6, 3)
    rec = stream.run(learner, backbone, tasks)  # batches carry raw audio; it is ignored
    assert rec.learned[0] >= 80.0 and rec.learned[1] >= 80.0  # chance: 50 %


def test_uses_the_methods_mife_with_the_same_defaults(kit, stream, backbone):
    ours = {f.name: getattr(MoEAdaptersOptions(), f.name) for f in dataclasses.fields(McilOptions)
            if f.name in {g.name for g in dataclasses.fields(MoEAdaptersOptions)} and f.name != "text_diversity"}
    assert ours == {k: getattr(McilOptions(), k) for k in ours} and len(ours) >= 10
    learner = make(kit, backbone, experts_per_task=2)
    tasks = stream.tasks(6, 3)
    stream.train_task(learner, backbone, tasks, 0, epochs=2)
    experts0 = kit.state_fingerprint(learner.adapter.adapters[0].experts[0])
    stream.train_task(learner, backbone, tasks, 1, epochs=2)
    assert all(a.n_experts == 4 for a in learner.adapter.adapters)  # task experts: 2 per task per site
    assert all(torch.equal(v, learner.adapter.adapters[0].experts[0].state_dict()[k]) for k, v in experts0.items())
    stats = learner.statistics()["mife"]
    assert stats["expert_task"] == [0, 0, 1, 1] and "train" in stats["usage"]
    # resume: experts grow again from the replayed start_task calls
    resumed = make(kit, kit.make_backbone(), experts_per_task=2)
    for task in learner.tasks_begun:
        resumed.start_task(task)
    resumed.load_state_dict(learner.state_dict())
    learner.eval()
    resumed.eval()
    batch = stream.batch("test", torch.arange(0, 48, 3))
    assert torch.allclose(learner.predict(batch, range(6)).logits, resumed.predict(batch, range(6)).logits, atol=1e-5)


def test_loss_is_plain_cross_entropy(kit, stream, backbone):
    learner = make(kit, backbone)
    tasks = stream.tasks(6, 3)
    stream.start(learner, backbone, tasks, 0, steps=1)
    learner.eval()  # no dropout, so the forward is repeatable
    batch = stream.batch("train", stream.indices("train", tasks[0])[:12])
    out = learner.train_step(batch)
    with torch.no_grad():
        logits = learner.scale * torch.nn.functional.normalize(learner.image_features(batch), dim=-1) @ \
            torch.nn.functional.normalize(learner.text_features(tasks[0]), dim=-1).t()
    assert set(out) == {"loss", "ce"}
    assert torch.allclose(out["loss"], torch.nn.functional.cross_entropy(logits, batch.labels), rtol=1e-5)
