"""The validation split: per class, deterministic, disjoint from what a run trains on and from test."""

from __future__ import annotations

import pytest
import torch

from mcil.data.splits import carve_validation
from mcil.errors import DataError


def _split(n_classes=4, per_class=6):
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    ids = [f"train-{i:06d}" for i in range(len(labels))]
    return labels, ids


def test_validation_rows_are_per_class_and_disjoint_from_fit():
    labels, ids = _split()
    fit, val = carve_validation(labels, ids, 2)
    assert torch.bincount(labels[val]).tolist() == [2, 2, 2, 2]
    assert torch.bincount(labels[fit]).tolist() == [4, 4, 4, 4]
    assert not set(fit.tolist()) & set(val.tolist())
    assert sorted(fit.tolist() + val.tolist()) == list(range(len(labels)))
    assert fit.tolist() == sorted(fit.tolist()) and val.tolist() == sorted(val.tolist())


def test_validation_rows_depend_on_sample_ids_not_on_file_order():
    labels, ids = _split()
    _, val = carve_validation(labels, ids, 2)
    chosen = {ids[i] for i in val.tolist()}
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(3))
    _, val_perm = carve_validation(labels[perm], [ids[i] for i in perm.tolist()], 2)
    assert {ids[perm[i]] for i in val_perm.tolist()} == chosen
    assert carve_validation(labels, ids, 2)[1].tolist() == val.tolist()   # same call, same rows


def test_zero_validation_keeps_every_row_for_training():
    labels, ids = _split()
    fit, val = carve_validation(labels, ids, 0)
    assert fit.tolist() == list(range(len(labels))) and val.numel() == 0


def test_too_large_a_validation_share_names_the_class_and_the_fix():
    labels, ids = _split(per_class=3)
    with pytest.raises(DataError, match="val_per_class=3 leaves no training sample of class 0"):
        carve_validation(labels, ids, 3)
