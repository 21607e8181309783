"""synav generator: contract of the files, determinism, class design, regimes, existing output."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mcil.cli import main as cli_main
from mcil.data import synth_classes, synth_render
from mcil.data.probe import linear_probe, ridge_fit
from mcil.data.synth import MANIFEST_COLUMNS, generate
from mcil.data.synth_classes import (
    ATTRIBUTE_VALUES,
    CORRUPTIONS,
    SynthConfig,
    build_classes,
    check_pretrain_coverage,
    max_incremental_classes,
)
from mcil.errors import DataError

TINY = dict(n_classes=6, train_per_class=3, test_per_class=2, pretrain_per_class=1)
# Enough train/test samples per regime to see corruption rates, still ~1 s to render.
SMALL = dict(n_classes=6, train_per_class=10, test_per_class=5, pretrain_per_class=1)


def _read_manifest(root: Path) -> list[dict[str, str]]:
    with (root / "manifest.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("tiny") / "synav", SynthConfig(seed=3, **TINY))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("pair")
    clean = generate(base / "clean", SynthConfig(regime="clean", seed=1, **SMALL))
    noisy = generate(base / "noisy", SynthConfig(regime="noisy", seed=1, **SMALL))
    return clean, noisy


# --------------------------------------------------------------------------------- files


def test_manifest_classes_and_media_follow_the_contract(tiny: Path) -> None:
    rows = _read_manifest(tiny)
    with (tiny / "manifest.csv").open(newline="") as fh:
        assert next(csv.reader(fh)) == list(MANIFEST_COLUMNS)
    meta = json.loads((tiny / "classes.json").read_text())
    assert meta["name"] == "synav-clean" and meta["regime"] == "clean" and meta["seed"] == 3
    assert meta["templates"] == "synav"
    k, p = TINY["n_classes"], 24
    classes = meta["classes"]
    assert [c["label"] for c in classes] == list(range(k + p))
    assert all(c["group"] == ("incremental" if c["label"] < k else "pretrain") for c in classes)
    for c in classes:
        words = f"{c['colour']} {c['texture']} {c['shape']}, {c['pitch']} {c['rhythm']} {c['timbre']}"
        assert c["name"] == words

    split_counts = Counter(r["split"] for r in rows)
    assert split_counts == {"train": k * 3, "test": k * 2, "pretrain": p * 1}
    assert len({r["sample_id"] for r in rows}) == len(rows)
    for r in rows:
        label = int(r["label"])
        assert r["class_name"] == classes[label]["name"]
        if r["split"] == "pretrain":
            assert k <= label < k + p
        else:
            assert 0 <= label < k
        assert r["corruption"] == ""
        assert r["image_path"] == f"images/{r['split']}/{r['sample_id'].split('-')[1]}.png"
        assert not Path(r["image_path"]).is_absolute() and (tiny / r["image_path"]).is_file()
        assert (tiny / r["audio_path"]).is_file()
    # every incremental class has its train and test samples
    assert Counter(int(r["label"]) for r in rows if r["split"] == "test") == {c: 2 for c in range(k)}

    img = Image.open(tiny / rows[0]["image_path"])
    assert (img.format, img.mode, img.size) == ("PNG", "RGB", (64, 64))
    info = sf.info(str(tiny / rows[0]["audio_path"]))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 16000, "PCM_16")
    assert not list(tiny.parent.glob("*.tmp-*")), "temp folder left behind"


def test_rendered_signals_carry_their_attributes() -> None:
    # Audio: the whistle's (sine) spectral peak sits at the named pitch, within the ±PITCH_JITTER jitter.
    for pitch, hz in synth_render.PITCHES.items():
        wave = synth_render.render_audio((pitch, "whistle", "steady"), np.random.default_rng(0))
        spectrum = np.abs(np.fft.rfft(wave))
        peak_hz = np.argmax(spectrum) * synth_render.SAMPLE_RATE / len(wave)
        assert abs(np.log2(peak_hz / hz)) < synth_render.PITCH_JITTER / 12 + 0.01, (pitch, peak_hz)
    # Envelope: "rising" has more energy in its second half, "falling" in its first.
    rising = synth_render.render_audio(("middle", "whistle", "rising"), np.random.default_rng(1))
    falling = synth_render.render_audio(("middle", "whistle", "falling"), np.random.default_rng(1))
    half = len(rising) // 2
    assert np.sum(rising[half:] ** 2) > 2 * np.sum(rising[:half] ** 2)
    assert np.sum(falling[:half] ** 2) > 2 * np.sum(falling[half:] ** 2)
    # Image: a solid red object covers a sizeable red area; a blue one does not produce red pixels.
    red = synth_render.render_image(("square", "red", "solid"), np.random.default_rng(2)).astype(int)
    blue = synth_render.render_image(("square", "blue", "solid"), np.random.default_rng(2)).astype(int)
    is_red = lambda im: (im[..., 0] > 160) & (im[..., 1] < 90) & (im[..., 2] < 90)  # noqa: E731
    assert is_red(red).mean() > 0.08
    assert is_red(blue).mean() < 0.01


# --------------------------------------------------------------------------------- determinism


def test_same_seed_is_byte_identical_other_seed_differs(tiny: Path, tmp_path: Path) -> None:
    again = generate(tmp_path / "again", SynthConfig(seed=3, **TINY))
    assert _digests(again) == _digests(tiny)
    other = generate(tmp_path / "other", SynthConfig(seed=4, **TINY))
    a, b = _digests(tiny), _digests(other)
    assert a.keys() == b.keys()
    differing = [name for name in a if a[name] != b[name]]
    assert len(differing) > 0.9 * len(a)


def test_worker_pool_gives_the_same_bytes(tiny: Path, tmp_path: Path) -> None:
    pooled = generate(tmp_path / "pooled", SynthConfig(seed=3, **TINY), workers=2)
    assert _digests(pooled) == _digests(tiny)


@pytest.mark.parametrize("regime", ["clean", "noisy"])
def test_test_split_size_leaves_train_and_pretrain_samples_unchanged(regime: str, tmp_path: Path) -> None:
    """The default's test split was resized (docs/synav.md, "Test split size") on this promise: the
    train (so validation) and pre-training files, their manifest rows and corruptions do not move,
    so neither the backbone nor the validation selection does; the test split is a new, larger draw."""
    small = generate(tmp_path / "small", SynthConfig(regime=regime, seed=3, **TINY))
    large = generate(tmp_path / "large", SynthConfig(regime=regime, seed=3, **{**TINY, "test_per_class": 5}))
    a, b = _digests(small), _digests(large)
    kept = [n for n in a if "/train/" in n or "/pretrain/" in n]
    assert len(kept) == 2 * (6 * 3 + 24 * 1) and all(b[n] == a[n] for n in kept)  # PNG + WAV; 24 pre-training classes
    test_a = [n for n in a if "/test/" in n]
    assert len([n for n in b if "/test/" in n]) == 2 * 6 * 5 and len(test_a) == 2 * 6 * 2
    rows_a, rows_b = _read_manifest(small), _read_manifest(large)
    assert [r for r in rows_a if r["split"] != "test"] == [r for r in rows_b if r["split"] != "test"]
    # Class c's test samples are indices 2c, 2c+1 at 2 per class and 5c ... 5c+4 at 5: a new draw.
    test_ids_a = [r["sample_id"] for r in rows_a if r["split"] == "test"]
    assert [r["sample_id"] for r in rows_b if r["split"] == "test"][:2] == test_ids_a[:2]
    assert any(b[n] != a[n] for n in test_a)


# --------------------------------------------------------------------------------- class design


@pytest.mark.parametrize("seed,k", [(0, 6), (0, 40), (5, 41), (1, 150), (2, max_incremental_classes(24))])
def test_pretrain_classes_are_disjoint_and_cover_every_attribute_value(seed: int, k: int) -> None:
    classes = build_classes(SynthConfig(seed=seed, n_classes=k))
    inc = [c for c in classes if c.group == "incremental"]
    pre = [c for c in classes if c.group == "pretrain"]
    assert [c.label for c in inc] == list(range(k)) and [c.label for c in pre] == list(range(k, k + 24))
    assert len({(c.visual, c.audio) for c in inc}) == k
    # No incremental picture, sound (and hence combination) is seen in pre-training.
    assert not {c.visual for c in inc} & {c.visual for c in pre}
    assert not {c.audio for c in inc} & {c.audio for c in pre}
    for attr, values in ATTRIBUTE_VALUES.items():
        counts = Counter(getattr(c, attr) for c in pre)
        assert min(counts[v] for v in values) >= 3, (attr, counts)


def test_pretrain_classes_do_not_depend_on_k() -> None:
    small = [c for c in build_classes(SynthConfig(n_classes=6)) if c.group == "pretrain"]
    large = [c for c in build_classes(SynthConfig(n_classes=150)) if c.group == "pretrain"]
    assert [c.name for c in small] == [c.name for c in large]


def test_coverage_check_rejects_a_thin_pretrain_set() -> None:
    classes = build_classes(SynthConfig(n_classes=6))
    pre = [c for c in classes if c.group == "pretrain"]
    # Drop every pre-training class that uses "heart": coverage of that shape falls to 0.
    thinned = [c for c in classes if not (c.group == "pretrain" and c.shape == "heart")]
    assert len(thinned) < len(classes) and any(c.shape == "heart" for c in pre)
    with pytest.raises(DataError, match="shape"):
        check_pretrain_coverage(thinned)


def test_pitch_follows_colour_and_timbre_follows_shape_in_every_class() -> None:
    classes = build_classes(SynthConfig(n_classes=40, n_pretrain_classes=48))
    assert len(set(synth_classes.PITCH_OF_COLOUR.values())) == len(synth_render.COLOURS)   # colour <-> pitch is one-to-one
    assert set(synth_classes.TIMBRE_OF_SHAPE) == set(synth_render.SHAPES)
    for c in classes:
        assert c.pitch == synth_classes.PITCH_OF_COLOUR[c.colour] and c.timbre == synth_classes.TIMBRE_OF_SHAPE[c.shape], c
    # Neighbouring colours get neighbouring pitches: warm colours sound low.
    pitches = list(synth_render.PITCHES.values())
    assert [synth_render.PITCHES[synth_classes.PITCH_OF_COLOUR[c]] for c in synth_render.COLOURS] == sorted(pitches)


def test_most_classes_need_one_modality_and_lookalike_pairs_need_both() -> None:
    k = 40
    inc = [c for c in build_classes(SynthConfig(n_classes=k)) if c.group == "incremental"]
    by_label = {c.label: c for c in inc}
    twins = [c for c in inc if c.twin is not None]
    assert len(twins) == 2 * round(0.25 * k / 2)                  # 5 pairs, 10 classes
    assert {c.twin_kind for c in twins} == {"same-picture", "same-sound"}
    for c in twins:
        other = by_label[c.twin]
        assert other.twin == c.label and other.twin_kind == c.twin_kind
        if c.twin_kind == "same-picture":
            assert c.visual == other.visual and c.audio != other.audio
        else:
            assert c.audio == other.audio and c.visual != other.visual
    by_visual, by_audio = Counter(c.visual for c in inc), Counter(c.audio for c in inc)
    for c in inc:
        if c.twin is None:  # one modality alone identifies every class outside a pair
            assert by_visual[c.visual] == 1 and by_audio[c.audio] == 1, c
    none = [c for c in build_classes(SynthConfig(n_classes=k, lookalike_fraction=0.0)) if c.group == "incremental"]
    assert all(c.twin is None for c in none)
    assert len({c.visual for c in none}) == k and len({c.audio for c in none}) == k


def test_bad_lookalike_fraction_is_refused() -> None:
    with pytest.raises(DataError, match="lookalike_fraction must be a number in"):
        SynthConfig(lookalike_fraction=1.5)


def test_too_many_classes_names_the_maximum() -> None:
    limit = max_incremental_classes(24)
    assert limit >= 150
    with pytest.raises(DataError, match=f"maximum is {limit}"):
        SynthConfig(n_classes=limit + 1)
    with pytest.raises(DataError, match="n_pretrain_classes"):
        SynthConfig(n_pretrain_classes=10)
    with pytest.raises(DataError, match="noise_level"):
        SynthConfig(regime="noisy", noise_level=-0.5)


# --------------------------------------------------------------------------------- regimes


def test_corruption_rates_scale_with_noise_level() -> None:
    assert sum(SynthConfig(regime="clean", noise_level=2.0).corruption_rates().values()) == 0.0
    assert sum(SynthConfig(regime="noisy", noise_level=0.0).corruption_rates().values()) == 0.0
    assert sum(SynthConfig(regime="noisy").corruption_rates().values()) == pytest.approx(0.45)
    assert sum(SynthConfig(regime="noisy", noise_level=2.0).corruption_rates().values()) == pytest.approx(0.90)
    heavy = SynthConfig(regime="noisy", noise_level=5.0).corruption_rates()
    assert sum(heavy.values()) == pytest.approx(1.0) and set(heavy) == set(CORRUPTIONS)
    # A clean config ignores the noise level, so both describe the same dataset.
    assert SynthConfig(noise_level=2.0).to_json() == SynthConfig().to_json()


def test_noisy_regime_corrupts_train_and_test_at_the_configured_rate(pair: tuple[Path, Path]) -> None:
    clean_rows, noisy_rows = _read_manifest(pair[0]), _read_manifest(pair[1])
    assert all(r["corruption"] == "" for r in clean_rows)
    assert json.loads((pair[1] / "classes.json").read_text())["name"] == "synav-noisy"
    inc = [r for r in noisy_rows if r["split"] != "pretrain"]
    kinds = Counter(r["corruption"] for r in inc)
    assert set(kinds) <= {"", *CORRUPTIONS}
    rate = 1 - kinds[""] / len(inc)
    assert 0.3 <= rate <= 0.6, kinds  # configured 0.45 on 90 samples
    assert {r["split"] for r in inc if r["corruption"]} == {"train", "test"}
    assert all(r["corruption"] == "" for r in noisy_rows if r["split"] == "pretrain")


def test_noisy_differs_from_clean_exactly_where_corrupted(pair: tuple[Path, Path]) -> None:
    clean, noisy = pair
    seen = set()
    for c_row, n_row in zip(_read_manifest(clean), _read_manifest(noisy)):
        assert c_row["sample_id"] == n_row["sample_id"] and c_row["label"] == n_row["label"]
        kind = n_row["corruption"]
        same_image = _sha(clean / c_row["image_path"]) == _sha(noisy / n_row["image_path"])
        same_audio = _sha(clean / c_row["audio_path"]) == _sha(noisy / n_row["audio_path"])
        assert same_image == (not kind.startswith("image-")), n_row
        assert same_audio == (not kind.startswith("audio-")), n_row
        seen.add(kind)
        if kind == "audio-silent":
            wave, _ = sf.read(noisy / n_row["audio_path"])
            assert np.abs(wave).max() < 0.01
    assert len(seen) >= 4, seen  # most kinds occur even on this small set


# --------------------------------------------------------------------------------- existing output


def test_existing_output_is_reused_or_refused(tiny: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    manifest = tiny / "manifest.csv"
    before = manifest.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="mcil.data.synth"):
        assert generate(tiny, SynthConfig(seed=3, **TINY)) == tiny
    assert manifest.stat().st_mtime_ns == before
    assert "skipping" in caplog.text

    with pytest.raises(DataError, match="another config.*seed.*delete it or choose another --out"):
        generate(tiny, SynthConfig(seed=4, **TINY))

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a dataset")
    with pytest.raises(DataError, match="not a complete synav dataset"):
        generate(foreign, SynthConfig(seed=3, **TINY))
    assert (foreign / "notes.txt").read_text() == "not a dataset"

    empty = tmp_path / "empty"
    empty.mkdir()
    generate(empty, SynthConfig(seed=3, **TINY))
    assert _digests(empty) == _digests(tiny)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_cli_reuses_dataset_and_reports_bad_input(tiny: Path) -> None:
    args = ["synth", "--out", str(tiny), "--seed", "3", "--n-classes", "6", "--train-per-class", "3",
            "--test-per-class", "2", "--pretrain-per-class", "1"]
    assert cli_main(args) == 0
    assert cli_main(["synth", "--out", str(tiny.parent / "x"), "--n-classes", "100000"]) == 2
    assert not (tiny.parent / "x").exists()


# --------------------------------------------------------------------------------- probe


def test_ridge_probe_separates_separable_classes() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, size=(4, 5))
    y = np.repeat(np.arange(4), 30)
    x = centres[y] + rng.normal(0, 0.3, size=(120, 5))
    w = ridge_fit(x, np.eye(4)[y], 1.0)
    pred = (np.hstack([x, np.ones((120, 1))]) @ w).argmax(axis=1)
    assert (pred == y).mean() == 1.0
    # The SVD solution is the normal-equation solution with an unpenalised bias.
    xb = np.hstack([x, np.ones((120, 1))])
    reg = np.eye(6)
    reg[-1, -1] = 0.0
    direct = np.linalg.solve(xb.T @ xb + reg, xb.T @ np.eye(4)[y])
    np.testing.assert_allclose(w, direct, atol=1e-8)


def test_linear_probe_reports_each_modality(pair: tuple[Path, Path]) -> None:
    result = linear_probe(pair[1])
    assert result["n_classes"] == 6 and result["n_train"] == 60 and result["n_test"] == 30
    for key in ("image", "audio", "both"):
        assert 0.0 <= result[key] <= 100.0
    kinds = Counter(r["corruption"] for r in _read_manifest(pair[1]) if r["split"] == "test")
    assert set(result["both_by_corruption"]) == set(kinds)
    with pytest.raises(DataError, match="mcil synth"):
        linear_probe(pair[1].parent / "missing")


def test_manifest_twin_pairs_are_the_written_lookalike_pairs(tmp_path: Path) -> None:
    """classes.json's ``twin`` reaches the scenario as sorted label pairs (what separate_twins reads)."""
    from mcil.data.manifest import read_manifest

    root = generate(tmp_path / "sv", SynthConfig(n_classes=8, train_per_class=1, test_per_class=1,
                                                  pretrain_per_class=1, lookalike_fraction=0.5))
    meta = json.loads((root / "classes.json").read_text())
    expected = sorted({tuple(sorted((c["label"], c["twin"]))) for c in meta["classes"]
                       if c["group"] == "incremental" and c.get("twin") is not None})
    assert len(expected) == 2 and read_manifest(root).twin_pairs == expected
