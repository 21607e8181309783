"""`mcil bench`: throughput of what `mcil train` does against an official-style loop, shown to be exact.

Both paths run in one process, on the same data, the same learner state and the same batches, so
the ratio isolates what the pipeline does differently:

- **official-style** (how the reference code behaves): every image and audio file of the batch
  decoded from disk per step; the frozen audio tower re-run per step; every prompt template
  through the full text context (77 tokens for CLIP) per step; evaluation prompts re-encoded per
  batch; fp32.
- **ours** (what `mcil train` does): tensors from the memory-mapped cache; frozen towers served
  from the feature cache (``Learner.FROZEN_FEATURES``); prompts trimmed to the longest one of the
  batch where that is exact (``Backbone.trim_tokens``, ``McilLearner.text_trim_exact``);
  evaluation prototypes encoded once per task; optional bf16 autocast and channels_last.

Before timing, one step of each path from the *same* random adapter state (every trainable
parameter perturbed, so routers and experts all carry gradient) with dropout switched off
compares the loss, every gradient and the evaluation logits (max relative difference): the
speed-up is only reported next to the proof that it changes nothing.

Two settings:

- default: the tiny backbone. With no ``--config`` and no ``data.root=`` / ``backbone.checkpoint=``
  the bench generates its own small synav dataset and a random-weights tiny backbone in
  ``--work-dir`` (reused on the next call), so it runs on a fresh install;
- ``--audioclip``: the paper's setting — AudioCLIP (random weights in the published layout, or
  ``--checkpoint``), the paper's method, a 35-template prompt set, 5 s × 44.1 kHz audio.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mcil.atomic import atomic_write_text
from mcil.bench_env import SynthSizes, default_work_dir, ensure_bench_env
from mcil.bench_equality import compare_paths, dropout_off, randomise_trainable
from mcil.bench_memory import PeakMemory, release_memory
from mcil.config import load_config
from mcil.errors import UserError
from mcil.optim import AdamW

log = logging.getLogger(__name__)

__all__ = [
    "configure_parser",
    "run_cli",
    "BenchSpec",
    "bench_paths",
    "PEAK_BF16_TFLOPS",
]

# Dense bf16 peak of common cards (TFLOP/s, no sparsity), for model FLOP utilisation.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "V100": 125.0}

PATHS = ("reference", "optimised")
PATH_LABEL = {"reference": "official-style", "optimised": "ours"}

#: Overrides of the ``--audioclip`` bench (the user's own come after and win). The text routers
#: read SOT, as in the official code, so the text adapters never see padding and trimming is
#: exact; the RN50 image sites keep the spatial mean (the only router input a conv tower has).
#: With mcil's default (text routers average all 77 positions) ours cannot trim: see docs/benchmarks.md.
AUDIOCLIP_DEFAULTS = ("method.name=mcil", "method.options.text_router_input=first-token")


# ------------------------------------------------------------------------------------------------
# What to time
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchSpec:
    """One bench run.

    steps / eval_batches: timed training steps / evaluation batches per path (after one check
    step, which also warms up, and ``warmup`` further untimed steps); batch_size: training batch
    (None: ``optim.batch_size``); n_classes: classes of the timed task (None: the scenario's
    first task); templates: prompt template set (None: the dataset's); tolerance: the largest
    max-relative difference the equality check accepts (fp32); bf16_tolerance: the same when the
    optimised path runs under bf16 autocast; bf16 / channels_last: options of the optimised path;
    count_flops: FLOPs of one optimised training step (torch's FlopCounterMode), for MFU on a GPU.
    """

    steps: int = 20
    eval_batches: int = 5
    warmup: int = 1
    batch_size: int | None = None
    n_classes: int | None = None
    templates: str | None = None
    tolerance: float = 1e-4
    bf16_tolerance: float = 5e-2
    bf16: bool = False
    channels_last: bool = False
    count_flops: bool = False
    randomise_scale: float = 0.02


# ------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()




class _FileBatches:
    """Official-style data access: decode every file of the batch from disk, every step (per sample).

    ``audio_dtype``: the tensor cache's storage dtype of waveforms (float16). The decoded float32
    waveform is rounded to it, so that both paths feed the towers the same numbers and the
    equality check compares the computations; how far that rounding moves the waveform is
    measured separately (:meth:`decode`, ``cache_storage`` in the result).
    """

    def __init__(self, root: Path, split: str, spec, device: torch.device, audio_dtype: torch.dtype):
        from mcil.data.manifest import read_manifest

        manifest = read_manifest(root)
        self.rows = manifest.split(split).reset_index(drop=True)
        self.root = Path(root)
        self.spec = spec
        self.device = device
        self.audio_dtype = audio_dtype

    def decode(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) uint8 images and (B, N) float32 waveforms decoded from the files of rows ``idx``."""
        from mcil.data.decode import load_audio, load_image

        rows = [self.rows.iloc[int(i)] for i in idx]
        images = torch.stack([load_image(self.root / r.image_path, self.spec) for r in rows])
        audio = torch.stack([load_audio(self.root / r.audio_path, self.spec) for r in rows])
        return images, audio

    def batch(self, idx: torch.Tensor, labels: torch.Tensor):
        from mcil.data.spec import normalise_images, scale_audio
        from mcil.learners.base import Batch

        images, audio = self.decode(idx)
        audio = audio.to(self.audio_dtype)
        ones = torch.ones(len(idx), dtype=torch.bool, device=self.device)
        return Batch(
            labels=labels.to(self.device), has_image=ones, has_audio=ones, index=idx.to(self.device),
            image=normalise_images(images.to(self.device), self.spec), audio=scale_audio(audio.to(self.device), self.spec),
        )




def _cycle(idx: torch.Tensor, n_batches: int, bs: int) -> list[torch.Tensor]:
    """``n_batches`` consecutive batches of ``bs`` rows of ``idx``, wrapping around."""
    if len(idx) == 0:
        raise UserError("mcil bench: the selected classes have no rows in this split; check data.root")
    reps = math.ceil(n_batches * bs / len(idx))
    flat = idx.repeat(reps)
    return [flat[i * bs : (i + 1) * bs] for i in range(n_batches)]


# ------------------------------------------------------------------------------------------------
# The bench
# ------------------------------------------------------------------------------------------------
def bench_paths(
    cfg, backbone, spec: BenchSpec, perturb: Callable[[str, Any], Any] | None = None
) -> dict[str, Any]:
    """Check and time both paths on ``backbone``; returns the numbers (see :func:`format_table`).

    ``perturb(path, batch) -> batch``, if given, changes the batches of a path (tests: it must
    make the equality check fail).
    """
    from mcil.data.cache import load_split
    from mcil.data.manifest import read_manifest
    from mcil.data.scenario import make_scenario
    from mcil.features import encode_split
    from mcil.learners.base import Task
    from mcil.learners.registry import get_learner_class
    from mcil.learners.resolve import resolve_method
    from mcil.train import pick_device, seed_everything
    from mcil.train_data import TrainData

    cfg, _info = resolve_method(cfg)
    device = pick_device(cfg)
    backbone = backbone.to(device)
    manifest = read_manifest(cfg.data.root)
    pp = backbone.preprocess
    splits = {s: load_split(cfg.data.root, s, pp, cfg.data.cache_dir) for s in ("train", "test")}
    class_names = list(manifest.class_names)
    n_inc = len(manifest.incremental_labels)
    if spec.n_classes is not None:
        if not 1 <= spec.n_classes <= n_inc:
            raise UserError(f"mcil bench: --classes {spec.n_classes} is out of range; {cfg.data.root} has {n_inc} incremental classes")
        classes = tuple(range(spec.n_classes))
    else:
        scenario = make_scenario(n_inc, n_tasks=cfg.scenario.n_tasks, initial=cfg.scenario.initial,
                                 increment=cfg.scenario.increment, order=cfg.scenario.order,
                                 order_seed=cfg.scenario.order_seed, dataset=manifest.name,
                                 class_names=class_names[:n_inc])
        classes = tuple(int(c) for c in scenario.tasks[0])
    templates = spec.templates or manifest.templates
    cls = get_learner_class(cfg.method.name)
    bs = spec.batch_size or cfg.optim.batch_size
    ebs = min(cfg.optim.eval_batch_size, bs) if spec.n_classes is not None else cfg.optim.eval_batch_size
    task = Task(index=0, classes=classes, seen_classes=classes, n_tasks=1, steps=spec.steps)

    probe = cls.from_config(backbone, class_names, templates, cfg)
    frozen_towers = set(probe.FROZEN_FEATURES)
    close = getattr(probe, "close", None)
    if close:
        close()
    del probe
    labels = {s: splits[s].labels.long() for s in splits}
    idx = {s: torch.nonzero(torch.isin(labels[s], torch.tensor(classes)), as_tuple=False).flatten() for s in splits}
    train_sel = _cycle(idx["train"], 1 + spec.warmup + spec.steps, bs)
    test_sel = _cycle(idx["test"], 1 + spec.eval_batches, ebs)
    used = {"train": torch.cat(train_sel).unique(), "test": torch.cat(test_sel).unique()}

    # The feature cache of the frozen towers: what `mcil train` computes once per dataset and
    # checkpoint (mcil.features.frozen_embeddings); here only for the rows the bench touches.
    t0 = time.perf_counter()
    frozen = {s: {t: encode_split(backbone, splits[s], t, device, batch_size=8, rows=used[s]) for t in sorted(frozen_towers)}
              for s in splits}
    cache_s = time.perf_counter() - t0
    cache_rows = sum(len(u) for u in used.values()) if frozen_towers else 0
    need_raw = frozenset({"image", "audio"} - frozen_towers)
    cached = TrainData(splits["train"], splits["test"], pp, device, frozen, cfg)
    files = {s: _FileBatches(Path(cfg.data.root), s, pp, device, splits[s].audio.dtype) for s in splits}
    # How far the cache's storage moves the decoded inputs (images: uint8 both ways; audio: float16).
    dec_img, dec_wav = files["train"].decode(train_sel[0])
    storage = {
        "image_max_abs": float((dec_img.float() - splits["train"].images[train_sel[0]].float()).abs().max()),
        "audio_max_abs": float((dec_wav - splits["train"].audio[train_sel[0]].float()).abs().max()),
        "audio_dtype": str(splits["train"].audio.dtype).removeprefix("torch."),
    }

    results: dict[str, Any] = {}
    checks: dict[str, dict[str, Any]] = {}
    flops_per_step: float | None = None
    text_shape: dict[str, tuple[int, int]] = {}
    for path in PATHS:
        optimised = path == "optimised"
        seed_everything(cfg.train_seed)
        learner = cls.from_config(backbone, class_names, templates, cfg).to(device)
        if not optimised and hasattr(learner, "full_text_context"):
            learner.full_text_context = True
        learner.start_task(task)
        params = learner.trainable_parameters()
        randomise_trainable(params, seed=cfg.train_seed + 1, scale=spec.randomise_scale)
        opt = AdamW(params, lr=cfg.optim.lr, lr_scales=learner.lr_scales(params)) if params else None
        use_bf16 = optimised and spec.bf16
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)
        if optimised and spec.channels_last:
            backbone.to(memory_format=torch.channels_last)
        release_memory()
        mem = PeakMemory(device).start()

        def get(split: str, sel: torch.Tensor):
            if optimised:
                batch = cached.batch(split, sel, need_raw=need_raw)
                if spec.channels_last and batch.image is not None:
                    batch.image = batch.image.contiguous(memory_format=torch.channels_last)
            else:
                batch = files[split].batch(sel, labels[split][sel])
            return perturb(path, batch) if perturb is not None else batch

        def train_step(sel: torch.Tensor, step_opt: bool = True) -> dict[str, torch.Tensor]:
            batch = get("train", sel)
            learner.train()
            with autocast:
                out = learner.train_step(batch)
            if opt is not None and "loss" in out:
                opt.zero_grad()
                out["loss"].backward()
                if step_opt:
                    opt.step()
            return out

        def predict(sel: torch.Tensor):
            batch = get("test", sel)
            learner.eval()
            if not optimised and hasattr(learner, "invalidate_text_cache"):
                learner.invalidate_text_cache()
            with torch.no_grad(), autocast:
                return learner.predict(batch, list(classes))

        # -- the check step (also the warm-up): same state, dropout off, no optimiser step --------
        t_check = time.perf_counter()
        with dropout_off(learner):
            if optimised and spec.count_flops:
                from torch.utils.flop_counter import FlopCounterMode

                counter = FlopCounterMode(display=False)
                with counter:
                    out = train_step(train_sel[0], step_opt=False)
                flops_per_step = float(counter.get_total_flops())
            else:
                out = train_step(train_sel[0], step_opt=False)
            grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
            logits = predict(test_sel[0]).logits.detach().clone()
        checks[path] = {"loss": out["loss"].detach().clone(), "grads": grads, "logits": logits}
        log.info("%s: check step %.1fs (loss %.6f)", PATH_LABEL[path], time.perf_counter() - t_check, float(out["loss"].detach()))
        tokens = getattr(learner, "_train_tokens", None)
        if tokens is not None:
            trim = getattr(learner, "text_trim_exact", False) and not getattr(learner, "full_text_context", False)
            shown = backbone.trim_tokens(tokens) if trim else tokens
            text_shape[path] = (int(shown.shape[0]), int(shown.shape[1]))
        if opt is not None:
            opt.zero_grad()
        for i in range(spec.warmup):
            train_step(train_sel[1 + i])

        # -- timed training steps and evaluation batches --------------------------------------------
        _sync(device)
        t0 = time.perf_counter()
        for i in range(spec.steps):
            ts = time.perf_counter()
            train_step(train_sel[1 + spec.warmup + i])
            _sync(device)
            log.info("%s: step %d/%d %.2fs", PATH_LABEL[path], i + 1, spec.steps, time.perf_counter() - ts)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(spec.eval_batches):
            predict(test_sel[1 + i])
        _sync(device)
        eval_s = time.perf_counter() - t0
        n_train = sum(len(s) for s in train_sel[1 + spec.warmup :])
        n_eval = sum(len(s) for s in test_sel[1:])
        peak_mb = mem.stop()
        results[path] = {
            "train": {"samples": n_train, "seconds": train_s, "samples_per_s": n_train / train_s if train_s else math.nan},
            "eval": {"samples": n_eval, "seconds": eval_s, "samples_per_s": n_eval / eval_s if eval_s else math.nan},
            "peak_memory_mb": peak_mb,
            "bf16": use_bf16,
            "channels_last": optimised and spec.channels_last,
        }
        log.info("%s: train %.3f samples/s, eval %.3f samples/s", PATH_LABEL[path],
                 results[path]["train"]["samples_per_s"], results[path]["eval"]["samples_per_s"])
        if optimised and spec.channels_last:
            backbone.to(memory_format=torch.contiguous_format)
        close = getattr(learner, "close", None)
        if close:
            close()
        learner = opt = None  # released before the next path (the closures above hold the same cells)

    tolerance = spec.bf16_tolerance if spec.bf16 else spec.tolerance
    res: dict[str, Any] = dict(results)
    judged = ("loss_rel",) if spec.bf16 else ("loss_rel", "grad_rel", "logits_rel")
    res["equality"] = compare_paths(checks["reference"], checks["optimised"], tolerance, judged)
    res["equality"]["dtype"] = "bf16 vs fp32" if spec.bf16 else "fp32"
    res["cache_storage"] = storage
    for phase in ("train", "eval"):
        res[f"{phase}_ratio"] = results["optimised"][phase]["samples_per_s"] / results["reference"][phase]["samples_per_s"]
    # The feature cache is paid once per dataset and checkpoint; charged to a single epoch of a
    # single run it is the worst case for ours.
    per_sample_cache = cache_s / cache_rows if cache_rows else 0.0
    n_opt = results["optimised"]["train"]["samples"]
    res["feature_cache"] = {
        "towers": sorted(frozen_towers), "rows": cache_rows, "seconds": cache_s, "seconds_per_sample": per_sample_cache,
        "ours_train_samples_per_s_incl_cache_1_epoch": n_opt / (results["optimised"]["train"]["seconds"] + per_sample_cache * n_opt),
    }
    res["text"] = {PATH_LABEL[p]: {"prompts": s[0], "tokens": s[1]} for p, s in text_shape.items()}
    res.update(
        method=cfg.method.name, backbone=backbone.name, device=str(device), batch_size=bs, eval_batch_size=ebs,
        classes=len(classes), templates=templates, threads=torch.get_num_threads(), steps=spec.steps,
        router_input=cfg.method.options.get("router_input", "mean"),
        text_router_input=cfg.method.options.get("text_router_input", "same"),
    )
    if flops_per_step is not None:
        res["flops_per_sample"] = flops_per_step / bs
        achieved = flops_per_step / (results["optimised"]["train"]["seconds"] / max(spec.steps, 1))
        res["achieved_tflops"] = achieved / 1e12
        if device.type == "cuda":
            name = torch.cuda.get_device_name(device)
            peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
            res["device_name"] = name
            res["mfu"] = achieved / (peak * 1e12) if peak else None
    return res


# ------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------
def format_table(res: dict[str, Any], title: str) -> str:
    """The table printed to stdout (also what docs/benchmarks.md records)."""
    lines = [title]
    lines.append(f"{'path':<15} {'train samples/s':>16} {'eval samples/s':>15} {'peak MB':>9}")  # CPU: RSS sampled during the path; CUDA: allocator peak
    for path in PATHS:
        r = res[path]
        tag = " (bf16)" if r["bf16"] else ""
        lines.append(f"{PATH_LABEL[path] + tag:<15} {r['train']['samples_per_s']:>16.3f} "
                     f"{r['eval']['samples_per_s']:>15.3f} {r['peak_memory_mb']:>9.0f}")
    lines.append(f"{'ratio':<15} {res['train_ratio']:>15.2f}x {res['eval_ratio']:>14.2f}x")
    eq = res["equality"]
    lines.append(
        f"equality ({eq['dtype']}, dropout off, random adapter state): loss {eq['loss_rel']:.1e}, "
        f"gradients {eq['grad_rel']:.1e} (max over {eq['grad_tensors']} tensors), eval logits {eq['logits_rel']:.1e}, "
        f"top-1 agreement {eq['top1_agree']:.0%} -> {'OK' if eq['ok'] else 'FAILED'} "
        f"({', '.join(k.removesuffix('_rel') for k in eq['judged'])} <= {eq['tolerance']:.0e})"
    )
    st = res["cache_storage"]
    lines.append(
        f"inputs: decoded files vs tensor cache differ by {st['image_max_abs']:.0f} (uint8 images) and "
        f"{st['audio_max_abs']:.1e} (waveform in [-1, 1], stored as {st['audio_dtype']}); the check feeds both paths the stored values"
    )
    if res.get("text"):
        lines.append("text per step: " + ", ".join(f"{k} {v['prompts']} prompts x {v['tokens']} tokens" for k, v in res["text"].items()))
    fc = res["feature_cache"]
    if fc["rows"]:
        lines.append(
            f"feature cache ({'+'.join(fc['towers'])} tower): {fc['seconds_per_sample'] * 1e3:.0f} ms/sample, paid once per "
            f"dataset and checkpoint; charged to one epoch, ours trains at {fc['ours_train_samples_per_s_incl_cache_1_epoch']:.3f} samples/s"
        )
    if "flops_per_sample" in res:
        line = f"ours: {res['flops_per_sample'] / 1e9:.1f} GFLOP per training sample, {res['achieved_tflops'] * 1e3:.1f} GFLOP/s"
        if res.get("mfu") is not None:
            line += f", MFU {res['mfu']:.1%} of {res['device_name']} bf16 peak"
        lines.append(line)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="run configuration YAML (as for mcil train)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per path (default 20; --audioclip 2)")
    p.add_argument("--eval-batches", type=int, default=None, help="timed evaluation batches per path (default 5; --audioclip 1)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--audioclip", action="store_true",
                   help="the paper's setting: AudioCLIP (random weights in the published layout, or --checkpoint), "
                        "the paper's method, 35 prompt templates, 5 s x 44.1 kHz audio")
    p.add_argument("--checkpoint", help="--audioclip: a real AudioCLIP checkpoint instead of random weights")
    p.add_argument("--batch", type=int, default=None, help="training batch (default optim.batch_size; --audioclip 8)")
    p.add_argument("--classes", type=int, default=None, help="classes of the timed task (--audioclip default 7)")
    p.add_argument("--templates", default=None, help="prompt template set (--audioclip default imagenet-esc: 35 templates)")
    p.add_argument("--bf16", action="store_true", help="ours under bf16 autocast (checked against fp32 with a looser tolerance)")
    p.add_argument("--channels-last", action="store_true", help="ours with the convolutional towers in channels_last")
    p.add_argument("--flops", action="store_true", help="count FLOPs of one step of ours (always on with --audioclip)")
    p.add_argument("--work-dir", default=None, help=f"where the self-contained dataset and backbone live (default {default_work_dir()})")
    p.add_argument("--synth-classes", type=int, default=None, help="self-contained synav: incremental classes")
    p.add_argument("--synth-train", type=int, default=None, help="self-contained synav: training samples per class")
    p.add_argument("--synth-test", type=int, default=None, help="self-contained synav: test samples per class")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. method.name=mcil optim.batch_size=16")


