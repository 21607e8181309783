"""`mcil bench`: training/evaluation throughput of the optimised path against an official-style loop.

Both paths run in one process on the same data, the same learner initialisation and the same
batches, so the ratio isolates what the pipeline does differently:

- **optimised** (what `mcil train` does): tensors from the memory-mapped cache, frozen towers
  read from the feature cache (``Learner.FROZEN_FEATURES``), evaluation prototypes encoded once
  per task;
- **reference** (how the official code behaves): every image and audio file decoded from disk
  per step, the frozen audio tower re-run per step, evaluation prompts re-encoded per batch.

Both are fp32 on CPU; on a GPU the optimised path is also timed with bf16 autocast. Also
reported: peak memory, and (``--audioclip``) the training throughput of an AudioCLIP-sized model
(random weights, no checkpoint needed) with its FLOPs per sample and, on CUDA, the model FLOP
utilisation against the card's peak.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch

from mcil.atomic import atomic_write_text
from mcil.config import load_config
from mcil.optim import AdamW

log = logging.getLogger(__name__)

__all__ = ["configure_parser", "run_cli", "bench_learner", "bench_audioclip"]

# Dense bf16 peak of common cards (TFLOP/s, no sparsity), for model FLOP utilisation.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "V100": 125.0}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _FileBatches:
    """Official-style data access: decode every file of the batch from disk, every step."""

    def __init__(self, root: Path, split: str, spec, device: torch.device):
        from mcil.data.manifest import read_manifest

        manifest = read_manifest(root)
        self.rows = manifest.split(split).reset_index(drop=True)
        self.root = Path(root)
        self.spec = spec
        self.device = device

    def batch(self, idx: torch.Tensor, labels: torch.Tensor):
        from mcil.data.decode import load_audio, load_image
        from mcil.data.spec import normalise_images, scale_audio
        from mcil.method.base import Batch

        rows = [self.rows.iloc[int(i)] for i in idx]
        images = torch.stack([load_image(self.root / r.image_path, self.spec) for r in rows])
        audio = torch.stack([load_audio(self.root / r.audio_path, self.spec) for r in rows])
        ones = torch.ones(len(rows), dtype=torch.bool, device=self.device)
        return Batch(
            labels=labels.to(self.device), has_image=ones, has_audio=ones, index=idx.to(self.device),
            image=normalise_images(images.to(self.device), self.spec), audio=scale_audio(audio.to(self.device), self.spec),
        )


def _time_loop(n_steps: int, step: Callable[[int], int], device: torch.device, warmup: int = 2) -> dict[str, float]:
    for i in range(min(warmup, n_steps)):
        step(i)
    _sync(device)
    t0 = time.perf_counter()
    samples = 0
    for i in range(n_steps):
        samples += step(i)
    _sync(device)
    dt = time.perf_counter() - t0
    return {"samples": samples, "seconds": dt, "samples_per_s": samples / dt}


def bench_learner(cfg, steps: int, eval_batches: int) -> dict[str, Any]:
    """Time ``steps`` training steps and ``eval_batches`` evaluation batches on both paths."""
    from mcil.backbones.base import build_backbone
    from mcil.data.cache import load_split
    from mcil.data.manifest import read_manifest
    from mcil.data.scenario import make_scenario
    from mcil.features import frozen_embeddings
    from mcil.method.base import Task
    from mcil.method.registry import get_learner_class
    from mcil.train import TrainData, pick_device, resolve_method, seed_everything

    cfg, _info = resolve_method(cfg)
    device = pick_device(cfg)
    manifest = read_manifest(cfg.data.root)
    backbone = build_backbone(cfg.backbone.name, cfg.backbone.checkpoint).to(device)
    spec = backbone.preprocess
    splits = {s: load_split(cfg.data.root, s, spec, cfg.data.cache_dir) for s in ("train", "test")}
    scenario = make_scenario(len(manifest.incremental_labels), n_tasks=cfg.scenario.n_tasks,
                             initial=cfg.scenario.initial, increment=cfg.scenario.increment,
                             order=cfg.scenario.order, order_seed=cfg.scenario.order_seed, dataset=manifest.name,
                             class_names=list(manifest.class_names)[: len(manifest.incremental_labels)])
    cls = get_learner_class(cfg.method.name)
    probe = cls.from_config(backbone, list(manifest.class_names), manifest.templates, cfg)
    classes = tuple(int(c) for c in scenario.tasks[0])
    task = Task(index=0, classes=classes, seen_classes=classes, n_tasks=len(scenario.tasks), steps=steps)
    frozen_towers = set(probe.FROZEN_FEATURES)
    del probe
    frozen = {s: {t: frozen_embeddings(backbone, splits[s], t, device, cfg.data.cache_dir) for t in frozen_towers}
              for s in splits}
    need_raw = frozenset({"image", "audio"} - frozen_towers)
    cached = TrainData(splits["train"], splits["test"], spec, device, frozen, cfg)
    files = {s: _FileBatches(Path(cfg.data.root), s, spec, device) for s in splits}
    bs = cfg.optim.batch_size
    idx_train = cached.indices_of("train", classes)
    idx_test = cached.indices_of("test", scenario.class_order)
    order = list(scenario.class_order)

    results: dict[str, Any] = {}
    for path in ("reference", "optimised"):
        seed_everything(cfg.train_seed)
        learner = cls.from_config(backbone, list(manifest.class_names), manifest.templates, cfg).to(device)
        learner.start_task(task)
        params = learner.trainable_parameters()
        opt = AdamW(params, lr=cfg.optim.lr) if params else None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def get(split: str, idx: torch.Tensor):
            if path == "optimised":
                return cached.batch(split, idx, need_raw=need_raw)
            return files[split].batch(idx, cached.labels[split][idx])

        def train_step(i: int) -> int:
            sel = idx_train[(i * bs) % len(idx_train):][:bs]
            if len(sel) < bs:
                sel = idx_train[:bs]
            batch = get("train", sel)
            learner.train()
            out = learner.train_step(batch)
            if opt is not None and "loss" in out:
                opt.zero_grad()
                out["loss"].backward()
                opt.step()
            return len(sel)

        def eval_step(i: int) -> int:
            sel = idx_test[(i * cfg.optim.eval_batch_size) % len(idx_test):][: cfg.optim.eval_batch_size]
            batch = get("test", sel)
            learner.eval()
            if path == "reference":
                learner.invalidate_text_cache()
            with torch.no_grad():
                learner.predict(batch, order)
            return len(sel)

        train_t = _time_loop(steps, train_step, device)
        eval_t = _time_loop(eval_batches, eval_step, device, warmup=1)
        results[path] = {"train": train_t, "eval": eval_t, "peak_memory_mb": _peak_mb(device)}
        log.info("%s: train %.1f samples/s, eval %.1f samples/s", path, train_t["samples_per_s"], eval_t["samples_per_s"])
    for phase in ("train", "eval"):
        results[f"{phase}_ratio"] = results["optimised"][phase]["samples_per_s"] / results["reference"][phase]["samples_per_s"]
    results["method"] = cfg.method.name
    results["device"] = str(device)
    results["batch_size"] = bs
    results["threads"] = torch.get_num_threads()
    return results


def bench_audioclip(device: torch.device, batch_size: int, steps: int, bf16: bool) -> dict[str, Any]:
    """Training-step throughput of an AudioCLIP-sized model (random weights): the image tower with
    MoE adapters trained through, text prototypes with gradients, frozen audio from a feature cache."""
    from torch.utils.flop_counter import FlopCounterMode

    from mcil.backbones.audioclip import AudioCLIP
    from mcil.method.mife import MIFE, MifeConfig

    model = AudioCLIP().to(device).freeze()
    sites = list(model.image_sites()) + list(model.text_sites())
    mife = MIFE(sites, MifeConfig()).to(device)
    mife.begin_task(0)
    params = [p for p in mife.parameters() if p.requires_grad]
    opt = AdamW(params, lr=1e-4) if params else None
    images = torch.randn(batch_size, 3, 224, 224, device=device)
    tokens = model.tokenize([f"a photo of class {i}." for i in range(8)]).to(device)
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else torch.autocast(device.type, enabled=False)

    def step(_i: int) -> int:
        with ctx, mife.active():
            f = torch.nn.functional.normalize(model.encode_image(images).float(), dim=-1)
            t = torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1)
            loss = (f @ t.T).logsumexp(-1).mean()
        if opt is not None:
            opt.zero_grad()
            loss.backward()
            opt.step()
        return batch_size

    counter = FlopCounterMode(display=False)
    with counter:
        step(0)
    flops_per_step = counter.get_total_flops()
    timing = _time_loop(steps, step, device, warmup=1)
    out = {"batch_size": batch_size, "bf16": bf16, **timing, "flops_per_sample": flops_per_step / batch_size,
           "peak_memory_mb": _peak_mb(device)}
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        achieved = flops_per_step * steps / timing["seconds"]
        out["achieved_tflops"] = achieved / 1e12
        out["mfu"] = achieved / (peak * 1e12) if peak else None
        out["device_name"] = name
    return out


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="run configuration YAML (as for mcil train)")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per path")
    p.add_argument("--eval-batches", type=int, default=5, help="timed evaluation batches per path")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--audioclip", action="store_true", help="also time an AudioCLIP-sized model (random weights)")
    p.add_argument("--audioclip-batch", type=int, default=8)
    p.add_argument("--audioclip-steps", type=int, default=3)
    p.add_argument("--json", help="also write the numbers to this JSON file")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. method.name=mcil optim.batch_size=16")


def run_cli(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    res = {"learner": bench_learner(cfg, args.steps, args.eval_batches)}
    lr = res["learner"]
    print(f"method {lr['method']} on {lr['device']} ({lr['threads']} threads), batch {lr['batch_size']}")  # noqa: T201
    print(f"{'path':<10} {'train samples/s':>16} {'eval samples/s':>15} {'peak MB':>9}")  # noqa: T201
    for path in ("reference", "optimised"):
        r = lr[path]
        print(f"{path:<10} {r['train']['samples_per_s']:>16.1f} {r['eval']['samples_per_s']:>15.1f} {r['peak_memory_mb']:>9.0f}")  # noqa: T201
    print(f"ratio      {lr['train_ratio']:>15.2f}x {lr['eval_ratio']:>14.2f}x")  # noqa: T201
    if args.audioclip:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        res["audioclip"] = [bench_audioclip(device, args.audioclip_batch, args.audioclip_steps, bf16=False)]
        if device.type == "cuda":
            res["audioclip"].append(bench_audioclip(device, args.audioclip_batch, args.audioclip_steps, bf16=True))
        for r in res["audioclip"]:
            print(  # noqa: T201
                f"audioclip-sized {'bf16' if r['bf16'] else 'fp32'} on {device}: {r['samples_per_s']:.2f} samples/s, "
                f"{r['flops_per_sample'] / 1e9:.1f} GFLOP/sample"
                + (f", MFU {r['mfu']:.1%}" if r.get("mfu") else "")
            )
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(res, indent=1))
    return 0
