"""MIFE: experts, routing, hooks, router gradient, task-expert growth/freezing, statistics, resume."""

from __future__ import annotations

import gc
import math

import pytest
import torch
from torch import nn

from mcil.backbones.base import AdapterSite
from mcil.method.mife import MIFE, Expert, MifeConfig, route, router_input


class Block(nn.Module):
    def __init__(self, w: int) -> None:
        super().__init__()
        self.lin = nn.Linear(w, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.lin(x))


class ConvBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.conv(x))


class Toy(nn.Module):
    """A frozen 2-block 'tower' exposing its blocks as adapter sites."""

    def __init__(self, w: int = 8, layout: str = "BLD", seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.layout, self.w = layout, w
        block = ConvBlock if layout == "BCHW" else Block
        self.blocks = nn.ModuleList(block(w) for _ in range(2))
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return x

    def sites(self) -> list[AdapterSite]:
        return [AdapterSite(f"toy.{i}", b, self.w, self.layout) for i, b in enumerate(self.blocks)]


def randomise_experts(mife: MIFE, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in mife.adapters:
            for e in a.experts:
                e.up.weight.copy_(torch.randn(e.up.weight.shape, generator=g))


# --------------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------------
def test_expert_initialisation():
    torch.manual_seed(0)
    e = Expert(8, 4, 0.1, 0.0).requires_grad_(False)
    x = torch.randn(3, 5, 8)
    assert torch.equal(e(x), torch.zeros(3, 5, 8))  # W_up = 0: a new expert adds nothing
    bound = 1 / math.sqrt(8)  # kaiming_uniform(a=√5) bound = √(6/((1+5)·fan_in))
    assert float(e.down.weight.abs().max()) <= bound and float(e.down.weight.std()) > 0
    assert float(e.down.bias.abs().max()) == 0.0
    c = Expert(8, 4, 0.1, 0.0, conv=True)
    assert c.down.weight.shape == (4, 8, 1, 1) and c(torch.randn(2, 8, 3, 3)).shape == (2, 8, 3, 3)


def test_route_hand_values():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]])
    idx, gates = route(logits, 2)
    assert idx.tolist() == [[0, 2], [1, 2]]
    e = math.e
    assert torch.allclose(gates, torch.tensor([[e / (e + 1), 1 / (e + 1)]] * 2))
    idx1, g1 = route(logits, 1)
    assert idx1.tolist() == [[0], [1]] and torch.equal(g1, torch.ones(2, 1))  # top-1: gate ≡ 1
    # current = expert 1: row 0 (picks 0, 2) swaps its lowest pick for expert 1; row 1 already has it
    idx_c, g_c = route(logits, 2, torch.tensor([False, True, False]))
    assert idx_c.tolist() == [[0, 1], [1, 2]]
    assert math.isclose(float(g_c[0, 0]), math.exp(3) / (math.exp(3) + math.exp(1)), rel_tol=1e-6)
    idx_k, _ = route(logits, 5)  # k larger than the pool: all experts
    assert idx_k.shape == (2, 3)


def test_router_input_layouts():
    h = torch.arange(24.0).view(2, 3, 4)  # BLD
    assert torch.equal(router_input(h, "BLD", "mean"), h.mean(1))
    assert torch.equal(router_input(h, "BLD", "first-token"), h[:, 0])
    assert torch.equal(router_input(h.transpose(0, 1), "LBD", "first-token"), h[:, 0])
    assert torch.equal(router_input(h.transpose(0, 1), "LBD", "mean"), h.mean(1))
    c = torch.arange(36.0).view(2, 2, 3, 3)
    assert torch.equal(router_input(c, "BCHW", "mean"), c.mean((2, 3)))
    with pytest.raises(ValueError, match="BCHW"):
        router_input(c, "BCHW", "first-token")
    with pytest.raises(ValueError, match="router_input"):
        MIFE(Toy(layout="BCHW").sites(), MifeConfig(router_input="first-token"))


# --------------------------------------------------------------------------------------------------
# hooks
# --------------------------------------------------------------------------------------------------
def test_hooks_act_only_inside_active_and_detach_removes_them():
    toy = Toy()
    x = torch.randn(2, 3, 8)
    bare = toy(x)
    m = MIFE(toy.sites(), MifeConfig(dropout=0.0))
    with m.active():
        assert torch.equal(toy(x), bare)  # no task begun: no experts yet
    m.begin_task(0)
    with m.active():
        assert torch.equal(toy(x), bare)  # fresh experts output exactly zero
    randomise_experts(m)
    m.eval()
    with m.active():
        adapted = toy(x)
    assert not torch.allclose(adapted, bare)
    assert torch.equal(toy(x), bare)  # outside the context the backbone is untouched
    m.detach()
    with m.active():
        assert torch.equal(toy(x), bare)


