"""Evaluation of a learner after a task: accuracy rows, per-modality accuracy, fusion statistics.

:func:`evaluate` is what ``mcil train`` runs before training (A0) and after every task; its rows
are the trainer's state and become ``result.json`` (:mod:`mcil.result`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from mcil.config import RunConfig
from mcil.errors import UserError
from mcil.train_data import TrainData

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(learner, data: TrainData, scenario, upto: int, cfg: RunConfig, need_raw, keep_features: bool) -> dict[str, Any]:
    """Evaluate after training task ``upto`` (−1 = before training) on the test samples of ALL tasks
    (with ``eval_future=next``, after a task: the seen tasks and the next one; the others get NaN).

    The learner scores every class once; per evaluation scope the columns are sliced: tasks
    j ≤ upto use all seen classes (task-agnostic, the paper's protocol); a future task j > upto
    uses the classes of tasks 0..j (what its scope will be), which gives forward transfer.
    Samples are visited task by task, so the last batch holds the newest task (as the official
    code's M1 assumes).
    """
    order = list(scenario.class_order)
    col = {c: i for i, c in enumerate(order)}
    T = len(scenario.tasks)
    scope_end = [sum(len(t) for t in scenario.tasks[: j + 1]) for j in range(T)]
    seen_end = scope_end[upto] if upto >= 0 else 0
    bs = cfg.optim.eval_batch_size
    correct = np.zeros(T)
    total = np.zeros(T)
    seen_correct = {"main": 0, "image": 0, "audio": 0, "fused": 0}
    seen_total = 0
    modality_keys: set[str] = set()
    reports_fusion = False
    n_fused = 0
    r_sum = 0.0
    r_n = 0
    r_by_corr: dict[str, list[float]] = {}
    fused_by_corr: dict[str, list[int]] = {}
    feats: dict[str, list[torch.Tensor]] = {}
    posts: dict[str, list[torch.Tensor]] = {}
    img_sum = None
    img_n = 0
    last_img_mean = None
    test = data.splits["test"]
    learner.eval()
    for j, task_classes in enumerate(scenario.tasks):
        if cfg.eval_future == "next" and 0 <= upto < j - 1:
            correct[j] = total[j] = np.nan
            continue
        idx_all = data.indices_of("test", task_classes)
        if len(idx_all) == 0:
            raise UserError(f"task {j} (classes {list(task_classes)}) has no test samples; every class needs test rows")
        scope = scope_end[j] if j > upto else seen_end
        for start in range(0, len(idx_all), bs):
            idx = idx_all[start : start + bs]
            batch = data.batch("test", idx, need_raw=need_raw)
            pred = learner.predict(batch, order)
            labels_col = torch.tensor([col[int(c)] for c in batch.labels.cpu()], dtype=torch.long)
            logits = pred.logits.float().cpu()[:, :scope]
            hit = logits.argmax(1) == labels_col
            correct[j] += int(hit.sum())
            total[j] += len(idx)
            if j <= upto:
                seen_total += len(idx)
                seen_correct["main"] += int(hit.sum())
                for key, lg in pred.by_modality.items():
                    modality_keys.add(key)
                    seen_correct[key] += int((lg.float().cpu()[:, :scope].argmax(1) == labels_col).sum())
                corr = [test.corruption[int(i)] or "clean" for i in idx]
                if pred.fused is not None:
                    reports_fusion = True
                    fused = pred.fused.cpu()
                    n_fused += int(fused.sum())
                    for c, fz in zip(corr, fused.tolist()):
                        fused_by_corr.setdefault(c, []).append(int(fz))
                if pred.r is not None:
                    r = pred.r.float().cpu()
                    ok = torch.isfinite(r)
                    r_sum += float(r[ok].sum())
                    r_n += int(ok.sum())
                    for c, rv in zip(corr, r.tolist()):
                        if math.isfinite(rv):
                            r_by_corr.setdefault(c, []).append(rv)
                if "image" in pred.features:
                    f = pred.features["image"].float().cpu()
                    img_sum = f.sum(0) if img_sum is None else img_sum + f.sum(0)
                    img_n += len(f)
                    last_img_mean = f.mean(0)
                if keep_features:
                    for key, f in pred.features.items():
                        feats.setdefault(key, []).append(f.float().cpu())
                    for key, lg in pred.by_modality.items():  # class posteriors per branch (M2, ours)
                        posts.setdefault(key, []).append(torch.softmax(lg.float().cpu()[:, :scope], dim=1))
    acc = (100.0 * correct / np.maximum(total, 1)).tolist()
    out: dict[str, Any] = {
        "acc_row": acc,
        "n_test": [int(x) if np.isfinite(x) else None for x in total],
        "seen_acc": 100.0 * seen_correct["main"] / seen_total if seen_total else None,
        "seen_acc_by_modality": {
            k: 100.0 * seen_correct[k] / seen_total for k in sorted(modality_keys) if seen_total
        },
        "fusion": {
            "n": seen_total,
            "n_fused": n_fused,
            "fusion_rate": n_fused / seen_total if (seen_total and reports_fusion) else None,
            "mean_r": r_sum / r_n if r_n else None,
            "mean_r_by_corruption": {k: float(np.mean(v)) for k, v in sorted(r_by_corr.items())},
            "fusion_rate_by_corruption": {k: float(np.mean(v)) for k, v in sorted(fused_by_corr.items())},
        },
        "image_mean_last_batch": last_img_mean.tolist() if last_img_mean is not None else None,
        "image_mean_full": (img_sum / img_n).tolist() if img_n else None,
    }
    if keep_features:
        out["_features"] = {k: torch.cat(v) for k, v in feats.items()}
        out["_posteriors"] = {k: torch.cat(v) for k, v in posts.items()}
        out["_last_batch_size"] = len(idx) if upto >= 0 else 0
    return out
