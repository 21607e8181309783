"""Dataset folders on disk: ``manifest.csv`` + ``classes.json`` (read, validate, write).

Every dataset (synav, ImageNet-ESC-19/27, miniARIC) is turned into this one format, so the cache
and everything downstream read only manifests. :func:`read_manifest` is the single gate: it checks
everything that would otherwise fail much later (a class without test rows, a path escaping the
dataset folder, a label that disagrees with ``classes.json``) and names the offending row and the
fix in a :class:`~mcil.errors.DataError`.

Paths in the manifest are relative to the dataset folder. They may pass through a symlink inside
the folder (the preparers link ``sources/<name>`` to the raw data instead of copying it): the
*text* of a path must be relative and free of ``..``; only its existence is checked through the
link.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mcil.atomic import atomic_write_text
from mcil.errors import DataError

__all__ = [
    "MANIFEST_FILE",
    "CLASSES_FILE",
    "REQUIRED_COLUMNS",
    "SPLITS",
    "Manifest",
    "read_manifest",
    "write_manifest",
]

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.csv"
CLASSES_FILE = "classes.json"
REQUIRED_COLUMNS: tuple[str, ...] = ("sample_id", "split", "label", "class_name", "image_path", "audio_path")
OPTIONAL_COLUMNS: tuple[str, ...] = ("corruption",)
SPLITS: tuple[str, ...] = ("train", "test", "pretrain")
GROUPS: tuple[str, ...] = ("incremental", "pretrain")

_FIX_HINT = "regenerate the dataset with `mcil synth` / `mcil prepare`, or fix the row by hand"


@dataclass(frozen=True, eq=False)
class Manifest:
    """A validated dataset folder.

    rows: one row per sample, columns ``REQUIRED_COLUMNS + ('corruption',)`` (+ any extra
        columns of the file); ``label`` is int64, every other column str (``''`` where empty).
    classes: the ``classes`` list of ``classes.json`` sorted by label (dicts with at least
        ``label``, ``name``, ``group``).
    """

    root: Path
    name: str
    rows: pd.DataFrame
    classes: list[dict[str, Any]]
    templates: str
    meta: dict[str, Any]

    @property
    def class_names(self) -> list[str]:
        """All class names, index = label (incremental classes first, then pre-training ones)."""
        return [c["name"] for c in self.classes]

    @property
    def twin_pairs(self) -> list[tuple[int, int]]:
        """Look-alike pairs of incremental classes (classes.json ``twin``; synav) as sorted label pairs."""
        inc = set(self.incremental_labels)
        pairs = {tuple(sorted((int(c["label"]), int(c["twin"])))) for c in self.classes
                 if c.get("twin") is not None and c["label"] in inc and int(c["twin"]) in inc}
        return sorted(pairs)

    @property
    def incremental_labels(self) -> list[int]:
        """Labels ``0..K-1`` of the classes the scenario cuts into tasks."""
        return [c["label"] for c in self.classes if c["group"] == "incremental"]

    @property
    def pretrain_labels(self) -> list[int]:
        """Labels ``K..K+P-1`` used only by backbone pre-training (``split == 'pretrain'``)."""
        return [c["label"] for c in self.classes if c["group"] == "pretrain"]

    @property
    def n_incremental(self) -> int:
        return len(self.incremental_labels)

    @property
    def splits(self) -> list[str]:
        """The splits that have at least one row, in ``SPLITS`` order."""
        present = set(self.rows["split"])
        return [s for s in SPLITS if s in present]

    def split(self, split: str) -> pd.DataFrame:
        """Rows of one split, in file order (the cache keeps this order)."""
        if split not in SPLITS:
            raise DataError(f"split {split!r} is not allowed; use one of {', '.join(SPLITS)}")
        return self.rows[self.rows["split"] == split].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Reading and validation
# --------------------------------------------------------------------------------------------


def _row_ref(rows: pd.DataFrame, index: int) -> str:
    """``line N (sample_id 'x')`` for the row at DataFrame index ``index`` (header = line 1)."""
    sid = rows.at[index, "sample_id"] if "sample_id" in rows.columns else ""
    return f"line {index + 2} (sample_id {sid!r})"


def _first_bad(rows: pd.DataFrame, mask: pd.Series) -> tuple[int, int]:
    """(index of the first True row, number of True rows)."""
    bad = mask[mask].index
    return int(bad[0]), len(bad)


def _more(n: int) -> str:
    return f" ({n - 1} more rows like it)" if n > 1 else ""


def _load_classes(root: Path) -> dict[str, Any]:
    path = root / CLASSES_FILE
    if not path.is_file():
        raise DataError(
            f"{path} does not exist; every dataset folder needs classes.json next to manifest.csv ({_FIX_HINT})"
        )
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); {_FIX_HINT}") from exc
    if not isinstance(meta, dict):
        raise DataError(f"{path}: the top level must be an object with keys name, classes, templates")
    for key in ("name", "classes", "templates"):
        if key not in meta:
            raise DataError(f"{path}: missing key {key!r}; expected keys name, classes, templates")
    if not isinstance(meta["name"], str) or not meta["name"]:
        raise DataError(f"{path}: 'name' must be a non-empty string, got {meta['name']!r}")
    if not isinstance(meta["templates"], str) or not meta["templates"]:
        raise DataError(f"{path}: 'templates' must be a non-empty string, got {meta['templates']!r}")
    classes = meta["classes"]
    if not isinstance(classes, list) or not classes:
        raise DataError(f"{path}: 'classes' must be a non-empty list of {{label, name, group}} objects")
    seen_labels: set[int] = set()
    seen_names: set[str] = set()
    for i, c in enumerate(classes):
        where = f"{path}: classes[{i}]"
        if not isinstance(c, dict) or not {"label", "name", "group"} <= set(c):
            raise DataError(f"{where}: needs keys label, name, group; got {c!r}")
        if isinstance(c["label"], bool) or not isinstance(c["label"], int):
            raise DataError(f"{where}: label {c['label']!r} is not an integer")
        if not isinstance(c["name"], str) or not c["name"]:
            raise DataError(f"{where}: name {c['name']!r} must be a non-empty string")
        if c["group"] not in GROUPS:
            raise DataError(f"{where}: group {c['group']!r} is not allowed; use 'incremental' or 'pretrain'")
        if c["label"] in seen_labels:
            raise DataError(f"{where}: label {c['label']} appears twice; every class needs its own label")
        if c["name"] in seen_names:
            raise DataError(f"{where}: class name {c['name']!r} appears twice; class names must be unique")
        seen_labels.add(c["label"])
        seen_names.add(c["name"])
    classes = sorted(classes, key=lambda c: c["label"])
    labels = [c["label"] for c in classes]
    if labels != list(range(len(classes))):
        raise DataError(f"{path}: labels must be exactly 0..{len(classes) - 1}; got {labels}")
    groups = [c["group"] for c in classes]
    n_inc = groups.count("incremental")
    if n_inc == 0:
        raise DataError(f"{path}: no class has group 'incremental'; a dataset needs incremental classes")
    if groups != ["incremental"] * n_inc + ["pretrain"] * (len(groups) - n_inc):
        raise DataError(
            f"{path}: incremental classes must have labels 0..K-1 and pretrain classes K..K+P-1; "
            f"relabel so every pretrain class comes after all incremental classes"
        )
    meta["classes"] = classes
    return meta


_ABSOLUTE = r"^(?:[/\\~]|[A-Za-z]:)"
_PARENT = r"(?:^|[/\\])\.\.(?:[/\\]|$)"


def _check_paths(root: Path, rows: pd.DataFrame, column: str, check_files: bool) -> None:
    """Path text must be relative and free of ``..``; the file must exist (symlinks followed)."""
    col = rows[column]
    nonempty = col != ""
    for pattern, why in (
        (_ABSOLUTE, "is absolute; write it relative to the dataset folder"),
        (_PARENT, "contains '..'; paths must stay inside the dataset folder (link outside data in via a "
                  "symlinked folder)"),
    ):
        bad = nonempty & col.str.contains(pattern, regex=True)
        if bad.any():
            i, n = _first_bad(rows, bad)
            raise DataError(f"{root / MANIFEST_FILE}: {_row_ref(rows, i)}: {column} {col[i]!r} {why}{_more(n)}")
    if not check_files:
        return
    index = rows.index[nonempty]
    texts = col[nonempty].tolist()
    base = str(root)
    missing = [i for i, text in zip(index, texts) if not os.path.exists(os.path.join(base, text))]
    if missing:
        i = int(missing[0])
        raise DataError(
            f"{root / MANIFEST_FILE}: {_row_ref(rows, i)}: {column} {col[i]!r} does not exist under {root}"
            f"{_more(len(missing))}; restore the file (or the symlink it goes through) or re-run the preparer"
        )


def read_manifest(root: str | Path, check_files: bool = True) -> Manifest:
    """Read and validate ``root/manifest.csv`` + ``root/classes.json``.

    ``check_files=False`` skips the per-file existence test (used when a built cache already
    holds the decoded data, e.g. on a node where only the cache is available).
    """
    root = Path(root)
    path = root / MANIFEST_FILE
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist; create it with `mcil synth` or `mcil prepare`")
    if not path.is_file():
        raise DataError(f"{path} does not exist; create the dataset with `mcil synth` or `mcil prepare`")
    meta = _load_classes(root)
    classes: list[dict[str, Any]] = meta["classes"]
    try:
        rows = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot be parsed as CSV ({exc}); {_FIX_HINT}") from exc
    missing_cols = [c for c in REQUIRED_COLUMNS if c not in rows.columns]
    if missing_cols:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing_cols)}; the header must contain "
            f"{', '.join(REQUIRED_COLUMNS)}[, corruption]"
        )
    if len(rows) == 0:
        raise DataError(f"{path}: has a header but no rows; {_FIX_HINT}")
    if "corruption" not in rows.columns:
        rows["corruption"] = ""
    for col in rows.columns:
        rows[col] = rows[col].astype(str).str.strip()

    # sample ids
    empty_id = rows["sample_id"] == ""
    if empty_id.any():
        i, n = _first_bad(rows, empty_id)
        raise DataError(f"{path}: {_row_ref(rows, i)}: empty sample_id{_more(n)}; give every row a unique id")
    dup = rows["sample_id"].duplicated(keep="first")
    if dup.any():
        i, n = _first_bad(rows, dup)
        sid = rows.at[i, "sample_id"]
        first = int(rows.index[rows["sample_id"] == sid][0])
        raise DataError(
            f"{path}: {_row_ref(rows, i)}: sample_id {sid!r} already used on line {first + 2}{_more(n)}; "
            f"sample ids must be unique"
        )
    # split
    bad_split = ~rows["split"].isin(SPLITS)
    if bad_split.any():
        i, n = _first_bad(rows, bad_split)
        raise DataError(
            f"{path}: {_row_ref(rows, i)}: split {rows.at[i, 'split']!r} is not allowed{_more(n)}; "
            f"use one of {', '.join(SPLITS)}"
        )
    # labels: integers known to classes.json, consistent with class_name and group
    as_int = pd.to_numeric(rows["label"].where(rows["label"].str.fullmatch(r"[+-]?\d+"), None), errors="coerce")
    bad_label = as_int.isna()
    if bad_label.any():
        i, n = _first_bad(rows, bad_label)
        raise DataError(
            f"{path}: {_row_ref(rows, i)}: label {rows.at[i, 'label']!r} is not an integer{_more(n)}; "
            f"labels are the integer 'label' values of classes.json"
        )
    rows["label"] = as_int.astype("int64")
    n_classes = len(classes)
    unknown = ~rows["label"].between(0, n_classes - 1)
    if unknown.any():
        i, n = _first_bad(rows, unknown)
        raise DataError(
            f"{path}: {_row_ref(rows, i)}: label {rows.at[i, 'label']} is not in classes.json "
            f"(labels 0..{n_classes - 1}){_more(n)}; add the class to classes.json or fix the label"
        )
    names = [c["name"] for c in classes]
    expected_name = rows["label"].map(lambda lab: names[lab])
    wrong_name = rows["class_name"] != expected_name
    if wrong_name.any():
        i, n = _first_bad(rows, wrong_name)
        raise DataError(
            f"{path}: {_row_ref(rows, i)}: class_name {rows.at[i, 'class_name']!r} does not match label "
            f"{rows.at[i, 'label']} which classes.json calls {expected_name[i]!r}{_more(n)}; "
            f"make manifest.csv and classes.json agree"
        )
    group = rows["label"].map(lambda lab: classes[lab]["group"])
    wrong_group = (rows["split"] == "pretrain") != (group == "pretrain")
    if wrong_group.any():
        i, n = _first_bad(rows, wrong_group)
        raise DataError(
            f"{path}: {_row_ref(rows, i)}: split {rows.at[i, 'split']!r} with label {rows.at[i, 'label']} of "
            f"group {group[i]!r}{_more(n)}; pretrain classes appear only in split 'pretrain' and incremental "
            f"classes only in 'train'/'test'"
        )
    # modalities and paths
    both_empty = (rows["image_path"] == "") & (rows["audio_path"] == "")
    if both_empty.any():
        i, n = _first_bad(rows, both_empty)
        raise DataError(
            f"{path}: {_row_ref(rows, i)}: both image_path and audio_path are empty{_more(n)}; "
            f"a sample needs at least one modality (drop the row or add a file)"
        )
    _check_paths(root, rows, "image_path", check_files)
    _check_paths(root, rows, "audio_path", check_files)
    # every class populated; incremental classes in both train and test
    present = set(zip(rows["label"].tolist(), rows["split"].tolist()))
    labels_present = {lab for lab, _split in present}
    for c in classes:
        lab = c["label"]
        if lab not in labels_present:
            raise DataError(
                f"{path}: class {lab} ({c['name']!r}) has no rows; remove it from classes.json or add its samples"
            )
        if c["group"] == "incremental":
            for split in ("train", "test"):
                if (lab, split) not in present:
                    raise DataError(
                        f"{path}: incremental class {lab} ({c['name']!r}) has no {split!r} rows; every "
                        f"incremental class needs train and test samples"
                    )
    extra = {k: v for k, v in meta.items() if k not in ("name", "classes", "templates")}
    return Manifest(
        root=root,
        name=meta["name"],
        rows=rows,
        classes=classes,
        templates=meta["templates"],
        meta=extra,
    )


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_manifest(
    root: str | Path,
    rows: Sequence[Mapping[str, Any]] | Iterable[Mapping[str, Any]] | pd.DataFrame,
    classes_meta: Mapping[str, Any],
) -> None:
    """Write ``root/classes.json`` then ``root/manifest.csv``, each atomically.

    rows: dicts (or a DataFrame) with at least ``REQUIRED_COLUMNS``; ``corruption`` and any extra
        columns are kept. classes_meta: ``{"name", "classes": [{label, name, group, ...}], "templates", ...}``.
    The manifest is written last, so its presence marks a complete dataset. Call
    :func:`read_manifest` afterwards for full validation.
    """
    root = Path(root)
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"write_manifest({root}): rows lack column(s) {', '.join(missing)}")
    for key in ("name", "classes", "templates"):
        if key not in classes_meta:
            raise DataError(f"write_manifest({root}): classes_meta lacks key {key!r} (need name, classes, templates)")
    if "corruption" not in frame.columns:
        frame["corruption"] = ""
    known = REQUIRED_COLUMNS + ("corruption",)
    order = list(known) + [c for c in frame.columns if c not in known]
    frame = frame[order].fillna("")
    for col in ("image_path", "audio_path"):
        frame[col] = frame[col].map(lambda p: "" if p in ("", None) else Path(p).as_posix())
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / CLASSES_FILE, json.dumps(dict(classes_meta), indent=1, sort_keys=False) + "\n")
    atomic_write_text(root / MANIFEST_FILE, frame.to_csv(index=False, lineterminator="\n"))
    log.info("wrote %s (%d rows) and %s", root / MANIFEST_FILE, len(frame), CLASSES_FILE)
