"""Trimming text padding: the exact saving behind `mcil bench --audioclip`'s text speed-up.

CLIP pads every prompt to 77 tokens; a prompt is about a dozen. Encoding only the columns some
prompt of the batch uses must give the features of full-context encoding, bare and with MIFE
adapters whose router reads token 0 (the official router input). A router that averages over
every position (``router_input=mean``) does see the padding, so there trimming is *not* exact —
the second test pins that down, and it is why the learner trims only when the rule holds. A
``prompt-mean`` router averages each prompt's own tokens only, so trimming is exact again.
"""

from __future__ import annotations

import pytest
import torch

from mcil.backbones.audioclip import AudioCLIP, tokenize
from mcil.backbones.base import trimmed_length
from mcil.backbones.tiny import TinyBackbone
from mcil.method.mife import MIFE, MifeConfig

PROMPTS = ["a photo of a dog.", "a blurry photo of the large tin roof in the rain.", "itap of a cat"]


def _randomise(mife: MIFE, seed: int = 0) -> None:
    """Non-zero experts and routers, so the adapters (and their routing) reach the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in mife.parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=g))


def test_trimmed_length_is_the_longest_sequence_through_its_last_real_token() -> None:
    tokens = torch.tensor([[5, 3, 9, 0, 0, 0], [5, 0, 2, 9, 0, 0], [0, 0, 0, 0, 0, 0]])
    assert trimmed_length(tokens, pad_id=0) == 4  # interior pad ids (row 1) do not end a sequence
    assert trimmed_length(torch.zeros(2, 5, dtype=torch.long)) == 1
    with pytest.raises(ValueError, match="expects"):
        trimmed_length(torch.zeros(3, dtype=torch.long))


def test_audioclip_trimmed_equals_full_context_bare_and_with_first_token_adapters(audioclip_random: AudioCLIP) -> None:
    model = audioclip_random
    full = tokenize(PROMPTS)
    short = model.trim_tokens(full)
    assert full.shape == (3, 77) and short.shape[1] == int(full.argmax(dim=1).max()) + 1 < 20
    mife = MIFE(model.text_sites(), MifeConfig(router_input="first-token", dropout=0.0))
    mife.begin_task(0)
    _randomise(mife)
    try:
        with torch.no_grad():
            bare = model.encode_text(full), model.encode_text(short)
            with mife.active():
                adapted = model.encode_text(full), model.encode_text(short)
    finally:
        mife.detach()
    torch.testing.assert_close(bare[1], bare[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(adapted[1], adapted[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(adapted[0], bare[0])  # the adapters did act


def test_mean_routing_sees_the_padding_so_trimming_would_change_features() -> None:
    model = TinyBackbone.random(seed=0, vocab=["red star", "blue circle"])
    full = model.tokenize(["a red star.", "a photo of a blue circle."])
    short = model.trim_tokens(full)
    assert short.shape[1] < full.shape[1]
    results = {}
    for mode in ("first-token", "mean", "prompt-mean"):
        mife = MIFE(model.text_sites(), MifeConfig(router_input=mode, dropout=0.0, experts="official", top_k=2))
        mife.begin_task(0)
        _randomise(mife, seed=3)
        try:
            with torch.no_grad(), mife.active():
                with mife.token_mask(model.text_token_mask(full)):
                    f = model.encode_text(full)
                with mife.token_mask(model.text_token_mask(short)):
                    results[mode] = f, model.encode_text(short)
        finally:
            mife.detach()
    torch.testing.assert_close(results["first-token"][1], results["first-token"][0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(results["mean"][1], results["mean"][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results["prompt-mean"][1], results["prompt-mean"][0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(results["prompt-mean"][0], results["first-token"][0], rtol=1e-5, atol=1e-5)


def test_text_token_mask_and_prompt_mean_routing_need_it() -> None:
    model = TinyBackbone.random(seed=0, vocab=["red star"])
    tokens = torch.tensor([[7, 3, model.text_pad_id, 9, model.text_pad_id], [7, 9] + [model.text_pad_id] * 3])
    mask = model.text_token_mask(tokens)
    assert mask.tolist() == [[True, True, True, True, False], [True, True, False, False, False]]  # interior pads stay
    mife = MIFE(model.text_sites(), MifeConfig(router_input="prompt-mean", dropout=0.0))
    mife.begin_task(0)
    try:
        with mife.active(), pytest.raises(ValueError, match="prompt-mean' needs the prompts' token mask"):
            model.encode_text(model.tokenize(["a red star."]))
    finally:
        mife.detach()


def test_tiny_trimmed_equals_full_context_with_gradients() -> None:
    model = TinyBackbone.random(seed=1, vocab=["red star"])
    full = model.tokenize(["a red star.", "a photo of a red star."])
    short = model.trim_tokens(full)
    mife = MIFE(model.text_sites(), MifeConfig(router_input="first-token", dropout=0.0))
    mife.begin_task(0)
    _randomise(mife, seed=2)
    grads = []
    try:
        for tokens in (full, short):
            mife.zero_grad()
            with mife.active():
                model.encode_text(tokens).square().sum().backward()
            grads.append([p.grad.clone() for p in mife.parameters() if p.grad is not None])
    finally:
        mife.detach()
    assert grads[0] and len(grads[0]) == len(grads[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
