"""replay: herding exemplar memory under a class-balanced budget, rehearsed with CE; NME option."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mcil.baselines.replay import Replay, ReplayOptions
from mcil.config import ConfigError, parse_dataclass


def make(kit, bb, **opts):
    return Replay(bb, kit.CLASS_NAMES, "synav", kit.run_config(), ReplayOptions(**opts))


def test_learns_and_keeps_old_classes(kit, stream, backbone):
    rec = stream.run(make(kit, backbone, per_class=8), backbone, stream.tasks(6, 3))
    assert min(rec.learned) >= 80.0  # chance: 50 %
    assert np.mean(rec.A[2]) >= 75.0  # rehearsal keeps old tasks (chance over 6 classes: 16.7 %)


def test_memory_never_exceeds_the_budget_and_stays_class_balanced(kit, stream, backbone):
    learner = make(kit, backbone, per_class=5, total=12)
    tasks = stream.tasks(6, 3)
    history = []
    for t, expect in zip(range(3), (5, 3, 2)):  # min(5, 12 // n_seen) with n_seen = 2, 4, 6
        stream.train_task(learner, backbone, tasks, t, epochs=2)
        sizes = learner.memory_sizes()
        seen = [c for task in tasks[: t + 1] for c in task]
        assert sizes[seen].tolist() == [expect] * len(seen)
        assert int(sizes.sum()) <= 12 and int(sizes.sum()) <= 5 * len(seen)
        history.append(learner.memory.clone())
        # stored rows are train-split indices of the right class
        labels = stream.splits["train"]["labels"]
        for c in seen:
            rows = learner.memory[c][learner.memory[c] >= 0]
            assert (labels[rows] == c).all() and len(set(rows.tolist())) == len(rows)
    # shrinking keeps the first picks of the herding order (iCaRL's reduction)
    assert torch.equal(history[2][0, :2], history[0][0, :2])
    assert learner.statistics()["memory_total"] == 12


def test_herding_picks_are_deterministic(kit, stream):
    picks = []
    for _ in range(2):
        torch.manual_seed(0)
        bb = kit.make_backbone()
        learner = make(kit, bb, per_class=4, herding_features="frozen")
        stream.train_task(learner, bb, stream.tasks(6, 3), 0, epochs=1)
        picks.append(learner.memory.clone())
    assert torch.equal(picks[0], picks[1])
    # frozen features: the picks do not depend on training at all
    torch.manual_seed(123)
    bb = kit.make_backbone()
    other = make(kit, bb, per_class=4, herding_features="frozen")
    stream.train_task(other, bb, stream.tasks(6, 3), 0, epochs=3, lr=3e-2)
    assert torch.equal(other.memory, picks[0])


def test_replay_batch_fetches_exemplars_through_the_trainer(kit, stream, backbone):
    learner = make(kit, backbone, per_class=4, replay_batch_size=5)
    tasks = stream.tasks(6, 3)
    learner.bind_train_data(lambda idx: stream.batch("train", idx))
    assert learner.replay_batch(16) is None  # empty memory: nothing to replay
    stream.train_task(learner, backbone, tasks, 0, epochs=1)
    extra = learner.replay_batch(16)
    assert len(extra) == 5 and set(extra.labels.tolist()) <= {0, 1}
    assert set(extra.index.tolist()) <= set(learner.memory_indices().tolist())
    # during task 1 the CE runs over all seen classes, with old-class exemplars in the batch
    steps = []
    stream.train_task(learner, backbone, tasks, 1, epochs=1, on_step=steps.append)
    assert learner.loss_classes(learner.tasks_begun[1]) == (0, 1, 2, 3) and steps


def test_nme_classifier(kit, stream, backbone):
    learner = make(kit, backbone, per_class=8, classifier="nme")
    tasks = stream.tasks(6, 3)
    stream.train_task(learner, backbone, tasks, 0)
    assert stream.accuracy(learner, backbone, tasks[0], tasks[0]) >= 90.0
    pred = learner.predict(stream.batch("test", torch.arange(0, 48, 4)), range(6))
    assert torch.isneginf(pred.logits[:, 2:]).all()  # no exemplars yet: cannot be predicted
    means = torch.nn.functional.normalize(learner.nme_means[:2], dim=-1)
    with torch.no_grad():
        f = torch.nn.functional.normalize(learner.image_features(stream.batch("train", learner.memory[0])), dim=-1)
    assert torch.allclose(means[0], torch.nn.functional.normalize(f.mean(0), dim=-1), atol=1e-5)


def test_resume_restores_memory_and_predictions(kit, stream, backbone):
    tasks = stream.tasks(6, 3)
    learner = make(kit, backbone, per_class=6)
    stream.train_task(learner, backbone, tasks, 0)
    stream.train_task(learner, backbone, tasks, 1, epochs=2)
    state, begun = learner.state_dict(), learner.tasks_begun
    resumed = make(kit, kit.make_backbone(), per_class=6)
    for task in begun:
        resumed.start_task(task)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.memory, learner.memory) and resumed.memory_sizes().sum() == 24
    learner.eval()
    resumed.eval()
    batch = stream.batch("test", torch.arange(0, 48, 3))
    assert torch.allclose(learner.predict(batch, range(6)).logits, resumed.predict(batch, range(6)).logits, atol=1e-5)
    for lrn in (learner, resumed):
        lrn.bind_train_data(lambda idx: stream.batch("train", idx))
    torch.manual_seed(7)
    a = learner.replay_batch(8)
    torch.manual_seed(7)
    b = resumed.replay_batch(8)
    assert torch.equal(a.index, b.index)


def test_options_are_validated():
    with pytest.raises(ConfigError, match="method.options.classifier"):
        parse_dataclass(ReplayOptions, {"classifier": "knn"}, "method.options")
    with pytest.raises(ConfigError, match="method.options.per_class"):
        parse_dataclass(ReplayOptions, {"per_class": 0}, "method.options")
