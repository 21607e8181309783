"""coop: learnable context vectors in the text prompt; only they train."""

from __future__ import annotations

import torch

from mcil.baselines.coop import CoOp, CoOpOptions


def make(kit, bb, **opts):
    return CoOp(bb, kit.CLASS_NAMES, "synav", kit.run_config(), CoOpOptions(**opts))


def test_learns(kit, stream, backbone):
    # Only 8 context vectors train, through a *random* text tower: a modest but clear gain.
    learner = make(kit, backbone, n_ctx=8)
    before = stream.accuracy(learner, backbone, range(6), range(6))
    stream.train_task(learner, backbone, stream.tasks(6, 1), 0, epochs=20, lr=0.03)
    after = stream.accuracy(learner, backbone, range(6), range(6))
    assert after >= 45.0 and after >= before + 25.0  # chance over 6 classes: 16.7 %


def test_only_context_vectors_train(kit, stream, backbone):
    learner = make(kit, backbone)
    assert learner.trainable_parameters() == list(learner.contexts) and learner.contexts[0].shape == (4, 32)
    before_bb = kit.state_fingerprint(backbone)
    before_ctx = learner.contexts[0].detach().clone()
    stream.train_task(learner, backbone, stream.tasks(6, 3), 0, epochs=2)
    assert not torch.equal(before_ctx, learner.contexts[0])
    after_bb = kit.state_fingerprint(backbone)
    assert all(torch.equal(before_bb[k], after_bb[k]) for k in before_bb)
    assert list(learner.state_dict()) == ["contexts.0"]


def test_context_replaces_word_embeddings_in_the_prompt(kit, backbone):
    learner = make(kit, backbone)
    words = backbone.tokenize(["a photo of a"])[0, 1:5]
    with torch.no_grad():
        learner.contexts[0].copy_(backbone.token_embedding(words))
        ours = learner.text_features([0, 3])
        plain = backbone.encode_text(backbone.tokenize([f"a photo of a {kit.CLASS_NAMES[c]}." for c in (0, 3)]))
    assert torch.allclose(ours, plain, atol=1e-5)


def test_per_task_contexts_freeze_old_ones(kit, stream, backbone):
    learner = make(kit, backbone, context="per-task")
    tasks = stream.tasks(6, 3)
    learner.eval()  # the trainer evaluates before the first task: every class needs a context
    assert learner.predict(stream.batch("test", torch.arange(4)), range(6)).logits.isfinite().all()
    stream.train_task(learner, backbone, tasks, 0, epochs=2)
    ctx0 = learner.contexts[0].detach().clone()
    stream.train_task(learner, backbone, tasks, 1, epochs=2)
    assert len(learner.contexts) == 2 and torch.equal(learner.contexts[0], ctx0)
    assert learner.trainable_parameters() == [learner.contexts[1]]
    assert [learner.context_of(c) for c in range(6)] == [0, 0, 1, 1, 1, 1]  # unseen: newest context
    # resume: a fresh learner replaying start_task has the same structure and loads the state
    resumed = make(kit, kit.make_backbone(), context="per-task")
    for task in learner.tasks_begun:
        resumed.start_task(task)
    resumed.load_state_dict(learner.state_dict())
    with torch.no_grad():
        assert torch.allclose(resumed.text_features(range(6)), learner.text_features(range(6)), atol=1e-6)