def test_two_mifes_on_one_backbone_do_not_interfere():
    toy = Toy()
    x = torch.randn(2, 3, 8)
    m1, m2 = MIFE(toy.sites(), MifeConfig(dropout=0.0)), MIFE(toy.sites(), MifeConfig(dropout=0.0))
    for i, m in enumerate((m1, m2)):
        m.begin_task(0)
        randomise_experts(m, seed=i + 1)
        m.eval()
    with m1.active():
        y1 = toy(x)
    with m2.active():
        y2 = toy(x)
    m2.detach()
    with m1.active():
        assert torch.equal(toy(x), y1)
    assert not torch.allclose(y1, y2)


def test_hooks_go_away_with_the_mife():
    toy = Toy()
    m = MIFE(toy.sites(), MifeConfig())
    assert all(len(b._forward_hooks) == 1 for b in toy.blocks)
    del m
    gc.collect()
    assert all(len(b._forward_hooks) == 0 for b in toy.blocks)


@pytest.mark.parametrize("layout", ["LBD", "BCHW"])
def test_other_layouts_add_the_gated_expert_sum(layout):
    toy = Toy(layout=layout)
    m = MIFE(toy.sites()[:1], MifeConfig(dropout=0.0))  # one site: block 0
    m.begin_task(0)
    randomise_experts(m)
    m.eval()
    x = torch.randn(3, 2, 8) if layout == "LBD" else torch.randn(2, 8, 3, 3)
    with m.active():
        got = toy.blocks[0](x)
    a = m.adapters[0]
    # zero router, 2 experts, top-2: both picked with gate 1/2 each, for every sample
    expected = toy.blocks[0](x) + 0.5 * (a.experts[0](x) + a.experts[1](x))
    assert torch.allclose(got, expected, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# router gradient
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cfg, learns",
    [
        (MifeConfig(dropout=0.0), True),  # default preset: task-experts, 2 per task, top-2
        (MifeConfig(experts="official", n_experts=5, top_k=1, router_input="first-token", dropout=0.0), False),
        (MifeConfig(experts="official", n_experts=5, top_k=2, dropout=0.0), True),
    ],
)
def test_router_gradient(cfg, learns):
    toy = Toy()
    m = MIFE(toy.sites(), cfg)
    m.begin_task(0)
    randomise_experts(m)  # distinct experts (after the first step they would be)
    m.train()
    x = torch.randn(4, 5, 8)
    with m.active():
        toy(x).pow(2).sum().backward()
    grads = [a.router[0].grad for a in m.adapters]
    if learns:
        assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)
    else:
        assert all(g is None or float(g.abs().sum()) == 0.0 for g in grads)


