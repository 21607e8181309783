"""Typed run configuration: dataclasses, YAML loading, dotted overrides, validation, hashing.

One :class:`RunConfig` describes one `mcil train` job. It is validated at the edge (here), so the
rest of the code can trust its values. Every error names the dotted key, the offending value and
what is allowed.

Method-specific options live in ``method.options`` (a free mapping here); each learner declares
its own options dataclass and parses it with :func:`parse_dataclass`, so validation of those keys
happens when the learner is built, with the same error format.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mcil.errors import UserError

__all__ = [
    "ConfigError",
    "DataConfig",
    "ScenarioConfig",
    "BackboneConfig",
    "MethodConfig",
    "FusionConfig",
    "LossConfig",
    "OptimConfig",
    "RunConfig",
    "parse_dataclass",
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_hash",
]


class ConfigError(UserError, ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to read and where the tensor cache lives.

    ``root`` holds ``manifest.csv`` (+ ``classes.json``); ``cache_dir`` the decoded tensors.
    ``val_per_class`` train samples of each class are held out as the validation split (never
    trained on, mcil/data/splits.py); ``eval_split`` says what the accuracy matrix is measured on:
    ``test`` (reported numbers) or ``val`` (choosing settings).
    ``missing_*`` drop a modality from a fraction of samples (modality-absence study); the
    choice of samples is a pure function of ``absence_seed`` and the sample id.
    """

    name: str = "synav"
    root: str = "data/synav-clean"
    cache_dir: str = "data/cache"
    feature_cache: bool = True
    missing_audio_train: float = 0.0
    missing_audio_test: float = 0.0
    missing_image_train: float = 0.0
    missing_image_test: float = 0.0
    absence_seed: int = 0
    num_workers: int = 0
    val_per_class: int = 0
    eval_split: Literal["test", "val"] = "test"

    def validate(self, prefix: str) -> None:
        for name in ("missing_audio_train", "missing_audio_test", "missing_image_train", "missing_image_test"):
            _check_range(f"{prefix}.{name}", getattr(self, name), 0.0, 1.0)
        _check_min(f"{prefix}.num_workers", self.num_workers, 0)
        _check_min(f"{prefix}.val_per_class", self.val_per_class, 0)
        if self.eval_split == "val" and self.val_per_class == 0:
            raise ConfigError(f"{prefix}.eval_split=val needs {prefix}.val_per_class > 0 (the validation "
                              f"samples carved from each class's train samples)")
        if not self.root:
            raise ConfigError(f"{prefix}.root: empty; set it to the dataset folder that holds manifest.csv")


@dataclass(frozen=True)
class ScenarioConfig:
    """Class-incremental split: a class order cut into ``n_tasks`` tasks.

    Either give ``n_tasks`` (classes spread as evenly as possible, remainder to the first task) or
    ``initial`` + ``increment`` (as continuum does); ``order`` is ``random`` (permutation seeded by
    ``order_seed``), ``sorted`` (label order), ``paper`` (the paper's stored order for the dataset)
    or an explicit list of labels. ``separate_twins``: a random order puts the two classes of each
    look-alike pair of the dataset (``twin`` in classes.json, synav) in different tasks.
    """

    n_tasks: int | None = 5
    initial: int | None = None
    increment: int | None = None
    order: str | list[int] = "random"
    order_seed: int = 0
    separate_twins: bool = True

    def validate(self, prefix: str) -> None:
        if self.n_tasks is None and (self.initial is None or self.increment is None):
            raise ConfigError(f"{prefix}: give n_tasks, or both initial and increment")
        if self.n_tasks is not None:
            _check_min(f"{prefix}.n_tasks", self.n_tasks, 1)
        if self.initial is not None:
            _check_min(f"{prefix}.initial", self.initial, 1)
        if self.increment is not None:
            _check_min(f"{prefix}.increment", self.increment, 1)
        if isinstance(self.order, str) and self.order not in ("random", "sorted", "paper"):
            raise ConfigError(
                f"{prefix}.order: {self.order!r} is not allowed; use 'random', 'sorted', 'paper' or a list of labels"
            )
        if isinstance(self.order, list) and len(set(self.order)) != len(self.order):
            raise ConfigError(f"{prefix}.order: the class order repeats a label: {self.order}")


