"""Frozen-tower feature cache: computed once, reused, and equal to running the tower every step."""

from __future__ import annotations

import torch

from mcil.backbones.base import build_backbone
from mcil.config import load_config
from mcil.data.cache import load_split
from mcil.features import frozen_embeddings
from mcil.train import train


def test_cached_embeddings_equal_direct_encoding_and_are_reused(tiny_env, tmp_path, monkeypatch):
    backbone = build_backbone("tiny", tiny_env.checkpoint)
    split = load_split(tiny_env.data_root, "test", backbone.preprocess, tiny_env.cache_dir)
    cache = tmp_path / "feat"
    first = frozen_embeddings(backbone, split, "audio", torch.device("cpu"), cache)
    files = list((cache / "features").glob("*.pt"))
    assert len(files) == 1 and backbone.checkpoint_sha256[:16] in files[0].name
    direct = torch.stack([backbone.encode_audio(split.audio[i : i + 1].float())[0] for i in range(len(split.labels))])
    torch.testing.assert_close(first, direct, rtol=1e-5, atol=1e-5)

    def boom(*a, **k):  # the second call must read the file, not run the tower
        raise AssertionError("frozen tower re-run although its features are cached")

    monkeypatch.setattr("mcil.features.encode_split", boom)
    again = frozen_embeddings(backbone, split, "audio", torch.device("cpu"), cache)
    assert torch.equal(first, again)


def test_cached_feature_run_equals_uncached_run(tiny_env, tmp_path):
    args = tiny_env.overrides(**{"method.name": "mcil", "fusion.gate": "always", "optim.epochs": 1})
    cached = train(load_config(None, args + ["data.feature_cache=true"]), tmp_path / "cached")
    raw = train(load_config(None, args + ["data.feature_cache=false"]), tmp_path / "raw")
    assert cached["accuracy_matrix"] == raw["accuracy_matrix"]
    assert cached["acc_per_step_by_modality"] == raw["acc_per_step_by_modality"]
    for key in ("aia", "last", "forgetting"):
        assert cached["metrics"][key] == raw["metrics"][key]
