"""av-concat: adapted image + frozen audio, concatenated and projected, for every sample (no gate)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mcil.baselines.av_concat import AVConcat, AVConcatOptions


def make(kit, bb, **opts):
    return AVConcat(bb, kit.CLASS_NAMES, "synav", kit.run_config(), AVConcatOptions(**opts))


def test_learns(kit, stream, backbone):
    learner = make(kit, backbone)
    rec = stream.run(learner, backbone, stream.tasks(6, 3))
    assert min(rec.learned) >= 80.0  # chance: 50 %


def test_both_modalities_are_always_used(kit, stream, backbone):
    learner = make(kit, backbone)
    stream.train_task(learner, backbone, stream.tasks(6, 3), 0, epochs=2)
    idx = torch.arange(0, 48, 3)
    frozen = AVConcat.FROZEN_FEATURES
    batch = stream.batch("test", idx, backbone, frozen)
    base = learner.predict(batch, range(6))
    assert base.fused.all()  # no gate: every sample with both modalities is fused
    other_audio = stream.batch("test", idx.flip(0), backbone, frozen).audio_emb
    swapped_a = stream.batch("test", idx, backbone, frozen)
    swapped_a.audio_emb = other_audio
    assert not torch.allclose(learner.predict(swapped_a, range(6)).logits, base.logits)
    swapped_i = stream.batch("test", idx, backbone, frozen)
    swapped_i.image = swapped_i.image.flip(0)
    assert not torch.allclose(learner.predict(swapped_i, range(6)).logits, base.logits)
    # a sample without image is still classified (from its audio)
    swapped_i.has_image[:] = False
    assert learner.predict(swapped_i, range(6)).logits.abs().sum() > 0


def test_projection_starts_as_the_sum_of_normalised_modalities(kit, stream, backbone):
    learner = make(kit, backbone)
    batch = stream.batch("test", torch.arange(0, 48, 4), backbone, AVConcat.FROZEN_FEATURES)
    with torch.no_grad():
        img, aud = learner.modality_features(batch)
        fused = learner.query_features(batch)
    assert torch.allclose(fused, F.normalize(img, dim=-1) + F.normalize(aud, dim=-1), atol=1e-6)
    trainable = {id(p) for p in learner.trainable_parameters()}
    assert id(learner.proj.weight) in trainable


def test_raw_audio_path_equals_cached_path(kit, stream, backbone):
    learner = make(kit, backbone)
    idx = torch.arange(0, 48, 5)
    learner.eval()
    raw = learner.predict(stream.batch("test", idx), range(6)).logits
    cached = learner.predict(stream.batch("test", idx, backbone, AVConcat.FROZEN_FEATURES), range(6)).logits
    assert torch.allclose(raw, cached, atol=1e-4)
