"""AudioCLIP rebuild: state_dict layout, strict loading, the three towers, FBSP front end, tokenizer.

The full model is built once per session (``audioclip_random`` in conftest.py, seeded random
weights). Inputs are tiny (B ≤ 2, audio of 1–2 frames) so the file stays well under a minute on
a loaded 2-core machine. The strict-loading error tests use stand-in checkpoints built from the
reference key table (zero-stride tensors, a few hundred KB each).

The reference embeddings below freeze *this rebuild's* behaviour on seeded random weights; they
say nothing about agreement with upstream AudioCLIP. That is checked with the real checkpoint
on a GPU (docs/audioclip.md, "Verification plan").
"""

from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mcil.backbones.audioclip import (
    AUDIOCLIP_PREPROCESS,
    AudioCLIP,
    TextTooLongError,
    load_audioclip,
    tokenize,
)
from mcil.backbones.audioclip import load as load_module
from mcil.backbones.audioclip.audio import (
    HOP_LENGTH,
    WIN_LENGTH,
    ESResNeXtFBSP,
    LinearFBSP,
    blackmanharris_window,
    frame_signal,
    num_frames,
)
from mcil.backbones.audioclip.image import AttentionPool2d
from mcil.backbones.audioclip.tokenizer import EOT_TOKEN, SOT_TOKEN
from mcil.backbones.base import BackboneError, file_sha256
from mcil.backbones.registry import build_backbone

# -- fixed inputs and the outputs of the shared model on them ------------------------------------
TEXTS = ["a dog barking", "rain falling on a tin roof"]


def _fixed_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(123)
    image = torch.randn(1, 3, 224, 224, generator=g)
    wave = torch.randn(1, 2000, generator=g) * 3000.0  # int16 units, 2 frames
    return image, wave, tokenize(TEXTS)


@pytest.fixture(scope="module")
def outputs(audioclip_random: AudioCLIP) -> dict[str, object]:
    """Embeddings of the fixed inputs, plus the output shapes seen at every adapter site."""
    model = audioclip_random
    image, wave, tokens = _fixed_inputs()
    site_shapes: dict[str, tuple[int, ...]] = {}
    site_inputs: dict[str, tuple[int, ...]] = {}

    def record(_m, inp, out, name):
        site_shapes[name] = tuple(out.shape)
        site_inputs[name] = tuple(inp[0].shape)

    sites = model.image_sites() + model.text_sites()
    handles = [
        s.module.register_forward_hook(lambda m, i, o, name=s.name: record(m, i, o, name)) for s in sites
    ]
    try:
        with torch.no_grad():
            result = {
                "image": model.encode_image(image),
                "audio": model.encode_audio(wave),
                "text": model.encode_text(tokens),
            }
    finally:
        for h in handles:
            h.remove()
    result["site_shapes"] = site_shapes
    result["site_inputs"] = site_inputs
    return result


# -- state_dict layout ---------------------------------------------------------------------------------
def test_state_dict_matches_reference_table_exactly(audioclip_random: AudioCLIP, audioclip_key_table) -> None:
    table = audioclip_key_table
    ours = [(k, tuple(v.shape), v.dtype) for k, v in audioclip_random.state_dict().items()]
    assert len(table) == 861
    assert ours == table  # keys, order, shapes and dtypes


def test_state_dict_element_counts(audioclip_random: AudioCLIP) -> None:
    sd = audioclip_random.state_dict()
    assert sum(v.numel() for v in sd.values() if v.is_floating_point()) == 134_246_812
    assert sum(1 for k in sd if k.endswith("num_batches_tracked")) == 113
    per_prefix: dict[str, int] = {}
    for k, v in sd.items():
        per_prefix[k.split(".")[0]] = per_prefix.get(k.split(".")[0], 0) + v.numel()
    assert per_prefix["visual"] == 38_370_199
    assert per_prefix["audio"] == 32_186_483
    assert per_prefix["transformer"] == 37_828_608


