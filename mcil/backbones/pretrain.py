"""``mcil pretrain``: CLIP-style contrastive pre-training of the tiny backbone on synav.

Recipe (the analogue of AudioCLIP's pre-training, sized for a 2-core CPU):

- data: ``split == 'pretrain'`` only — the pre-training classes, disjoint from the incremental
  classes the benchmark later learns (those are never seen here);
- text: per sample and pair, one template drawn uniformly from the dataset's ``train`` templates,
  filled with the class name (text diversity). With probability ``partial_text`` (default 0.5)
  the filler is instead a *partial description*: a random non-empty subset of the class's visual
  attribute values for the image–text pair ("a photo of a red star."), of its audio attribute
  values for the audio–text pair ("a recording of a high whistle."). With only 24 pre-training
  classes, colour and texture alone identify most of them, so full names let the image tower skip
  shape (the same for the audio tower); partial descriptions make every attribute word a
  target of its own. Needs the attributes in classes.json (synav has them); otherwise full names;
- loss: the mean of three symmetric contrastive losses, image–text, audio–text and image–audio,
  with in-batch negatives. A batch holds several samples of the same class (24 classes, batches
  of 64), so a one-hot InfoNCE target would push apart same-class pairs. We use *multi-positive
  soft targets* instead: row i's target is uniform over its positives — the columns of the same
  class, or for a partial description every sample whose class has all the described values —
  and likewise per column. With one sample per class and full names this is CLIP's loss;
- augmentation: random horizontal flip and ±4-pixel shift of images; random gain (0.8–1.2) and
  circular time shift (±0.1 s) of audio — light, to avoid memorising 24 classes;
- AdamW (weight decay on matrices only), linear warm-up then cosine decay, gradient clipping,
  learned temperature clamped to ≤ 100 like CLIP;
- deterministic for a seed: one ``torch.Generator`` drives shuffling, template choice and
  augmentation; the model is initialised under ``torch.manual_seed(seed)``; single process,
  ``torch.use_deterministic_algorithms(True)``.

The pieces of the loss live in :mod:`mcil.backbones.contrastive`. After training,
:func:`~mcil.backbones.zeroshot_eval.zeroshot_table` scores the frozen backbone on the *incremental* classes'
test split with the dataset's ``test`` template (image→text, audio→text, and fused = mean of the
L2-normalised image and audio embeddings → text) and writes ``<out stem>.zeroshot.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mcil.backbones.base import BackboneError, file_sha256
from mcil.backbones.contrastive import (
    PretrainData,
    attribute_codes,
    class_parts_from_classes,
    contrastive_loss,
    texts_and_positives,
)
from mcil.backbones.tiny import TinyBackbone, load_tiny, save_tiny
from mcil.backbones.tiny_towers import TinyConfig
from mcil.backbones.tiny_vocab import build_vocab, prompt_templates
from mcil.backbones.zeroshot_eval import zeroshot_markdown, zeroshot_table
from mcil.data.spec import normalise_images, scale_audio
from mcil.determinism import set_deterministic
from mcil.errors import DataError
from mcil.result import cpu_provenance

__all__ = [
    "PretrainOptions",
    "PretrainResult",
    "pretrain",
    "configure_parser",
    "run_cli",
]

log = logging.getLogger(__name__)

PAIRS: tuple[tuple[str, str], ...] = (("image", "text"), ("audio", "text"), ("image", "audio"))


# ------------------------------------------------------------------------------------------------
# options and result
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PretrainOptions:
    """Hyper-parameters of the pre-training run (all enter the checkpoint's metadata).

    epochs / batch_size / lr / weight_decay / warmup_frac / grad_clip: optimisation;
    seed: model init, shuffling, template choice and augmentation;
    partial_text: probability that the text paired with an image (audio) is a partial description —
    a random non-empty subset of the class's visual (audio) attribute values, e.g. "a photo of a
    red star." — instead of the full class name (needs ``PretrainData.class_parts``);
    augment: image flip/shift and
    audio gain/shift; max_shift_px / max_shift_s / gain_range: augmentation strengths;
    image_audio_weight: weight of the image–audio pair in the mean of the three pair losses (1 =
    plain mean). Above 1 the towers learn the picture–sound correspondence harder, which is what lets
    the Pearson r of a pair of an *unseen* class say whether picture and sound belong together.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    partial_text: float = 0.5
    augment: bool = True
    max_shift_px: int = 4
    max_shift_s: float = 0.1
    gain_range: tuple[float, float] = (0.8, 1.2)
    image_audio_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0:
            raise BackboneError(
                f"pretrain: epochs ({self.epochs}) must be ≥ 1, batch size ({self.batch_size}) ≥ 2 and lr ({self.lr}) > 0"
            )
        if not 0.0 <= self.partial_text <= 1.0:
            raise BackboneError(f"pretrain: --partial-text {self.partial_text} must be a probability in [0, 1]")
        if not self.image_audio_weight > 0:
            raise BackboneError(f"pretrain: --image-audio-weight {self.image_audio_weight} must be > 0")




@dataclass
class PretrainResult:
    """The trained model (requires_grad still on) and the loss curve."""

    model: TinyBackbone
    epoch_losses: list[float]
    epoch_pair_losses: list[dict[str, float]]
    steps: int
    seconds: float
    options: PretrainOptions


# ------------------------------------------------------------------------------------------------
# augmentation
# ------------------------------------------------------------------------------------------------
def _augment_images(x: torch.Tensor, opts: PretrainOptions, g: torch.Generator) -> torch.Tensor:
    """(B, 3, S, S) float → same shape: random horizontal flip and shift (edge padding)."""
    b, _, s, _ = x.shape
    flip = torch.rand(b, generator=g) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    m = opts.max_shift_px
    if m <= 0:
        return x
    padded = F.pad(x, (m, m, m, m), mode="replicate")
    off = torch.randint(0, 2 * m + 1, (b, 2), generator=g).tolist()
    return torch.stack([padded[i, :, dy : dy + s, dx : dx + s] for i, (dy, dx) in enumerate(off)])


def _augment_audio(w: torch.Tensor, opts: PretrainOptions, sample_rate: int, g: torch.Generator) -> torch.Tensor:
    """(B, L) float in [-1, 1] → same shape: random gain and circular time shift, clipped to [-1, 1]."""
    b = w.shape[0]
    lo, hi = opts.gain_range
    gain = lo + (hi - lo) * torch.rand(b, 1, generator=g)
    w = (w * gain).clamp_(-1.0, 1.0)
    m = int(round(opts.max_shift_s * sample_rate))
    if m <= 0:
        return w
    shifts = torch.randint(-m, m + 1, (b,), generator=g).tolist()
    return torch.stack([torch.roll(w[i], s) for i, s in enumerate(shifts)])


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    set_deterministic(True)
    try:
        yield
    finally:
        set_deterministic(previous, warn_only=previous_warn)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices / kernels only (not biases, norms, positions, CLS, temperature)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim >= 2 and not name.endswith(".pos") and "token" not in name.split(".")[-2:]:
            decay.append(p)
        else:
            no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _cosine_with_warmup(total: int, warmup: int) -> Any:
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return fn




def pretrain(
    model: TinyBackbone,
    data: PretrainData,
    templates: Sequence[str],
    options: PretrainOptions = PretrainOptions(),
) -> PretrainResult:
    """Train ``model`` in place on ``data`` (every sample is a positive pair of its modalities).

    ``templates``: prompt templates with one ``{}`` (one is drawn per sample, pair and step).
    Deterministic given ``options.seed`` and the model's initial weights.
    """
    if len(data) < 2:
        raise DataError(f"pretrain: {len(data)} pre-training sample(s); need at least 2 (is split 'pretrain' empty?)")
    if not templates:
        raise BackboneError("pretrain: no prompt templates given")
    spec = model.preprocess
    cfg = model.config
    codes = {m: attribute_codes(data, m) for m in ("image", "audio")}
    if options.partial_text > 0 and data.class_parts is None:
        log.info("pretrain: no class attributes given; every text is a full class name")

    g = torch.Generator().manual_seed(options.seed)
    n = len(data)
    bsz = min(options.batch_size, n)
    batches_per_epoch = n // bsz
    total = batches_per_epoch * options.epochs
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(_param_groups(model, options.weight_decay), lr=options.lr, betas=(0.9, 0.98), eps=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine_with_warmup(total, max(1, int(options.warmup_frac * total))))

    epoch_losses: list[float] = []
    epoch_pairs: list[dict[str, float]] = []
    start = time.perf_counter()
    step = 0
    with _deterministic():
        for epoch in range(options.epochs):
            order = torch.randperm(n, generator=g)
            sums = {f"{a}-{b}": 0.0 for a, b in PAIRS}
            total_loss = 0.0
            for k in range(batches_per_epoch):
                idx = order[k * bsz : (k + 1) * bsz]
                labels = data.labels[idx]
                img = normalise_images(data.images[idx], spec)
                wav = scale_audio(data.audio[idx], spec)
                if options.augment:
                    img = _augment_images(img, options, g)
                    wav = _augment_audio(wav, options, cfg.sample_rate, g)
                emb = {"image": model.encode_image(img), "audio": model.encode_audio(wav)}
                has = {"image": data.has_image[idx], "audio": data.has_audio[idx]}
                positives = {}
                for m in ("image", "audio"):
                    texts, positives[m] = texts_and_positives(
                        labels, data, m, codes[m], templates, options.partial_text, g
                    )
                    emb[f"text:{m}"] = model.encode_text(model.tokenize(texts))
                scale = model.logit_scale_tensor()
                losses, weights = [], []
                for a, b in PAIRS:
                    if b == "text":
                        keep, pos, zb = has[a], positives[a], emb[f"text:{a}"]
                    else:
                        keep, pos, zb = has[a] & has[b], labels[:, None] == labels[None, :], emb[b]
                    if int(keep.sum()) < 2:
                        continue
                    pair_loss = contrastive_loss(emb[a][keep], zb[keep], pos[keep][:, keep], scale)
                    sums[f"{a}-{b}"] += float(pair_loss.detach())
                    losses.append(pair_loss)
                    weights.append(options.image_audio_weight if b == "audio" else 1.0)
                if not losses:
                    continue
                if all(w == 1.0 for w in weights):
                    loss = torch.stack(losses).mean()
                else:
                    w = torch.tensor(weights)
                    loss = (torch.stack(losses) * w).sum() / w.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if options.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
                opt.step()
                sched.step()
                step += 1
                total_loss += float(loss.detach())
            epoch_losses.append(total_loss / batches_per_epoch)
            epoch_pairs.append({k: v / batches_per_epoch for k, v in sums.items()})
            log.info(
                "epoch %d/%d  loss %.4f  (%s)  scale %.1f  %.1fs",
                epoch + 1,
                options.epochs,
                epoch_losses[-1],
                ", ".join(f"{k} {v:.3f}" for k, v in epoch_pairs[-1].items()),
                model.logit_scale_value(),
                time.perf_counter() - start,
            )
    return PretrainResult(
        model=model,
        epoch_losses=epoch_losses,
        epoch_pair_losses=epoch_pairs,
        steps=step,
        seconds=time.perf_counter() - start,
        options=options,
    )


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def configure_parser(p: argparse.ArgumentParser) -> None:
    defaults = PretrainOptions()
    p.add_argument("--data", required=True, help="synav dataset folder (manifest.csv + classes.json)")
    p.add_argument("--out", required=True, help="checkpoint to write, e.g. checkpoints/tiny.pt")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--cache-dir", default="data/cache", help="tensor cache folder (shared with training runs)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument(
        "--partial-text",
        type=float,
        default=defaults.partial_text,
        help="probability of a partial attribute description instead of the full class name (0 = names only)",
    )
    p.add_argument("--no-augment", action="store_true", help="disable image/audio augmentation")
    p.add_argument("--image-audio-weight", type=float, default=defaults.image_audio_weight,
                   help="weight of the image-audio pair among the three contrastive losses (1 = plain mean)")
    p.add_argument(
        "--eval-only", action="store_true", help="load --out and only (re)write its zero-shot table"
    )


def _zeroshot_paths(out: Path) -> tuple[Path, Path]:
    stem = out.with_suffix("")
    return stem.with_name(stem.name + ".zeroshot.json"), stem.with_name(stem.name + ".zeroshot.md")


def _write_zeroshot(out: Path, model: TinyBackbone, data_root: str, cache_dir: str, command: str) -> dict[str, Any]:
    from mcil.atomic import atomic_write_text

    result = zeroshot_table(model, data_root, cache_dir)
    result.update(
        {
            "checkpoint": str(out),
            "checkpoint_sha256": file_sha256(out),
            "state_sha256": model.pretrain_info.get("state_sha256"),
            "pretrain": {k: v for k, v in model.pretrain_info.items() if k not in ("epoch_losses", "epoch_pair_losses")},
            "command": command,
        }
    )
    json_path, md_path = _zeroshot_paths(out)
    atomic_write_text(json_path, json.dumps(result, indent=1) + "\n")
    atomic_write_text(md_path, zeroshot_markdown(result, command))
    acc = result["accuracy"]
    log.info(
        "zero-shot on %d incremental classes: image %.1f%%, audio %.1f%%, fused %.1f%% (chance %.1f%%) → %s",
        result["classes"], acc["image"], acc["audio"], acc["fused"], result["chance"], json_path,
    )
    return result


def run_cli(args: argparse.Namespace) -> int:
    from mcil.data.cache import load_split
    from mcil.data.manifest import read_manifest

    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out)
    command = (
        f"mcil pretrain --data {args.data} --out {args.out} --seed {args.seed} --epochs {args.epochs} "
        f"--batch-size {args.batch_size} --lr {args.lr} --partial-text {args.partial_text} "
        f"--cache-dir {args.cache_dir} --threads {args.threads} --image-audio-weight {args.image_audio_weight}"
        + (" --no-augment" if args.no_augment else "")
    )
    if args.eval_only:
        model = load_tiny(out)
        model.freeze()
        command = f"mcil pretrain --data {args.data} --out {args.out} --cache-dir {args.cache_dir} --eval-only"
        _write_zeroshot(out, model, args.data, args.cache_dir, command)
        return 0

    t0 = time.perf_counter()
    manifest = read_manifest(args.data)
    templates = prompt_templates(manifest.templates)
    config = TinyConfig()
    vocab = build_vocab([*manifest.class_names, templates["test"], *templates["train"]])
    cached = load_split(args.data, "pretrain", config.preprocess, args.cache_dir)
    data = PretrainData(
        images=torch.as_tensor(cached.images),
        audio=torch.as_tensor(cached.audio),
        labels=torch.as_tensor(cached.labels),
        has_image=torch.as_tensor(cached.has_image),
        has_audio=torch.as_tensor(cached.has_audio),
        class_names=list(cached.class_names),
        class_parts=class_parts_from_classes(manifest.classes),
    )
    bad = sorted(set(data.labels.tolist()) - set(manifest.pretrain_labels))
    if bad:
        raise DataError(f"{args.data}: split 'pretrain' holds labels {bad[:5]} that are not pre-training classes")
    t_data = time.perf_counter() - t0
    log.info("pre-training on %d samples of %d classes (data ready in %.1fs)", len(data), len(set(data.labels.tolist())), t_data)

    options = PretrainOptions(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        partial_text=args.partial_text,
        augment=not args.no_augment,
        image_audio_weight=args.image_audio_weight,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = TinyBackbone(config, vocab)
    result = pretrain(model, data, templates["train"], options)
    meta = {
        "data": str(args.data),
        "dataset": manifest.name,
        "split": "pretrain",
        "cache_key": getattr(cached, "key", None),
        "samples": len(data),
        "classes": [manifest.class_names[c] for c in sorted(set(data.labels.tolist()))],
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(options).items()},
        "steps": result.steps,
        "epoch_losses": result.epoch_losses,
        "train_seconds": round(result.seconds, 2),
        "data_seconds": round(t_data, 2),
        "threads": torch.get_num_threads(),
        "parameters": model.num_parameters(),
        "torch": str(torch.__version__),
        "machine": platform.machine(),
        # the weights depend on the CPU, beyond its model name (docs/environment.md, "Numbers across CPUs")
        **cpu_provenance(),
        "command": command,
    }
    digest = save_tiny(model, out, meta)
    model.pretrain_info = {**meta, "state_sha256": digest}
    log.info("wrote %s (%d parameters, state sha256 %s…) after %.1fs of training", out, model.num_parameters(), digest[:12], result.seconds)
    model.freeze()
    _write_zeroshot(out, model, args.data, args.cache_dir, command)
    log.info("pretrain total %.1fs", time.perf_counter() - t0)
    return 0
