"""Options of `mcil bench --audioclip`'s optimised path on the ResNet towers: channels_last gives
the same numbers; bf16 autocast stays close to fp32 (checked on CPU, where bf16 autocast exists)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mcil.backbones.audioclip import AudioCLIP, tokenize


def test_channels_last_image_tower_equals_contiguous(audioclip_random: AudioCLIP) -> None:
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        plain = audioclip_random.encode_image(image)
        try:
            audioclip_random.to(memory_format=torch.channels_last)
            fast = audioclip_random.encode_image(image.contiguous(memory_format=torch.channels_last))
        finally:
            audioclip_random.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
    assert all(p.is_contiguous() for p in audioclip_random.parameters())


def test_bf16_autocast_forward_tracks_fp32(audioclip_random: AudioCLIP) -> None:
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(8))
    tokens = tokenize(["a dog barking", "rain on a tin roof"])
    with torch.no_grad():
        ref = audioclip_random.encode_image(image), audioclip_random.encode_text(tokens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = audioclip_random.encode_image(image), audioclip_random.encode_text(tokens)
    for a, b in zip(ref, low):
        assert b.dtype == torch.bfloat16
        cos = F.cosine_similarity(a.float(), b.float(), dim=-1)
        assert bool((cos > 0.99).all()), cos