def test_special_tensors(audioclip_random: AudioCLIP) -> None:
    sd = audioclip_random.state_dict()
    assert sd["audio.fbsp.bias"].shape == (0,)
    # no non-persistent buffers hide in the model either (the causal mask is built per call)
    assert {n for n, _ in audioclip_random.named_buffers()} <= set(sd)
    # every tensor initialised (the constructor fills with NaN before reset_parameters())
    assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())
    assert all(int(v) == 0 for k, v in sd.items() if k.endswith("num_batches_tracked"))


def test_window_is_the_periodic_blackmanharris(audioclip_random: AudioCLIP) -> None:
    """scipy's get_window('blackmanharris', 1654, fftbins=True), written as scipy defines it: the
    symmetric general-cosine window of N + 1 points on linspace(−π, π), last point dropped.
    (Bit-equality with scipy itself was checked when this was written; importing scipy.signal
    takes seconds, so the test does not.)"""
    a = (0.35875, 0.48829, 0.14128, 0.01168)
    fac = torch.linspace(-math.pi, math.pi, WIN_LENGTH + 1, dtype=torch.float64)
    expected = sum(a_k * torch.cos(k * fac) for k, a_k in enumerate(a))[:-1].float()
    torch.testing.assert_close(blackmanharris_window(WIN_LENGTH), expected, rtol=0, atol=1e-7)
    assert torch.equal(audioclip_random.audio.window, blackmanharris_window(WIN_LENGTH))
    w = expected
    assert w[1] == pytest.approx(float(w[-1]))  # periodic: w[n] = w[N − n]
    assert float(w[0]) != pytest.approx(float(w[-1]))  # (a symmetric window would have w[0] = w[N−1])
    assert float(w[WIN_LENGTH // 2]) == pytest.approx(1.0)


def test_backbone_attributes(audioclip_random: AudioCLIP) -> None:
    m = audioclip_random
    assert m.name == "audioclip" and m.embed_dim == 1024
    p = m.preprocess
    assert p == AUDIOCLIP_PREPROCESS
    assert (p.image_size, p.image_resize, p.audio_sample_rate, p.audio_num_samples, p.audio_scale) == (
        224,
        "short-side-bicubic",
        44100,
        220500,
        "int16",
    )
    assert p.image_mean == (0.48145466, 0.4578275, 0.40821073)
    assert p.image_std == (0.26862954, 0.26130258, 0.27577711)
    assert not m.training and not any(t.requires_grad for t in m.parameters())
    m.train()
    assert not m.training  # a frozen backbone stays in eval mode


def test_logit_scales_are_clamped(audioclip_random: AudioCLIP) -> None:
    m = audioclip_random
    assert m.logit_scale_value() == pytest.approx(1 / 0.07, rel=1e-5)
    expected = {"image_text": 1 / 0.07, "audio_image": 100.0, "audio_text": 100.0}
    assert m.logit_scales() == pytest.approx(expected, rel=1e-5)
    saved = m.logit_scale.detach().clone()
    try:
        with torch.no_grad():
            m.logit_scale.fill_(math.log(500.0))
            assert m.logit_scale_value() == 100.0
            m.logit_scale.fill_(-3.0)
            assert m.logit_scale_value() == 1.0
    finally:
        with torch.no_grad():
            m.logit_scale.copy_(saved)


# -- towers: shapes, sites, frozen reference values -------------------------------------------------
# Seeded random weights (conftest.audioclip_random) on _fixed_inputs(); first 5 values and L2 norm.
# These freeze OUR implementation (catching unintended changes), not agreement with AudioCLIP.
REFERENCE = {
    "image": ([0.125645, 0.190757, -0.606679, 0.0383708, -0.165513], 10.508924),
    "audio": ([0.0260074, 0.111946, 0.0558961, -0.0562255, 0.00675402], 1.7295152),
    "text": ([0.44736, 1.57961, -0.0718613, 0.242708, 0.456549], 31.689425),
}


@pytest.mark.parametrize("tower", ["image", "audio", "text"])
def test_reference_embeddings(outputs: dict[str, torch.Tensor], tower: str) -> None:
    first5, norm = REFERENCE[tower]
    out = outputs[tower][0]
    torch.testing.assert_close(out[:5], torch.tensor(first5), rtol=1e-4, atol=1e-4)
    assert float(out.norm()) == pytest.approx(norm, rel=1e-4)


def test_output_shapes(outputs: dict[str, torch.Tensor]) -> None:
    assert outputs["image"].shape == (1, 1024)
    assert outputs["audio"].shape == (1, 1024)
    assert outputs["text"].shape == (2, 1024)
    assert all(torch.isfinite(outputs[k]).all() for k in ("image", "audio", "text"))


def test_image_sites_are_the_12_shape_preserving_bottlenecks(audioclip_random: AudioCLIP, outputs: dict[str, object]) -> None:
    sites = audioclip_random.image_sites()
    assert [s.name for s in sites][:3] == ["visual.layer1.1", "visual.layer1.2", "visual.layer2.1"]
    assert not any(s.name.endswith(".0") for s in sites)  # stage entries change shape: no parallel adapter
    assert len(sites) == 12 and {s.layout for s in sites} == {"BCHW"}
    assert [s.width for s in sites] == [256] * 2 + [512] * 3 + [1024] * 5 + [2048] * 2
    sides = [56] * 2 + [28] * 3 + [14] * 5 + [7] * 2
    for site, side in zip(sites, sides):
        assert outputs["site_shapes"][site.name] == (1, site.width, side, side)
        assert outputs["site_inputs"][site.name] == outputs["site_shapes"][site.name]  # output + A(input) is valid


def test_text_sites_are_the_12_blocks_in_lbd_layout(audioclip_random: AudioCLIP, outputs: dict[str, object]) -> None:
    sites = audioclip_random.text_sites()
    assert [s.name for s in sites] == [f"transformer.resblocks.{i}" for i in range(12)]
    for s in sites:
        assert (s.layout, s.width) == ("LBD", 512)
        assert outputs["site_shapes"][s.name] == (77, 2, 512)  # (L, B, D)


def test_input_validation(audioclip_random: AudioCLIP) -> None:
    m = audioclip_random
    with pytest.raises(ValueError, match="224"):
        m.encode_image(torch.zeros(1, 3, 112, 112))
    with pytest.raises(ValueError, match="int16 units"):
        m.encode_audio(torch.zeros(1, 2, 3, 100))
    with pytest.raises(ValueError, match="token ids"):
        m.encode_text(torch.zeros(1, 78, dtype=torch.long))


def test_attention_pool_equals_clip_full_attention_formulation() -> None:
    """Computing only the mean token's query equals CLIP's full MHA over all tokens, row 0."""
    torch.manual_seed(0)
    pool = AttentionPool2d(spatial_dim=3, embed_dim=64, num_heads=4, output_dim=32).eval()
    x = torch.randn(2, 64, 3, 3)
    tokens = x.flatten(2).permute(2, 0, 1)  # (HW, B, C)
    tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens]) + pool.positional_embedding[:, None]
    full, _ = F.multi_head_attention_forward(
        tokens, tokens, tokens, 64, 4,
        in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True,
        q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight, v_proj_weight=pool.v_proj.weight,
        need_weights=False,
    )  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(pool(x), full[0], rtol=1e-5, atol=1e-6)


