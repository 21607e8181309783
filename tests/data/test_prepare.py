"""Preparers on fake ImageNet / ESC-50 / miniARIC trees: manifests, pairing, layout errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from mcil.cli import main as cli_main
from mcil.data.manifest import read_manifest
from mcil.data.prepare import MINIARIC_CLASSES, imagenet_esc_classes, prepare_imagenet_esc, prepare_miniaric
from mcil.data.scenario import make_scenario
from mcil.errors import DataError

ESC_FOLDS = (1, 2, 3, 4, 5, 5)  # per category: four train-fold clips, two test-fold clips


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Fake ImageNet (27 wnids, 3 train + 2 val JPEGs each) and ESC-50 (6 clips per category)."""
    base = tmp_path_factory.mktemp("raw")
    imagenet, esc = base / "imagenet", base / "esc50"
    for e in imagenet_esc_classes(27):
        for split, n in (("train", 3), ("val", 2)):
            d = imagenet / split / e["wnid"]
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (6, 4), color=(i, 0, 0)).save(d / f"{e['wnid']}_{split}{i}.JPEG", format="JPEG")
    (esc / "audio").mkdir(parents=True)
    (esc / "meta").mkdir()
    meta = []
    for t, e in enumerate(imagenet_esc_classes(27)):
        for k, fold in enumerate(ESC_FOLDS):
            # file names sort by fold first, as in ESC-50 ("<fold>-<src>-<take>-<target>.wav")
            name = f"{fold}-{1000 + 10 * t + k}-A-{t}.wav"
            sf.write(str(esc / "audio" / name), np.zeros(64), 44100)
            meta.append({"filename": name, "fold": fold, "target": t, "category": e["esc50"], "esc10": False,
                         "src_file": 1000 + t, "take": "A"})
    # an unrelated category that must be ignored
    sf.write(str(esc / "audio" / "1-9-A-99.wav"), np.zeros(64), 44100)
    meta.append({"filename": "1-9-A-99.wav", "fold": 1, "target": 99, "category": "laughing", "esc10": False,
                 "src_file": 9, "take": "A"})
    pd.DataFrame(meta).to_csv(esc / "meta" / "esc50.csv", index=False)
    return imagenet, esc


def _esc_meta(esc: Path) -> pd.DataFrame:
    return pd.read_csv(esc / "meta" / "esc50.csv").set_index("filename")


def test_imagenet_esc_19_class_clip(raw, tmp_path):
    imagenet, esc = raw
    out = tmp_path / "in19"
    m = prepare_imagenet_esc(imagenet, esc, 19, out)
    assert m.name == "imagenet-esc-19" and m.templates == "imagenet-esc"
    assert m.class_names[:4] == ["cock", "hen", "chickadee", "tree frog"] and m.class_names[-1] == "washing machine"
    assert [c["wnid"] for c in m.classes] == sorted(c["wnid"] for c in m.classes)
    assert len(m.split("train")) == 19 * 3 and len(m.split("test")) == 19 * 2
    # media are not copied: only the manifest, classes.json and one symlink per source
    assert sorted(os.listdir(out)) == ["classes.json", "manifest.csv", "sources"]
    assert sorted(os.listdir(out / "sources")) == ["esc50", "imagenet"]
    assert (out / "sources" / "imagenet").is_symlink()
    assert os.readlink(out / "sources" / "imagenet") == str(imagenet.resolve())
    assert m.rows["image_path"].str.startswith("sources/imagenet/").all()
    assert m.rows["audio_path"].str.startswith("sources/esc50/audio/").all()
    # test images come from val/
    assert m.split("test")["image_path"].str.contains("/val/").all()
    # one clip per class: the first by file name of the paired category, for train and test alike
    meta = _esc_meta(esc)
    for c in m.classes:
        clips = set(m.rows.loc[m.rows["label"] == c["label"], "audio_path"])
        first = sorted(meta.index[meta["category"] == c["esc50_category"]])[0]
        assert clips == {f"sources/esc50/audio/{first}"} and c["audio_clip"] == first
    cock = m.classes[0]
    assert cock["esc50_category"] == "rooster" and cock["n_train"] == 3 and cock["n_test"] == 2
    # the paper's class order applies to this labelling
    sc = make_scenario(19, n_tasks=3, order="paper", dataset=m.name, class_names=m.class_names)
    assert [m.class_names[c] for c in sc.tasks[0]][:2] == ["chainsaw", "chickadee"]


