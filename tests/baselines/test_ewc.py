"""ewc: fine-tuning + online-EWC penalty (running Fisher with γ decay) on the adapter weights."""

from __future__ import annotations

import pytest
import torch

from mcil.baselines.ewc import EWC, EWCOptions


def make(kit, bb, **opts):
    opts.setdefault("fisher_samples", 32)
    return EWC(bb, kit.CLASS_NAMES, "synav", kit.run_config(), EWCOptions(**opts))


def test_learns(kit, stream, backbone):
    rec = stream.run(make(kit, backbone), backbone, stream.tasks(6, 3))
    assert min(rec.learned) >= 80.0  # chance: 50 %


def test_a_strong_penalty_holds_the_adapters_at_the_anchor(kit, stream):
    tasks = stream.tasks(6, 3)
    drift = {}
    for lam in (0.0, 1.0e9):
        torch.manual_seed(0)
        bb = kit.make_backbone()
        learner = make(kit, bb, lam=lam)
        stream.train_task(learner, bb, tasks, 0, epochs=2)
        after_task0 = [p.detach().clone() for p in learner.ewc_parameters()]
        assert all(torch.equal(a, getattr(learner, f"anchor_{i}")) for i, a in enumerate(after_task0))
        stream.train_task(learner, bb, tasks, 1, epochs=4)
        drift[lam] = sum(float(((p.detach() - a) ** 2).sum()) for p, a in zip(learner.ewc_parameters(), after_task0))
    assert drift[1.0e9] < 0.5 * drift[0.0]  # λ = 0 is plain fine-tuning


def test_penalty_is_zero_before_task_one_and_positive_after(kit, stream, backbone):
    learner = make(kit, backbone)
    tasks = stream.tasks(6, 3)
    steps0 = []
    stream.train_task(learner, backbone, tasks, 0, on_step=steps0.append)
    assert all("ewc" not in s for s in steps0)  # no Fisher yet: plain CE
    assert int(learner.n_fisher) == 1
    fisher = torch.cat([getattr(learner, f"fisher_{i}").flatten() for i in range(len(learner.ewc_parameters()))])
    assert (fisher >= 0).all() and fisher.sum() > 0
    assert float(learner.penalty().detach()) == 0.0  # at the anchor
    steps1 = []
    stream.train_task(learner, backbone, tasks, 1, epochs=2, on_step=steps1.append)
    assert all("ewc" in s for s in steps1) and float(steps1[-1]["ewc"]) > 0.0


def test_lambda_scales_the_penalty_and_its_gradient_pulls_to_the_anchor(kit, stream, backbone):
    learner = make(kit, backbone, lam=10.0)
    tasks = stream.tasks(6, 3)
    stream.train_task(learner, backbone, tasks, 0, epochs=2)
    with torch.no_grad():
        for p in learner.ewc_parameters():
            p.add_(0.01 * torch.randn_like(p))
    p10 = learner.penalty()
    other = make(kit, kit.make_backbone(), lam=1000.0)
    other.load_state_dict(learner.state_dict())
    assert float(other.penalty().detach()) == pytest.approx(100.0 * float(p10.detach()), rel=1e-5)
    # its gradient is λ F (θ − θ*): every weight is pulled towards its anchor, by its importance
    params = learner.ewc_parameters()
    for p in params:
        p.grad = None  # (left over from the last training step)
    p10.backward()
    for i, p in enumerate(params):
        fisher, anchor = getattr(learner, f"fisher_{i}"), getattr(learner, f"anchor_{i}")
        assert torch.allclose(p.grad, 10.0 * fisher * (p.detach() - anchor), rtol=1e-5, atol=1e-12)


def test_online_fisher_decays_with_gamma(kit, stream, backbone):
    learner = make(kit, backbone, gamma=0.5)
    tasks = stream.tasks(6, 3)
    stream.train_task(learner, backbone, tasks, 0, epochs=1)
    f0 = [getattr(learner, f"fisher_{i}").clone() for i in range(len(learner.ewc_parameters()))]
    stream.train_task(learner, backbone, tasks, 1, epochs=1)
    # recompute task 1's own Fisher with the final weights: F = γ F_0 + F_1
    idx = stream.indices("train", tasks[1])
    loader = lambda: (stream.batch("train", idx[i : i + 16]) for i in (0, 16))  # noqa: E731
    learner.eval()
    f1 = learner.fisher_information(learner.tasks_begun[1], loader)
    for i, (a, b) in enumerate(zip(f0, f1)):
        assert torch.allclose(getattr(learner, f"fisher_{i}"), 0.5 * a + b, rtol=1e-4, atol=1e-12)
    assert int(learner.n_fisher) == 2


def test_resume_restores_fisher_and_anchor(kit, stream, backbone):
    learner = make(kit, backbone)
    tasks = stream.tasks(6, 3)
    stream.train_task(learner, backbone, tasks, 0, epochs=2)
    resumed = make(kit, kit.make_backbone())
    for task in learner.tasks_begun:
        resumed.start_task(task)
    resumed.load_state_dict(learner.state_dict())
    with torch.no_grad():
        for a, b in zip(learner.ewc_parameters(), resumed.ewc_parameters()):
            noise = 0.01 * torch.randn_like(a)
            a.add_(noise)
            b.add_(noise)
    with torch.no_grad():
        assert float(resumed.penalty()) == pytest.approx(float(learner.penalty()), rel=1e-6)
        assert float(resumed.penalty()) > 0
