"""`mcil train`: run ONE configuration over all tasks and write ``result.json``.

The loop is deliberately plain: for each task a fresh AdamW (:mod:`mcil.optim`, the update of
``torch.optim.AdamW`` without its compiler import) with linear warm-up + half-cosine
decay (the official ``cosine_lr``), paired image–audio batches from the tensor cache, then an
evaluation of every task's test samples. Everything the run needs to resume lives in
``OUT/checkpoints/state.pt`` (written atomically every ``checkpoint_every`` steps and after every
task); a run killed at any point and started again with the same command continues and ends with
exactly the metrics of an uninterrupted run on CPU. ``result.json`` is written last, atomically,
after schema validation — it never exists for a failed run — and then ``checkpoints/`` is removed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import random
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mcil.atomic import atomic_torch_save
from mcil.config import RunConfig, config_hash, load_config
from mcil.errors import NonFiniteLossError, UserError
from mcil.evaluate import evaluate
from mcil.learners.resolve import resolve_method
from mcil.optim import AdamW
from mcil.result import RESULT_FILE, build_result, write_result
from mcil.train_data import TrainData, concat_batches, epoch_order

__all__ = ["train", "lr_at", "NonFiniteLossError", "configure_parser", "run_cli"]

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
PROGRESS_EVERY_S = 30.0  # seconds between progress lines inside an epoch


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; state was saved; the same command resumes."""


# ---------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------


