"""``result.json``: what one run writes, built from the trainer's state, made strict JSON and
validated against ``mcil/schemas/result.schema.json`` before it is written (atomically).

A result that does not validate is a bug and is never written (:class:`mcil.schemas.ResultSchemaError`);
a run without a ``result.json`` has not finished. The schema itself and its loader live in
:mod:`mcil.schemas`; the readers (``mcil aggregate``, ``mcil studies``, ``mcil tune``) rely on it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import mcil
from mcil.atomic import atomic_write_text
from mcil.config import config_to_dict
from mcil.lock import lock_sha256

__all__ = ["ISA_CAP_VARIABLES", "RESULT_FILE", "SCHEMA_VERSION", "build_result", "cpu_model", "cpu_provenance", "cpu_signature", "json_clean",
           "write_result", "git_info", "peak_memory_mb"]

RESULT_FILE = "result.json"
SCHEMA_VERSION = 1
#: Environment variables that cap the instruction set of ATen's, oneDNN's and MKL's CPU kernels, or MKL's
#: code path; a run records those that are set (docs/environment.md, "Numbers across CPUs").
ISA_CAP_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")


def build_result(user_cfg, cfg, method_info, run_hash, scenario, manifest, learner, backbone, state, final_features,
                  last_bs, device, train_split, test_split, wall_s, final_posteriors=None) -> dict[str, Any]:
    """The result of a finished run, before :func:`json_clean` (numpy and torch values allowed).

    ``state`` is the trainer's :class:`mcil.train.RunState` after the last task (its accuracy rows,
    parameter counts, timings, the text means the paper's metrics need), ``method_info`` what
    :func:`mcil.learners.resolve.resolve_method` says about the method, ``user_cfg`` the
    configuration as given and ``cfg`` the resolved one.
    """
    from mcil.metrics import compat, record, summarise

    T = len(scenario.tasks)
    A = np.array([row["acc_row"] for row in state.rows], dtype=float)  # (T, T)
    A0 = np.array(state.before["acc_row"], dtype=float)
    n = np.array(state.rows[-1]["n_test"], dtype=int)
    c = np.array([len(t) for t in scenario.tasks], dtype=int)
    acc_steps = np.array([row["seen_acc"] for row in state.rows], dtype=float)
    metrics = summarise(A, n, c, acc_steps, A0=A0)
    metrics = {k: (float(v) if v is not None else None) for k, v in metrics.items()}
    metrics["paper"] = record.paper_metrics(
        A=A, n=n, acc_steps=acc_steps, text_means=state.text_means,
        image_means_last_batch=[row["image_mean_last_batch"] for row in state.rows],
        image_means_full=[row["image_mean_full"] for row in state.rows],
        features=final_features, last_batch_size=last_bs, A0=A0,
        posteriors=final_posteriors if final_posteriors and {"image", "audio", "fused"} <= set(final_posteriors) else None,
    )
    metrics["compat"] = {
        "continuum_1_2_7": compat.continuum_1_2_7(A, n),
        "pilot": compat.pilot(A, n),
        "mammoth": compat.mammoth(A, A0),
        "facil": compat.facil(A, c),
        "avcil": compat.avcil(A, n),
    }
    by_mod = {}
    for key in ("image", "audio", "fused"):
        vals = [row["seen_acc_by_modality"].get(key) for row in state.rows]
        if all(v is not None for v in vals):
            by_mod[key] = vals
    peak_mb = peak_memory_mb(device)
    frozen_params = sum(p.numel() for p in backbone.parameters())
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_hash,
        "config": config_to_dict(user_cfg),
        "resolved_config": config_to_dict(cfg),
        "config_hash": run_hash,
        "method": {**method_info, "modalities": sorted(type(learner).MODALITIES)},
        "dataset": {
            "name": manifest.name,
            "root": str(cfg.data.root),
            "n_classes": int(len(manifest.incremental_labels)),
            "class_names": list(manifest.class_names)[: len(manifest.incremental_labels)],
            "cache_keys": {"train": train_split.key, "test": test_split.key},
            "n_train": int(len(train_split.labels)),
            "n_test": int(len(test_split.labels)),
            "eval_split": cfg.data.eval_split,
            "val_per_class": cfg.data.val_per_class,
        },
        "scenario": {
            "n_tasks": T,
            "class_order": [int(x) for x in scenario.class_order],
            "tasks": [[int(x) for x in t] for t in scenario.tasks],
        },
        "accuracy_matrix": A.tolist(),
        "accuracy_before_training": A0.tolist(),
        "n_test_per_task": n.tolist(),
        "n_classes_per_task": c.tolist(),
        "acc_per_step": acc_steps.tolist(),
        "acc_per_step_by_modality": by_mod,
        "metrics": metrics,
        "fusion": {"per_step": [row["fusion"] for row in state.rows]},
        "learner_statistics": learner.statistics(),
        "params": {
            "backbone_frozen": int(frozen_params),
            "per_task": state.params,
        },
        "timings": {
            "wall_s": wall_s,
            "train_s": state.train_seconds,
            "per_task_s": state.per_task_s,
            "per_epoch_s": state.per_epoch_s,
            "train_samples": state.train_samples,
            "samples_per_s": state.train_samples / state.train_seconds if state.train_seconds > 0 else None,
            "peak_memory_mb": peak_mb,
        },
        "provenance": {
            "mcil_version": mcil.__version__,
            **git_info(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "lock_sha256": lock_sha256(),
            "platform": platform.platform(),
            **cpu_provenance(),
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "backbone": cfg.backbone.name,
            "backbone_sha256": getattr(backbone, "checkpoint_sha256", None),
            "created_unix": time.time(),
        },
    }


def write_result(path: str | Path, result: dict[str, Any]) -> dict[str, Any]:
    """:func:`json_clean` the result, validate it against the schema, write it atomically to ``path``;
    returns the cleaned result (what the file holds)."""
    from mcil.schemas import validate_result

    result = json_clean(result)
    validate_result(result)
    atomic_write_text(path, json.dumps(result, indent=1, allow_nan=False))
    return result


def json_clean(value: Any) -> Any:
    """Recursively turn numpy/torch scalars into Python numbers and NaN/inf into None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_clean(v) for v in value]
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, torch.Tensor):
        return json_clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def git_info() -> dict[str, Any]:
    """Commit of the mcil source tree (if it is a git checkout) and whether it had local changes."""
    root = Path(mcil.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "mcil"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": "unknown", "git_dirty": None}
    return {"git_sha": sha or "unknown", "git_dirty": dirty if sha else None}


def _cpuinfo_fields(cpuinfo: str | Path) -> dict[str, str]:
    """Key → value of the first processor block of Linux's ``cpuinfo`` ({} when it cannot be read)."""
    fields: dict[str, str] = {}
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break          # the first processor's block is enough: a host's cores are alike
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name ("AMD EPYC 7B13"): ``model name`` of Linux's ``cpuinfo``, else what
    :mod:`platform` knows.

    Why: CPU kernels are chosen per instruction set, so the same code, lock and seed give other float32
    numbers (and another pre-trained tiny backbone) on another CPU; a result says which it came
    from (docs/environment.md, "Numbers across CPUs"). Two hosts may share a model name ("AMD EPYC")
    and still differ: :func:`cpu_signature` tells them apart.
    """
    return _model_name(_cpuinfo_fields(cpuinfo))


def cpu_signature(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """What picks the CPU kernels' arithmetic beyond the model name: ``cpuinfo``'s vendor, family,
    model and stepping (None where the file or the field is absent, as on aarch64 or macOS) and
    ``isa``, the instruction set PyTorch's own kernels dispatch to on this host
    (:func:`torch.backends.cpu.get_cpu_capability`: "AVX512", "AVX2", "DEFAULT", ...).

    ``isa_caps`` holds the environment variables that cap the instruction sets of PyTorch's kernels,
    oneDNN and MKL (:data:`ISA_CAP_VARIABLES`), those that are set: with all three at AVX2 an AVX-512
    host computed what an AVX2-only host does.

    Why: hosts that share a model name ("AMD EPYC") pre-trained different tiny backbones from the
    same commit and seed (docs/environment.md, "Numbers across CPUs").
    """
    return _signature(_cpuinfo_fields(cpuinfo))


def cpu_provenance(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """``{"cpu": cpu_model(), "cpu_signature": cpu_signature()}`` from one read of ``cpuinfo``: the two
    fields every result's provenance and every pre-trained checkpoint's metadata carry."""
    fields = _cpuinfo_fields(cpuinfo)
    return {"cpu": _model_name(fields), "cpu_signature": _signature(fields)}


def _model_name(fields: dict[str, str]) -> str:
    return fields.get("model name") or platform.processor() or platform.machine() or "unknown"


def _signature(fields: dict[str, str]) -> dict[str, Any]:
    def number(key: str) -> int | None:
        try:
            return int(fields[key])
        except (KeyError, ValueError):
            return None

    return {
        "vendor": fields.get("vendor_id") or None,
        "family": number("cpu family"),
        "model": number("model"),
        "stepping": number("stepping"),
        "isa": torch.backends.cpu.get_cpu_capability(),
        "isa_caps": {name: os.environ[name] for name in ISA_CAP_VARIABLES if os.environ.get(name)},
    }


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of the run: CUDA memory allocated on a GPU, else the process's max RSS (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return _max_rss_mb()


def _max_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
