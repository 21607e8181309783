"""zeroshot: frozen towers and text prototypes — nothing changes, so nothing is forgotten."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mcil.baselines.zeroshot import ZeroShot, ZeroShotOptions, combine_modalities


@pytest.fixture(scope="module")
def aligned(kit, stream):
    """A backbone whose output projections were fitted so that zero-shot can work at all."""
    return kit.align_projections(kit.make_backbone(), stream)


def make(kit, bb, modality="average"):
    return ZeroShot(bb, kit.CLASS_NAMES, "synav", kit.run_config(), ZeroShotOptions(modality=modality))


def test_beats_chance_with_every_modality_option(kit, stream, aligned):
    for modality in ("image", "audio", "average"):
        acc = stream.accuracy(make(kit, aligned, modality), aligned, range(6), range(6))
        assert acc > 60.0, (modality, acc)  # chance: 16.7 %
    # and on the *random* backbone (text not aligned with anything) it is near chance
    raw = kit.make_backbone()
    assert stream.accuracy(make(kit, raw), raw, range(6), range(6)) < 40.0


def test_no_parameter_changes_and_accuracy_equals_the_untrained_model(kit, stream, aligned):
    learner = make(kit, aligned)
    assert learner.trainable_parameters() == [] and list(learner.parameters()) == []
    assert not ZeroShot.NEEDS_GRAD
    before = kit.state_fingerprint(aligned)
    steps = []
    tasks = stream.tasks(6, 3)
    A = stream.run(learner, aligned, tasks, on_step=steps.append).A
    assert steps == []  # the driver (like the trainer) runs no step: Task.steps == 0
    untrained = make(kit, aligned)
    for t in range(3):
        seen = [c for task in tasks[: t + 1] for c in task]
        for j in range(t + 1):
            assert A[t, j] == stream.accuracy(untrained, aligned, tasks[j], seen)
    # no forgetting: a task's accuracy can only change because the scope (seen classes) grows
    assert np.all(np.diff(A[:, 0]) <= 0)
    after = kit.state_fingerprint(aligned)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_average_uses_the_modalities_a_sample_has():
    ci = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.3, 0.1]])
    ca = torch.tensor([[0.2, 0.6], [0.0, 0.9], [0.5, 0.5]])
    has_i = torch.tensor([True, True, False])
    has_a = torch.tensor([True, False, True])
    out = combine_modalities(ci, ca, has_i, has_a)
    assert torch.allclose(out[0], torch.tensor([0.5, 0.4]))  # both: the mean
    assert torch.allclose(out[1], ci[1])  # no audio: image only
    assert torch.allclose(out[2], ca[2])  # no image: audio only


def test_missing_audio_falls_back_to_image_scores(kit, stream, aligned):
    batch = stream.batch("test", torch.arange(0, 48, 5))
    batch.has_audio[:] = False
    batch.audio = batch.audio * 0
    avg = make(kit, aligned, "average").predict(batch, range(6))
    img = make(kit, aligned, "image").predict(batch, range(6))
    assert torch.allclose(avg.logits, img.logits)
    assert set(avg.by_modality) == {"image", "audio", "fused"}


def test_frozen_feature_path_equals_raw_path(kit, stream, aligned):
    learner = make(kit, aligned)
    idx = torch.arange(0, 48, 3)
    raw = learner.predict(stream.batch("test", idx), range(6)).logits
    cached = learner.predict(stream.batch("test", idx, aligned, ZeroShot.FROZEN_FEATURES), range(6)).logits
    assert torch.allclose(raw, cached, atol=1e-4)
