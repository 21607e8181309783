"""Template sets and prototype averaging (hand-computed values)."""

from __future__ import annotations

import math

import pytest
import torch

from mcil.errors import DataError
from mcil.method.prompts import (
    TemplateSet,
    available_template_sets,
    average_prototypes,
    fill_prompts,
    load_templates,
)


def test_shipped_sets_load():
    assert {"synav", "classroom", "imagenet-esc"} <= set(available_template_sets())
    synav = load_templates("synav")
    assert synav.test == "a {}." and len(synav.train) == 16


def test_classroom_has_35_official_templates_with_one_duplicate():
    t = load_templates("classroom")
    assert t.test == "a photo of a person who is {} in a classroom."
    assert len(t.train) == 35 and len(set(t.train)) == 34
    dup = [s for s in t.train if t.train.count(s) == 2]
    assert dup == ["a low resolution photo of a person in a classroom who is {}."] * 2
    assert t.train[0] == "a photo of a person in a classroom who is {}."


def test_imagenet_esc_trains_on_the_classroom_templates():
    esc, room = load_templates("imagenet-esc"), load_templates("classroom")
    assert esc.test == "a bad photo of a {}."
    assert esc.train == room.train
    assert fill_prompts(esc.train[:1], ["cock"]) == ["a photo of a person in a classroom who is cock."]


def test_unknown_set_names_the_available_ones():
    with pytest.raises(DataError, match="synav"):
        load_templates("nope")


def test_template_choice():
    t = TemplateSet("x", "T {}.", ("A {}.", "B {}."))
    assert t.for_training(True) == ("A {}.", "B {}.")
    assert t.for_training(False) == ("T {}.",)
    assert t.for_evaluation("single") == ("T {}.",)
    assert t.for_evaluation("average") == ("A {}.", "B {}.")


def test_fill_prompts_is_class_major():
    assert fill_prompts(["a {}", "b {}"], ["x", "y"]) == ["a x", "b x", "a y", "b y"]


def test_average_prototypes_is_the_mean_of_template_embeddings():
    emb = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])  # class 0: rows 0-1, class 1: rows 2-3
    raw = average_prototypes(emb, 2, normalize_templates=False)
    assert torch.allclose(raw, torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    # normalised first: [0.6, 0.8] and [1, 0] average to [0.8, 0.4]
    emb2 = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    assert torch.allclose(average_prototypes(emb2, 2, normalize_templates=True), torch.tensor([[0.8, 0.4]]))
    assert torch.allclose(average_prototypes(emb2, 2, normalize_templates=False), torch.tensor([[2.0, 2.0]]))
    assert math.isclose(float(average_prototypes(emb2, 1, True).norm(dim=1)[0]), 1.0, rel_tol=1e-6)


def test_average_prototypes_rejects_ragged_input():
    with pytest.raises(ValueError):
        average_prototypes(torch.zeros(5, 3), 2, True)
