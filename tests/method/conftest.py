"""Fixtures for the method tests: a small random tiny backbone, run configs, learners, batches.

Everything goes through the ``mk`` fixture (a factory), so no test imports this file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch

from mcil.backbones.tiny import TinyBackbone
from mcil.config import RunConfig, apply_overrides, parse_dataclass
from mcil.learners.base import Batch

from tiny_kit import CLASS_NAMES, random_backbone


class Factory:
    class_names = CLASS_NAMES

    @staticmethod
    def backbone(seed: int = 0) -> TinyBackbone:
        """Frozen random tiny backbone (tiny_kit.random_backbone)."""
        return random_backbone(seed)

    @staticmethod
    def cfg(**dotted: Any) -> RunConfig:
        """RunConfig with dotted overrides given as keyword arguments with '__' for '.'."""
        items = [f"{k.replace('__', '.')}={v if not isinstance(v, bool) else str(v).lower()}" for k, v in dotted.items()]
        return parse_dataclass(RunConfig, apply_overrides({}, items))

    @classmethod
    def learner(cls, backbone: TinyBackbone | None = None, options: dict[str, Any] | None = None, seed: int = 0, **dotted: Any):
        from mcil.method.mcil_learner import McilLearner

        cfg = cls.cfg(**dotted)
        if options:
            cfg = parse_dataclass(
                RunConfig, {**_as_dict(cfg), "method": {"name": "mcil", "options": dict(options)}}
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return McilLearner.from_config(backbone or cls.backbone(), list(CLASS_NAMES), "synav", cfg)

    @staticmethod
    def batch(
        labels: Sequence[int],
        seed: int = 0,
        has_image: Sequence[bool] | None = None,
        has_audio: Sequence[bool] | None = None,
    ) -> Batch:
        """Random images (B, 3, 16, 16) and waveforms (B, 4000); absent modalities zeroed as the trainer does."""
        g = torch.Generator().manual_seed(seed)
        n = len(labels)
        hi = torch.tensor(has_image if has_image is not None else [True] * n)
        ha = torch.tensor(has_audio if has_audio is not None else [True] * n)
        image = torch.randn(n, 3, 16, 16, generator=g) * hi.view(-1, 1, 1, 1)
        audio = (torch.rand(n, 4000, generator=g) * 2 - 1) * 0.5 * ha.view(-1, 1)
        return Batch(
            labels=torch.tensor(list(labels)), has_image=hi, has_audio=ha, index=torch.arange(n), image=image, audio=audio
        )


def _as_dict(cfg: RunConfig) -> dict[str, Any]:
    from mcil.config import config_to_dict

    return config_to_dict(cfg)


@pytest.fixture
def mk() -> type[Factory]:
    return Factory
