"""`mcil calibrate`: the metrics on hand-checkable inputs, and one run of the CLI on tiny synav."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from mcil.calibrate import (
    CalibrateOptions,
    auc,
    batch_fuse_fraction,
    class_means,
    fraction_at_least,
    mismatched_partners,
    ncm_accuracy,
    probe_accuracy,
    random_batches,
    within_between_cosine,
)
from mcil.cli import main

# --------------------------------------------------------------------------------------------- pure


def test_auc_on_known_scores():
    assert auc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert auc(torch.tensor([1.0]), torch.tensor([2.0])) == 0.0
    assert auc(torch.tensor([5.0, 5.0]), torch.tensor([5.0])) == 0.5
    # pairs (1,2) 0, (1,3) 0, (2,2) ½, (2,3) 0 → 0.5 / 4
    assert auc(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 3.0])) == pytest.approx(0.125)
    assert auc(torch.tensor([]), torch.tensor([1.0])) != auc(torch.tensor([]), torch.tensor([1.0]))  # NaN


def test_auc_equals_pairwise_count_with_ties():
    g = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 6, (37,), generator=g).float()
    neg = torch.randint(0, 5, (23,), generator=g).float()
    brute = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos.tolist(), neg.tolist()))
    assert auc(pos, neg) == pytest.approx(brute / (37 * 23))


def test_fraction_at_least_ignores_nan():
    r = torch.tensor([0.1, 0.5, 0.8, float("nan")])
    assert fraction_at_least(r, [0.5, 0.9, -1.0]) == pytest.approx([2 / 3, 0.0, 1.0])


def test_batch_gate_uses_the_mean_r_of_samples_with_both_modalities():
    r = torch.tensor([0.9, 0.7, 0.1, 0.2, 0.9, -5.0])
    has_image = torch.ones(6, dtype=torch.bool)
    has_audio = torch.tensor([True, True, True, True, True, False])
    batches = [torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])]
    # means: 0.8 (opens at 0.75), 0.15 (closed), 0.9 (sample 5 has no audio: not in the mean)
    assert batch_fuse_fraction(r, has_image, has_audio, 0.75, batches) == pytest.approx(2 / 3)
    assert batch_fuse_fraction(r, has_image, has_audio, 0.95, batches) == 0.0
    assert batch_fuse_fraction(r, has_image, has_audio, 0.0, batches) == 1.0


def test_random_batches_are_full_disjoint_and_seeded():
    g = torch.Generator().manual_seed(1)
    batches = random_batches(10, 4, 2, g)
    assert len(batches) == 4 and all(len(b) == 4 for b in batches)
    for draw in (batches[:2], batches[2:]):
        assert len(set(torch.cat(draw).tolist())) == 8
    again = random_batches(10, 4, 2, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    small = random_batches(3, 4, 2, torch.Generator().manual_seed(0))
    assert [sorted(b.tolist()) for b in small] == [[0, 1, 2], [0, 1, 2]]


def test_mismatched_partners_have_another_label():
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 2])
    p = mismatched_partners(labels, torch.Generator().manual_seed(0))
    assert p.shape == labels.shape and bool((labels[p] != labels).all())
    with pytest.raises(ValueError, match="same label"):
        mismatched_partners(torch.zeros(4, dtype=torch.long), torch.Generator())


def test_class_means_ncm_and_within_between_cosine_on_constructed_features():
    e = torch.eye(3)
    # each class: two scaled copies of one direction, classes orthogonal
    x = torch.stack([e[0], 2 * e[0], e[1], 3 * e[1]])
    y = torch.tensor([0, 0, 1, 1])
    assert torch.allclose(class_means(x, y, 3), torch.stack([e[0], e[1], torch.zeros(3)]))
    within, between = within_between_cosine(x, y)
    assert within == pytest.approx(1.0) and between == pytest.approx(0.0)
    # one class with two orthogonal rows: within = 0; between rows e0·(e0+e1)/√2 etc.
    x2 = torch.stack([e[0], e[1], e[0] + e[1]])
    y2 = torch.tensor([0, 0, 1])
    w2, b2 = within_between_cosine(x2, y2)
    assert w2 == pytest.approx(0.0) and b2 == pytest.approx(2 ** -0.5)
    # NCM: test rows nearer (in angle) to their own class mean; the last one is on the wrong side
    test_x = torch.tensor([[1.0, 0.2, 0.0], [0.1, 1.0, 0.0], [1.0, 0.9, 0.0]])
    ok = ncm_accuracy(x, y, test_x, torch.tensor([0, 1, 1]), 3)
    assert ok.tolist() == [True, True, False]


def test_within_between_cosine_equals_the_pairwise_mean():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 8, generator=g)
    y = torch.randint(0, 4, (30,), generator=g) * 7  # labels need not be 0..C-1
    z = torch.nn.functional.normalize(x.double(), dim=-1)
    gram = z @ z.t()
    same = y[:, None] == y[None, :]
    off = ~torch.eye(30, dtype=torch.bool)
    within, between = within_between_cosine(x, y)
    assert within == pytest.approx(float(gram[same & off].mean()))
    assert between == pytest.approx(float(gram[~same].mean()))


def test_probe_separates_separable_features():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g)
    y = torch.arange(4).repeat_interleave(10)
    x = centres[y] + 0.05 * torch.randn(40, 16, generator=g)
    ok, lam = probe_accuracy(x, y, centres[y] + 0.05 * torch.randn(40, 16, generator=g), y, 4)
    assert bool(ok.all()) and lam > 0


def test_options_are_checked():
    from mcil.errors import UserError

    with pytest.raises(UserError, match="batch-size"):
        CalibrateOptions(batch_size=0)
    with pytest.raises(UserError, match="quantiles"):
        CalibrateOptions(quantiles=(0.5, 1.5))


# ----------------------------------------------------------------------------------------- CLI


def test_cli_writes_one_section_per_dataset(tiny_env, tmp_path, capsys):
    from mcil.backbones.registry import build_backbone
    from mcil.backbones.zeroshot_eval import zeroshot_table

    out = tmp_path / "results" / "calibration.md"
    rc = main(["calibrate", str(tiny_env.data_root), str(tiny_env.noisy_root), "--backbone", str(tiny_env.checkpoint),
               "--out", str(out), "--cache-dir", str(tiny_env.cache_dir), "--batch-size", "4"])
    assert rc == 0
    md = out.read_text()
    assert md == capsys.readouterr().out
    assert "## synav-clean" in md and "## synav-noisy" in md and "AUC paired vs mismatched" in md
    result = json.loads(out.with_suffix(".json").read_text())
    clean, noisy = result["datasets"]
    assert result["options"]["batch_size"] == 4 and result["options"]["thresholds"] == [0.6, 0.7, 0.8, 0.9]
    for d in (clean, noisy):
        assert set(d["features"]) == {"image", "audio", "fused"}
        for e in d["features"].values():
            for key in ("zeroshot", "probe", "ncm"):
                assert 0.0 <= e[key] <= 100.0
            assert -1.0 <= e["cos_between"] <= 1.0 and -1.0 <= e["cos_within"] <= 1.0
        assert 0.0 <= d["r"]["auc_paired_vs_mismatched"] <= 1.0
        rows = d["gate"]["rows"]
        assert [row["th"] for row in rows[:4]] == [0.6, 0.7, 0.8, 0.9] and len(rows) == 9
        assert all(0.0 <= row["samples_fused"] <= 1.0 and 0.0 <= row["batches_fused"] <= 1.0 for row in rows)
        # the quantile thresholds are the reported quantiles of paired r
        assert [row["th"] for row in rows[4:]] == pytest.approx(d["r"]["paired"]["quantiles"])
    assert "corruption" not in clean["r"] and clean["corrupted_test"] == 0
    assert noisy["corrupted_test"] > 0 and "all corrupted" in noisy["r"]["corruption"]
    assert "by_corruption" in noisy["features"]["fused"]
    # the header names the weights' content hash, which a rebuild of the same backbone reproduces
    # (the file's hash does not: the checkpoint stores pre-training timings)
    state = torch.load(tiny_env.checkpoint, weights_only=False)["pretrain"]["state_sha256"]
    assert result["backbone"]["state_sha256"] == state and f"weights sha256 {state[:12]}…" in md
    # zero-shot is the very number pretrain's zero-shot table reports (one implementation of prompts and fusion)
    backbone = build_backbone("tiny", tiny_env.checkpoint)
    zs = zeroshot_table(backbone, tiny_env.data_root, tiny_env.cache_dir)["accuracy"]
    for key in ("image", "audio", "fused"):
        assert clean["features"][key]["zeroshot"] == pytest.approx(zs[key])


def test_cli_names_a_missing_checkpoint(tiny_env, tmp_path, caplog):
    rc = main(["calibrate", str(tiny_env.data_root), "--backbone", str(tmp_path / "nope.pt"),
               "--out", str(tmp_path / "c.md"), "--cache-dir", str(tiny_env.cache_dir)])
    assert rc == 2
    assert "nope.pt" in caplog.text and "mcil pretrain" in caplog.text
    assert not (tmp_path / "c.md").exists()


def test_missing_cache_and_media_name_the_cache_command(tiny_env, tmp_path, caplog):
    import shutil

    bare = tmp_path / "synav-clean"  # manifest and classes.json only: no media, no cache
    bare.mkdir()
    for name in ("manifest.csv", "classes.json"):
        shutil.copy(tiny_env.data_root / name, bare / name)
    rc = main(["calibrate", str(bare), "--backbone", str(tiny_env.checkpoint), "--out", str(tmp_path / "c.md"),
               "--cache-dir", str(tmp_path / "cache")])
    assert rc == 2
    assert "does not exist" in caplog.text and "mcil cache --data" in caplog.text