@dataclass(frozen=True)
class BackboneConfig:
    """Frozen pre-trained model: ``tiny`` (pre-trained by the pipeline) or ``audioclip``."""

    name: str = "tiny"
    checkpoint: str = "checkpoints/tiny.pt"
    allow_unknown_checkpoint: bool = True

    def validate(self, prefix: str) -> None:
        if not self.checkpoint:
            raise ConfigError(f"{prefix}.checkpoint: empty; set it to the backbone checkpoint file")


@dataclass(frozen=True)
class MethodConfig:
    """Learner name (see ``mcil.learners.registry``) and its options, validated by the learner."""

    name: str = "mcil"
    preset: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self, prefix: str) -> None:
        if not self.name:
            raise ConfigError(f"{prefix}.name: empty; name a registered learner (mcil list-methods)")


GateMode = Literal["batch", "sample", "always", "never", "adaptive"]
AttentionMode = Literal["sample", "batch-official"]


@dataclass(frozen=True)
class FusionConfig:
    """AAVFM masking threshold: fuse audio only where Pearson r(f_v, f_a) >= th.

    ``gate``: ``always`` (default: fuse every sample that has both modalities), ``batch`` (the
    paper and official code, with th = 0.8: batch-mean r decides for the batch), ``sample`` (per
    sample), ``never`` (image only), ``adaptive`` (th = the ``adaptive_quantile`` of r over the
    current task's training data, re-estimated per task). Why ``always`` and not ``batch`` at 0.8:
    th = 0.8 never opens — not on the tiny backbone (paired r ≈ 0.1, and its quantiles equal those
    of shuffled pairs, so r carries no pairing information there) and not in the official released
    runs (their fused feature equals the image feature) — so the paper's setting is image-only in
    practice; docs/method.md. The masking threshold stays one key away (``fusion.gate=batch``). ``attention``: ``sample`` (default,
    per-sample cross-attention over modality tokens) or ``batch-official`` (the official code's
    attention across batch samples, shape-corrected).
    """

    th: float = 0.8
    gate: GateMode = "always"
    attention: AttentionMode = "sample"
    adaptive_quantile: float = 0.5

    def validate(self, prefix: str) -> None:
        _check_range(f"{prefix}.th", self.th, -1.0, 1.0)
        _check_range(f"{prefix}.adaptive_quantile", self.adaptive_quantile, 0.0, 1.0)


