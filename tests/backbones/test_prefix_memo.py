"""The frozen-prefix memo of the tiny backbone: same features, hooks still run, emptied when weights change."""

from __future__ import annotations

import pytest
import torch

from mcil.backbones.prefix_memo import PrefixMemo
from mcil.backbones.tiny import TinyBackbone

NAMES = ["red striped star, high pulsing whistle", "blue solid circle, very high steady buzz"]


def _frozen(seed: int = 0) -> TinyBackbone:
    return TinyBackbone.random(seed=seed, vocab=NAMES).freeze()


def _inputs(b: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 3, 64, 64, generator=g), torch.rand(b, 16000, generator=g) * 2 - 1


def _plain(model: TinyBackbone, tower: str, x: torch.Tensor) -> torch.Tensor:
    """The tower without the memo: its own forward."""
    if tower == "image":
        return model.image(x)
    if tower == "audio":
        return model.audio(model.logmel(x))
    return model.text(x)


def _encode(model: TinyBackbone, tower: str, x: torch.Tensor) -> torch.Tensor:
    return {"image": model.encode_image, "audio": model.encode_audio, "text": model.encode_text}[tower](x)


@pytest.mark.parametrize("tower", ["image", "audio", "text"])
def test_memo_serves_the_towers_own_features_and_is_used(tower: str) -> None:
    model = _frozen()
    images, audio = _inputs()
    x = {"image": images, "audio": audio, "text": model.tokenize(["a red star.", "a blue circle.", "a red star."])}[
        tower
    ]
    memo = model._prefix_memo[tower]
    with torch.no_grad():
        ref = _plain(model, tower, x)
        first = _encode(model, tower, x)
        # a batch in another order and with a repeat: rows are found by content, not position
        perm = torch.tensor([2, 0, 1, 0])
        second = _encode(model, tower, x[perm])
    torch.testing.assert_close(first, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(second, ref[perm], rtol=1e-5, atol=1e-6)
    assert memo.misses == len({r.numpy().tobytes() for r in x.reshape(len(x), -1)})
    assert memo.hits == len(x) + len(perm) - memo.misses


def test_a_hook_on_block_0_still_sees_the_sample_and_changes_the_output() -> None:
    """Parallel adapters hook block 0: a memo'd call must give what the uncached call gives."""
    model = _frozen()
    images, _ = _inputs()
    shift = torch.linspace(-1.0, 1.0, model.config.width)
    seen: list[torch.Tensor] = []

    def hook(mod: torch.nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
        seen.append(inp[0].detach().clone())
        return out + shift * inp[0][..., :1]  # depends on the block's input

    with torch.no_grad():
        before = model.encode_image(images)  # fills the memo
        handle = model.image.blocks[0].register_forward_hook(hook)
        try:
            cached = model.encode_image(images)
            plain = _plain(model, "image", images)
        finally:
            handle.remove()
    assert len(seen) == 2
    torch.testing.assert_close(seen[0], seen[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cached, plain, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(cached, before, atol=1e-4)


def test_changing_a_prefix_weight_empties_the_memo() -> None:
    model = _frozen()
    images, _ = _inputs()
    with torch.no_grad():
        model.encode_image(images)
        assert len(model._prefix_memo["image"]) == len(images)
        model.image.blocks[0].mlp[0].weight.add_(0.5)
        after = model.encode_image(images)
        ref = _plain(model, "image", images)
    torch.testing.assert_close(after, ref, rtol=1e-5, atol=1e-6)
    assert model._prefix_memo["image"].misses == 2 * len(images)


def test_a_learnable_prefix_is_computed_not_stored() -> None:
    model = TinyBackbone.random(seed=0, vocab=NAMES)  # pre-training: parameters require grad
    images, _ = _inputs()
    out = model.encode_image(images)
    assert len(model._prefix_memo["image"]) == 0
    out.sum().backward()
    assert model.image.blocks[0].attn.qkv.weight.grad is not None  # gradients still reach block 0


def test_prompt_learning_embeddings_bypass_the_memo() -> None:
    model = _frozen()
    tokens = model.tokenize(["a red star.", "a blue circle."])
    emb = model.token_embedding(tokens).clone().requires_grad_(True)
    out = model.encode_text(tokens, emb)
    out.sum().backward()
    assert emb.grad is not None and len(model._prefix_memo["text"]) == 0


def test_rows_beyond_max_bytes_are_computed_every_time() -> None:
    model = _frozen()
    images, _ = _inputs()
    memo = PrefixMemo(max_bytes=1)
    with torch.no_grad():
        params = model.image.prefix_parameters()
        a = memo(images, params, model.image.prefix)
        b = memo(images, params, model.image.prefix)
    assert len(memo) == 0 and memo.misses == 2 * len(images)
    torch.testing.assert_close(a[1], b[1])


def test_max_bytes_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        PrefixMemo(max_bytes=-1)
