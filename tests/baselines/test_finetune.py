"""finetune: one adapter set trained task after task, nothing protects old tasks (the lower bound)."""

from __future__ import annotations

import torch

from mcil.baselines._common import AdapterOptions
from mcil.baselines.finetune import Finetune


def make(kit, bb, **opts):
    return Finetune(bb, kit.CLASS_NAMES, "synav", kit.run_config(), AdapterOptions(**opts))


def test_learns_then_forgets(kit, stream, backbone):
    learner = make(kit, backbone)
    tasks = stream.tasks(6, 3)
    zero_shot = stream.accuracy(learner, backbone, tasks[0], tasks[0])
    rec = stream.run(learner, backbone, tasks)
    assert zero_shot <= 70.0 and min(rec.learned) >= 80.0  # it learns every task (chance: 50 %)
    assert rec.forgetting >= 25.0  # and forgets: the lower bound


def test_only_the_adapters_train_and_the_backbone_is_untouched(kit, stream, backbone):
    learner = make(kit, backbone)
    before = kit.state_fingerprint(backbone)
    idx = torch.arange(0, 48, 5)
    with torch.no_grad():
        bare_before = backbone.encode_image(stream.batch("test", idx).image)
    stream.train_task(learner, backbone, stream.tasks(6, 3), 0)
    trainable = learner.trainable_parameters()
    assert trainable and all(p.requires_grad for p in trainable)
    ids = {id(p) for p in trainable}
    adapter_ids = {id(p) for a in learner.adapter.adapters for p in a.experts.parameters()}
    assert ids == adapter_ids  # one expert per image/text site, nothing else
    assert len(learner.adapter.adapters) == len(backbone.image_sites()) + len(backbone.text_sites())
    assert all(a.n_experts == 1 for a in learner.adapter.adapters)
    after = kit.state_fingerprint(backbone)
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():  # hooks act only inside the learner: the bare backbone is unchanged
        assert torch.equal(backbone.encode_image(stream.batch("test", idx).image), bare_before)
        adapted = learner.image_features(stream.batch("test", idx))
    assert not torch.allclose(adapted, bare_before)


def test_train_step_ignores_audio_and_samples_without_image(kit, stream, backbone):
    learner = make(kit, backbone)
    stream.start(learner, backbone, stream.tasks(6, 3), 0, steps=1)
    learner.train()
    batch = stream.batch("train", torch.arange(0, 32, 2))
    torch.manual_seed(1)
    out = learner.train_step(batch)
    batch.audio = torch.randn_like(batch.audio)  # audio plays no role
    torch.manual_seed(1)
    assert torch.equal(learner.train_step(batch)["loss"], out["loss"])
    batch.has_image[:] = False
    empty = learner.train_step(batch)["loss"]
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_eval_prototype_cache_follows_the_adapters(kit, stream, backbone):
    learner = make(kit, backbone)
    tasks = stream.tasks(6, 3)
    batch = stream.batch("test", torch.arange(0, 48, 4))
    learner.eval()
    first = learner.predict(batch, range(6)).logits
    stream.train_task(learner, backbone, tasks, 0)
    second = learner.predict(batch, range(6)).logits
    assert not torch.allclose(first, second)  # training invalidated the cached prototypes
    with torch.no_grad():
        fresh = learner.text_features(range(6), "eval")
    assert torch.allclose(learner.eval_prototypes(range(6)), fresh)
