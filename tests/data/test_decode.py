"""Image and audio decoding against hand-computed references."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from mcil.data.decode import fit_length, load_audio, load_image, resize_image
from mcil.errors import DataError


def test_exact_bilinear_matches_pil(tmp_path, spec, media):
    path = media.image(tmp_path / "a.png", width=30, height=10)
    out = load_image(path, spec)
    assert out.dtype == torch.uint8 and out.shape == (3, 8, 8)
    ref = np.array(Image.open(path).convert("RGB").resize((8, 8), Image.Resampling.BILINEAR))
    assert torch.equal(out, torch.from_numpy(ref).permute(2, 0, 1))


def test_short_side_bicubic_resizes_then_centre_crops(tmp_path, spec):
    # 40x20 image: left half black, right half white, one red column in the exact middle region.
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, 20:] = 255
    path = tmp_path / "wide.png"
    Image.fromarray(arr).save(path)
    s = dataclasses.replace(spec, image_resize="short-side-bicubic", image_size=10)
    out = load_image(path, s)
    assert out.shape == (3, 10, 10)
    # short side 20 → 10, long side 40 → 20, crop columns 5..15: half black, half white
    ref = np.asarray(Image.fromarray(arr).resize((20, 10), Image.Resampling.BICUBIC))[:, 5:15]
    assert torch.equal(out, torch.from_numpy(np.ascontiguousarray(ref)).permute(2, 0, 1))
    assert out[:, :, 0].max() < 10 and out[:, :, -1].min() > 245


def test_short_side_rounding_follows_torchvision_formula():
    img = Image.new("RGB", (33, 20))
    # long side = int(10 * 33 / 20) = 16; offsets round((16-10)/2) = 3
    assert resize_image(img, 10, "short-side-bicubic").size == (10, 10)
    tall = Image.new("RGB", (20, 47))
    assert resize_image(tall, 10, "short-side-bicubic").size == (10, 10)


def test_grayscale_and_rgba_become_rgb(tmp_path, spec):
    Image.new("L", (9, 9), color=100).save(tmp_path / "g.png")
    Image.new("RGBA", (9, 9), color=(10, 20, 30, 0)).save(tmp_path / "a.png")
    g = load_image(tmp_path / "g.png", spec)
    assert g.shape == (3, 8, 8) and int(g.float().mean()) == 100
    a = load_image(tmp_path / "a.png", spec)
    assert a[:, 0, 0].tolist() == [10, 20, 30]


def test_audio_mono_mix_and_crop(tmp_path, spec, media):
    path = media.wav(tmp_path / "s.wav", sr=16000, seconds=1.0, channels=2, amp=0.8)
    out = load_audio(path, spec)
    assert out.dtype == torch.float32 and out.shape == (4000,)
    data, _ = sf.read(str(path), dtype="float32")
    mono = data.mean(axis=1)
    start = (16000 - 4000) // 2
    np.testing.assert_allclose(out.numpy(), mono[start : start + 4000], atol=1e-6)


def test_audio_pad_is_centred_zeros(tmp_path, spec, media):
    path = media.wav(tmp_path / "short.wav", sr=16000, seconds=0.1)  # 1600 samples
    out = load_audio(path, spec).numpy()
    left = (4000 - 1600) // 2
    assert np.all(out[:left] == 0) and np.all(out[left + 1600 :] == 0)
    assert np.abs(out[left : left + 1600]).max() > 0.4


def test_audio_resampled_to_target_rate(tmp_path, spec, media):
    path = media.wav(tmp_path / "r.wav", sr=22050, seconds=1.0, freq=1000.0)
    s = dataclasses.replace(spec, audio_num_samples=16000)
    out = load_audio(path, s).numpy()
    assert out.shape == (16000,)
    # a 1 kHz tone stays a 1 kHz tone at 16 kHz: spectrum peak at bin 1000 (1 Hz bins)
    spectrum = np.abs(np.fft.rfft(out * np.hanning(16000)))
    assert abs(int(spectrum.argmax()) - 1000) <= 1
    assert np.abs(out).max() <= 1.0


def test_fit_length_exact_is_identity():
    x = np.arange(5, dtype=np.float32)
    assert fit_length(x, 5) is x
    assert fit_length(x, 3).tolist() == [1, 2, 3]


def test_corrupt_and_missing_files_name_sample(tmp_path, spec):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(DataError, match=r"sample 's7' \(.*bad.wav\): cannot decode audio"):
        load_audio(bad, spec, sample_id="s7")
    img = tmp_path / "bad.jpg"
    img.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match=r"sample 's8' \(.*bad.jpg\): cannot decode image"):
        load_image(img, spec, sample_id="s8")
    with pytest.raises(DataError, match="audio file does not exist"):
        load_audio(tmp_path / "nope.wav", spec)
    with pytest.raises(DataError, match="image file does not exist"):
        load_image(tmp_path / "nope.png", spec)


def test_truncated_jpeg_is_a_data_error(tmp_path, spec, media):
    path = media.image(tmp_path / "t.jpg", width=64, height=64)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot decode image"):
        load_image(path, spec, sample_id="t")