# -- text -------------------------------------------------------------------------------------------
def test_tokenize_layout() -> None:
    tok = tokenize(TEXTS)
    assert tok.shape == (2, 77) and tok.dtype == torch.int64
    assert tok[0, :5].tolist() == [SOT_TOKEN, 320, 1929, 32676, EOT_TOKEN]  # "a dog barking"
    assert (SOT_TOKEN, EOT_TOKEN) == (49406, 49407)
    assert tok[:, 0].tolist() == [SOT_TOKEN, SOT_TOKEN]
    eot = tok.argmax(dim=-1)
    assert (tok[torch.arange(2), eot] == EOT_TOKEN).all()
    for row, e in zip(tok, eot.tolist()):
        assert (row[e + 1 :] == 0).all()
    assert tokenize("A  Dog BARKING").equal(tokenize("a dog barking"))  # cleaned and lower-cased


def test_tokenize_rejects_long_text_without_truncating() -> None:
    fits = " ".join(["dog"] * 75)  # 75 + SOT + EOT = 77
    assert tokenize([fits])[0, -1] == EOT_TOKEN
    too_long = " ".join(["dog"] * 76)
    with pytest.raises(TextTooLongError, match=r"text 1 \('dog dog.*78 tokens.*77"):
        tokenize(["fine", too_long])


