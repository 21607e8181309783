"""``mcil calibrate``: the benchmark's own calibration table, from data and frozen backbone alone.

No method is involved. For each dataset (clean and noisy regimes get one section each) it reports
what a benchmark designer checks before any method runs (design §4, docs/synav.md "Calibration"):

- **zero-shot** top-1 over the incremental classes (image / audio / fused → text prototypes of
  the class prompts the learners use), computed by the ``zeroshot`` baseline's own ``predict``;
- **linear probe** (ridge, :func:`mcil.data.probe.ridge_probe`) and **class-mean** (nearest
  class mean, cosine) top-1 on frozen features, fitted on train, scored on test; "fused" is the
  zero-shot's fusion of the unimodal features (mean of the L2-normalised image and audio
  embeddings, :func:`mcil.baselines._common.fuse` ``average``);
- **within-class and between-class cosine** of the frozen features (test split);
- the **r distribution**: per-sample Pearson r between a sample's image and audio embedding
  (:func:`mcil.method.aavfm.pearson_r`, the method's gate signal): quantiles on clean test
  samples, AUC of paired vs mismatched r (image of sample i with the audio of a random sample of
  another class), and on a dataset with corruptions the AUC of clean vs corrupted r per kind;
- **gate rates**: for fixed thresholds and the quantiles, the fraction of test samples with
  r ≥ th (what the ``sample`` gate fuses) and the fraction of random test batches of size B whose
  batch-mean r opens the ``batch`` gate (:func:`mcil.method.aavfm.gate_decision`).

The metrics are pure functions of tensors (top half of this module); the I/O (cache, backbone,
feature cache, Markdown/JSON) is the bottom half. Frozen embeddings come from the trainer's
feature cache (:func:`mcil.features.frozen_embeddings`), so a second call costs only the metrics.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mcil.config import OptimConfig

__all__ = [
    "CalibrateOptions",
    "auc",
    "mismatched_partners",
    "fraction_at_least",
    "random_batches",
    "batch_fuse_fraction",
    "class_means",
    "ncm_accuracy",
    "within_between_cosine",
    "probe_accuracy",
    "fused_features",
    "calibrate_dataset",
    "calibration_markdown",
    "configure_parser",
    "run_cli",
]

log = logging.getLogger(__name__)

FEATURES = ("image", "audio", "fused")
#: corruption kinds grouped by the modality they degrade (their prefix in the manifest).
KIND_GROUPS = ("audio", "image")


@dataclass(frozen=True)
class CalibrateOptions:
    """What ``mcil calibrate`` measures (every field is a CLI option)."""

    thresholds: tuple[float, ...] = (0.6, 0.7, 0.8, 0.9)
    quantiles: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
    batch_size: int = OptimConfig().batch_size  # the default run's training batch
    batch_draws: int = 20  # random orders of the test split cut into batches
    seed: int = 0  # mismatched partners and batch orders
    eval_template: str = "single"  # as RunConfig.eval_template: the prompts the learners evaluate with

    def __post_init__(self) -> None:
        from mcil.errors import UserError

        if self.batch_size < 1:
            raise UserError(f"mcil calibrate: --batch-size {self.batch_size} must be >= 1")
        if self.batch_draws < 1:
            raise UserError(f"mcil calibrate: --batch-draws {self.batch_draws} must be >= 1")
        bad = [q for q in self.quantiles if not 0.0 <= q <= 1.0]
        if bad:
            raise UserError(f"mcil calibrate: quantiles {bad} are outside [0, 1]")
        if self.eval_template not in ("single", "average"):
            raise UserError(f"mcil calibrate: --eval-template {self.eval_template!r}; allowed: single, average")


# ------------------------------------------------------------------------------------------------
# Pure metrics
# ------------------------------------------------------------------------------------------------
def auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Area under the ROC curve of scores ``pos`` (n_p,) against ``neg`` (n_n,).

    = P(a positive scores above a negative) + ½ P(tie) (Mann–Whitney U / (n_p·n_n), ties get
    average ranks). NaN when either set is empty. 1: r separates perfectly; 0.5: no signal.
    """
    pos, neg = pos.detach().double().flatten(), neg.detach().double().flatten()
    n_p, n_n = pos.numel(), neg.numel()
    if n_p == 0 or n_n == 0:
        return float("nan")
    _, inverse, counts = torch.unique(torch.cat([pos, neg]), sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    ranks = (ends - (counts.double() - 1.0) / 2.0)[inverse]  # 1-based average ranks
    u = ranks[:n_p].sum() - n_p * (n_p + 1) / 2.0
    return float(u / (n_p * n_n))


def mismatched_partners(labels: torch.Tensor, generator: torch.Generator, max_rounds: int = 1000) -> torch.Tensor:
    """For each row, the index of a uniformly drawn row of *another* label: (N,) int64 → (N,) int64.

    Raises ValueError when every row has the same label (no mismatch exists).
    """
    labels = labels.flatten()
    n = labels.numel()
    if n == 0:
        return torch.empty(0, dtype=torch.long)
    if bool((labels == labels[0]).all()):
        raise ValueError("mismatched_partners: every row has the same label; a mismatch needs two classes")
    partner = torch.randint(0, n, (n,), generator=generator)
    for _ in range(max_rounds):
        same = labels[partner] == labels
        if not bool(same.any()):
            return partner
        partner[same] = torch.randint(0, n, (int(same.sum()),), generator=generator)
    raise RuntimeError("mismatched_partners: no partner found; a class holds almost every row")


def fraction_at_least(r: torch.Tensor, thresholds: Sequence[float]) -> list[float]:
    """For each th, the fraction of the (finite) entries of ``r`` (N,) with r ≥ th (NaN if none)."""
    r = r.detach().float().flatten()
    r = r[torch.isfinite(r)]
    if r.numel() == 0:
        return [float("nan")] * len(thresholds)
    return [float((r >= th).float().mean()) for th in thresholds]


def random_batches(n: int, batch_size: int, draws: int, generator: torch.Generator) -> list[torch.Tensor]:
    """``draws`` random orders of ``range(n)``, each cut into full batches of ``batch_size``.

    An incomplete last batch is dropped (its mean r is noisier than the others'), except when
    ``n < batch_size``: then each draw is one batch of all n rows.
    """
    out: list[torch.Tensor] = []
    for _ in range(draws):
        order = torch.randperm(n, generator=generator)
        if n < batch_size:
            out.append(order)
            continue
        out.extend(order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size))
    return out


