"""simplecil: class means of frozen features + cosine classifier, without a single gradient step."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mcil.baselines.simplecil import SimpleCIL, SimpleCILOptions


def make(kit, bb, **opts):
    return SimpleCIL(bb, kit.CLASS_NAMES, "synav", kit.run_config(), SimpleCILOptions(**opts))


def test_learns_and_keeps_old_classes(kit, stream, backbone):
    rec = stream.run(make(kit, backbone), backbone, stream.tasks(6, 3))
    assert min(rec.learned) >= 90.0 and rec.A[2].min() >= 75.0  # chance over 6 classes: 16.7 %


def test_no_gradient_steps_at_all(kit, stream, backbone):
    learner = make(kit, backbone)
    assert not SimpleCIL.NEEDS_GRAD and learner.trainable_parameters() == []
    calls = []
    learner.train_step = lambda batch: calls.append(batch) or {}  # would record any step
    before = kit.state_fingerprint(backbone)
    tasks = stream.tasks(6, 3)
    task = stream.train_task(learner, backbone, tasks, 0)
    assert task.steps == 0 and calls == []
    after = kit.state_fingerprint(backbone)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_prototypes_are_class_means_of_normalised_features(kit, stream, backbone):
    learner = make(kit, backbone, features="image")
    stream.train_task(learner, backbone, stream.tasks(6, 3), 0)
    d = stream.splits["train"]
    with torch.no_grad():
        f = F.normalize(backbone.encode_image(d["images"]), dim=-1)
    for c in (0, 1):
        assert torch.allclose(learner.prototypes()[c], f[d["labels"] == c].mean(0), atol=1e-5)
    assert learner.count.tolist() == [16, 16, 0, 0, 0, 0]


def test_unseen_classes_score_minus_inf_and_fused_concat_is_default(kit, stream, backbone):
    learner = make(kit, backbone)
    stream.train_task(learner, backbone, stream.tasks(6, 3), 0)
    pred = learner.predict(stream.batch("test", torch.arange(8)), range(6))
    assert torch.isfinite(pred.logits[:, :2]).all() and torch.isneginf(pred.logits[:, 2:]).all()
    assert learner.prototypes().shape == (6, 2 * backbone.embed_dim)
    assert set(pred.by_modality) == {"image", "audio", "fused"}


def test_each_feature_choice_learns(kit, stream, backbone):
    for opts in ({"features": "image"}, {"features": "audio"}, {"features": "fused", "fuse": "average"}):
        learner = make(kit, backbone, **opts)
        stream.train_task(learner, backbone, stream.tasks(6, 1), 0)
        assert stream.accuracy(learner, backbone, range(6), range(6)) >= 80.0, opts


def test_frozen_feature_path_equals_raw_path(kit, stream, backbone):
    learner = make(kit, backbone)
    stream.train_task(learner, backbone, stream.tasks(6, 1), 0)
    idx = torch.arange(0, 48, 3)
    raw = learner.predict(stream.batch("test", idx), range(6)).logits
    cached = learner.predict(stream.batch("test", idx, backbone, SimpleCIL.FROZEN_FEATURES), range(6)).logits
    assert torch.allclose(raw, cached, atol=1e-4)
