"""The tiny tri-modal backbone: encoders, tokenizer, adapter sites, freezing, checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mcil.backbones.base import BackboneError, file_sha256
from mcil.backbones.registry import build_backbone
from mcil.backbones.tiny import CHECKPOINT_FORMAT, TinyBackbone, load_tiny, save_tiny
from mcil.backbones.tiny_towers import TinyConfig
from mcil.backbones.tiny_vocab import SPECIAL_TOKENS, build_vocab, synav_templates

NAMES = ["red striped star, high pulsing whistle", "blue solid circle, very high steady buzz"]


@pytest.fixture(scope="module")
def model() -> TinyBackbone:
    return TinyBackbone.random(seed=0, vocab=NAMES)


def _inputs(b: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, 64, 64, generator=g)
    audio = torch.rand(b, 16000, generator=g) * 2 - 1
    return images, audio


def test_encoders_map_each_modality_to_the_shared_space(model: TinyBackbone) -> None:
    images, audio = _inputs(3)
    tokens = model.tokenize(["a " + NAMES[0] + ".", "a photo of a " + NAMES[1] + ".", "a red star."])
    assert tokens.shape == (3, 24) and tokens.dtype == torch.int64
    with torch.no_grad():
        zi, za, zt = model.encode_image(images), model.encode_audio(audio), model.encode_text(tokens)
    for z in (zi, za, zt):
        assert z.shape == (3, model.embed_dim) and torch.isfinite(z).all()
    # different inputs give different embeddings (nothing collapsed to a constant)
    assert not torch.allclose(zi[0], zi[1]) and not torch.allclose(za[0], za[1]) and not torch.allclose(zt[0], zt[2])
    with pytest.raises(ValueError, match="expects"):
        model.encode_image(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="expects"):
        model.encode_audio(torch.zeros(1, 8000))


def test_parameter_count_is_a_few_million_at_most(model: TinyBackbone) -> None:
    n = model.num_parameters()
    assert 500_000 < n < 3_000_000
    assert model.embed_dim == 128 and model.name == "tiny"


def test_preprocess_spec_is_the_tiny_contract(model: TinyBackbone) -> None:
    spec = model.preprocess
    assert (spec.image_size, spec.image_resize, spec.audio_sample_rate, spec.audio_num_samples, spec.audio_scale) == (
        64,
        "exact-bilinear",
        16000,
        16000,
        "unit",
    )
    assert spec.image_mean == (0.5, 0.5, 0.5) and spec.image_std == (0.5, 0.5, 0.5)


def test_text_embedding_ignores_padding(model: TinyBackbone) -> None:
    tokens = model.tokenize(["a red striped star."])
    with torch.no_grad():
        full = model.encode_text(tokens)
        short = model.encode_text(tokens[:, :8])  # same text, fewer pad tokens
    torch.testing.assert_close(full, short, rtol=1e-5, atol=1e-5)


def test_encode_text_accepts_replacement_token_embeddings(model: TinyBackbone) -> None:
    tokens = model.tokenize(["a red star.", "a blue circle."])
    emb = model.token_embedding(tokens)
    assert emb.shape == (2, 24, model.config.width)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens, emb), model.encode_text(tokens))
        changed = emb.clone()
        changed[:, 1] += 1.0  # a learnable context vector at position 1 changes the output
        assert not torch.allclose(model.encode_text(tokens, changed), model.encode_text(tokens))


# -- tokenizer --------------------------------------------------------------------------------------
def test_tokenizer_lowercases_and_splits_on_non_letters(model: TinyBackbone) -> None:
    ids = model.tokenize(["A Red-STAR, high!"])[0].tolist()
    index = model.tokenizer.index
    expected = [index["<sot>"], index["a"], index["red"], index["star"], index["high"], index["<eot>"]]
    assert ids[:6] == expected
    assert ids[6:] == [index["<pad>"]] * (24 - 6)


def test_tokenizer_maps_unknown_words_to_unk(model: TinyBackbone) -> None:
    ids = model.tokenize(["a zebra"])[0].tolist()
    assert ids[2] == model.tokenizer.unk_id
    assert model.tokenizer.unk_id not in model.tokenize([f"a photo of a {n}." for n in NAMES]).flatten().tolist()


def test_tokenizer_rejects_texts_longer_than_the_context(model: TinyBackbone) -> None:
    model.tokenize([" ".join(["red"] * 22)])  # 22 words + sot + eot = 24 fits
    with pytest.raises(BackboneError, match=r"23 words.*context_length=24"):
        model.tokenize([" ".join(["red"] * 23)])


def test_vocab_holds_specials_template_words_and_class_words() -> None:
    vocab = build_vocab(NAMES)
    assert vocab[:4] == SPECIAL_TOKENS
    assert len(set(vocab)) == len(vocab)
    for w in ("photo", "recording", "blurry", "very", "pulsing", "whistle", "circle"):
        assert w in vocab
    tpl = synav_templates()
    assert set(vocab) >= {w for t in tpl["train"] for w in t.replace("{}", "").replace(".", " ").split()}


# -- freezing and adapter sites ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, model: TinyBackbone) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_tiny(model, path, {"seed": 0, "note": "random"})
    return path


def test_build_backbone_returns_a_frozen_model_in_eval_mode(checkpoint: Path) -> None:
    bb = build_backbone("tiny", checkpoint)
    assert isinstance(bb, TinyBackbone)
    assert not any(p.requires_grad for p in bb.parameters())
    bb.train()
    assert not bb.training and not any(m.training for m in bb.modules())
    assert bb.checkpoint_sha256 == file_sha256(checkpoint)


def test_adapter_sites_are_the_transformer_blocks_and_hooks_change_outputs(model: TinyBackbone) -> None:
    images, _ = _inputs(2)
    tokens = model.tokenize(["a red star.", "a blue circle."])
    for sites, run, tower in (
        (model.image_sites(), lambda: model.encode_image(images), model.image),
        (model.text_sites(), lambda: model.encode_text(tokens), model.text),
    ):
        assert len(sites) == model.config.depth
        assert [s.module for s in sites] == list(tower.blocks)
        assert all(s.layout == "BLD" and s.width == model.config.width for s in sites)
        assert len({s.name for s in sites}) == len(sites)
        with torch.no_grad():
            before = run()
            seen: dict[str, tuple[int, ...]] = {}
            # a constant vector (not a scalar: a scalar shift is removed by the next LayerNorm)
            shift = torch.linspace(-1.0, 1.0, model.config.width)

            def hook(mod: torch.nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
                seen["in"], seen["out"] = tuple(inp[0].shape), tuple(out.shape)
                return out + shift

            handle = sites[1].module.register_forward_hook(hook)
            try:
                after = run()
            finally:
                handle.remove()
            again = run()
        assert seen["in"] == seen["out"] and seen["in"][0] == 2 and seen["in"][2] == model.config.width
        assert not torch.allclose(before, after, atol=1e-4)
        torch.testing.assert_close(before, again)


# -- temperature and construction --------------------------------------------------------------------
def test_logit_scale_starts_at_one_over_0_07_and_is_clamped_at_100() -> None:
    m = TinyBackbone.random(seed=1)
    assert math.isclose(m.logit_scale_value(), 1 / 0.07, rel_tol=1e-5)
    with torch.no_grad():
        m.logit_scale.fill_(10.0)
    assert m.logit_scale_value() == 100.0


def test_random_is_seeded_and_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a, b, c = TinyBackbone.random(seed=3), TinyBackbone.random(seed=3), TinyBackbone.random(seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.image.pos, b.image.pos) and not torch.equal(a.image.pos, c.image.pos)


def test_config_rejects_inconsistent_sizes() -> None:
    with pytest.raises(BackboneError, match="image_patch"):
        TinyConfig(image_patch=7)
    with pytest.raises(BackboneError, match="heads"):
        TinyConfig(width=130, heads=4)


# -- checkpoints -------------------------------------------------------------------------------------
def test_checkpoint_round_trip_gives_identical_outputs(model: TinyBackbone, checkpoint: Path) -> None:
    state = torch.random.get_rng_state()
    loaded = load_tiny(checkpoint)
    assert torch.equal(torch.random.get_rng_state(), state)  # loading does not shift callers' random streams
    assert loaded.config == model.config and loaded.vocab == model.vocab
    assert loaded.pretrain_info["note"] == "random" and len(loaded.pretrain_info["state_sha256"]) == 64
    images, audio = _inputs(2, seed=5)
    tokens = model.tokenize(["a red star.", "a loud buzz."])
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), loaded.encode_image(images))
        assert torch.equal(model.encode_audio(audio), loaded.encode_audio(audio))
        assert torch.equal(model.encode_text(tokens), loaded.encode_text(tokens))
    assert loaded.logit_scale_value() == model.logit_scale_value()
    raw = torch.load(checkpoint, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and isinstance(raw["config"], dict) and raw["vocab"] == list(model.vocab)
    assert not list(checkpoint.parent.glob("*.tmp"))


def test_missing_checkpoint_names_the_path_and_the_pretrain_command(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "tiny.pt"
    with pytest.raises(BackboneError, match="mcil pretrain --data data/synav-clean") as err:
        build_backbone("tiny", path)
    assert str(path) in str(err.value)
    with pytest.raises(BackboneError, match="needs a checkpoint"):
        build_backbone("tiny", None)


def test_wrong_format_is_reported(tmp_path: Path, checkpoint: Path) -> None:
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else", "state_dict": {}}, other)
    with pytest.raises(BackboneError, match=r"format is 'something-else'.*mcil-tiny-v1"):
        load_tiny(other)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(BackboneError, match="not a readable tiny backbone checkpoint"):
        load_tiny(garbage)
    raw = torch.load(checkpoint, weights_only=True)
    raw["config"]["colour_depth"] = 3
    bad_cfg = tmp_path / "bad_cfg.pt"
    torch.save(raw, bad_cfg)
    with pytest.raises(BackboneError, match="unknown tiny config keys.*colour_depth"):
        load_tiny(bad_cfg)


def test_key_and_shape_mismatches_are_reported(tmp_path: Path, checkpoint: Path) -> None:
    raw = torch.load(checkpoint, weights_only=True)
    missing = dict(raw, state_dict={k: v for k, v in raw["state_dict"].items() if k != "text.proj.weight"})
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(BackboneError, match=r"missing keys \['text.proj.weight'\]"):
        load_tiny(tmp_path / "missing.pt")
    extra = dict(raw, state_dict={**raw["state_dict"], "text.extra": torch.zeros(1)})
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(BackboneError, match=r"unexpected keys \['text.extra'\]"):
        load_tiny(tmp_path / "extra.pt")
    shaped = dict(raw, vocab=raw["vocab"] + ["zebra"])  # token embedding no longer matches the vocab
    torch.save(shaped, tmp_path / "shaped.pt")
    with pytest.raises(BackboneError, match="text.token.weight"):
        load_tiny(tmp_path / "shaped.pt")