def batch_fuse_fraction(
    r: torch.Tensor, has_image: torch.Tensor, has_audio: torch.Tensor, th: float, batches: Sequence[torch.Tensor]
) -> float:
    """Fraction of ``batches`` (index tensors into the (N,) ``r``/masks) that the paper's batch
    gate opens: :func:`~mcil.method.aavfm.gate_decision` with mode ``batch`` fuses some sample."""
    from mcil.method.aavfm import gate_decision

    if not batches:
        return float("nan")
    opened = [bool(gate_decision(r[b], th, "batch", has_audio[b], has_image[b]).any()) for b in batches]
    return float(np.mean(opened))


def class_means(x: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C, D) mean of the L2-normalised rows of ``x`` (N, D) per label ``y`` (N,) in [0, C).

    A class without rows gets a zero mean (cosine 0 to everything)."""
    x = F.normalize(x.float(), dim=-1)
    sums = torch.zeros(n_classes, x.shape[1], dtype=x.dtype).index_add_(0, y.long(), x)
    counts = torch.bincount(y.long(), minlength=n_classes).clamp_min(1).to(x.dtype)
    return sums / counts.unsqueeze(1)


def ncm_accuracy(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, n_classes: int
) -> torch.Tensor:
    """Nearest class mean (cosine) on L2-normalised features: per-test-row correctness (M,) bool.

    train_x (N, D), train_y (N,), test_x (M, D), test_y (M,), labels in [0, n_classes)."""
    means = F.normalize(class_means(train_x, train_y, n_classes), dim=-1)
    pred = (F.normalize(test_x.float(), dim=-1) @ means.t()).argmax(dim=1)
    return pred == test_y.long()


def within_between_cosine(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean cosine over pairs of distinct rows of the same label, over pairs of different labels).

    x (N, D), y (N,). Pairs are unordered and each counts once (pair-weighted, not class-weighted).
    NaN where no such pair exists. A class-incremental benchmark wants within ≫ between.
    """
    # Σ_{i≠j, same class} z_i·z_j = Σ_c (|s_c|² − n_c) for unit rows z and class sums s_c: O(N·D), no N×N gram.
    z = F.normalize(x.double(), dim=-1)
    _, inverse = torch.unique(y, return_inverse=True)
    sums = torch.zeros(int(inverse.max()) + 1 if len(y) else 0, z.shape[1], dtype=z.dtype).index_add_(0, inverse, z)
    counts = torch.bincount(inverse, minlength=sums.shape[0]).double()
    norms = (z * z).sum(1)  # 1, or 0 for an all-zero row
    within_sum = float((sums * sums).sum() - norms.sum())
    total_sum = float((z.sum(0) ** 2).sum() - norms.sum())
    n = float(len(y))
    within_n = float((counts * (counts - 1)).sum())
    between_n = n * (n - 1) - within_n
    w = within_sum / within_n if within_n else float("nan")
    b = (total_sum - within_sum) / between_n if between_n else float("nan")
    return w, b


