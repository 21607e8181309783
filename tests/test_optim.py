import subprocess
import sys

import pytest
import torch

from mcil.optim import AdamW


def _params(seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(5, 3, generator=g)), torch.nn.Parameter(torch.randn(7, generator=g))]


def _grads(step, params):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=g) for p in params]


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_same_parameters_as_torch_adamw(weight_decay):
    ours, ref = _params(0), _params(0)
    opt = AdamW(ours, lr=3e-3, weight_decay=weight_decay)
    opt_ref = torch.optim.AdamW(ref, lr=3e-3, weight_decay=weight_decay)
    for step in range(60):
        lr = 3e-3 * (0.5 + 0.5 * (step % 7) / 7)  # the trainer changes lr every step
        opt.lr = lr
        for g in opt_ref.param_groups:
            g["lr"] = lr
        for p, q, gr in zip(ours, ref, _grads(step, ours)):
            if step % 11 == 5 and p.ndim == 1:  # a parameter without gradient this step is skipped
                p.grad = q.grad = None
            else:
                p.grad, q.grad = gr.clone(), gr.clone()
        opt.step()
        opt_ref.step()
    for p, q in zip(ours, ref):
        assert torch.equal(p.detach(), q.detach())


def test_state_dict_round_trip_continues_identically():
    a, b = _params(1), _params(1)
    opt_a, opt_b = AdamW(a, lr=1e-2), AdamW(b, lr=1e-2)
    for step in range(5):
        for p, q, gr in zip(a, b, _grads(step, a)):
            p.grad, q.grad = gr.clone(), gr.clone()
        opt_a.step()
        opt_b.step()
    restored = AdamW(b, lr=0.5)
    restored.load_state_dict(opt_b.state_dict())
    for step in range(5, 9):
        for p, q, gr in zip(a, b, _grads(step, a)):
            p.grad, q.grad = gr.clone(), gr.clone()
        opt_a.step()
        restored.step()
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    with pytest.raises(ValueError, match="another configuration"):
        AdamW(a[:1]).load_state_dict(opt_a.state_dict())


def test_zero_grad_and_bad_arguments():
    p = _params(2)
    opt = AdamW(p)
    p[0].grad = torch.ones_like(p[0])
    opt.zero_grad()
    assert p[0].grad is None
    with pytest.raises(ValueError, match="lr"):
        AdamW(p, lr=-1.0)
    with pytest.raises(ValueError, match="empty"):
        AdamW([])


def test_does_not_import_the_compiler():
    code = ("import sys, torch; from mcil.optim import AdamW; p = torch.nn.Parameter(torch.ones(2)); o = AdamW([p]); "
            "p.grad = torch.ones(2); o.step(); o.zero_grad(); print('torch._dynamo' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_lr_scales_act_as_per_parameter_lr():
    """A factor s on one parameter equals a second optimizer at lr·s for it alone."""
    ours, a, b = _params(0), _params(0), _params(0)
    opt = AdamW(ours, lr=1e-2, lr_scales=[1.0, 10.0])
    opt_a, opt_b = AdamW(a[:1], lr=1e-2), AdamW(b[1:], lr=1e-1)
    for step in range(20):
        grads = _grads(step, ours)
        for p, q, g in zip(ours, a[:1] + b[1:], grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step(), opt_a.step(), opt_b.step()
    assert torch.equal(ours[0].detach(), a[0].detach()) and torch.equal(ours[1].detach(), b[1].detach())
    with pytest.raises(ValueError, match="one positive factor per parameter"):
        AdamW(_params(0), lr_scales=[1.0])
    with pytest.raises(ValueError, match="one positive factor per parameter"):
        AdamW(_params(0), lr_scales=[1.0, 0.0])
