"""The validation split: a fixed share of each class's train samples, held out for choosing settings.

Every default hyper-parameter is chosen on validation accuracy, never on test accuracy. The
validation samples are carved from the train split per class, by a hash of the sample id: the same
samples for every run, seed and method, independent of file order, and disjoint from both the
samples a run trains on and the test split. When ``data.val_per_class > 0`` a run never trains on
them, whichever split it is evaluated on (``data.eval_split``), so a setting chosen on validation
runs is reported on test runs that trained on exactly the same samples.
"""

from __future__ import annotations

import hashlib

import torch

from mcil.errors import DataError

__all__ = ["carve_validation"]


def _rank_key(sample_id: str) -> str:
    return hashlib.sha256(f"mcil-validation/{sample_id}".encode()).hexdigest()


def carve_validation(labels: torch.Tensor, sample_ids: list[str], per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, val) row indices of a train split: ``per_class`` validation rows of every label.

    labels: (N,) int; sample_ids: N ids. Within a class, rows are ranked by a hash of their sample
    id and the first ``per_class`` go to validation. Both index tensors are ascending (int64).
    ``per_class == 0`` gives every row to fit and none to validation.
    """
    if per_class < 0:
        raise DataError(f"data.val_per_class must be >= 0, got {per_class}")
    n = int(labels.shape[0])
    if len(sample_ids) != n:
        raise DataError(f"validation split: {len(sample_ids)} sample ids for {n} labels")
    if per_class == 0:
        return torch.arange(n, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    val = []
    for label in torch.unique(labels).tolist():
        rows = torch.nonzero(labels == label, as_tuple=False).flatten().tolist()
        if len(rows) <= per_class:
            raise DataError(f"data.val_per_class={per_class} leaves no training sample of class {label} "
                            f"({len(rows)} train samples); lower it or generate more train samples per class")
        rows.sort(key=lambda i: _rank_key(sample_ids[i]))
        val.extend(rows[:per_class])
    val_idx = torch.tensor(sorted(val), dtype=torch.long)
    keep = torch.ones(n, dtype=torch.bool)
    keep[val_idx] = False
    return torch.nonzero(keep, as_tuple=False).flatten(), val_idx
