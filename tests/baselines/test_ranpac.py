"""ranpac: random projection + ridge regression in closed form, updated task by task."""

from __future__ import annotations

import pytest
import torch

from mcil.baselines.ranpac import RIDGE_GRID, RanPAC, RanPACOptions, select_ridge
from mcil.config import ConfigError, parse_dataclass


def make(kit, bb, **opts):
    opts.setdefault("M", 256)
    return RanPAC(bb, kit.CLASS_NAMES, "synav", kit.run_config(), RanPACOptions(**opts))


def test_learns_without_gradient_steps(kit, stream, backbone):
    learner = make(kit, backbone)
    assert not RanPAC.NEEDS_GRAD and learner.trainable_parameters() == []
    rec = stream.run(learner, backbone, stream.tasks(6, 3))
    assert min(rec.learned) >= 90.0 and rec.A[2].min() >= 75.0  # nothing is overwritten
    assert learner.statistics()["ridge"] in RIDGE_GRID


def test_incremental_gram_update_equals_batch_solution(kit, stream, backbone):
    lam = 0.5
    learner = make(kit, backbone, ridge=lam)
    tasks = stream.tasks(6, 3)
    for t in range(3):
        stream.train_task(learner, backbone, tasks, t)
    # the batch solution: all training data at once
    all_idx = torch.arange(len(stream.splits["train"]["labels"]))
    batch = stream.batch("train", all_idx)
    with torch.no_grad():
        h = learner.project(batch).double()
    y = torch.nn.functional.one_hot(batch.labels, 6).double()
    G, Q = h.t() @ h, h.t() @ y
    assert torch.allclose(learner.G, G, rtol=1e-6, atol=1e-6)
    assert torch.allclose(learner.Q, Q)
    W = torch.linalg.solve(G + lam * torch.eye(G.shape[0], dtype=G.dtype), Q)
    assert torch.allclose(learner.W.double(), W, rtol=1e-4, atol=1e-5)


def test_random_projection_is_fixed_by_its_seed_and_not_checkpointed(kit, backbone):
    a, b = make(kit, backbone), make(kit, backbone)
    c = make(kit, backbone, proj_seed=1)
    assert torch.equal(a.W_rand, b.W_rand) and not torch.equal(a.W_rand, c.W_rand)
    assert a.W_rand.shape == (2 * backbone.embed_dim, 256)  # fused concat input
    assert "W_rand" not in a.state_dict() and "G" in a.state_dict()


@pytest.mark.parametrize("n, m", [(40, 10), (12, 30)])  # primal and dual branch
def test_select_ridge_matches_brute_force(n, m):
    g = torch.Generator().manual_seed(n)
    h = torch.relu(torch.randn(n, m, generator=g, dtype=torch.float64))
    y = torch.nn.functional.one_hot(torch.randint(0, 3, (n,), generator=g), 3).double()
    y = y + 0.3 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    grid = [1e-3, 1e-1, 1.0, 10.0, 1e3]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * n)
    tr, va = perm[:cut], perm[cut:]
    errs = []
    for lam in grid:
        w = torch.linalg.solve(h[tr].t() @ h[tr] + lam * torch.eye(m, dtype=h.dtype), h[tr].t() @ y[tr])
        errs.append(float(((h[va] @ w - y[va]) ** 2).mean()))
    assert select_ridge(h, y, grid, seed=0) == grid[min(range(len(grid)), key=errs.__getitem__)]


def test_options_are_validated():
    with pytest.raises(ConfigError, match="method.options.ridge"):
        parse_dataclass(RanPACOptions, {"ridge": 0.0}, "method.options")
    with pytest.raises(ConfigError, match="method.options.M"):
        parse_dataclass(RanPACOptions, {"M": 0}, "method.options")