def probe_accuracy(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, n_classes: int
) -> tuple[torch.Tensor, float]:
    """Linear probe on frozen features: per-test-row correctness (M,) bool and the ridge penalty.

    Rows are L2-normalised, then standardised with the train split's per-dimension mean and
    standard deviation; the classifier is :func:`mcil.data.probe.ridge_probe` (ridge onto one-hot
    labels, penalty chosen on a hold-out of the train split)."""
    from mcil.data.probe import ridge_probe

    tr = F.normalize(train_x.double(), dim=-1).numpy()
    te = F.normalize(test_x.double(), dim=-1).numpy()
    mu, sd = tr.mean(axis=0), tr.std(axis=0) + 1e-8
    correct, lam = ridge_probe((tr - mu) / sd, train_y.numpy(), (te - mu) / sd, test_y.numpy(), n_classes)
    return torch.from_numpy(np.asarray(correct, dtype=bool)), float(lam)


def fused_features(image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """(B, D) the zero-shot's fusion: mean of the L2-normalised image and audio embeddings."""
    from mcil.baselines._common import fuse

    return fuse(image, audio, "average")


def _percent(correct: torch.Tensor) -> float:
    return 100.0 * float(correct.float().mean()) if correct.numel() else float("nan")


def _by_kind(correct: torch.Tensor, kinds: Sequence[str]) -> dict[str, float]:
    """Accuracy (%) per corruption kind ('' → 'clean')."""
    arr = np.asarray(kinds)
    return {(k or "clean"): _percent(correct[torch.from_numpy(arr == k)]) for k in sorted(set(kinds))}


# ------------------------------------------------------------------------------------------------
# One dataset
# ------------------------------------------------------------------------------------------------
def _load_cached(root: Path, split: str, spec: Any, cache_dir: str | Path) -> Any:
    """The split from the tensor cache; built from the media on first use, like the trainer does."""
    from mcil.data.cache import cache_path, load_split
    from mcil.data.manifest import read_manifest
    from mcil.errors import DataError

    if cache_path(cache_dir, read_manifest(root, check_files=False), split, spec).exists():
        return load_split(root, split, spec, cache_dir)
    fix = (
        f"mcil cache --data {root} --cache-dir {cache_dir} --splits train test --image-size {spec.image_size}"
        f" --image-resize {spec.image_resize} --sample-rate {spec.audio_sample_rate}"
        f" --num-samples {spec.audio_num_samples} --audio-scale {spec.audio_scale}"
        f" --image-mean {' '.join(f'{v:g}' for v in spec.image_mean)}"
        f" --image-std {' '.join(f'{v:g}' for v in spec.image_std)}"
    )
    log.info("no tensor cache of %s/%s under %s: decoding the media now (build it ahead with `%s`)",
             root, split, cache_dir, fix)
    try:
        return load_split(root, split, spec, cache_dir)
    except DataError as exc:
        raise DataError(f"{exc}; the tensor cache of split {split!r} is missing too: build it with `{fix}`") from exc


@torch.no_grad()
def _zeroshot(backbone: Any, manifest: Any, split: Any, image: torch.Tensor, audio: torch.Tensor,
              options: CalibrateOptions) -> dict[str, torch.Tensor]:
    """Per-test-row zero-shot correctness (N,) bool per feature, via the zeroshot baseline."""
    from mcil.baselines.zeroshot import ZeroShot
    from mcil.learners.base import Batch

    learner = ZeroShot(backbone, manifest.class_names, manifest.templates,
                       SimpleNamespace(eval_template=options.eval_template))
    classes = list(manifest.incremental_labels)
    cand = torch.as_tensor(classes, dtype=torch.long)
    n = len(split)
    batch = Batch(labels=split.labels, has_image=split.has_image, has_audio=split.has_audio,
                  index=torch.arange(n), image_emb=image, audio_emb=audio)
    device = next(backbone.parameters()).device
    pred = learner.predict(batch.to(device), classes)
    return {k: cand[pred.by_modality[k].argmax(dim=1).cpu()] == split.labels for k in FEATURES}


def calibrate_dataset(
    backbone: Any,
    root: str | Path,
    cache_dir: str | Path,
    options: CalibrateOptions = CalibrateOptions(),
    device: torch.device = torch.device("cpu"),
) -> dict[str, Any]:
    """Every calibration number of one dataset folder (train and test splits from the tensor cache).

    Returns a JSON-ready dict (see :func:`calibration_markdown` for its layout)."""
    from mcil.data.manifest import read_manifest
    from mcil.errors import DataError
    from mcil.features import frozen_embeddings
    from mcil.method.aavfm import pearson_r

    t0 = time.perf_counter()
    root = Path(root)
    manifest = read_manifest(root, check_files=False)
    spec = backbone.preprocess
    splits = {s: _load_cached(root, s, spec, cache_dir) for s in ("train", "test")}
    emb = {s: {t: frozen_embeddings(backbone, sp, t, device, cache_dir) for t in ("image", "audio")}
           for s, sp in splits.items()}
    test, train = splits["test"], splits["train"]
    K = manifest.n_incremental
    for s, sp in splits.items():
        bad = sorted(set(sp.labels.tolist()) - set(manifest.incremental_labels))
        if bad:
            raise DataError(f"{root}: split {s!r} holds labels {bad[:5]} that are not incremental classes")
    feats = {
        s: {"image": emb[s]["image"], "audio": emb[s]["audio"],
            "fused": fused_features(emb[s]["image"], emb[s]["audio"])}
        for s in splits
    }
    kinds = [k or "" for k in test.corruption]
    has_corruption = any(kinds)

    # -- classifiers on frozen features -------------------------------------------------------------
    zs = _zeroshot(backbone, manifest, test, emb["test"]["image"], emb["test"]["audio"], options)
    present = {"image": test.has_image, "audio": test.has_audio, "fused": test.has_image | test.has_audio}
    present_tr = {"image": train.has_image, "audio": train.has_audio, "fused": train.has_image | train.has_audio}
    features: dict[str, Any] = {}
    for name in FEATURES:
        m_te, m_tr = present[name].bool(), present_tr[name].bool()
        x_tr, y_tr = feats["train"][name][m_tr], train.labels[m_tr]
        x_te, y_te = feats["test"][name][m_te], test.labels[m_te]
        kinds_te = [k for k, keep in zip(kinds, m_te.tolist()) if keep]
        probe_ok, lam = probe_accuracy(x_tr, y_tr, x_te, y_te, K)
        ncm_ok = ncm_accuracy(x_tr, y_tr, x_te, y_te, K)
        zs_ok = zs[name][m_te]
        within, between = within_between_cosine(x_te, y_te)
        entry = {
            "samples": {"train": int(m_tr.sum()), "test": int(m_te.sum())},
            "zeroshot": _percent(zs_ok),
            "probe": _percent(probe_ok),
            "probe_lambda": lam,
            "ncm": _percent(ncm_ok),
            "cos_within": within,
            "cos_between": between,
        }
        if has_corruption:
            entry["by_corruption"] = {
                "zeroshot": _by_kind(zs_ok, kinds_te), "probe": _by_kind(probe_ok, kinds_te),
                "ncm": _by_kind(ncm_ok, kinds_te),
            }
        features[name] = entry

    # -- r: paired, mismatched, corrupted --------------------------------------------------------------
    both = (test.has_image & test.has_audio).bool()
    r = pearson_r(emb["test"]["image"], emb["test"]["audio"])
    r = torch.where(both, r, torch.full_like(r, float("nan")))
    clean = both & torch.tensor([k == "" for k in kinds], dtype=torch.bool)
    if int(clean.sum()) == 0:
        raise DataError(f"{root}: no uncorrupted test sample has both image and audio; the r statistics need some")
    g = torch.Generator().manual_seed(options.seed)
    idx_clean = torch.nonzero(clean).flatten()
    partners = idx_clean[mismatched_partners(test.labels[idx_clean], g)]
    r_paired = r[idx_clean]
    r_mis = pearson_r(emb["test"]["image"][idx_clean], emb["test"]["audio"][partners])
    qs = list(options.quantiles)
    q_paired = torch.quantile(r_paired.double(), torch.tensor(qs, dtype=torch.double)).tolist()
    q_mis = torch.quantile(r_mis.double(), torch.tensor(qs, dtype=torch.double)).tolist()
    r_stats: dict[str, Any] = {
        "quantiles": qs,
        "paired": {"n": int(r_paired.numel()), "mean": float(r_paired.mean()), "quantiles": q_paired},
        "mismatched": {"n": int(r_mis.numel()), "mean": float(r_mis.mean()), "quantiles": q_mis},
        "auc_paired_vs_mismatched": auc(r_paired, r_mis),
    }
    if has_corruption:
        arr = np.asarray(kinds)
        groups: dict[str, torch.Tensor] = {}
        for kind in sorted(set(kinds) - {""}):
            groups[kind] = both & torch.from_numpy(arr == kind)
        for prefix in KIND_GROUPS:
            sel = np.char.startswith(arr.astype(str), prefix + "-")
            if sel.any():
                groups[f"{prefix}-*"] = both & torch.from_numpy(sel)
        groups["all corrupted"] = both & torch.from_numpy(arr != "")
        r_stats["corruption"] = {
            name: {"n": int(mask.sum()), "median": float(r[mask].median()) if bool(mask.any()) else float("nan"),
                   "auc_clean_vs_this": auc(r_paired, r[mask])}
            for name, mask in groups.items()
        }

    # -- gate rates ------------------------------------------------------------------------------------
    # (source, th): "th" for a fixed threshold, "quantile Q %" for a quantile of clean paired r
    ths = [("th", float(t)) for t in options.thresholds]
    ths += [(f"quantile {100 * q:g} %", float(v)) for q, v in zip(qs, q_paired)]
    batches = random_batches(len(test), options.batch_size, options.batch_draws, g)
    frac_samples = fraction_at_least(r[both], [t for _, t in ths])
    gate = []
    for (src, th), fs in zip(ths, frac_samples):
        row = {"th": th, "source": src, "samples_fused": fs,
               "batches_fused": batch_fuse_fraction(r, test.has_image, test.has_audio, th, batches)}
        if has_corruption:
            row["samples_fused_clean"] = fraction_at_least(r[clean], [th])[0]
            row["samples_fused_corrupted"] = fraction_at_least(r[both & ~clean], [th])[0]
        gate.append(row)

    return {
        "dataset": manifest.name,
        "root": str(root),
        "classes": K,
        "chance": 100.0 / K,
        "samples": {"train": len(train), "test": len(test)},
        "corrupted_test": int(sum(1 for k in kinds if k)),
        "cache_keys": {s: sp.key for s, sp in splits.items()},
        "templates": manifest.templates,
        "features": features,
        "r": r_stats,
        "gate": {"batch_size": options.batch_size, "batch_draws": options.batch_draws, "n_batches": len(batches),
                 "rows": gate},
        "seconds": round(time.perf_counter() - t0, 2),
    }


# ------------------------------------------------------------------------------------------------
# Markdown
# ------------------------------------------------------------------------------------------------
def _f(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _dataset_markdown(d: dict[str, Any]) -> list[str]:
    r, gate = d["r"], d["gate"]
    lines = [
        f"## {d['dataset']} (`{d['root']}`)",
        "",
        f"{d['classes']} incremental classes (chance {d['chance']:.1f} %), {d['samples']['train']} train / "
        f"{d['samples']['test']} test samples"
        + (f", {d['corrupted_test']} corrupted test samples" if d["corrupted_test"] else "")
        + f"; prompts: `{d['templates']}` set.",
        "",
        "| features | zero-shot (%) | linear probe (%) | class mean (%) | cos within | cos between |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in FEATURES:
        e = d["features"][name]
        lines.append(f"| {name} | {_f(e['zeroshot'])} | {_f(e['probe'])} | {_f(e['ncm'])} | "
                     f"{_f(e['cos_within'], 3)} | {_f(e['cos_between'], 3)} |")
    if "by_corruption" in d["features"]["fused"]:
        by = d["features"]["fused"]["by_corruption"]
        kinds = list(by["zeroshot"])
        lines += ["", "Fused top-1 (%) by test corruption:", "",
                  "| classifier | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
        for clf, label in (("zeroshot", "zero-shot"), ("probe", "linear probe"), ("ncm", "class mean")):
            lines.append(f"| {label} | " + " | ".join(_f(by[clf][k]) for k in kinds) + " |")
    qs = [f"{round(100 * q)} %" for q in r["quantiles"]]
    lines += [
        "",
        "Pearson r between a sample's frozen image and audio embedding (clean test samples):",
        "",
        "| pairs | n | mean | " + " | ".join(qs) + " |",
        "|---|---:|---:|" + "---:|" * len(qs),
    ]
    for key, label in (("paired", "paired"), ("mismatched", "mismatched (audio of another class)")):
        s = r[key]
        lines.append(f"| {label} | {s['n']} | {_f(s['mean'], 3)} | " + " | ".join(_f(v, 3) for v in s["quantiles"]) + " |")
    lines += ["", f"AUC paired vs mismatched r: **{_f(r['auc_paired_vs_mismatched'], 3)}**"]
    if "corruption" in r:
        lines += ["", "| corrupted test samples | n | median r | AUC clean vs these |", "|---|---:|---:|---:|"]
        for name, s in r["corruption"].items():
            lines.append(f"| {name} | {s['n']} | {_f(s['median'], 3)} | {_f(s['auc_clean_vs_this'], 3)} |")
    noisy = any("samples_fused_clean" in row for row in gate["rows"])
    head = "| th | source | samples r ≥ th | batches fused (B = {}) |".format(gate["batch_size"])
    sep = "|---:|---|---:|---:|"
    if noisy:
        head += " clean samples r ≥ th | corrupted samples r ≥ th |"
        sep += "---:|---:|"
    lines += ["", f"Gate: fraction that would fuse (samples: `sample` gate; batches: `batch` gate on "
                  f"{gate['n_batches']} random test batches of {gate['batch_size']}):", "", head, sep]
    for row in gate["rows"]:
        src = "fixed" if row["source"] == "th" else f"{row['source']} of paired r"
        line = f"| {row['th']:.3f} | {src} | {_f(row['samples_fused'], 3)} | {_f(row['batches_fused'], 3)} |"
        if noisy:
            line += f" {_f(row['samples_fused_clean'], 3)} | {_f(row['samples_fused_corrupted'], 3)} |"
        lines.append(line)
    return lines


def _weights_hash(bb: dict[str, Any]) -> str:
    """The hash a reader compares across machines: the weights' content hash where the checkpoint
    records one (tiny: the same for every build of the same backbone, while the file's hash changes
    with the pre-training timings stored beside the weights), else the file's."""
    state = bb.get("state_sha256")
    if state:
        return f"weights sha256 {str(state)[:12]}…, file sha256 {str(bb.get('sha256'))[:12]}…"
    return f"sha256 {str(bb.get('sha256'))[:12]}…"


def calibration_markdown(result: dict[str, Any]) -> str:
    """The calibration table of :func:`run_cli`'s result: one section per dataset."""
    bb = result["backbone"]
    lines = [
        "# Calibration: data and frozen backbone",
        "",
        f"Backbone `{bb['name']}` (`{bb['checkpoint']}`, {_weights_hash(bb)}). "
        "No method is involved; every number is on the incremental classes, fitted on train and "
        "measured on test. What each number means: docs/synav.md, section \"Calibration\".",
    ]
    for d in result["datasets"]:
        lines += ["", *_dataset_markdown(d)]
    lines += ["", f"Command: `{result['command']}`"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def configure_parser(p: argparse.ArgumentParser) -> None:
    d = CalibrateOptions()
    p.add_argument("datasets", nargs="+", metavar="DATASET_ROOT", help="dataset folders (manifest.csv + classes.json)")
    p.add_argument("--backbone", required=True, metavar="CKPT", help="backbone checkpoint, e.g. checkpoints/tiny.pt")
    p.add_argument("--backbone-name", default="tiny", help="registered backbone (default: tiny)")
    p.add_argument("--out", required=True, help="Markdown table to write (a .json with every number goes beside it)")
    p.add_argument("--cache-dir", default="data/cache", help="tensor cache folder (shared with training runs)")
    p.add_argument("--th", type=float, nargs="+", default=list(d.thresholds), help="fixed gate thresholds")
    p.add_argument("--quantiles", type=float, nargs="+", default=list(d.quantiles),
                   help="quantiles of paired r to report (also used as thresholds)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="batch size B of the batch gate")
    p.add_argument("--batch-draws", type=int, default=d.batch_draws, help="random orders of the test split")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of mismatched partners and batch orders")
    p.add_argument("--eval-template", choices=["single", "average"], default=d.eval_template,
                   help="prompts of the zero-shot (as RunConfig.eval_template)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="torch device for the (cached) feature extraction")


def _command(args: argparse.Namespace) -> str:
    return (
        f"mcil calibrate {' '.join(args.datasets)} --backbone {args.backbone} --backbone-name {args.backbone_name}"
        f" --out {args.out} --cache-dir {args.cache_dir} --th {' '.join(f'{t:g}' for t in args.th)}"
        f" --quantiles {' '.join(f'{q:g}' for q in args.quantiles)} --batch-size {args.batch_size}"
        f" --batch-draws {args.batch_draws} --seed {args.seed} --eval-template {args.eval_template}"
    )


def json_path_for(out: Path) -> Path:
    """``results/calibration.md`` → ``results/calibration.json``."""
    return out.with_suffix(".json")


def run_cli(args: argparse.Namespace) -> int:
    from mcil.atomic import atomic_write_text
    from mcil.backbones.registry import build_backbone
    from mcil.result import json_clean

    torch.set_num_threads(max(1, args.threads))
    options = CalibrateOptions(
        thresholds=tuple(args.th), quantiles=tuple(args.quantiles), batch_size=args.batch_size,
        batch_draws=args.batch_draws, seed=args.seed, eval_template=args.eval_template,
    )
    device = torch.device(args.device)
    t0 = time.perf_counter()
    backbone = build_backbone(args.backbone_name, args.backbone).to(device)
    datasets = []
    for root in args.datasets:
        d = calibrate_dataset(backbone, root, args.cache_dir, options, device)
        log.info("calibrated %s in %.1f s", d["dataset"], d["seconds"])
        datasets.append(d)
    result = {
        "backbone": {"name": args.backbone_name, "checkpoint": str(args.backbone),
                     "sha256": getattr(backbone, "checkpoint_sha256", None),
                     "state_sha256": (getattr(backbone, "pretrain_info", None) or {}).get("state_sha256")},
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(options).items()},
        "datasets": datasets,
        "command": _command(args),
        "seconds": round(time.perf_counter() - t0, 2),
        "threads": torch.get_num_threads(),
    }
    out = Path(args.out)
    md = calibration_markdown(result)
    atomic_write_text(json_path_for(out), json.dumps(json_clean(result), indent=1) + "\n")
    atomic_write_text(out, md)
    sys.stdout.write(md)
    sys.stdout.flush()
    log.info("wrote %s and %s in %.1f s", out, json_path_for(out), result["seconds"])
    return 0