def test_text_causal_mask_makes_padding_irrelevant(
    audioclip_random: AudioCLIP, outputs: dict[str, torch.Tensor]
) -> None:
    tokens = tokenize(TEXTS)
    with torch.no_grad():
        short = audioclip_random.encode_text(tokens[:, :8])  # both EOTs lie within the first 8 tokens
        garbage = tokens[:, :8].clone()
        garbage[0, 5:] = 7  # tokens after the EOT of text 0 (ids < EOT, so the EOT position is unchanged)
        after_eot = audioclip_random.encode_text(garbage)
        via_embeddings = audioclip_random.encode_text(tokens[:, :8], audioclip_random.token_embedding(tokens[:, :8]))
    torch.testing.assert_close(short, outputs["text"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after_eot, short, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(via_embeddings, short, rtol=0, atol=0)


# -- audio front end ----------------------------------------------------------------------------------
def test_num_frames() -> None:
    assert num_frames(220_500) == 392
    lengths = (1, WIN_LENGTH, WIN_LENGTH + 1, WIN_LENGTH + HOP_LENGTH, WIN_LENGTH + HOP_LENGTH + 1)
    assert [num_frames(n) for n in lengths] == [1, 1, 2, 2, 3]


def test_frame_signal_pads_half_left_rest_right() -> None:
    x = torch.arange(1, 2001, dtype=torch.float32)[None]  # N = 2000 → 2 frames, padded to 2215
    frames = frame_signal(x, torch.ones(WIN_LENGTH), HOP_LENGTH)
    assert frames.shape == (1, 2, WIN_LENGTH)
    assert (frames[0, 0, :107] == 0).all() and frames[0, 0, 107] == 1.0  # 215 zeros: 107 left
    assert frames[0, 1, -109] == 2000.0 and (frames[0, 1, -108:] == 0).all()  # … 108 right
    assert torch.equal(frames[0, 1, :10], frames[0, 0, HOP_LENGTH : HOP_LENGTH + 10])
    windowed = frame_signal(x, torch.full((WIN_LENGTH,), 0.5), HOP_LENGTH)
    assert torch.equal(windowed, frames * 0.5)


def test_input_scaling_maps_int16_range_to_unit_interval() -> None:
    x = torch.tensor([-32768.0, -0.5, 32767.0])
    assert ESResNeXtFBSP.scale_input(x).tolist() == [-1.0, 0.0, 1.0]


def test_five_second_clip_gives_392_frames_of_3x341_bands(audioclip_random: AudioCLIP) -> None:
    wave = torch.randn(2, 220_500, generator=torch.Generator().manual_seed(0)) * 3000.0
    with torch.no_grad():
        db = audioclip_random.audio.log_power_bands(wave)
    assert db.shape == (2, 1, 3, 341, 392)
    assert torch.isfinite(db).all()


def test_bands_are_consecutive_bins_of_the_power_spectrogram(audioclip_random: AudioCLIP) -> None:
    wave = torch.randn(1, 2, WIN_LENGTH, generator=torch.Generator().manual_seed(1)) * 3000.0
    audio = audioclip_random.audio
    with torch.no_grad():
        spec = audio.spectrogram(wave)  # (B·C, 1025, T, 2)
        db = audio.log_power_bands(wave)  # (B, C, 3, 341, T)
    assert spec.shape == (2, 1025, 1, 2) and db.shape == (1, 2, 3, 341, 1)
    power = spec[..., 0] ** 2 + spec[..., 1] ** 2
    expected = 10 * torch.log10(power[:, :1023].reshape(1, 2, 3, 341, 1))
    torch.testing.assert_close(db, expected)


def test_silence_is_floored_at_minus_180_db(audioclip_random: AudioCLIP) -> None:
    silent = torch.full((1, WIN_LENGTH), -0.5)  # maps to exactly 0.0 after int16 scaling
    with torch.no_grad():
        db = audioclip_random.audio.log_power_bands(silent)
    assert torch.equal(db, torch.full_like(db, 10 * math.log10(1e-18)))


def test_fbsp_kernels_match_complex_formula() -> None:
    """Kernels against an independent complex128 evaluation of √fb·sinc(fb·t/(m+ε))^m·e^{−i·fc·t}/√n."""
    fbsp = LinearFBSP(out_features=6, normalized=True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        fbsp.m.copy_(0.5 + 1.5 * torch.rand(6, generator=g))
        fbsp.fb.copy_(0.5 + torch.rand(6, generator=g))
        fbsp.fc.copy_(torch.tensor([0.0, 1.0, 7.0, 100.0, 500.0, 1024.0]))
    n = 256
    t = torch.pi * torch.linspace(-1.0, 1.0, n, dtype=torch.float64)[None] + 1e-8
    m, fb, fc = (p.detach().double()[:, None] for p in (fbsp.m, fbsp.fb, fbsp.fc))
    arg = fb * t / (m + 1e-8)
    sinc = torch.where(arg == 0, torch.ones_like(arg), torch.sin(arg) / arg)
    expected = fb.sqrt() * torch.pow(sinc.to(torch.complex128), m) * torch.exp(-1j * fc * t) / math.sqrt(n)
    w_re, w_im = fbsp.kernels(n, torch.float64, torch.device("cpu"))
    torch.testing.assert_close(torch.complex(w_re, w_im), expected, rtol=1e-9, atol=1e-12)
    frames = torch.randn(3, 4, n, generator=g)
    out = fbsp(frames)
    assert out.shape == (3, 4, 6, 2)
    ref = frames.double().to(torch.complex128) @ expected.T
    # float32 phases fc·t (up to ~3200 rad) carry ~1e-4 absolute error, as upstream's
    torch.testing.assert_close(out[..., 0].double(), ref.real, rtol=0, atol=2e-3)
    torch.testing.assert_close(out[..., 1].double(), ref.imag, rtol=0, atol=2e-3)
    assert ref.abs().amax() > 0.5  # the tolerance is small against the outputs


def test_fbsp_at_init_is_the_plain_dft_on_its_grid() -> None:
    fbsp = LinearFBSP(out_features=4, normalized=False)
    w_re, w_im = fbsp.kernels(16, torch.float64, torch.device("cpu"))
    t = torch.pi * torch.linspace(-1.0, 1.0, 16, dtype=torch.float64) + 1e-8
    k = torch.arange(4, dtype=torch.float64)[:, None]
    torch.testing.assert_close(w_re, torch.cos(k * t))
    torch.testing.assert_close(w_im, -torch.sin(k * t))


def test_audio_channels_are_encoded_separately_and_summed(audioclip_random: AudioCLIP) -> None:
    mono = torch.randn(1, WIN_LENGTH, generator=torch.Generator().manual_seed(2)) * 3000.0
    bias = audioclip_random.audio.fc.bias
    with torch.no_grad():
        one = audioclip_random.encode_audio(mono)
        two = audioclip_random.encode_audio(torch.stack([mono, mono], dim=1))  # (1, 2, N)
    torch.testing.assert_close(two - bias, 2 * (one - bias), rtol=1e-5, atol=1e-5)


# -- strict loading -----------------------------------------------------------------------------------------
def _save(tmp_path: Path, name: str, obj: object) -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_round_trip_through_a_checkpoint_file_gives_identical_outputs(
    audioclip_random: AudioCLIP, outputs: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    path = _save(tmp_path, "roundtrip.pt", audioclip_random.state_dict())
    try:
        loaded = load_audioclip(path)
        assert isinstance(loaded, AudioCLIP) and loaded is not audioclip_random
        assert loaded.checkpoint_sha256 == file_sha256(path) and loaded.checkpoint_variant is None
        assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
        assert all(p.dtype == torch.float32 for p in loaded.parameters())
        image, wave, tokens = _fixed_inputs()
        with torch.no_grad():
            assert torch.equal(loaded.encode_image(image), outputs["image"])
            assert torch.equal(loaded.encode_audio(wave), outputs["audio"])
            assert torch.equal(loaded.encode_text(tokens), outputs["text"])
        del loaded
    finally:
        path.unlink()


def test_reference_table_file_loads_strictly(audioclip_standin, audioclip_key_table, tmp_path: Path, caplog) -> None:
    path = _save(tmp_path, "standin.pt", audioclip_standin)
    with caplog.at_level(logging.WARNING, logger="mcil.backbones.audioclip.load"):
        model = load_audioclip(path)
    assert [(k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items()] == audioclip_key_table
    assert model.checkpoint_sha256 == file_sha256(path)
    assert "not a published AudioCLIP checkpoint" in caplog.text and model.checkpoint_sha256 in caplog.text


def test_published_hash_is_recognised_without_warning(audioclip_standin, tmp_path: Path, caplog, monkeypatch) -> None:
    path = _save(tmp_path, "standin.pt", audioclip_standin)
    monkeypatch.setitem(load_module.PUBLISHED_CHECKPOINTS, file_sha256(path), "Full-Training")
    with caplog.at_level(logging.WARNING, logger="mcil.backbones.audioclip.load"):
        model = load_audioclip(path, allow_unknown_checkpoint=False)
    assert model.checkpoint_variant == "Full-Training"
    assert "not a published" not in caplog.text


def test_unknown_hash_refused_when_not_allowed(audioclip_standin, tmp_path: Path) -> None:
    path = _save(tmp_path, "standin.pt", audioclip_standin)
    with pytest.raises(BackboneError, match="allow_unknown_checkpoint"):
        load_audioclip(path, allow_unknown_checkpoint=False)


def _load_error(tmp_path: Path, state: object) -> str:
    path = _save(tmp_path, "bad.pt", state)
    with pytest.raises(BackboneError) as info:
        load_audioclip(path)
    message = str(info.value)
    assert "backbone.checkpoint" in message and "AudioCLIP-Full-Training.pt" in message
    return message


def test_missing_key_is_reported(audioclip_standin, tmp_path: Path) -> None:
    state = audioclip_standin
    del state["audio.fc.bias"]
    assert "1 missing keys: audio.fc.bias" in _load_error(tmp_path, state)


def test_unexpected_key_is_reported(audioclip_standin, tmp_path: Path) -> None:
    state = audioclip_standin
    state["transformer.attn_mask"] = torch.zeros(77, 77)
    assert "1 unexpected keys: transformer.attn_mask" in _load_error(tmp_path, state)


def test_wrong_shape_is_reported(audioclip_standin, tmp_path: Path) -> None:
    state = audioclip_standin
    state["audio.fc.weight"] = torch.zeros(1024, 2047)
    message = _load_error(tmp_path, state)
    assert "1 shape mismatches: audio.fc.weight (expected (1024, 2048), got (1024, 2047))" in message


def test_wrong_dtype_is_reported(audioclip_standin, tmp_path: Path) -> None:
    state = audioclip_standin
    state["text_projection"] = state["text_projection"].half()
    message = _load_error(tmp_path, state)
    assert "1 dtype mismatches: text_projection (expected torch.float32, got torch.float16)" in message


def test_fbsp_bias_stored_as_none_style_is_missing(audioclip_standin, tmp_path: Path) -> None:
    state = audioclip_standin
    del state["audio.fbsp.bias"]  # what a rebuild with bias=None would save: not on the allow-list
    assert "audio.fbsp.bias" in _load_error(tmp_path, state)


def test_prefixed_keys_get_a_hint(audioclip_standin, tmp_path: Path) -> None:
    state = {f"module.{k}": v for k, v in audioclip_standin.items()}
    assert "extra prefix 'module.'" in _load_error(tmp_path, state)


def test_absent_num_batches_tracked_are_filled_with_zero(audioclip_standin, tmp_path: Path, caplog) -> None:
    state = {k: v for k, v in audioclip_standin.items() if not k.endswith("num_batches_tracked")}
    with caplog.at_level(logging.INFO, logger="mcil.backbones.audioclip.load"):
        model = load_audioclip(state)
    counters = {k: v for k, v in model.state_dict().items() if k.endswith("num_batches_tracked")}
    assert len(counters) == 113 and all(int(v) == 0 and v.dtype == torch.int64 for v in counters.values())
    assert "113 BatchNorm num_batches_tracked counters absent" in caplog.text
    assert model.checkpoint_sha256 is None


class _NotATensor:
    pass


def test_non_tensor_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    with open(path, "wb") as fh:
        pickle.dump({"model": _NotATensor()}, fh, protocol=2)
    expected = r"cannot read .*model\.pkl as a tensor-only checkpoint.*AudioCLIP-Full-Training\.pt.*backbone\.checkpoint"
    with pytest.raises(BackboneError, match=expected):
        load_audioclip(path)


def test_non_dict_and_non_tensor_values_are_refused(audioclip_standin, tmp_path: Path) -> None:
    assert "holds a list, not a state_dict" in _load_error(tmp_path, [torch.zeros(1)])
    state = audioclip_standin
    wrapped = {"epoch": 3, **state}
    assert "1 entries are not tensors (epoch)" in _load_error(tmp_path, wrapped)


def test_garbage_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "AudioCLIP-Full-Training.pt"
    path.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:2441d35b\nsize 537302068\n")
    with pytest.raises(BackboneError, match="cannot read .* as a tensor-only checkpoint"):
        load_audioclip(path)


def test_missing_file_names_path_and_config_key(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "AudioCLIP-Full-Training.pt"
    with pytest.raises(BackboneError, match=r"backbone\.checkpoint: .*nowhere.*does not exist"):
        load_audioclip(missing)
    with pytest.raises(BackboneError, match="is a directory"):
        load_audioclip(tmp_path)


def test_registry_builds_audioclip(audioclip_standin, tmp_path: Path) -> None:
    path = _save(tmp_path, "standin.pt", audioclip_standin)
    model = build_backbone("audioclip", str(path))
    assert isinstance(model, AudioCLIP) and model.checkpoint_sha256 == file_sha256(path)
    with pytest.raises(BackboneError, match=r"backbone\.checkpoint: the audioclip backbone needs a checkpoint"):
        build_backbone("audioclip", None)
    with pytest.raises(BackboneError, match="takes no options"):
        build_backbone("audioclip", str(path), bogus=1)


def test_moe_adapters_attach_to_every_site(audioclip_random: AudioCLIP) -> None:
    """Every image and text site accepts a parallel adapter (output + A(input)) and its output moves."""
    from mcil.method.mife import MIFE, MifeConfig

    model = audioclip_random
    mife = MIFE(model.image_sites() + model.text_sites(), MifeConfig())
    mife.begin_task(0)
    with torch.no_grad():
        for p in mife.parameters():  # up-projections start at zero: make the adapters visible
            p.add_(0.01 * torch.randn_like(p))
    image, _wave, tokens = _fixed_inputs()
    try:
        with torch.no_grad():
            plain = model.encode_image(image), model.encode_text(tokens)
            with mife.active():
                adapted = model.encode_image(image), model.encode_text(tokens)
    finally:
        mife.detach()
    for a, b in zip(plain, adapted):
        assert a.shape == b.shape and torch.isfinite(b).all() and not torch.allclose(a, b)
