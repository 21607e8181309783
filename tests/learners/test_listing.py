"""`mcil methods`: the listing of learners and presets."""

from __future__ import annotations

import json

import pytest

from mcil.cli import main
from mcil.errors import UserError
from mcil.learners.listing import describe


def test_listing_shows_learners_and_presets(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "learners:" in out and "presets:" in out
    assert "mcil " in out and "mcil-no-mife" in out and "mcil-official" in out


def test_one_learner_in_full_with_options(capsys):
    assert main(["methods", "mcil"]) == 0
    out = capsys.readouterr().out
    assert "method.options:" in out and "top_k = 2" in out and "text_diversity = true" in out


def test_preset_json(capsys):
    assert main(["methods", "mcil-no-aavfm", "--json"]) == 0
    entry = json.loads(capsys.readouterr().out)
    assert entry == {
        "kind": "preset",
        "name": "mcil-no-aavfm",
        "learner": "mcil",
        "overrides": {"fusion.gate": "never"},
        "fixed": {},
        "doc": entry["doc"],
    }


def test_fixed_values_are_listed(capsys):
    assert main(["methods", "joint"]) == 0
    assert "fixed (wins over any config value): scenario.n_tasks=1" in capsys.readouterr().out


def test_unknown_name():
    with pytest.raises(UserError, match="mcil-official"):
        describe("nope")
    assert main(["methods", "nope"]) == 2