@dataclass(frozen=True)
class LossConfig:
    """L = alpha * L_CW + (1 - alpha) * L_MI.

    ``cw``: ``official`` (default: the official weights cancel, so L_CW is plain cross-entropy) or
    ``weighted`` (image-similarity-softened targets, a reading of the paper's intent; measured on
    synav it lowers accuracy and collapses at lr 1e-3 — docs/method.md). ``mi_reduction``:
    ``mean`` over the batch (default) or ``sum`` (official).

    L_MI, three keys (docs/method.md, "L_MI and what α means"):

    - ``mi_estimator``: ``official`` (default: the official softmax estimator over the D feature
      entries; unbounded, so it never saturates) or ``infonce`` (symmetric InfoNCE over the fused
      samples on cosines at τ = 1/s, the classifier's temperature; bounded by log n).
    - ``mi_input`` (``official`` estimator only): ``unit-rms`` (default: unit features times
      sqrt(D), so the softmax sees O(1) entries) or ``official`` (unit features as they are: the
      softmax is almost uniform and L_MI's gradient ~1/100 of L_CW's).
    - ``mi_scale``: ``grad-norm`` (default) multiplies L_MI by stop-grad(‖∂L_CW/∂f‖ / ‖∂L_MI/∂f‖)
      on the fused features f, so α is the share of the gradient that L_CW gets; ``none``
      (official) adds L_MI as it is. Why grad-norm is the default (a gradient measurement, not an
      accuracy one): without it the measured ‖∇L_MI‖/‖∇L_CW‖ on the fusion parameters swings by
      6–90× between tasks for every estimator (L_CW saturates on easy tasks; the official
      estimator never does) and sits at ~1/200 (``mi_input=official``: α ∈ {0.3, 0.7, 1} give
      identical runs) or 6–1.5·10⁵ (``unit-rms``: L_MI dominates at every α < 1); with it the
      ratio is 1 on the fused features and 0.4–2.6 on the fusion parameters in every task
      (default synav run, 3 seeds).
      Under grad-norm ``mi_reduction`` has no effect (the weight cancels any constant).

    ``label_smoothing`` as in the official code (0.0).
    """

    alpha: float = 0.7
    cw: Literal["weighted", "official"] = "official"
    mi_reduction: Literal["mean", "sum"] = "mean"
    mi_input: Literal["unit-rms", "official"] = "unit-rms"
    mi_estimator: Literal["official", "infonce"] = "official"
    mi_scale: Literal["none", "grad-norm"] = "grad-norm"
    label_smoothing: float = 0.0

    def validate(self, prefix: str) -> None:
        _check_range(f"{prefix}.alpha", self.alpha, 0.0, 1.0)
        _check_range(f"{prefix}.label_smoothing", self.label_smoothing, 0.0, 1.0)