def test_imagenet_esc_27_per_sample_pairing(raw, tmp_path):
    imagenet, esc = raw
    m = prepare_imagenet_esc(imagenet, esc, 27, tmp_path / "a", pairing="per-sample", seed=1)
    assert m.name == "imagenet-esc-27" and len(m.classes) == 27
    meta = _esc_meta(esc)
    rows = m.rows.assign(clip=m.rows["audio_path"].str.rsplit("/", n=1).str[-1])
    rows["fold"] = rows["clip"].map(meta["fold"])
    rows["category"] = rows["clip"].map(meta["category"])
    assert (rows.loc[rows["split"] == "train", "fold"] <= 4).all()
    assert (rows.loc[rows["split"] == "test", "fold"] == 5).all()
    by_label = {c["label"]: c["esc50_category"] for c in m.classes}
    assert (rows["category"] == rows["label"].map(by_label)).all()
    # 3 train images, 4 candidate clips: all different; 2 test images, 2 candidates: both used
    for _lab, g in rows.groupby("label"):
        assert g.loc[g["split"] == "train", "clip"].nunique() == 3
        assert g.loc[g["split"] == "test", "clip"].nunique() == 2
    again = prepare_imagenet_esc(imagenet, esc, 27, tmp_path / "b", pairing="per-sample", seed=1)
    assert list(again.rows["audio_path"]) == list(m.rows["audio_path"])
    other = prepare_imagenet_esc(imagenet, esc, 27, tmp_path / "c", pairing="per-sample", seed=2)
    assert list(other.rows["audio_path"]) != list(m.rows["audio_path"])
    assert "audio_clip" not in m.classes[0]


def test_images_per_class_subsample(raw, tmp_path):
    imagenet, esc = raw
    m = prepare_imagenet_esc(imagenet, esc, 19, tmp_path / "s", train_per_class=2, test_per_class=1, seed=5)
    assert len(m.split("train")) == 38 and len(m.split("test")) == 19
    assert all(c["n_train"] == 2 and c["n_test"] == 1 for c in m.classes)
    m2 = prepare_imagenet_esc(imagenet, esc, 19, tmp_path / "s2", train_per_class=2, test_per_class=1, seed=5)
    assert list(m2.rows["image_path"]) == list(m.rows["image_path"])


def test_rerun_into_same_folder_and_cli(raw, tmp_path):
    imagenet, esc = raw
    out = tmp_path / "o"
    args = ["prepare", "imagenet-esc", "--imagenet", str(imagenet), "--esc50", str(esc), "--subset", "19",
            "--out", str(out), "--test-per-class", "1"]
    assert cli_main(args) == 0
    assert cli_main(args) == 0  # links refreshed in place
    assert len(read_manifest(out).split("test")) == 19


def test_existing_real_folder_under_sources_is_refused(raw, tmp_path):
    imagenet, esc = raw
    out = tmp_path / "o"
    (out / "sources" / "imagenet").mkdir(parents=True)
    with pytest.raises(DataError, match="sources/imagenet exists and is not a symlink"):
        prepare_imagenet_esc(imagenet, esc, 19, out)


def test_imagenet_layout_errors(raw, tmp_path):
    imagenet, esc = raw
    pattern = r"ImageNet folder .*nope does not exist; expected IMAGENET/train/<wnid>.*image-net.org"
    with pytest.raises(DataError, match=pattern):
        prepare_imagenet_esc(tmp_path / "nope", esc, 19, tmp_path / "o")
    flat = tmp_path / "flat"
    (flat / "train").mkdir(parents=True)
    (flat / "val").mkdir()
    with pytest.raises(DataError, match=r"train/n01514668 \(class 'cock'\) does not exist.*image-net.org"):
        prepare_imagenet_esc(flat, esc, 19, tmp_path / "o")
    with pytest.raises(DataError, match=r"no meta/esc50.csv or audio/.*github.com/karolpiczak/ESC-50"):
        prepare_imagenet_esc(imagenet, tmp_path, 19, tmp_path / "o")
    with pytest.raises(DataError, match="--subset 20 is not allowed"):
        prepare_imagenet_esc(imagenet, esc, 20, tmp_path / "o")


def test_esc_metadata_errors(raw, tmp_path):
    imagenet, esc = raw
    bad = tmp_path / "esc"
    (bad / "meta").mkdir(parents=True)
    os.symlink(esc / "audio", bad / "audio")
    meta = pd.read_csv(esc / "meta" / "esc50.csv")
    meta[meta["category"] != "rooster"].to_csv(bad / "meta" / "esc50.csv", index=False)
    with pytest.raises(DataError, match=r"no clip of category 'rooster' \(paired with 'cock'\)"):
        prepare_imagenet_esc(imagenet, bad, 19, tmp_path / "o")
    meta.drop(columns=["fold"]).to_csv(bad / "meta" / "esc50.csv", index=False)
    with pytest.raises(DataError, match=r"missing column\(s\) fold"):
        prepare_imagenet_esc(imagenet, bad, 19, tmp_path / "o")
    meta.assign(filename=meta["filename"].str.replace(".wav", "x.wav")).to_csv(bad / "meta" / "esc50.csv", index=False)
    with pytest.raises(DataError, match=r"ESC-50 clip .*x.wav listed in meta/esc50.csv does not exist"):
        prepare_imagenet_esc(imagenet, bad, 19, tmp_path / "o")