def lr_at(step: int, total: int, warmup: int, base_lr: float) -> float:
    """Official ``cosine_lr``: lr·(step+1)/warmup during warm-up, then half-cosine to 0 at the end."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    e, es = step - warmup, max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * e / es)) * base_lr



def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# The resume state is read with ``torch.load(weights_only=True)``: on a cluster ``results/`` is a
# shared file system, and a pickle there would run code in the next job. So it holds tensors and
# primitives only (dicts, lists, tuples, str, int, float, bool, None) — no dataclass, no numpy.
STATE_FORMAT = 2


def _rng_state() -> dict[str, Any]:
    """The three generators' states as tensors and primitives (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "python": [int(version), torch.tensor(internal, dtype=torch.int64), gauss_next],
        "numpy": [str(kind), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(int(x) for x in internal.tolist()), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars/arrays made Python numbers/tensors (``weights_only``-loadable)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _load_state(state_path: Path, ckpt_dir: Path) -> dict[str, Any]:
    """Read ``state.pt`` with ``weights_only=True``; anything else (an old pickle, a crafted file) is refused."""
    import pickle

    try:
        saved = torch.load(state_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(
            f"{state_path} is not a weights-only resume state (written by an older mcil, or not by mcil at all); "
            f"refusing to unpickle it, as that could run code. Delete {ckpt_dir} to start this run again. ({e})"
        ) from None
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
        raise UserError(
            f"{state_path} has an unknown resume-state format; delete {ckpt_dir} to start this run again"
        )
    return saved


# ---------------------------------------------------------------------------------------------
# Run state (everything resume needs)
# ---------------------------------------------------------------------------------------------


@dataclass
class RunState:
    task: int = 0  # task being trained (or next to train)
    step: int = 0  # optimiser steps done in `task`
    done_tasks: int = 0  # tasks fully trained and evaluated
    before: dict[str, Any] | None = None  # evaluation before any training (A0)
    rows: list[dict[str, Any]] = field(default_factory=list)  # one evaluation per finished task
    per_task_s: list[float] = field(default_factory=list)
    per_epoch_s: list[list[float]] = field(default_factory=list)
    train_samples: int = 0
    train_seconds: float = 0.0
    params: list[dict[str, int]] = field(default_factory=list)
    text_means: list[list[float]] = field(default_factory=list)  # M1: mean text embedding at task start


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def pick_device(cfg: RunConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("device: 'cuda' was requested but no CUDA device is visible; set device=auto or cpu")
        return torch.device("cuda")
    return torch.device("cpu")


def _count_params(learner) -> dict[str, int]:
    trainable = sum(p.numel() for p in learner.trainable_parameters())
    total = sum(p.numel() for p in learner.parameters())
    return {"trainable": int(trainable), "learner_total": int(total)}


def train(cfg: RunConfig, out_dir: str | Path, *, stop_after_steps: int | None = None) -> dict[str, Any]:
    """Run all tasks of ``cfg`` into ``out_dir``; resume from ``out_dir/checkpoints`` if present.

    ``stop_after_steps`` (tests) raises :class:`Interrupted` after that many optimiser steps of
    this process, exactly as a SIGTERM would.
    """
    from mcil.backbones.registry import build_backbone
    from mcil.data.cache import load_split
    from mcil.data.manifest import read_manifest
    from mcil.data.scenario import make_scenario
    from mcil.data.splits import carve_validation
    from mcil.determinism import set_deterministic
    from mcil.features import frozen_embeddings
    from mcil.learners.base import Task
    from mcil.learners.registry import get_learner_class

    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    result_path = out_dir / RESULT_FILE
    user_cfg = cfg
    cfg, method_info = resolve_method(cfg)
    run_hash = config_hash(user_cfg)
    t_start = time.time()

    set_deterministic(True, warn_only=True)
    device = pick_device(cfg)
    seed_everything(cfg.train_seed)

    manifest = read_manifest(cfg.data.root)
    n_classes = len(manifest.incremental_labels)
    cfg.check_n_classes(n_classes)
    backbone = build_backbone(cfg.backbone.name, cfg.backbone.checkpoint).to(device)
    spec = backbone.preprocess
    full_train = load_split(cfg.data.root, "train", spec, cfg.data.cache_dir)
    full_test = load_split(cfg.data.root, "test", spec, cfg.data.cache_dir)
    # The validation rows are never trained on; with eval_split=val they replace the test split.
    fit_idx, val_idx = carve_validation(full_train.labels, full_train.sample_ids, cfg.data.val_per_class)
    train_split = full_train.subset(fit_idx, "fit") if len(val_idx) else full_train
    test_split = full_train.subset(val_idx, "val") if cfg.data.eval_split == "val" else full_test
    scenario = make_scenario(
        n_classes,
        n_tasks=cfg.scenario.n_tasks,
        initial=cfg.scenario.initial,
        increment=cfg.scenario.increment,
        order=cfg.scenario.order,
        order_seed=cfg.scenario.order_seed,
        dataset=manifest.name,
        class_names=list(manifest.class_names)[: len(manifest.incremental_labels)],
        separate=manifest.twin_pairs if cfg.scenario.separate_twins else (),
    )
    T = len(scenario.tasks)

    learner_cls = get_learner_class(cfg.method.name)
    class_names = list(manifest.class_names)
    learner = learner_cls.from_config(backbone, class_names, manifest.templates, cfg).to(device)
    used = {"image", "audio"} & set(learner.MODALITIES)  # towers the method never reads are not loaded
    frozen_towers = (set(learner.FROZEN_FEATURES) & used) if cfg.data.feature_cache else set()
    need_raw = frozenset(used - frozen_towers)
    frozen: dict[str, dict[str, torch.Tensor]] = {"train": {}, "test": {}}
    for tower in sorted(frozen_towers):  # encoded once per full split (cached on disk), then indexed
        train_feats = frozen_embeddings(backbone, full_train, tower, device, cfg.data.cache_dir)
        frozen["train"][tower] = train_feats[fit_idx] if len(val_idx) else train_feats
        frozen["test"][tower] = (train_feats[val_idx] if cfg.data.eval_split == "val"
                                 else frozen_embeddings(backbone, full_test, tower, device, cfg.data.cache_dir))
    data = TrainData(train_split, test_split, spec, device, frozen, cfg)
    learner.bind_train_data(lambda idx: data.batch("train", idx, need_raw=need_raw))

    # ---- resume ----------------------------------------------------------------------------
    state = RunState()
    state_path = ckpt_dir / STATE_FILE
    resume_opt = None
    if state_path.is_file():
        saved = _load_state(state_path, ckpt_dir)
        if saved.get("config_hash") != run_hash:
            raise UserError(
                f"{out_dir} holds a checkpoint of another configuration ({saved.get('config_hash')} != {run_hash}); "
                "use another --out or delete that folder"
            )
        state = RunState(**saved["state"])
        for task_rec in saved["tasks_begun"]:
            learner.start_task(Task(**task_rec))
        learner.load_state_dict(saved["learner"])
        learner.to(device)
        _set_rng_state(saved["rng"])
        resume_opt = saved.get("optimizer")
        log.info("resuming %s at task %d/%d, step %d", out_dir, state.task + 1, T, state.step)

    def save_state(opt) -> None:
        atomic_torch_save(
            {
                "format": STATE_FORMAT,
                "config_hash": run_hash,
                "state": _plain(dataclasses.asdict(state)),
                "tasks_begun": _plain([dataclasses.asdict(t) for t in learner.tasks_begun]),
                "learner": learner.state_dict(),  # tensors + learners' primitive extra states
                "optimizer": _plain(opt.state_dict()) if opt is not None else None,
                "rng": _rng_state(),
            },
            state_path,
        )

    # ---- signals: save and exit cleanly ---------------------------------------------------------
    stop = {"flag": False, "signal": None}

    def _handler(signum, _frame):
        stop["flag"], stop["signal"] = True, signum
        log.warning("received signal %d: saving state after the current step", signum)

    old_handlers = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    steps_this_process = 0
    final_features: dict[str, torch.Tensor] = {}
    final_posteriors: dict[str, torch.Tensor] = {}
    last_bs = 0
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if (cfg.amp == "bf16" and device.type == "cuda") else _NullCtx()
    )
    try:
        if state.before is None:
            state.before = evaluate(learner, data, scenario, -1, cfg, need_raw, keep_features=False)
            save_state(None)

        while state.task < T:
            t = state.task
            classes = tuple(int(c) for c in scenario.tasks[t])
            seen = tuple(int(c) for task in scenario.tasks[: t + 1] for c in task)
            idx_task = data.indices_of("train", classes)
            bs = cfg.optim.batch_size
            steps_per_epoch = math.ceil(len(idx_task) / bs) if learner.NEEDS_GRAD else 0
            total_steps = steps_per_epoch * cfg.optim.epochs
            task = Task(index=t, classes=classes, seen_classes=seen, n_tasks=T, steps=total_steps)
            fresh_task = len(learner.tasks_begun) <= t
            if fresh_task:
                # M1: text prototypes as they are when the task starts (before its training).
                te = learner.class_text_embeddings(seen)
                state.text_means.append(te.float().mean(0).cpu().tolist() if te is not None else [])
                learner.start_task(task)
            params = learner.trainable_parameters()
            opt = (
                AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, lr_scales=learner.lr_scales(params))
                if params
                else None
            )
            if resume_opt is not None and opt is not None and state.step > 0:
                if "steps" not in resume_opt:
                    raise UserError(
                        f"{state_path} holds a torch.optim state (written by an older mcil); "
                        f"delete {ckpt_dir} to start this run again"
                    )
                opt.load_state_dict(resume_opt)
            resume_opt = None
            t_task = time.time()
            if fresh_task:
                state.per_epoch_s.append([])
            # ---- optimisation ----------------------------------------------------------------
            learner.train()
            while state.step < total_steps and opt is not None:
                epoch, in_epoch = divmod(state.step, steps_per_epoch)
                perm = epoch_order(idx_task, cfg.train_seed, t, epoch)
                audio_perm = epoch_order(idx_task, cfg.train_seed + 7919, t, epoch) if cfg.optim.pairing == "official-shuffled" else None
                t_epoch = time.time()
                n_epoch = 0
                # Progress within an epoch (an AudioCLIP epoch on a CPU runs for hours): every
                # PROGRESS_EVERY_S seconds, samples/s so far and the epoch's ETA.
                t_progress = t_epoch
                for b in range(in_epoch, steps_per_epoch):
                    sel = perm[b * bs : (b + 1) * bs]
                    a_sel = audio_perm[b * bs : (b + 1) * bs] if audio_perm is not None else None
                    batch = data.batch("train", sel, a_sel, need_raw=need_raw)
                    extra = learner.replay_batch(len(sel))
                    if extra is not None:
                        batch = concat_batches(batch, extra)
                    lr = lr_at(state.step, total_steps, cfg.optim.warmup_steps, cfg.optim.lr)
                    opt.lr = lr
                    with autocast:
                        losses = learner.train_step(batch)
                    loss = losses.get("loss")
                    if loss is not None:
                        if not torch.isfinite(loss):
                            terms = {k: float(v.detach()) for k, v in losses.items() if torch.is_tensor(v) and v.numel() == 1}
                            raise NonFiniteLossError(
                                f"non-finite loss at task {t + 1}/{T}, step {state.step + 1}/{total_steps}: {terms}; "
                                "lower optim.lr or check the input data"
                            )
                        opt.zero_grad()
                        loss.backward()
                        if cfg.optim.grad_clip:
                            torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
                        opt.step()
                    state.step += 1
                    n_epoch += len(batch)
                    state.train_samples += len(batch)
                    steps_this_process += 1
                    now = time.time()
                    if now - t_progress >= PROGRESS_EVERY_S:
                        rate = n_epoch / max(now - t_epoch, 1e-9)
                        left = (steps_per_epoch - b - 1) * bs / max(rate, 1e-9)
                        log.info(
                            "task %d/%d epoch %d/%d step %d/%d: %.2f samples/s, ETA epoch %.0fs",
                            t + 1, T, epoch + 1, cfg.optim.epochs, b + 1, steps_per_epoch, rate, left,
                        )
                        t_progress = now
                    if state.step % cfg.checkpoint_every == 0 and state.step < total_steps:
                        save_state(opt)
                    if stop["flag"] or (stop_after_steps is not None and steps_this_process >= stop_after_steps):
                        save_state(opt)
                        raise Interrupted(f"stopped at task {t + 1}, step {state.step}; the same command resumes")
                dt = time.time() - t_epoch
                state.train_seconds += dt
                state.per_epoch_s[t].append(dt)
                done_epochs = epoch + 1
                eta = dt * (cfg.optim.epochs - done_epochs)
                log.info(
                    "task %d/%d epoch %d/%d: %d samples, %.1f samples/s, loss %.4f, ETA task %.0fs",
                    t + 1, T, done_epochs, cfg.optim.epochs, n_epoch, n_epoch / max(dt, 1e-9),
                    float(loss.detach()) if loss is not None else float("nan"), eta,
                )
            # ---- end of task ---------------------------------------------------------------
            learner.eval()
            loader = lambda: (data.batch("train", idx_task[i : i + bs], need_raw=need_raw) for i in range(0, len(idx_task), bs))  # noqa: E731
            learner.end_task(task, loader)
            row = evaluate(learner, data, scenario, t, cfg, need_raw, keep_features=(t == T - 1))
            if t == T - 1:
                final_features = row.pop("_features")
                final_posteriors = row.pop("_posteriors")
                last_bs = row.pop("_last_batch_size")
            state.rows.append(row)
            state.params.append(_count_params(learner))
            state.per_task_s.append(time.time() - t_task)
            log.info(
                "task %d/%d done: accuracy over %d seen classes %.2f%%%s",
                t + 1, T, len(seen), row["seen_acc"],
                f", fusion rate {row['fusion']['fusion_rate']:.2f}" if row["fusion"]["fusion_rate"] is not None else "",
            )
            state.task += 1
            state.step = 0
            state.done_tasks += 1
            if state.task < T:
                save_state(None)
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)

    # ---- metrics and result ---------------------------------------------------------------------
    result = build_result(
        user_cfg, cfg, method_info, run_hash, scenario, manifest, learner, backbone, state,
        final_features, last_bs, device, train_split, test_split, time.time() - t_start,
        final_posteriors,
    )
    result = write_result(result_path, result)
    # The result is complete: the resume state has no further use (at T = 100 it is gigabytes).
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    log.info("wrote %s (AIA %.2f, last %.2f)", result_path, result["metrics"]["aia"], result["metrics"]["last"])
    return result


class _NullCtx:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="run configuration YAML (defaults when omitted)")
    p.add_argument("--out", required=True, help="run folder: result.json and checkpoints/ go here")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. fusion.th=0.7 loss.alpha=1.0")


def run_cli(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    out = Path(args.out)
    if (out / RESULT_FILE).is_file():
        log.info("%s already has %s; nothing to do", out, RESULT_FILE)
        return 0
    try:
        train(cfg, out)
    except Interrupted as exc:
        log.warning("%s", exc)
        return 130
    return 0
