import subprocess
import sys

import torch

from mcil.determinism import set_deterministic

PROBE = """
import sys, torch
from mcil.determinism import set_deterministic
set_deterministic(True, warn_only=True)
print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
      'torch._inductor' in sys.modules)
"""


def test_sets_the_aten_flags_without_importing_the_compiler():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "False"]


def test_round_trip_in_process():
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
        set_deterministic(False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        set_deterministic(*before)
