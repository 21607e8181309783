"""synav's classes: the config that fixes them, the cross-modal correspondence and the draw.

Every class is a composition of six named attributes and its name is the words for them
(:mod:`mcil.data.synth_render` holds the vocabulary); :mod:`mcil.data.synth` renders the samples
of these classes and writes the dataset. Nothing here touches a file.

Class design (why it looks like this)
-------------------------------------
*Complementary modalities.* The K incremental classes are the edges of a cycle that alternates
between ⌈K/2⌉ visual prototypes and ⌈K/2⌉ audio prototypes: class ``e`` uses visual prototype
``e // 2`` and audio prototype ``⌈e/2⌉ mod ⌈K/2⌉``. Every picture is therefore shared by two
classes that differ only in their sound, and every sound by two classes that differ only in their
picture. Image-only or audio-only recognition is capped near 50 %, while the pair (picture, sound)
identifies the class: fusing the modalities is necessary, which is what the method under study is
about. Labels are a seeded shuffle of the cycle so that neighbouring labels carry no structure.

*Compositional pre-training.* P pre-training classes (labels ``K..K+P-1``, split ``pretrain``
only) are drawn first, from the seed alone, so the same backbone fits every K. Their visual
triples and audio triples are all distinct and never reused by an incremental class (so every
incremental picture, sound and name is unseen during pre-training), yet together they use every
attribute value at least ``MIN_COVERAGE`` = 3 times, so a text encoder pre-trained on them has seen
every word in several contexts and can generalise to the unseen incremental combinations.
This is checked in code (:func:`check_pretrain_coverage`). K can reach
``2 · min(256 − P, 216 − P)`` (384 with P = 24).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mcil.data.synth_render import COLOURS, PITCHES, RHYTHMS, SHAPES, TEXTURES, TIMBRES
from mcil.errors import DataError

__all__ = [
    "PITCH_OF_COLOUR",
    "TIMBRE_OF_SHAPE",
    "ATTRIBUTE_VALUES",
    "VISUAL_ATTRIBUTES",
    "AUDIO_ATTRIBUTES",
    "CORRUPTIONS",
    "DEFAULT_CORRUPTION_RATES",
    "MIN_COVERAGE",
    "GENERATOR_VERSION",
    "SynthConfig",
    "SynavClass",
    "min_pretrain_classes",
    "build_classes",
    "max_incremental_classes",
    "check_pretrain_coverage",
]

# The global cross-modal correspondence (as a dog looks and sounds like a dog): a class's colour fixes
# its pitch (warm → low, along the hue circle) and its shape fixes its timbre (round → pure, angular →
# buzzing, pointed → sharp). Texture is private to the picture, rhythm private to the sound. Every
# class of every split follows it, pre-training classes included, so a backbone that learns it from
# the pre-training classes can tell a matching picture–sound pair of an *unseen* class from a
# mismatched one, and the noisy regime's swapped sounds break it.
PITCH_OF_COLOUR: dict[str, str] = dict(zip(COLOURS, PITCHES))
TIMBRE_OF_SHAPE: dict[str, str] = {
    "circle": "whistle", "ring": "whistle",
    "square": "buzz", "cross": "buzz",
    "triangle": "reed", "star": "rasp",
    "diamond": "bell", "heart": "hum",
}

VISUAL_ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "texture")
AUDIO_ATTRIBUTES: tuple[str, ...] = ("pitch", "timbre", "rhythm")
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "texture": TEXTURES,
    "pitch": tuple(PITCHES),
    "timbre": TIMBRES,
    "rhythm": RHYTHMS,
}

CORRUPTIONS: tuple[str, ...] = ("audio-silent", "audio-noise", "audio-swap", "image-occlusion", "image-blur")
# Rates at noise_level = 1 (sum 0.45): roughly miniARIC's share of unhelpful samples.
DEFAULT_CORRUPTION_RATES: dict[str, float] = {
    "audio-silent": 0.10,
    "audio-noise": 0.10,
    "audio-swap": 0.10,
    "image-occlusion": 0.08,
    "image-blur": 0.07,
}

MIN_COVERAGE = 3
GENERATOR_VERSION = 2


@dataclass(frozen=True)
class SynthConfig:
    """What to generate. Validated on construction; the CLI flags map one-to-one onto fields.

    ``noise_level`` scales the corruption rates of the ``noisy`` regime and is ignored (treated
    as 0) for ``clean``.
    """

    regime: str = "clean"
    seed: int = 0
    n_classes: int = 40
    train_per_class: int = 40
    test_per_class: int = 20
    n_pretrain_classes: int = 24
    pretrain_per_class: int = 40
    noise_level: float = 1.0
    lookalike_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.regime not in ("clean", "noisy"):
            raise DataError(f"synav regime {self.regime!r} is unknown; use 'clean' or 'noisy'")
        for name in ("seed", "n_classes", "train_per_class", "test_per_class", "n_pretrain_classes",
                     "pretrain_per_class"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise DataError(f"synav {name} must be an integer, got {value!r}")
            object.__setattr__(self, name, int(value))  # plain int: JSON-serialisable, hashable
        if self.seed < 0:
            raise DataError(f"synav seed must be >= 0, got {self.seed}")
        for name in ("train_per_class", "test_per_class", "pretrain_per_class"):
            if getattr(self, name) < 1:
                raise DataError(f"synav {name} must be >= 1, got {getattr(self, name)}")
        if self.n_classes < 2:
            raise DataError(f"synav n_classes must be >= 2 (class-incremental learning), got {self.n_classes}")
        min_pretrain = min_pretrain_classes()
        if self.n_pretrain_classes < min_pretrain:
            raise DataError(
                f"synav n_pretrain_classes={self.n_pretrain_classes} cannot use every attribute value "
                f"{MIN_COVERAGE} times; use at least {min_pretrain}"
            )
        limit = max_incremental_classes(self.n_pretrain_classes)
        if self.n_classes > limit:
            raise DataError(
                f"synav n_classes={self.n_classes} is more than the attribute combinations allow with "
                f"{self.n_pretrain_classes} pre-training classes; the maximum is {limit}"
            )
        if (isinstance(self.noise_level, bool) or not isinstance(self.noise_level, (int, float, np.floating))
                or not math.isfinite(self.noise_level) or self.noise_level < 0):
            raise DataError(f"synav noise_level must be a finite number >= 0, got {self.noise_level!r}")
        object.__setattr__(self, "noise_level", float(self.noise_level))
        if (isinstance(self.lookalike_fraction, bool) or not isinstance(self.lookalike_fraction, (int, float))
                or not 0.0 <= self.lookalike_fraction <= 1.0):
            raise DataError(f"synav lookalike_fraction must be a number in [0, 1], got {self.lookalike_fraction!r}")
        object.__setattr__(self, "lookalike_fraction", float(self.lookalike_fraction))

    @property
    def name(self) -> str:
        return f"synav-{self.regime}"

    def corruption_rates(self) -> dict[str, float]:
        """Per-sample probability of each corruption kind (mutually exclusive)."""
        if self.regime == "clean":
            return {kind: 0.0 for kind in CORRUPTIONS}
        rates = {kind: DEFAULT_CORRUPTION_RATES[kind] * float(self.noise_level) for kind in CORRUPTIONS}
        total = sum(rates.values())
        if total > 1.0:
            rates = {kind: rate / total for kind, rate in rates.items()}
        return rates

    def to_json(self) -> dict[str, Any]:
        """Canonical description stored as ``synth_config.json``; equal dicts ⇔ identical datasets."""
        data = dataclasses.asdict(self)
        data["noise_level"] = 0.0 if self.regime == "clean" else float(self.noise_level)
        data["generator_version"] = GENERATOR_VERSION
        return data

    def expected_rows(self) -> int:
        return self.n_classes * (self.train_per_class + self.test_per_class) + (
            self.n_pretrain_classes * self.pretrain_per_class
        )


@dataclass(frozen=True)
class SynavClass:
    """One class: its label, group and six attributes; the name is the attribute words.

    ``twin``: the label of its look-alike (an incremental class with the same picture and another
    sound, ``twin_kind == "same-picture"``, or the same sound and another picture, ``"same-sound"``),
    or None. Pitch and timbre always follow :data:`PITCH_OF_COLOUR` and :data:`TIMBRE_OF_SHAPE`.
    """

    label: int
    group: str  # "incremental" | "pretrain"
    shape: str
    colour: str
    texture: str
    pitch: str
    timbre: str
    rhythm: str
    twin: int | None = None
    twin_kind: str | None = None

    @property
    def visual(self) -> tuple[str, str, str]:
        return (self.shape, self.colour, self.texture)

    @property
    def audio(self) -> tuple[str, str, str]:
        return (self.pitch, self.timbre, self.rhythm)

    @property
    def name(self) -> str:
        return f"{self.colour} {self.texture} {self.shape}, {self.pitch} {self.rhythm} {self.timbre}"

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "name": self.name,
            "group": self.group,
            "shape": self.shape,
            "colour": self.colour,
            "texture": self.texture,
            "pitch": self.pitch,
            "timbre": self.timbre,
            "rhythm": self.rhythm,
            "twin": self.twin,
            "twin_kind": self.twin_kind,
        }


def min_pretrain_classes() -> int:
    """Fewest pre-training classes that can use every attribute value MIN_COVERAGE times."""
    return MIN_COVERAGE * max(len(v) for v in ATTRIBUTE_VALUES.values())


#: The attributes a class is drawn from; pitch and timbre follow from colour and shape.
FREE_ATTRIBUTES: tuple[str, ...] = ("shape", "colour", "texture", "rhythm")


def _visual_key(row: dict[str, str]) -> tuple[str, str, str]:
    return (row["shape"], row["colour"], row["texture"])


def _audio_key(row: dict[str, str]) -> tuple[str, str, str]:
    return (PITCH_OF_COLOUR[row["colour"]], TIMBRE_OF_SHAPE[row["shape"]], row["rhythm"])


def _n_visual() -> int:
    return len(SHAPES) * len(COLOURS) * len(TEXTURES)


def _n_audio() -> int:
    return len(PITCHES) * len(set(TIMBRE_OF_SHAPE.values())) * len(RHYTHMS)


def max_incremental_classes(n_pretrain_classes: int = 24) -> int:
    """Largest K offered: every class needs a picture and a sound unused by pre-training and by the
    others (a look-alike shares one of the two with its twin). The random greedy draw of
    :func:`_incremental_attributes` is not a maximum matching, so the bound keeps a quarter in hand."""
    return max(0, 3 * (min(_n_visual(), _n_audio()) - n_pretrain_classes) // 4)


def _pretrain_attributes(seed: int, n: int) -> list[dict[str, str]]:
    """n attribute rows, each value used ⌊n/len⌋ or ⌈n/len⌉ times, distinct pictures and sounds.

    Balanced columns guarantee the coverage; a collision is repaired by swapping one attribute
    between two rows, which keeps the per-value counts unchanged.
    """
    rng = np.random.default_rng([seed, 7001])
    if n > min(_n_visual(), _n_audio()):
        raise DataError(f"synav: {n} pre-training classes exceed the {min(_n_visual(), _n_audio())} combinations")
    columns: dict[str, list[str]] = {}
    for attr in FREE_ATTRIBUTES:
        values = ATTRIBUTE_VALUES[attr]
        base = [values[i % len(values)] for i in range(n)]
        columns[attr] = [base[j] for j in rng.permutation(n)]

    def rows() -> list[dict[str, str]]:  # the current columns, read row-wise
        return [{a: columns[a][i] for a in FREE_ATTRIBUTES} for i in range(n)]

    for _ in range(100_000):
        duplicate, group = -1, ()
        for key_of, attrs in ((_visual_key, ("shape", "colour", "texture")), (_audio_key, ("colour", "shape", "rhythm"))):
            seen: set[tuple[str, ...]] = set()
            for i, row in enumerate(rows()):
                key = key_of(row)
                if key in seen:
                    duplicate, group = i, attrs
                    break
                seen.add(key)
            if duplicate >= 0:
                break
        if duplicate < 0:
            break
        j = int(rng.integers(n))
        col = columns[group[int(rng.integers(len(group)))]]
        col[duplicate], col[j] = col[j], col[duplicate]
    else:  # pragma: no cover - only reachable for n close to the number of combinations
        raise DataError(f"synav: could not draw {n} distinct pre-training classes; use fewer")
    return [{**row, "pitch": PITCH_OF_COLOUR[row["colour"]], "timbre": TIMBRE_OF_SHAPE[row["shape"]]} for row in rows()]


def _incremental_attributes(config: SynthConfig, pre_rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """K attribute rows: distinct-enough classes plus ``round(lookalike_fraction · K / 2)`` twins.

    Base classes have a picture and a sound of their own (one modality suffices). Each twin copies a
    base class's picture and changes its rhythm (same picture, another sound) or copies its sound and
    changes its texture or its shape within the timbre's pair (same sound, another picture): those
    pairs need the other modality. Twins alternate between the two kinds. Row ``i`` of the twins
    records its base's index in ``twin_of``.
    """
    k = config.n_classes
    n_twins = int(round(config.lookalike_fraction * k / 2))
    n_twins = min(n_twins, k // 2)
    rng = np.random.default_rng([config.seed, 7002])
    used_visual = {_visual_key(r) for r in pre_rows}
    used_audio = {_audio_key(r) for r in pre_rows}
    candidates = list(itertools.product(SHAPES, COLOURS, TEXTURES, RHYTHMS))
    rows: list[dict[str, Any]] = []
    for idx in rng.permutation(len(candidates)):
        if len(rows) == k - n_twins:
            break
        row = dict(zip(FREE_ATTRIBUTES, candidates[int(idx)]))
        if _visual_key(row) in used_visual or _audio_key(row) in used_audio:
            continue
        used_visual.add(_visual_key(row))
        used_audio.add(_audio_key(row))
        rows.append(row)
    if len(rows) < k - n_twins:
        raise DataError(f"synav n_classes={k} needs more pictures and sounds than remain; the maximum is "
                        f"{max_incremental_classes(config.n_pretrain_classes)}")
    shapes_of_timbre = {t: [s for s, tt in TIMBRE_OF_SHAPE.items() if tt == t] for t in set(TIMBRE_OF_SHAPE.values())}
    twins: list[dict[str, Any]] = []
    for i, base in enumerate(rows):  # a base without a free twin (K near the maximum) is skipped
        if len(twins) == n_twins:
            break
        kind = "same-picture" if len(twins) % 2 == 0 else "same-sound"
        if kind == "same-picture":
            options = [{**base, "rhythm": r} for r in RHYTHMS if r != base["rhythm"]]
            free = [o for o in options if _audio_key(o) not in used_audio]
        else:
            options = [{**base, "texture": t} for t in TEXTURES if t != base["texture"]]
            options += [{**base, "shape": sh} for sh in shapes_of_timbre[TIMBRE_OF_SHAPE[base["shape"]]]
                        if sh != base["shape"]]
            free = [o for o in options if _visual_key(o) not in used_visual]
        if not free:
            continue
        twin = free[int(rng.integers(len(free)))]
        used_audio.add(_audio_key(twin))
        used_visual.add(_visual_key(twin))
        twins.append({**twin, "twin_of": i, "twin_kind": kind})
    if len(twins) < n_twins:
        raise DataError(f"synav: only {len(twins)} of {n_twins} look-alike pairs fit with n_classes={k}; "
                        "lower lookalike_fraction or n_classes")
    rows += twins
    return [{**r, "pitch": PITCH_OF_COLOUR[r["colour"]], "timbre": TIMBRE_OF_SHAPE[r["shape"]]} for r in rows]


def check_pretrain_coverage(classes: Iterable[SynavClass], minimum: int = MIN_COVERAGE) -> None:
    """Raise unless the pre-training classes use every attribute value at least `minimum` times."""
    pretrain = [c for c in classes if c.group == "pretrain"]
    for attr, values in ATTRIBUTE_VALUES.items():
        counts = Counter(getattr(c, attr) for c in pretrain)
        thin = [v for v in values if counts[v] < minimum]
        if thin:
            raise DataError(
                f"synav pre-training classes use {attr} values {thin} fewer than {minimum} times; "
                "increase n_pretrain_classes"
            )


def build_classes(config: SynthConfig) -> list[SynavClass]:
    """All classes, incremental (labels 0..K-1) then pre-training (K..K+P-1).

    Pre-training classes depend only on (seed, P); incremental classes use pictures and sounds that
    pre-training does not, and get their labels from a seeded shuffle (twins included).
    """
    k, p = config.n_classes, config.n_pretrain_classes
    pre_rows = _pretrain_attributes(config.seed, p)
    inc_rows = _incremental_attributes(config, pre_rows)
    rng = np.random.default_rng([config.seed, 7003])
    label_of = [int(x) for x in rng.permutation(k)]  # row i gets label label_of[i]
    twin_label: dict[int, tuple[int, str]] = {}
    for i, row in enumerate(inc_rows):
        if "twin_of" in row:
            base = label_of[row["twin_of"]]
            twin_label[label_of[i]] = (base, row["twin_kind"])
            twin_label[base] = (label_of[i], row["twin_kind"])
    by_label = sorted(range(k), key=lambda i: label_of[i])
    classes: list[SynavClass] = []
    for i in by_label:
        row, label = inc_rows[i], label_of[i]
        twin, kind = twin_label.get(label, (None, None))
        classes.append(SynavClass(label, "incremental", *(row[a] for a in VISUAL_ATTRIBUTES + AUDIO_ATTRIBUTES),
                                  twin=twin, twin_kind=kind))
    for i, row in enumerate(pre_rows):
        classes.append(SynavClass(k + i, "pretrain", *(row[a] for a in VISUAL_ATTRIBUTES + AUDIO_ATTRIBUTES)))

    # The contract this module promises; cheap, so always checked.
    check_pretrain_coverage(classes)
    inc = [c for c in classes if c.group == "incremental"]
    pre = [c for c in classes if c.group == "pretrain"]
    if {c.visual for c in inc} & {c.visual for c in pre} or {c.audio for c in inc} & {c.audio for c in pre}:
        raise RuntimeError("synav: pre-training pictures or sounds leaked into incremental classes")
    if any(PITCH_OF_COLOUR[c.colour] != c.pitch or TIMBRE_OF_SHAPE[c.shape] != c.timbre for c in classes):
        raise RuntimeError("synav: a class breaks the colour-pitch / shape-timbre correspondence")
    if len({c.name for c in classes}) != len(classes):
        raise RuntimeError("synav: duplicate class names")
    return classes