# --------------------------------------------------------------------------------------------------
# task experts
# --------------------------------------------------------------------------------------------------
def _train(toy: Toy, m: MIFE, params, steps: int = 4, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    x, target = torch.randn(6, 5, 8, generator=g), torch.randn(6, 5, 8, generator=g)
    opt = torch.optim.AdamW(params, lr=0.05, weight_decay=0.1)
    m.train()
    for _ in range(steps):
        with m.active():
            loss = (toy(x) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_task_experts_grow_freeze_and_stay_bit_identical():
    toy = Toy()
    m = MIFE(toy.sites(), MifeConfig())
    m.begin_task(0)
    assert [a.n_experts for a in m.adapters] == [2, 2]
    _train(toy, m, [p for p in m.parameters() if p.requires_grad])
    old = {k: v.clone() for k, v in m.state_dict().items() if not k.endswith("_extra_state")}
    assert any(float(v.abs().sum()) > 0 for k, v in old.items() if "up.weight" in k)
    m.begin_task(1)
    m.begin_task(1)  # idempotent
    for a in m.adapters:
        assert a.n_experts == 4 and a.expert_group == [0, 0, 1, 1]
        assert not any(p.requires_grad for e in a.experts[:2] for p in e.parameters())
        assert all(p.requires_grad for e in a.experts[2:] for p in e.parameters())
        assert not a.router[0].requires_grad and a.router[1].requires_grad
    _train(toy, m, list(m.parameters()), seed=1)  # even an optimiser handed every parameter
    new = m.state_dict()
    for k, v in old.items():
        assert torch.equal(new[k], v), k  # task 0's experts and router columns: bit-identical
    assert all(float(a.experts[2].up.weight.detach().abs().sum()) > 0 for a in m.adapters)


def test_freeze_old_false_keeps_old_experts_trainable():
    m = MIFE(Toy().sites(), MifeConfig(freeze_old=False))
    m.begin_task(0)
    m.begin_task(1)
    assert all(p.requires_grad for a in m.adapters for p in a.parameters())


def test_route_current_keeps_a_current_expert_while_training_only():
    toy = Toy()
    m = MIFE(toy.sites(), MifeConfig(dropout=0.0))
    m.begin_task(0)
    with torch.no_grad():
        for a in m.adapters:
            a.router[0].fill_(5.0)  # old router columns: large logits for positive inputs
    m.begin_task(1)
    x = torch.rand(4, 5, 8) + 1.0  # positive → old experts win free routing
    m.train()
    with m.active():
        toy(x)
    m.eval()
    with m.active():
        toy(x)
    a = m.adapters[0]
    train, ev = a.usage()["train"]["1"], a.usage()["eval"]["1"]
    assert sum(train[:2]) == 4 and sum(train[2:]) == 4  # one old + one current expert per sample
    assert sum(ev[:2]) == 8 and sum(ev[2:]) == 0  # inference routes freely (no task id)


# --------------------------------------------------------------------------------------------------
# statistics, official hack, balance loss
# --------------------------------------------------------------------------------------------------
def test_usage_counts_and_entropy():
    toy = Toy()
    m = MIFE(toy.sites(), MifeConfig(experts="official", n_experts=3, top_k=2))
    m.eval()
    with m.active():
        toy(torch.randn(4, 5, 8))  # before any task
    m.begin_task(0)
    with m.active():
        toy(torch.randn(4, 5, 8))
        toy(torch.randn(2, 5, 8))
    stats = m.statistics()
    for site in ("toy.0", "toy.1"):
        assert sum(stats["usage"]["eval"]["before"][site]) == 8  # 4 samples × top-2
        assert sum(stats["usage"]["eval"]["0"][site]) == 12
        # zero router: uniform softmax over 3 experts → entropy ln 3
        assert math.isclose(stats["router_entropy"]["eval"]["0"][site], math.log(3), rel_tol=1e-6)
    assert "train" not in stats["usage"]
    with m.recording(False), m.active():
        toy(torch.randn(4, 5, 8))
    assert sum(m.statistics()["usage"]["eval"]["0"]["toy.0"]) == 12


def test_official_freeze_hack():
    toy = Toy()
    m = MIFE(toy.sites(), MifeConfig(experts="official", n_experts=3, top_k=1, official_freeze_hack=True))
    m.begin_task(0)
    with torch.no_grad():  # site 0: sample 0 picks expert 0, sample 1 picks expert 1
        m.adapters[0].router[0].zero_()
        m.adapters[0].router[0][0, 0] = 1.0
        m.adapters[0].router[0][1, 0] = -1.0
    x = torch.zeros(2, 5, 8)
    x[0, :, 0], x[1, :, 0] = 1.0, -1.0
    m.train()
    with m.active():
        toy(x)
    # every expert that some sample did not pick is frozen for good
    assert m.adapters[0].hack_frozen == [True, True, True]
    flags = m.adapters[1].hack_frozen  # zero router: all samples pick the same expert
    assert flags.count(False) == 1
    kept = flags.index(False)
    assert all(p.requires_grad == (i == kept) for i, e in enumerate(m.adapters[1].experts) for p in e.parameters())
    m.begin_task(1)  # never reset
    assert m.adapters[0].hack_frozen == [True, True, True]
    assert not any(p.requires_grad for p in m.adapters[0].experts.parameters())


def test_balance_loss_hand_value():
    toy = Toy()
    m = MIFE(toy.sites(), MifeConfig(experts="official", n_experts=2, top_k=2, balance=True))
    m.begin_task(0)
    m.train()
    with m.active():
        toy(torch.randn(3, 5, 8))
    # zero router: f = [1/2, 1/2], P = [1/2, 1/2] → E·Σ f·P = 2·(1/4 + 1/4) = 1 per site
    assert math.isclose(float(m.pop_balance_loss().detach()), 1.0, rel_tol=1e-6)
    assert m.pop_balance_loss() is None


# --------------------------------------------------------------------------------------------------
# checkpointing
# --------------------------------------------------------------------------------------------------
def test_state_dict_rebuilds_experts_in_a_fresh_mife():
    toy = Toy(seed=3)
    m = MIFE(toy.sites(), MifeConfig(dropout=0.0))
    m.begin_task(0)
    m.begin_task(1)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    m.eval()
    x = torch.randn(3, 5, 8)
    with m.active():
        y = toy(x)
    state = m.state_dict()
    toy2 = Toy(seed=3)
    m2 = MIFE(toy2.sites(), MifeConfig(dropout=0.0))
    m2.load_state_dict(state)  # no begin_task: the extra state grows the experts first
    assert m2.statistics()["usage"] == m.statistics()["usage"]
    m2.eval()
    with m2.active():
        assert torch.equal(toy2(x), y)
    a = m2.adapters[0]
    assert a.n_experts == 4 and a.current_group == 1
    assert not a.router[0].requires_grad and a.router[1].requires_grad
    bad = MIFE(Toy().sites(), MifeConfig(dropout=0.0, experts="official"))
    with pytest.raises(RuntimeError, match="method.options"):
        bad.load_state_dict(state)
