"""Fixtures for the backbone tests.

``audioclip_random`` is the full 134 M-parameter AudioCLIP, randomly initialised from fixed seeds
and built once per test session (a few seconds, ~540 MB). Every AudioCLIP test that needs real
weights shares it; the strict-loading tests use tiny stand-in files built from the key table
instead (see ``tsv_state_dict``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

# Copy of shared/reference/audioclip_state_dict_keys.tsv: measured on the upstream model classes
# (key, shape, dtype in state_dict order; 861 rows, no header).
AUDIOCLIP_KEYS_TSV = Path(__file__).with_name("audioclip_state_dict_keys.tsv")


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch ops on one thread, then restore the previous count.

    On an oversubscribed CI machine the convolutions of the full model run ~10× faster on one
    thread than on two competing ones.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


KeyTable = list[tuple[str, tuple[int, ...], torch.dtype]]


@pytest.fixture(scope="session")
def audioclip_key_table() -> KeyTable:
    """The reference state_dict table (key, shape, dtype), in state_dict order: 861 rows."""
    rows = []
    for line in AUDIOCLIP_KEYS_TSV.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
        rows.append((key, dims, getattr(torch, dtype.removeprefix("torch."))))
    return rows


@pytest.fixture
def audioclip_standin(audioclip_key_table: KeyTable) -> dict[str, torch.Tensor]:
    """A stand-in AudioCLIP state_dict with exactly the table's keys, shapes and dtypes.

    Each tensor is a zero-stride view of a single zero, so a file of it is a few hundred KB
    instead of 537 MB; strict loading only looks at keys, shapes and dtypes. Fresh per test.
    """
    return {key: torch.zeros((), dtype=dtype).expand(shape) for key, shape, dtype in audioclip_key_table}


def _randomise_batchnorm(model: nn.Module, seed: int) -> None:
    """Give every BatchNorm non-trivial affine parameters and running statistics.

    CLIP's init zeroes the last BN of each residual branch, which would make the image tower's
    branches dead; random statistics make every conv reach the output, so the frozen reference
    values in the tests depend on all of them.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))


@pytest.fixture(scope="session")
def audioclip_random():
    """AudioCLIP with seeded random weights (torch seed 0, BatchNorm seed 1), frozen, eval mode."""
    from mcil.backbones.audioclip import AudioCLIP

    with single_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AudioCLIP()
        _randomise_batchnorm(model, seed=1)
    return model.freeze()
