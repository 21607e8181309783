"""Turn raw ImageNet + ESC-50 or miniARIC folders into an mcil dataset folder (manifest + classes).

Nothing is downloaded or copied. The output folder gets one symlink per source,
``OUT/sources/<name> -> <absolute source folder>``, and every manifest path goes through it
(``sources/imagenet/train/n01514668/x.JPEG``). Manifest paths therefore stay relative and free of
``..`` (what :func:`~mcil.data.manifest.read_manifest` requires), the output folder can be moved,
and re-pointing a link is enough when the raw data move. Labels are the alphabetical index of the
class folders (wnid / activity), as in the official code, so the paper's class orders apply.

Layouts read:

* ImageNet: ``IMAGENET/train/<wnid>/*.JPEG`` and ``IMAGENET/val/<wnid>/*.JPEG`` (val sorted into
  per-wnid folders). ESC-50: ``ESC50/audio/*.wav`` and ``ESC50/meta/esc50.csv``.
* miniARIC: ``ROOT/image/{train,test}/<activity>/*.jpg`` and ``ROOT/audio/wav_<id>.wav``; image
  ``A_B_<rest>.jpg`` pairs with ``wav_<rest>.wav``.
"""

from __future__ import annotations

import argparse
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mcil.data.manifest import Manifest, read_manifest, write_manifest
from mcil.errors import DataError

