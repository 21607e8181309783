"""read_manifest / write_manifest: a valid folder round-trips; every bad input names row and fix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from mcil.data.manifest import read_manifest, write_manifest
from mcil.errors import DataError


def _edit(root: Path, fn) -> None:
    """Apply ``fn`` to the manifest DataFrame (all str) and write it back as is."""
    df = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    df = fn(df)
    df.to_csv(root / "manifest.csv", index=False)


def _edit_classes(root: Path, fn) -> None:
    meta = json.loads((root / "classes.json").read_text())
    fn(meta)
    (root / "classes.json").write_text(json.dumps(meta))


def test_valid_dataset_round_trips(make_dataset):
    root = make_dataset(n_classes=3, per_split=2, n_pretrain=2)
    m = read_manifest(root)
    assert m.name == "toy" and m.templates == "synav"
    assert m.class_names == ["class 0", "class 1", "class 2", "pre 0", "pre 1"]
    assert m.incremental_labels == [0, 1, 2]
    assert m.pretrain_labels == [3, 4]
    assert m.splits == ["train", "test", "pretrain"]
    assert m.rows["label"].dtype == "int64"
    assert len(m.split("train")) == 6 and len(m.split("pretrain")) == 4
    # file order kept within a split
    assert list(m.split("test")["sample_id"]) == [f"test-{c}-{i}" for c in range(3) for i in range(2)]
    assert set(m.rows["corruption"]) == {""}


def test_write_manifest_is_atomic_and_adds_corruption(tmp_path, media):
    root = tmp_path / "d"
    media.image(root / "a.png")
    rows = [
        {"sample_id": "s0", "split": "train", "label": 0, "class_name": "x", "image_path": "a.png", "audio_path": ""},
        {"sample_id": "s1", "split": "test", "label": 0, "class_name": "x", "image_path": "a.png", "audio_path": ""},
    ]
    write_manifest(root, rows, {"name": "d", "classes": [{"label": 0, "name": "x", "group": "incremental"}],
                                "templates": "synav", "extra": 1})
    assert sorted(os.listdir(root)) == ["a.png", "classes.json", "manifest.csv"]  # no temp files left
    header = (root / "manifest.csv").read_text().splitlines()[0]
    assert header == "sample_id,split,label,class_name,image_path,audio_path,corruption"
    m = read_manifest(root)
    assert m.meta == {"extra": 1}
    assert list(m.rows["audio_path"]) == ["", ""]


def test_write_manifest_rejects_missing_columns(tmp_path):
    with pytest.raises(DataError, match="lack column.*audio_path"):
        write_manifest(tmp_path, [{"sample_id": "s", "split": "train", "label": 0, "class_name": "x",
                                   "image_path": "a"}], {"name": "d", "classes": [], "templates": "t"})


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda df: df.drop(columns=["class_name"]), r"missing column\(s\) class_name"),
        (lambda df: df.assign(label=df["label"].where(df.index != 2, "two")),
         r"line 4 \(sample_id 'test-0-0'\): label 'two' is not an integer"),
        (lambda df: df.assign(label=df["label"].where(df.index != 1, "1.5")),
         r"line 3 .*label '1.5' is not an integer"),
        (lambda df: df.assign(label=df["label"].where(df.index != 0, "7")),
         r"line 2 \(sample_id 'train-0-0'\): label 7 is not in classes.json"),
        (lambda df: df.assign(class_name=df["class_name"].where(df.index != 3, "class 2")),
         r"line 5 .*class_name 'class 2' does not match label 0 which classes.json calls 'class 0'"),
        (lambda df: df.assign(sample_id=df["sample_id"].where(df.index != 4, "train-0-0")),
         r"line 6 \(sample_id 'train-0-0'\): sample_id 'train-0-0' already used on line 2"),
        (lambda df: df.assign(split=df["split"].where(df.index != 0, "val")),
         r"line 2 .*split 'val' is not allowed.*train, test, pretrain"),
        (lambda df: df.assign(image_path=df["image_path"].where(df.index != 0, ""),
                              audio_path=df["audio_path"].where(df.index != 0, "")),
         r"line 2 .*both image_path and audio_path are empty"),
        (lambda df: df.assign(image_path=df["image_path"].where(df.index != 1, "../outside.png")),
         r"line 3 .*image_path '../outside.png' contains '\.\.'"),
        (lambda df: df.assign(audio_path=df["audio_path"].where(df.index != 1, "/etc/passwd")),
         r"line 3 .*audio_path '/etc/passwd' is absolute"),
        (lambda df: df.assign(image_path=df["image_path"].where(df.index != 5, "image/nope.png")),
         r"line 7 .*image_path 'image/nope.png' does not exist"),
        (lambda df: df[~((df["label"] == "1") & (df["split"] == "test"))],
         r"incremental class 1 \('class 1'\) has no 'test' rows"),
        (lambda df: df[df["label"] != "2"], r"class 2 \('class 2'\) has no rows"),
        (lambda df: df.assign(split=df["split"].where(df.index != 0, "pretrain")),
         r"line 2 .*split 'pretrain' with label 0 of group 'incremental'"),
        (lambda df: df.iloc[0:0], r"no rows"),
    ],
)
def test_bad_rows_name_the_row_and_fix(make_dataset, mutate, pattern):
    root = make_dataset(n_classes=3, per_split=2)
    _edit(root, mutate)
    with pytest.raises(DataError, match=pattern):
        read_manifest(root)


def test_missing_file_can_be_skipped_when_cache_only(make_dataset):
    root = make_dataset()
    (root / "image" / "train-0-0.png").unlink()
    with pytest.raises(DataError, match=r"line 2 .*does not exist"):
        read_manifest(root)
    assert len(read_manifest(root, check_files=False).rows) == 12


def test_path_through_symlink_is_accepted(tmp_path, make_dataset, media):
    root = make_dataset()
    outside = tmp_path / "raw"
    media.image(outside / "far.png")
    os.symlink(outside, root / "sources")
    _edit(root, lambda df: df.assign(image_path=df["image_path"].where(df.index != 0, "sources/far.png")))
    m = read_manifest(root)
    assert m.rows.at[0, "image_path"] == "sources/far.png"
    (outside / "far.png").unlink()  # broken target → reported as missing
    with pytest.raises(DataError, match="sources/far.png' does not exist"):
        read_manifest(root)


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda m: m.pop("templates"), r"missing key 'templates'"),
        (lambda m: m["classes"][1].update(label=5), r"labels must be exactly 0..2"),
        (lambda m: m["classes"][1].update(name="class 0"), r"class name 'class 0' appears twice"),
        (lambda m: m["classes"][0].update(group="pretrain"), r"pretrain classes K..K\+P-1"),
        (lambda m: m["classes"][2].update(group="base"), r"group 'base' is not allowed"),
    ],
)
def test_bad_classes_json(make_dataset, mutate, pattern):
    root = make_dataset(n_classes=3)
    _edit_classes(root, mutate)
    with pytest.raises(DataError, match=pattern):
        read_manifest(root)


def test_missing_folder_and_files(tmp_path, make_dataset):
    with pytest.raises(DataError, match="does not exist; create it with `mcil synth`"):
        read_manifest(tmp_path / "nothing")
    root = make_dataset()
    (root / "classes.json").unlink()
    with pytest.raises(DataError, match="classes.json does not exist"):
        read_manifest(root)
    (root / "manifest.csv").unlink()
    with pytest.raises(DataError, match="manifest.csv does not exist"):
        read_manifest(root)
