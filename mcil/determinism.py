"""Deterministic kernels without paying for the compiler stack at start-up.

``torch.use_deterministic_algorithms`` imports ``torch._inductor`` (and with it ``torch._dynamo``)
only to set the compiler's ``deterministic`` flag: 2.4 s of every ``mcil train`` start-up on the
2-core CI machine, measured with ``python -X importtime`` and cProfile — a sixth of a short run.
Nothing in mcil compiles, so only ATen's flag matters; the compiler's is set too when it is
already loaded (someone else compiles in this process).
"""

from __future__ import annotations

import sys

import torch

__all__ = ["set_deterministic"]


def set_deterministic(mode: bool, warn_only: bool = False) -> None:
    """Make ATen pick deterministic kernels (or raise/warn where none exists), like
    :func:`torch.use_deterministic_algorithms`, without importing ``torch._inductor``."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None or "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
        return
    setter(mode, warn_only=warn_only)
