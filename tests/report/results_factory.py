"""Synthetic but schema-valid result.json files for the report tests.

``make_result`` builds the result of one run from its per-task accuracies; every result is checked
against mcil/schemas/result.schema.json (``validate_result``), so the fixtures cannot drift from
what ``mcil train`` writes. ``write_run`` puts it where the pipeline would:
``<root>/{dataset}/{method}/T{T}_th{th}_a{alpha}_s{seed}/result.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mcil.config import config_to_dict, load_config
from mcil.grid import th_fusion
from mcil.schemas import validate_result


def make_result(
    dataset: str = "synav-clean",
    method: str = "mcil",
    T: int = 2,
    th: str = "0.8",
    alpha: float = 0.7,
    seed: int = 0,
    acc: Sequence[float] | None = None,
    git_sha: str = "a" * 40,
    mcil_version: str = "0.1.0",
    git_dirty: bool = False,
    lock_sha256: str | None = "c" * 64,
    fusion_rate: float = 0.5,
    m1: float | None = 0.6,
    learner_statistics: dict[str, Any] | None = None,
    forgetting: float | None = None,
    m1_ours: float | None = None,
    m2_ours: float | None = None,
    cpu: str | None = None,
    cpu_signature: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A valid result whose accuracy after task t (over all seen classes) is ``acc[t]``.

    ``forgetting`` defaults to ``acc[0] − acc[-1]``; ``m1_ours`` / ``m2_ours`` fill
    ``metrics.paper.ours`` (our variants, docs/metrics.md §5). Every task has the same number of test samples and the matrix row t is constant over the seen
    tasks, so the sample-weighted seen accuracy of row t is exactly ``acc[t]`` and AIA = mean(acc).
    ``cpu`` / ``cpu_signature`` are left out of the provenance when None (as results written before
    they were recorded).
    """
    acc = list(acc if acc is not None else [80.0 - 10.0 * t for t in range(T)])
    assert len(acc) == T
    overrides = [f"data.name={dataset}", f"data.root=data/{dataset}", f"method.name={method}",
                 f"scenario.n_tasks={T}", f"loss.alpha={alpha}", f"train_seed={seed}"]
    overrides += [f"fusion.{key}={value}" for key, value in th_fusion(th).items()]
    cfg = config_to_dict(load_config(None, overrides))
    A = [[acc[t] if j <= t else 10.0 for j in range(T)] for t in range(T)]
    aia = sum(acc) / T
    official = {"variant": "official", "m1": m1, "m2": None if m1 is None else m1 / 2, "aia": round(aia, 2)}
    result = {
        "schema_version": 1,
        "run_id": "0123456789ab",
        "config": cfg,
        "resolved_config": {"method": cfg["method"]},
        "config_hash": "0123456789ab",
        "method": {"name": method, "learner": method.split("-")[0], "preset": method if "-" in method else None,
                   "modalities": ["image", "audio", "text"]},
        "dataset": {"name": dataset, "root": f"data/{dataset}", "n_classes": 2 * T,
                    "class_names": [f"class {i}" for i in range(2 * T)], "cache_keys": {"train": "x", "test": "y"},
                    "n_train": 20 * T, "n_test": 10 * T},
        "scenario": {"n_tasks": T, "class_order": list(range(2 * T)), "tasks": [[2 * t, 2 * t + 1] for t in range(T)]},
        "accuracy_matrix": A,
        "accuracy_before_training": [10.0] * T,
        "n_test_per_task": [10] * T,
        "n_classes_per_task": [2] * T,
        "acc_per_step": acc,
        "acc_per_step_by_modality": {"image": [a - 5.0 for a in acc]},
        "metrics": {
            "aia": aia, "aia_task_balanced": aia, "last": acc[-1],
            "forgetting": None if T == 1 else (acc[0] - acc[-1] if forgetting is None else forgetting),
            "bwt": None, "fwt": 1.0,
            "paper": {"official": official, "full": {**official, "variant": "full"}, "notes": [],
                      "ours": {"m1_ours_weighted": m1_ours, "m2_ours_cka": m2_ours, "notes": []}},
            "compat": {k: {"aia": aia} for k in ("continuum_1_2_7", "pilot", "mammoth", "facil", "avcil")},
        },
        "fusion": {"per_step": [{"n": 10 * (t + 1), "n_fused": int(10 * (t + 1) * fusion_rate),
                                 "fusion_rate": fusion_rate, "mean_r": 0.5, "mean_r_by_corruption": {},
                                 "fusion_rate_by_corruption": {}} for t in range(T)]},
        "learner_statistics": learner_statistics if learner_statistics is not None else {},
        "params": {"backbone_frozen": 1000, "per_task": [{"trainable": 10 * (t + 1), "learner_total": 1100} for t in range(T)]},
        "timings": {"wall_s": 3.0, "train_s": 2.0, "per_task_s": [1.0] * T, "per_epoch_s": [[1.0]] * T,
                    "train_samples": 40, "samples_per_s": 20.0, "peak_memory_mb": 100.0},
        "provenance": {"mcil_version": mcil_version, "git_sha": git_sha, "git_dirty": git_dirty, "python": "3.11",
                       "torch": "2.11", "lock_sha256": lock_sha256, "platform": "linux", "device": "cpu", "backbone": "tiny",
                       "backbone_sha256": "f" * 64},
    }
    if cpu is not None:
        result["provenance"]["cpu"] = cpu
    if cpu_signature is not None:
        result["provenance"]["cpu_signature"] = cpu_signature
    validate_result(result)
    return result


def run_dir(root: Path, dataset: str, method: str, T: int, th: str, alpha: float, seed: int) -> Path:
    return Path(root) / dataset / method / f"T{T}_th{th}_a{alpha}_s{seed}"


def write_run(root: Path, **kwargs: Any) -> Path:
    """Write ``make_result(**kwargs)`` at the pipeline's path under ``root``; return the file."""
    keys = {"dataset": "synav-clean", "method": "mcil", "T": 2, "th": "0.8", "alpha": 0.7, "seed": 0}
    keys.update({k: kwargs[k] for k in keys if k in kwargs})
    folder = run_dir(root, **keys)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "result.json"
    path.write_text(json.dumps(make_result(**{**keys, **kwargs})))
    return path
