"""Tensor cache: values equal the decoders' output, mmap loading, atomic and concurrent builds."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import time

import pandas as pd
import pytest
import torch

import mcil.data.cache as cache_mod
from mcil.cli import main as cli_main
from mcil.data.cache import build_cache, dataset_key, load_split
from mcil.data.decode import load_audio, load_image
from mcil.errors import DataError


def _cache_files(cache_dir):
    return sorted(p.name for p in cache_dir.iterdir() if not p.name.endswith(".lock"))


def test_round_trip_equals_decoders(make_dataset, spec, tmp_path):
    root = make_dataset(n_classes=2, per_split=3)
    cs = load_split(root, "train", spec, tmp_path / "cache")
    assert len(cs) == 6
    assert cs.images.shape == (6, 3, 8, 8) and cs.images.dtype == torch.uint8
    assert cs.audio.shape == (6, 4000) and cs.audio.dtype == torch.float16
    assert cs.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert cs.has_image.all() and cs.has_audio.all()
    assert cs.sample_ids == [f"train-{c}-{i}" for c in range(2) for i in range(3)]
    assert cs.class_names == ["class 0", "class 1"] and cs.corruption == [""] * 6
    for i, sid in enumerate(cs.sample_ids):
        assert torch.equal(cs.images[i], load_image(root / f"image/{sid}.png", spec))
        assert torch.equal(cs.audio[i], load_audio(root / f"audio/{sid}.wav", spec).half())
    assert cs.meta["source_sample_rates"] == {"16000": 6} and cs.meta["resampled"] == {}
    assert len(cs.key) == 16 and cs.key in os.path.basename(cs.meta["path"])
    assert os.path.basename(cs.meta["path"]).startswith("toy-train-")


def test_loaded_tensors_are_memory_mapped(make_dataset, spec, tmp_path):
    root = make_dataset()
    cs = load_split(root, "test", spec, tmp_path / "cache")
    with open("/proc/self/maps") as fh:
        maps = fh.read()
    assert cs.meta["path"] in maps


def test_second_load_reuses_file_without_media(make_dataset, spec, tmp_path):
    root = make_dataset()
    cache = tmp_path / "cache"
    first = load_split(root, "train", spec, cache)
    mtime = os.path.getmtime(first.meta["path"])
    for p in (root / "image").iterdir():
        p.unlink()
    again = load_split(root, "train", spec, cache)
    assert again.meta["path"] == first.meta["path"] and os.path.getmtime(again.meta["path"]) == mtime
    assert torch.equal(again.images, first.images)


def test_key_covers_stored_fields_and_rows_only(make_dataset, spec, tmp_path):
    root = make_dataset()
    cache = tmp_path / "cache"
    a = build_cache(root, "train", spec, cache)
    same = build_cache(root, "train", dataclasses.replace(spec, image_mean=(0.1, 0.2, 0.3), audio_scale="int16"), cache)
    assert same == a  # normalisation and scaling happen per batch: same stored bytes
    other = build_cache(root, "train", dataclasses.replace(spec, image_size=6), cache)
    assert other != a
    df = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    df.loc[0, "corruption"] = "image-blur"
    df.to_csv(root / "manifest.csv", index=False)
    assert build_cache(root, "train", spec, cache) != a
    assert build_cache(root, "test", spec, cache) != a  # test rows unchanged but a different split


def test_resampling_is_recorded(make_dataset, spec, tmp_path):
    root = make_dataset(sr=22050, per_split=2)
    cs = load_split(root, "train", spec, tmp_path / "cache")
    assert cs.meta["source_sample_rates"] == {"22050": 6}
    assert cs.meta["resampled"] == {"22050->16000": 6}
    assert cs.meta["target_sample_rate"] == 16000


def test_absent_modality_is_zeros_and_flagged(make_dataset, spec, tmp_path):
    root = make_dataset(n_classes=2, per_split=2)
    df = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    df.loc[1, "audio_path"] = ""
    df.loc[2, "image_path"] = ""  # row 2 is test-0-0
    df.to_csv(root / "manifest.csv", index=False)
    tr = load_split(root, "train", spec, tmp_path / "cache")
    assert tr.has_audio.tolist() == [True, False, True, True]
    assert not tr.audio[1].any() and tr.audio[0].abs().max() > 0.1
    te = load_split(root, "test", spec, tmp_path / "cache")
    assert te.has_image.tolist() == [False, True, True, True] and not te.images[0].any()


def test_failure_mid_build_leaves_no_file(make_dataset, spec, tmp_path, monkeypatch):
    root = make_dataset(n_classes=1, per_split=70)  # 70 train rows → 2 chunks
    cache = tmp_path / "cache"
    real = cache_mod._decode_chunk
    calls = {"n": 0}

    def flaky(jobs, s):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return real(jobs, s)

    monkeypatch.setattr(cache_mod, "_decode_chunk", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        load_split(root, "train", spec, cache, workers=1)
    assert _cache_files(cache) == []  # no final file, no temp or scratch files
    monkeypatch.setattr(cache_mod, "_decode_chunk", real)
    cs = load_split(root, "train", spec, cache, workers=1)  # lock released, build succeeds
    assert len(cs) == 70 and len(_cache_files(cache)) == 1


def test_leftovers_of_a_killed_build_are_removed(make_dataset, spec, tmp_path):
    root = make_dataset()
    cache = tmp_path / "cache"
    cache.mkdir()
    from mcil.data.manifest import read_manifest

    final = cache_mod.cache_path(cache, read_manifest(root), "train", spec)
    (cache / f".{final.name}.tmp-99999").write_bytes(b"half a file")
    build_cache(root, "train", spec, cache)
    assert _cache_files(cache) == [final.name]


def _concurrent_worker(root, spec, cache, out):
    cs = load_split(root, "train", spec, cache)
    with open(out, "w") as fh:
        json.dump({"path": cs.meta["path"], "builder": cs.meta["builder_pid"], "n": len(cs),
                   "sum": int(cs.images.sum())}, fh)


def test_two_processes_build_once(make_dataset, spec, tmp_path, monkeypatch):
    root = make_dataset(n_classes=2, per_split=4)
    cache = tmp_path / "cache"
    log_file = tmp_path / "decoded.log"
    real = cache_mod._decode_chunk

    def slow(jobs, s):
        with open(log_file, "a") as fh:
            fh.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # keep the lock long enough for the other process to queue up
        return real(jobs, s)

    monkeypatch.setattr(cache_mod, "_decode_chunk", slow)
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=_concurrent_worker, args=(root, spec, cache, tmp_path / f"r{i}.json")) for i in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    results = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(2)]
    assert results[0] == results[1] and results[0]["n"] == 8
    assert len(set(log_file.read_text().split())) == 1  # exactly one process decoded
    assert len(_cache_files(cache)) == 1


def test_pool_matches_loop(make_dataset, spec, tmp_path):
    root = make_dataset(n_classes=1, per_split=70)
    a = load_split(root, "train", spec, tmp_path / "c1", workers=1)
    b = load_split(root, "train", spec, tmp_path / "c2", workers=2)
    assert torch.equal(a.images, b.images) and torch.equal(a.audio, b.audio)


def test_corrupt_wav_names_sample(make_dataset, spec, tmp_path):
    root = make_dataset()
    (root / "audio" / "train-1-0.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    with pytest.raises(DataError, match=r"sample 'train-1-0' \(.*train-1-0.wav\): cannot decode audio"):
        load_split(root, "train", spec, tmp_path / "cache")
    assert _cache_files(tmp_path / "cache") == []


def test_tampered_cache_tells_user_to_delete(make_dataset, spec, tmp_path):
    root = make_dataset()
    cs = load_split(root, "train", spec, tmp_path / "cache")
    path = cs.meta["path"]
    del cs
    with open(path + ".new", "wb") as fh:
        fh.write(b"not a torch file")
    os.replace(path + ".new", path)  # new inode: never truncate a file that may still be mapped
    with pytest.raises(DataError, match=r"cannot be read.*delete .*\.pt"):
        load_split(root, "train", spec, tmp_path / "cache")


def test_wrong_shape_in_cache_is_detected(make_dataset, spec, tmp_path):
    root = make_dataset()
    cs = load_split(root, "train", spec, tmp_path / "cache")
    path = cs.meta["path"]
    data = torch.load(path, weights_only=True)
    data["audio"] = data["audio"][:, :10].clone()
    torch.save(data, path + ".new")
    os.replace(path + ".new", path)
    with pytest.raises(DataError, match=r"audio is \(\(6, 10\).*expected \(6, 4000\).*delete"):
        load_split(root, "train", spec, tmp_path / "cache")


def test_missing_split_lists_available(make_dataset, spec, tmp_path):
    root = make_dataset()
    with pytest.raises(DataError, match="no 'pretrain' rows; available splits: train, test"):
        load_split(root, "pretrain", spec, tmp_path / "cache")


def test_dataset_key_tracks_manifest(make_dataset):
    root = make_dataset()
    k = dataset_key(root)
    assert k == dataset_key(root) and len(k) == 16
    (root / "manifest.csv").write_text((root / "manifest.csv").read_text().replace("train-0-0,", "train-0-x,"))
    assert dataset_key(root) != k


def test_cli_builds_every_split_and_reports(make_dataset, spec, tmp_path):
    root = make_dataset(n_pretrain=1)
    report = tmp_path / "report.json"
    rc = cli_main(["cache", "--data", str(root), "--cache-dir", str(tmp_path / "cache"), "--image-size", "8",
                   "--image-resize", "exact-bilinear", "--sample-rate", "16000", "--num-samples", "4000",
                   "--report", str(report)])
    assert rc == 0
    rep = json.loads(report.read_text())
    assert sorted(rep["splits"]) == ["pretrain", "test", "train"]
    assert rep["splits"]["pretrain"]["n"] == 2
    # the same spec as JSON finds the same files
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(dataclasses.asdict(spec)))
    rc = cli_main(["cache", "--data", str(root), "--cache-dir", str(tmp_path / "cache"), "--spec-json",
                   str(spec_file), "--splits", "train", "--report", str(tmp_path / "r2.json")])
    assert rc == 0
    assert json.loads((tmp_path / "r2.json").read_text())["splits"]["train"] == rep["splits"]["train"]


def test_cli_missing_spec_field_is_user_error(make_dataset, tmp_path, caplog):
    root = make_dataset()
    rc = cli_main(["cache", "--data", str(root), "--cache-dir", str(tmp_path / "c"), "--image-size", "8"])
    assert rc == 2
    assert "missing --image-resize, --sample-rate, --num-samples" in caplog.text