def _given(overrides: list[str], key: str) -> bool:
    return any(o.split("=", 1)[0].strip() == key for o in overrides)


def _sizes(args: argparse.Namespace, default: SynthSizes) -> SynthSizes:
    return SynthSizes(
        n_classes=args.synth_classes or default.n_classes,
        train_per_class=args.synth_train or default.train_per_class,
        test_per_class=args.synth_test or default.test_per_class,
    )


def run_cli(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = list(args.overrides)
    audioclip = bool(args.audioclip)
    steps = args.steps if args.steps is not None else (2 if audioclip else 20)
    eval_batches = args.eval_batches if args.eval_batches is not None else (1 if audioclip else 5)
    n_classes = args.classes if args.classes is not None else (7 if audioclip else None)
    batch = args.batch if args.batch is not None else (8 if audioclip else None)
    self_contained = args.config is None and not _given(overrides, "data.root")
    if self_contained:
        if audioclip:  # just the rows the bench touches: (check + timed) batches over n_classes
            default = SynthSizes(n_classes=max(n_classes, 2), train_per_class=math.ceil((2 + steps) * batch / n_classes),
                                 test_per_class=math.ceil((1 + eval_batches) * batch / n_classes))
        else:
            default = SynthSizes()
        env = ensure_bench_env(Path(args.work_dir) if args.work_dir else default_work_dir(), _sizes(args, default))
        pre = [f"data.root={env.data_root}", f"data.cache_dir={env.cache_dir}"]
        if not audioclip and not _given(overrides, "backbone.checkpoint") and not _given(overrides, "backbone.name"):
            pre += ["backbone.name=tiny", f"backbone.checkpoint={env.checkpoint}"]
        overrides = pre + overrides
    if audioclip:
        overrides = list(AUDIOCLIP_DEFAULTS) + overrides
    cfg = load_config(args.config, overrides)
    spec = BenchSpec(
        steps=steps, eval_batches=eval_batches, warmup=0 if audioclip else 1, batch_size=batch, n_classes=n_classes,
        templates=args.templates or ("imagenet-esc" if audioclip else None), bf16=args.bf16,
        channels_last=args.channels_last, count_flops=audioclip or args.flops,
    )
    if audioclip:
        from mcil.backbones.audioclip import AudioCLIP, load_audioclip

        if args.checkpoint:
            backbone = load_audioclip(args.checkpoint)
            what = f"AudioCLIP {Path(args.checkpoint).name}"
        else:
            torch.manual_seed(0)
            backbone = AudioCLIP().freeze()
            what = "AudioCLIP (random weights, published layout)"
    else:
        from mcil.backbones.registry import build_backbone

        backbone = build_backbone(cfg.backbone.name, cfg.backbone.checkpoint)
        what = f"{cfg.backbone.name} backbone"
    res = bench_paths(cfg, backbone, spec)
    text_router = res["router_input"] if res["text_router_input"] == "same" else res["text_router_input"]
    title = (f"{what}, method {res['method']} (routers: image {res['router_input']}, text {text_router})"
             + f", {res['classes']} classes x templates '{res['templates']}', batch {res['batch_size']}, "
             f"{res['steps']} timed steps, {res['device']} ({res['threads']} threads)")
    print(format_table(res, title))  # noqa: T201  (the table is the command's output)
    if args.json:
        atomic_write_text(Path(args.json), json.dumps({"title": title, **res}, indent=1, default=str))
    if not res["equality"]["ok"]:
        log.error("mcil bench: the two paths disagree beyond tolerance %.0e; the speed-up is not exact", res["equality"]["tolerance"])
        return 1
    return 0
