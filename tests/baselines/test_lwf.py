"""lwf: fine-tuning + temperature-softened distillation to the frozen previous model on old classes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mcil.baselines.lwf import LwF, LwFOptions, distillation


def make(kit, bb, **opts):
    return LwF(bb, kit.CLASS_NAMES, "synav", kit.run_config(), LwFOptions(**opts))


def test_learns(kit, stream, backbone):
    rec = stream.run(make(kit, backbone), backbone, stream.tasks(6, 3))
    assert min(rec.learned) >= 80.0  # chance: 50 %


def test_distillation_is_t2_kl_and_zero_for_identical_logits():
    s = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[2.0, 0.0, 1.0]])
    p_t, p_s = F.softmax(t / 2, dim=1), F.softmax(s / 2, dim=1)
    by_hand = 4.0 * (p_t * (p_t.log() - p_s.log())).sum()
    assert torch.allclose(distillation(s, t, 2.0), by_hand)
    assert float(distillation(t, t, 2.0)) == pytest.approx(0.0, abs=1e-7)


def test_old_model_is_frozen_and_its_logits_enter_the_loss(kit, stream, backbone):
    learner = make(kit, backbone)
    tasks = stream.tasks(6, 3)
    stream.train_task(learner, backbone, tasks, 0)
    assert learner.teacher is None  # nothing to distil during the first task
    stream.start(learner, backbone, tasks, 1, steps=1)
    teacher = learner.teacher
    assert teacher is not None and not any(p.requires_grad for p in teacher.parameters())
    batch = stream.batch("train", stream.indices("train", tasks[1])[:16])
    learner.eval()  # no dropout: the student still equals the teacher, so the KD term is exactly 0
    assert float(learner.train_step(batch)["kd"]) == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():  # move the student as training would
        for p in learner.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = learner.train_step(batch)
    with torch.no_grad():
        student_old = learner.scale * F.normalize(learner.image_features(batch), dim=-1) @ F.normalize(
            learner.text_features((0, 1)), dim=-1).t()
        expected = distillation(student_old, learner.teacher_logits(batch), 2.0)
    assert float(out["kd"]) > 1e-4 and torch.allclose(out["kd"], expected, rtol=1e-4)
    out["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.trainable_parameters())
    with torch.no_grad():  # the term is a function of the teacher's logits
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
        learner._teacher_protos = None
        assert not torch.allclose(learner.train_step(batch)["kd"], out["kd"], rtol=1e-3)


def test_teacher_unchanged_by_a_whole_task_and_lam_zero_disables_kd(kit, stream, backbone):
    learner = make(kit, backbone)
    tasks = stream.tasks(6, 3)
    stream.train_task(learner, backbone, tasks, 0)
    snapshots = []
    steps = []

    def on_step(out):
        steps.append(out)
        if not snapshots:
            snapshots.append(kit.state_fingerprint(learner.teacher))

    stream.train_task(learner, backbone, tasks, 1, epochs=3, on_step=on_step)
    assert learner._old == (0, 1) and len(steps) == 6 and all("kd" in s for s in steps)
    after = kit.state_fingerprint(learner.teacher)
    assert all(torch.equal(snapshots[0][k], after[k]) for k in after)
    student = kit.state_fingerprint(learner.adapter)
    assert not all(torch.equal(student[k], after[k]) for k in after)  # the student did move
    off = make(kit, kit.make_backbone(), lam=0.0)
    stream.train_task(off, off.backbone, tasks, 0, epochs=1)
    stream.start(off, off.backbone, tasks, 1, steps=1)
    assert "kd" not in off.train_step(stream.batch("train", stream.indices("train", tasks[1])[:8]))


def test_resume_restores_student_and_teacher(kit, stream, backbone):
    tasks = stream.tasks(6, 3)
    learner = make(kit, backbone)
    stream.train_task(learner, backbone, tasks, 0)
    stream.train_task(learner, backbone, tasks, 1, epochs=2)
    state = learner.state_dict()
    begun = learner.tasks_begun
    assert any(k.startswith("teacher.") for k in state)

    bb2 = kit.make_backbone()
    resumed = make(kit, bb2)
    for task in begun:
        resumed.start_task(task)
    resumed.load_state_dict(state)
    assert not any(p.requires_grad for p in resumed.teacher.parameters())
    resumed.eval()
    learner.eval()
    batch = stream.batch("test", torch.arange(0, 48, 3))
    batch2 = stream.batch("test", torch.arange(0, 48, 3))
    assert torch.allclose(learner.predict(batch, range(6)).logits, resumed.predict(batch2, range(6)).logits, atol=1e-5)
    assert torch.allclose(learner.teacher_logits(batch), resumed.teacher_logits(batch2), atol=1e-5)