__all__ = [
    "prepare_imagenet_esc",
    "prepare_miniaric",
    "imagenet_esc_classes",
    "MINIARIC_CLASSES",
    "configure_parser",
    "run_cli",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")

IMAGENET_HELP = (
    "expected IMAGENET/train/<wnid>/*.JPEG and IMAGENET/val/<wnid>/*.JPEG (validation images sorted into "
    "per-wnid folders); ImageNet (ILSVRC-2012) is available from https://image-net.org after registration"
)
ESC50_HELP = (
    "expected ESC50/audio/*.wav and ESC50/meta/esc50.csv (columns filename, fold, target, category, ...); "
    "ESC-50 is Karol Piczak's dataset, clone it from https://github.com/karolpiczak/ESC-50"
)
ARIC_HELP = (
    "expected ROOT/image/{train,test}/<activity>/*.jpg and ROOT/audio/wav_<id>.wav; miniARIC is drawn from "
    "ARIC (see the ARIC homepage of the IVIPC lab, UESTC), but the public ARIC release ships only "
    "pre-extracted image features, not raw images, so the image folders must come from the dataset authors"
)

#: The 33 miniARIC activities of the official code (32 ARIC activities + ``unknown``), alphabetical.
MINIARIC_CLASSES: tuple[str, ...] = (
    "analyzing", "blackboard_wiping", "blackboard_writing", "discussing", "drinking", "eating",
    "gathering_up_bag", "handsup", "listening", "listening_to_music", "picking_up_computers", "reading",
    "relaxing", "reviewing", "scratching_head", "setting_equipment", "sleeping", "speaking", "standing",
    "student_demonstrating", "taking_bag", "taking_bottle", "taking_off", "taking_photos", "talking",
    "teaching", "unknown", "using_computers", "using_pad", "using_phone", "walking", "writing", "yawning",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _list_images(folder: Path) -> list[Path]:
    """Image files of a folder, sorted by name (extensions matched case-insensitively)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _link_source(out: Path, name: str, target: Path) -> str:
    """Create/refresh ``out/sources/<name>`` → absolute ``target``; return the relative prefix."""
    link = out / "sources" / name
    link.parent.mkdir(parents=True, exist_ok=True)
    target = target.resolve()
    if link.is_symlink():
        if Path(os.readlink(link)) == target:
            return f"sources/{name}"
    elif link.exists():
        raise DataError(
            f"{link} exists and is not a symlink; prepare into an empty --out folder (the preparer links "
            f"sources/<name> to the raw data instead of copying it)"
        )
    tmp = link.with_name(f".{name}.tmp-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp, target_is_directory=True)
    os.replace(tmp, link)
    return f"sources/{name}"


def _subsample(items: list[Path], n: int | None, rng_key: list[int], what: str) -> list[Path]:
    """All of ``items`` or ``n`` of them drawn by ``default_rng(rng_key)`` (kept in name order)."""
    if n is None or n >= len(items):
        if n is not None and n > len(items):
            log.warning("%s: asked for %d images, only %d exist; using all", what, n, len(items))
        return items
    idx = np.sort(np.random.default_rng(rng_key).choice(len(items), size=n, replace=False))
    return [items[i] for i in idx]


def _finish(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> Manifest:
    write_manifest(out, rows, meta)
    manifest = read_manifest(out)
    counts = manifest.rows.groupby("split").size().to_dict()
    log.info("prepared %s in %s: %d classes, %s samples", manifest.name, out, len(manifest.classes), counts)
    return manifest


# --------------------------------------------------------------------------------------------
# ImageNet-ESC
# --------------------------------------------------------------------------------------------


def imagenet_esc_classes(subset: int) -> list[dict[str, Any]]:
    """Class-map entries (wnid, name, esc50, imagenet_index) of ImageNet-ESC-``subset``, sorted by wnid."""
    if subset not in (19, 27):
        raise DataError(f"--subset {subset} is not allowed; use 19 or 27")
    path = resources.files("mcil") / "resources" / "imagenet_esc.yaml"
    entries = yaml.safe_load(path.read_text())["classes"]
    return sorted((e for e in entries if subset in e["subsets"]), key=lambda e: e["wnid"])


def _read_esc50_meta(esc50: Path) -> pd.DataFrame:
    csv = esc50 / "meta" / "esc50.csv"
    if not esc50.is_dir():
        raise DataError(f"ESC-50 folder {esc50} does not exist; {ESC50_HELP}")
    if not csv.is_file() or not (esc50 / "audio").is_dir():
        raise DataError(f"{esc50} is not an ESC-50 folder (no meta/esc50.csv or audio/); {ESC50_HELP}")
    try:
        meta = pd.read_csv(csv)
    except (OSError, ValueError) as exc:
        raise DataError(f"{csv}: cannot be parsed as CSV ({exc}); {ESC50_HELP}") from exc
    missing = [c for c in ("filename", "fold", "category") if c not in meta.columns]
    if missing:
        raise DataError(f"{csv}: missing column(s) {', '.join(missing)}; {ESC50_HELP}")
    meta["fold"] = pd.to_numeric(meta["fold"], errors="coerce")
    if meta["fold"].isna().any():
        bad = int(meta.index[meta["fold"].isna()][0])
        raise DataError(f"{csv}: line {bad + 2}: fold {meta.at[bad, 'fold']!r} is not an integer 1..5")
    return meta.sort_values("filename").reset_index(drop=True)


def _esc_clip_path(esc50: Path, filename: str) -> str:
    if not (esc50 / "audio" / filename).is_file():
        raise DataError(
            f"ESC-50 clip {esc50 / 'audio' / filename} listed in meta/esc50.csv does not exist; {ESC50_HELP}"
        )
    return filename


def prepare_imagenet_esc(
    imagenet: str | Path,
    esc50: str | Path,
    subset: int,
    out: str | Path,
    pairing: str = "class-clip",
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    seed: int = 0,
) -> Manifest:
    """Write ImageNet-ESC-19/27 into ``out``.

    Images: ImageNet train → ``train``, ImageNet val → ``test`` (all, or ``*_per_class`` drawn
    with ``seed``). Audio pairing: ``class-clip`` = every image of a class gets that category's
    first ESC-50 clip by file name (the official code's one-wav-per-class, recorded in
    classes.json as ``audio_clip``); ``per-sample`` = train images cycle through the category's
    clips of folds 1–4, test images through fold 5, in an order permuted by ``seed``.
    """
    imagenet, esc50, out = Path(imagenet), Path(esc50), Path(out)
    if pairing not in ("class-clip", "per-sample"):
        raise DataError(f"--pairing {pairing!r} is not allowed; use 'class-clip' or 'per-sample'")
    for flag, value in (("--train-per-class", train_per_class), ("--test-per-class", test_per_class)):
        if value is not None and value < 1:
            raise DataError(f"{flag} {value} must be >= 1 (or left out to take every image)")
    classes = imagenet_esc_classes(subset)
    if not imagenet.is_dir():
        raise DataError(f"ImageNet folder {imagenet} does not exist; {IMAGENET_HELP}")
    folders: dict[tuple[str, str], list[Path]] = {}
    for split_dir in ("train", "val"):
        if not (imagenet / split_dir).is_dir():
            raise DataError(f"{imagenet} has no {split_dir}/ folder; {IMAGENET_HELP}")
        for c in classes:
            folder = imagenet / split_dir / c["wnid"]
            if not folder.is_dir():
                raise DataError(f"{folder} (class {c['name']!r}) does not exist; {IMAGENET_HELP}")
            images = _list_images(folder)
            if not images:
                raise DataError(f"{folder} (class {c['name']!r}) holds no .JPEG/.jpg/.png images; {IMAGENET_HELP}")
            folders[(split_dir, c["wnid"])] = images
    esc = _read_esc50_meta(esc50)
    img_prefix = _link_source(out, "imagenet", imagenet)
    aud_prefix = _link_source(out, "esc50", esc50)

    rows: list[dict[str, Any]] = []
    class_entries: list[dict[str, Any]] = []
    for label, c in enumerate(classes):
        clips = esc[esc["category"] == c["esc50"]]
        if clips.empty:
            raise DataError(
                f"{esc50 / 'meta' / 'esc50.csv'} has no clip of category {c['esc50']!r} (paired with "
                f"{c['name']!r}); {ESC50_HELP}"
            )
        entry: dict[str, Any] = {
            "label": label,
            "name": c["name"],
            "group": "incremental",
            "wnid": c["wnid"],
            "imagenet_index": c["imagenet_index"],
            "esc50_category": c["esc50"],
        }
        if pairing == "class-clip":
            entry["audio_clip"] = _esc_clip_path(esc50, str(clips["filename"].iloc[0]))
        for split, split_dir, limit, folds, code in (
            ("train", "train", train_per_class, (1, 2, 3, 4), 0),
            ("test", "val", test_per_class, (5,), 1),
        ):
            images = _subsample(folders[(split_dir, c["wnid"])], limit, [seed, label, code], f"{split_dir}/{c['wnid']}")
            if pairing == "class-clip":
                chosen = [entry["audio_clip"]] * len(images)
            else:
                pool = [str(f) for f in clips.loc[clips["fold"].isin(folds), "filename"]]
                if not pool:
                    raise DataError(
                        f"{esc50 / 'meta' / 'esc50.csv'} has no {c['esc50']!r} clip in fold(s) {list(folds)}, "
                        f"needed for per-sample {split} pairing; use --pairing class-clip or fix the metadata"
                    )
                perm = np.random.default_rng([seed, label, code]).permutation(len(pool))
                chosen = [_esc_clip_path(esc50, pool[perm[i % len(pool)]]) for i in range(len(images))]
            for img, clip in zip(images, chosen):
                rows.append(
                    {
                        "sample_id": f"{split}-{c['wnid']}-{img.stem}",
                        "split": split,
                        "label": label,
                        "class_name": c["name"],
                        "image_path": f"{img_prefix}/{split_dir}/{c['wnid']}/{img.name}",
                        "audio_path": f"{aud_prefix}/audio/{clip}",
                    }
                )
            entry[f"n_{split}"] = len(images)
        class_entries.append(entry)
    meta = {
        "name": f"imagenet-esc-{subset}",
        "classes": class_entries,
        "templates": "imagenet-esc",
        "pairing": pairing,
        "seed": seed,
        "train_per_class": train_per_class,
        "test_per_class": test_per_class,
        "sources": {"imagenet": str(imagenet.resolve()), "esc50": str(esc50.resolve())},
    }
    return _finish(out, rows, meta)


# --------------------------------------------------------------------------------------------
# miniARIC
# --------------------------------------------------------------------------------------------


def _aric_audio_name(image: Path) -> str:
    """``A_B_<rest>.jpg`` → ``wav_<rest>.wav`` (split on the first two underscores)."""
    parts = image.stem.split("_", 2)
    if len(parts) < 3 or not parts[2]:
        raise DataError(
            f"{image}: miniARIC image names must look like A_B_<rest>.jpg (the audio is audio/wav_<rest>.wav); "
            f"rename the file or remove it"
        )
    return f"wav_{parts[2]}.wav"


def prepare_miniaric(root: str | Path, out: str | Path, allow_missing_audio: bool = False) -> Manifest:
    """Write miniARIC into ``out``: labels = alphabetical activity index, image ↔ audio by file name.

    A missing ``wav_<rest>.wav`` is an error unless ``allow_missing_audio``, which keeps such
    images as image-only samples (empty ``audio_path``).
    """
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise DataError(f"miniARIC folder {root} does not exist; {ARIC_HELP}")
    for sub in ("image/train", "image/test", "audio"):
        if not (root / sub).is_dir():
            raise DataError(f"{root} has no {sub}/ folder; {ARIC_HELP}")
    acts = {s: sorted(p.name for p in (root / "image" / s).iterdir() if p.is_dir()) for s in ("train", "test")}
    if not acts["train"]:
        raise DataError(f"{root / 'image' / 'train'} has no activity folders; {ARIC_HELP}")
    if acts["train"] != acts["test"]:
        only_train = sorted(set(acts["train"]) - set(acts["test"]))
        only_test = sorted(set(acts["test"]) - set(acts["train"]))
        raise DataError(
            f"{root / 'image'}: train and test must hold the same activity folders; only in train: {only_train}, "
            f"only in test: {only_test}"
        )
    activities = acts["train"]
    if tuple(activities) != MINIARIC_CLASSES:
        log.warning(
            "%s: activity folders differ from the 33 of the paper (missing %s, extra %s); the paper's class "
            "order will not apply",
            root,
            sorted(set(MINIARIC_CLASSES) - set(activities)),
            sorted(set(activities) - set(MINIARIC_CLASSES)),
        )
    prefix = _link_source(out, "miniaric", root)
    audio_dir = root / "audio"
    rows: list[dict[str, Any]] = []
    missing: list[tuple[Path, str]] = []
    counts: dict[tuple[str, str], int] = {}
    for split in ("train", "test"):
        for label, act in enumerate(activities):
            images = _list_images(root / "image" / split / act)
            counts[(split, act)] = len(images)
            for img in images:
                wav = _aric_audio_name(img)
                if (audio_dir / wav).is_file():
                    audio_path = f"{prefix}/audio/{wav}"
                else:
                    missing.append((img, wav))
                    audio_path = ""
                rows.append(
                    {
                        "sample_id": f"{split}-{act}-{img.stem}",
                        "split": split,
                        "label": label,
                        "class_name": act,
                        "image_path": f"{prefix}/image/{split}/{act}/{img.name}",
                        "audio_path": audio_path,
                    }
                )
    for split in ("train", "test"):
        empty = [a for a in activities if counts[(split, a)] == 0]
        if empty:
            raise DataError(f"{root / 'image' / split}: activity folder(s) {empty} hold no .jpg images; {ARIC_HELP}")
    if missing:
        img, wav = missing[0]
        if not allow_missing_audio:
            raise DataError(
                f"{img}: its audio {audio_dir / wav} does not exist ({len(missing)} images lack audio); "
                f"add the wav files, or pass --allow-missing-audio to keep them as image-only samples"
            )
        log.warning("%d images have no audio file (first: %s); kept as image-only samples", len(missing), img)
    meta = {
        "name": "miniaric",
        "classes": [
            {
                "label": i,
                "name": act,
                "group": "incremental",
                "n_train": counts[("train", act)],
                "n_test": counts[("test", act)],
            }
            for i, act in enumerate(activities)
        ],
        "templates": "classroom",
        "sources": {"miniaric": str(root.resolve())},
        "images_without_audio": len(missing),
    }
    return _finish(out, rows, meta)


# --------------------------------------------------------------------------------------------
# CLI: mcil prepare imagenet-esc | miniaric
# --------------------------------------------------------------------------------------------


def configure_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    ie = sub.add_parser("imagenet-esc", help="ImageNet-ESC-19/27 from ImageNet and ESC-50 folders")
    ie.add_argument("--imagenet", required=True, help="ImageNet folder with train/<wnid>/ and val/<wnid>/")
    ie.add_argument("--esc50", required=True, help="ESC-50 folder with audio/ and meta/esc50.csv")
    ie.add_argument("--subset", type=int, choices=[19, 27], required=True)
    ie.add_argument("--out", required=True, help="output dataset folder")
    ie.add_argument("--pairing", choices=["class-clip", "per-sample"], default="class-clip")
    ie.add_argument("--train-per-class", type=int, help="images per class from ImageNet train (default: all)")
    ie.add_argument("--test-per-class", type=int, help="images per class from ImageNet val (default: all)")
    ie.add_argument("--seed", type=int, default=0)
    ma = sub.add_parser("miniaric", help="miniARIC from the official code's classroom_data layout")
    ma.add_argument("--root", required=True, help="folder with image/{train,test}/<activity>/ and audio/")
    ma.add_argument("--out", required=True, help="output dataset folder")
    ma.add_argument("--allow-missing-audio", action="store_true", help="keep images without a wav as image-only")


def run_cli(args: argparse.Namespace) -> int:
    if args.dataset == "imagenet-esc":
        prepare_imagenet_esc(
            args.imagenet,
            args.esc50,
            args.subset,
            args.out,
            pairing=args.pairing,
            train_per_class=args.train_per_class,
            test_per_class=args.test_per_class,
            seed=args.seed,
        )
    else:
        prepare_miniaric(args.root, args.out, allow_missing_audio=args.allow_missing_audio)
    return 0