@dataclass(frozen=True)
class OptimConfig:
    """Per-task AdamW with linear warm-up then half-cosine decay (official ``cosine_lr``)."""

    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 16
    eval_batch_size: int = 64
    epochs: int = 1
    warmup_steps: int = 30
    pairing: Literal["aligned", "official-shuffled"] = "aligned"
    grad_clip: float | None = None

    def validate(self, prefix: str) -> None:
        if not (self.lr > 0):
            raise ConfigError(f"{prefix}.lr: {self.lr!r} must be > 0")
        _check_min(f"{prefix}.weight_decay", self.weight_decay, 0.0)
        _check_min(f"{prefix}.batch_size", self.batch_size, 1)
        _check_min(f"{prefix}.eval_batch_size", self.eval_batch_size, 1)
        _check_min(f"{prefix}.epochs", self.epochs, 1)
        _check_min(f"{prefix}.warmup_steps", self.warmup_steps, 0)
        if self.grad_clip is not None and not (self.grad_clip > 0):
            raise ConfigError(f"{prefix}.grad_clip: {self.grad_clip!r} must be > 0 or null")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run. Its hash names the run's output folder.

    ``eval_future``: after task t, evaluate every task (``all``, default: the full T×T matrix)
    or the seen ones and task t+1 only (``next``: every metric mcil reports reads only the lower
    triangle and ``A[t][t+1]`` — GEM's FWT —, and M1's "last batch" is always a seen task's; the
    other entries above the diagonal are null). ``next`` changes no metric (tested), saves a
    fifth of the evaluations at T = 5 and half at large T (T = 100: 5,150 instead of 10,100).
    """

    data: DataConfig = field(default_factory=DataConfig)
    scenario: ScenarioConfig = field(default_factory=ScenarioConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train_seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16"] = "none"
    checkpoint_every: int = 200
    eval_template: Literal["single", "average"] = "single"
    eval_future: Literal["all", "next"] = "all"

    def validate(self, prefix: str = "") -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value.validate(_join(prefix, f.name))
        _check_min(_join(prefix, "checkpoint_every"), self.checkpoint_every, 1)

    def check_n_classes(self, n_classes: int) -> None:
        """Checks that depend on the dataset: T must not exceed the number of classes."""
        s = self.scenario
        if s.n_tasks is not None and s.n_tasks > n_classes:
            raise ConfigError(
                f"scenario.n_tasks: {s.n_tasks} is larger than the {n_classes} incremental classes of "
                f"dataset {self.data.name!r}; allowed: 1..{n_classes}"
            )
        if s.initial is not None and s.initial > n_classes:
            raise ConfigError(f"scenario.initial: {s.initial} exceeds the {n_classes} classes; allowed: 1..{n_classes}")
        if isinstance(s.order, list):
            bad = sorted(set(s.order) ^ set(range(n_classes)))
            if bad:
                raise ConfigError(
                    f"scenario.order: must be a permutation of 0..{n_classes - 1}; labels missing or extra: {bad[:10]}"
                )


# --------------------------------------------------------------------------------------------
# Generic dataclass parsing with precise errors
# --------------------------------------------------------------------------------------------


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _check_range(key: str, value: float, lo: float, hi: float) -> None:
    if not (lo <= value <= hi):
        raise ConfigError(f"{key}: {value!r} is out of range; allowed: [{lo}, {hi}]")


def _check_min(key: str, value: float, lo: float) -> None:
    if not (value >= lo):
        raise ConfigError(f"{key}: {value!r} is out of range; allowed: >= {lo}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Return ``value`` as type ``tp`` or raise :class:`ConfigError` naming ``key``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not allowed; allowed: {', '.join(repr(a) for a in allowed)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: null is not allowed; expected {_type_name(tp)}")
        errors = []
        # Try exact-type matches first so that "7" stays a str in `int | str` unions.
        for arg in sorted(args, key=lambda a: 0 if _exact_match(value, a) else 1):
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {value!r} does not match {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping for section {tp.__name__}, got {value!r}")
        return parse_dataclass(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp, *_rest) = typing.get_args(tp) or (Any,)
        items = [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: {value!r} is not a boolean; use true or false")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: {value!r} is not an integer")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads "1e-4" as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: {value!r} is not a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: {value!r} is not a string")
        return value
    return value


_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _exact_match(value: Any, tp: Any) -> bool:
    if tp in (int, float, str, bool):
        return type(value) is tp
    origin = typing.get_origin(tp)
    if origin is list:
        return isinstance(value, list)
    if origin is Literal:
        return value in typing.get_args(tp)
    return False


def parse_dataclass(cls: type, data: Mapping[str, Any] | None, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys and bad values raise ConfigError."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{_join(prefix, unknown[0])}: unknown key; allowed keys{' in ' + prefix if prefix else ''}: "
            f"{', '.join(sorted(names))}"
        )
    kwargs = {name: _coerce(_join(prefix, name), value, hints[name]) for name, value in data.items()}
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(prefix)
    return obj


# --------------------------------------------------------------------------------------------
# Loading, overrides, hashing
# --------------------------------------------------------------------------------------------


def _parse_scalar(text: str) -> Any:
    """Parse an override value the way YAML would (``0.7`` → float, ``true`` → bool, ``[1,2]`` → list)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a nested mapping (a copy is returned)."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. fusion.th=0.7")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = _parse_scalar(raw)
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a :class:`RunConfig` from YAML (or defaults when ``path`` is None) plus overrides."""
    import yaml

    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass an existing YAML file to --config")
        with path.open() as fh:
            loaded = yaml.safe_load(fh)
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded
    data = apply_overrides(data, overrides or [])
    cfg = parse_dataclass(RunConfig, data)
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (JSON-serialisable) of a config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normalise(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, float):
        return float(repr(value)) if value == value else "nan"
    return value


def config_hash(cfg: Any, length: int = 12) -> str:
    """Canonical hash of a config: sorted keys, normalised numbers; same config → same folder.

    Fields that do not change results (device, worker count, checkpoint cadence) are excluded.
    """
    data = config_to_dict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    data.pop("device", None)
    data.pop("checkpoint_every", None)
    if isinstance(data.get("data"), dict):
        data["data"] = {k: v for k, v in data["data"].items() if k not in ("num_workers", "cache_dir")}
    text = json.dumps(_normalise(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]