# --------------------------------------------------------------------------------------------
# miniARIC
# --------------------------------------------------------------------------------------------


def _aric_tree(root: Path, activities, media, per=1, skip_audio=()):
    k = 0
    for split in ("train", "test"):
        for act in activities:
            for i in range(per):
                rest = f"{split}{act}{i}_x"
                media.image(root / "image" / split / act / f"cam1_p{k}_{rest}.jpg", width=6, height=4, seed=k)
                if rest not in skip_audio:
                    media.wav(root / "audio" / f"wav_{rest}.wav", sr=8000, seconds=0.01)
                k += 1
    (root / "audio").mkdir(parents=True, exist_ok=True)
    return root


def test_miniaric_full_33_classes(tmp_path, media):
    root = _aric_tree(tmp_path / "classroom_data", MINIARIC_CLASSES, media)
    m = prepare_miniaric(root, tmp_path / "out")
    assert m.name == "miniaric" and m.templates == "classroom"
    assert tuple(m.class_names) == MINIARIC_CLASSES and m.class_names[26] == "unknown"
    assert len(m.split("train")) == 33 and len(m.split("test")) == 33
    row = m.rows.iloc[0]
    assert row["image_path"] == "sources/miniaric/image/train/analyzing/cam1_p0_trainanalyzing0_x.jpg"
    assert row["audio_path"] == "sources/miniaric/audio/wav_trainanalyzing0_x.wav"  # A_B_<rest> → wav_<rest>
    assert row["sample_id"] == "train-analyzing-cam1_p0_trainanalyzing0_x"
    sc = make_scenario(33, n_tasks=5, order="paper", dataset="miniaric", class_names=m.class_names)
    assert sc.task_sizes == (13, 5, 5, 5, 5)


def test_miniaric_subset_warns_and_labels_alphabetically(tmp_path, media, caplog):
    root = _aric_tree(tmp_path / "r", ["writing", "eating", "reading"], media, per=2)
    m = prepare_miniaric(root, tmp_path / "out")
    assert m.class_names == ["eating", "reading", "writing"]
    assert "differ from the 33 of the paper" in caplog.text


def test_miniaric_missing_audio(tmp_path, media):
    root = _aric_tree(tmp_path / "r", ["eating", "reading"], media, skip_audio={"testreading0_x"})
    pattern = (r"cam1_p3_testreading0_x.jpg: its audio .*wav_testreading0_x.wav does not exist "
               r"\(1 images lack audio\).*--allow-missing-audio")
    with pytest.raises(DataError, match=pattern):
        prepare_miniaric(root, tmp_path / "out")
    m = prepare_miniaric(root, tmp_path / "out", allow_missing_audio=True)
    assert (m.rows["audio_path"] == "").sum() == 1
    assert m.meta["images_without_audio"] == 1


def test_miniaric_layout_errors(tmp_path, media):
    pattern = r"does not exist; expected ROOT/image/\{train,test\}.*pre-extracted image features"
    with pytest.raises(DataError, match=pattern):
        prepare_miniaric(tmp_path / "nope", tmp_path / "out")
    root = tmp_path / "r"
    (root / "image" / "train" / "eating").mkdir(parents=True)
    (root / "image" / "test").mkdir(parents=True)
    with pytest.raises(DataError, match=r"has no audio/ folder; expected ROOT/image"):
        prepare_miniaric(root, tmp_path / "out")
    (root / "audio").mkdir()
    with pytest.raises(DataError, match=r"only in train: \['eating'\], only in test: \[\]"):
        prepare_miniaric(root, tmp_path / "out")
    (root / "image" / "test" / "eating").mkdir()
    media.image(root / "image" / "train" / "eating" / "nounderscore.jpg")
    media.image(root / "image" / "test" / "eating" / "a_b_1.jpg")
    with pytest.raises(DataError, match=r"nounderscore.jpg: miniARIC image names must look like A_B_<rest>.jpg"):
        prepare_miniaric(root, tmp_path / "out")


def test_miniaric_cli(tmp_path, media):
    root = _aric_tree(tmp_path / "r", ["eating", "reading"], media)
    assert cli_main(["prepare", "miniaric", "--root", str(root), "--out", str(tmp_path / "o")]) == 0
    assert read_manifest(tmp_path / "o").class_names == ["eating", "reading"]
    assert cli_main(["prepare", "miniaric", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 2
