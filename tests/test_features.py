"""Frozen-tower feature cache: computed once, reused, and equal to running the tower every step."""

from __future__ import annotations

import torch

from mcil.backbones.registry import build_backbone
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


def test_audioclip_cached_audio_features_equal_recomputed_ones(tmp_path):
    """The paper's frozen audio tower (ESResNeXt-fbsp) served from the feature cache gives the
    embeddings of running it per sample; ``rows`` encodes only the rows asked for."""
    from types import SimpleNamespace

    from mcil.backbones.audioclip import AudioCLIP
    from mcil.data.spec import scale_audio
    from mcil.features import encode_split

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AudioCLIP().freeze()
    g = torch.Generator().manual_seed(5)
    n, length = 4, 4000  # short clips (a few frames): the equality does not depend on the length
    split = SimpleNamespace(
        labels=torch.arange(n), has_audio=torch.ones(n, dtype=torch.bool), has_image=torch.ones(n, dtype=torch.bool),
        audio=(0.3 * torch.randn(n, length, generator=g)).clamp(-1, 1).to(torch.float16), key="fake-audio",
    )
    rows = torch.tensor([0, 2])
    feats = encode_split(model, split, "audio", torch.device("cpu"), batch_size=2, rows=rows)
    with torch.no_grad():
        direct = torch.cat([model.encode_audio(scale_audio(split.audio[i : i + 1], model.preprocess)) for i in (0, 2)])
    torch.testing.assert_close(feats[rows], direct, rtol=1e-5, atol=1e-5)
    assert torch.equal(feats[torch.tensor([1, 3])], torch.zeros(2, model.embed_dim))  # not asked for: not encoded

    object.__setattr__(model, "checkpoint_sha256", "ab" * 32)  # as if loaded from a file: cached on disk
    first = frozen_embeddings(model, split, "audio", torch.device("cpu"), tmp_path, batch_size=2)
    again = frozen_embeddings(model, split, "audio", torch.device("cpu"), tmp_path, batch_size=2)
    assert torch.equal(first, again) and len(list((tmp_path / "features").glob("*.pt"))) == 1
    torch.testing.assert_close(first[rows], direct, rtol=1e-5, atol=1e-5)
