"""mcil.metrics.record: the metrics.paper entry of result.json (the paper's two variants and ours)."""

import math

import pytest
import torch

import mcil.metrics as m
from mcil.metrics import ours, paper, record

FIXTURE_ROWS = [[98.4], [96.2, 93.2], [90.4, 90.8, 86.6]]
TEXT = [[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]]  # cos: 0, then 1
IMG = [[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]  # cos: 1, then -1


def test_paper_metrics_from_trainer_record():
    A = m.lower_triangle_to_matrix(FIXTURE_ROWS)
    g = torch.Generator().manual_seed(5)
    feats = {k: torch.randn(10, 4, generator=g) for k in ("image", "audio", "fused")}
    last_means = IMG
    full_means = [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]  # cos 1/√2 twice
    out = record.paper_metrics(
        A=A, n=[500] * 3, acc_steps=[98.4, 94.7, 267.8 / 3], text_means=TEXT,
        image_means_last_batch=last_means, image_means_full=full_means,
        features=feats, last_batch_size=3, A0=[0.0, 0.0, 0.0],
    )
    assert out["notes"] == []
    official = paper.m1_m2_official(
        A, [500] * 3, TEXT, last_means, feats["image"][-3:], feats["audio"][-3:], feats["fused"][-3:]
    )
    full = paper.m1_m2_full(A, [500] * 3, TEXT, full_means, feats["image"], feats["audio"], feats["fused"])
    assert out["official"] == official
    assert out["full"]["m1"] == pytest.approx(full["m1"])
    assert out["full"]["m2"] == pytest.approx(full["m2"])
    c = 1 / math.sqrt(2)
    assert out["full"]["s_steps"] == pytest.approx([1.0, 0.5 * 0.5 + 0.5 * (c + 1) / 2, 0.5 + 0.5 * (c + 1) / 2])
    # the official NMI only sees the last 3 rows
    assert out["official"]["nmi_v"] == pytest.approx(
        paper.nmi(feats["image"][-3:].double(), feats["fused"][-3:].double()).item()
    )
    assert out["official"]["nmi_v"] != pytest.approx(out["full"]["nmi_v"])


def test_paper_metrics_degrades_with_notes():
    A = m.lower_triangle_to_matrix(FIXTURE_ROWS)
    feats = {"image": torch.randn(4, 3)}
    out = record.paper_metrics(
        A=A, n=[1, 1, 1], text_means=[[], [], []], image_means_last_batch=IMG,
        image_means_full=[None, None, None], features=feats, last_batch_size=2,
    )
    for variant in ("official", "full"):
        assert out[variant]["m1"] is None and out[variant]["m2"] is None
    assert any("audio, fused" in note for note in out["notes"])
    with pytest.raises(m.MetricInputError, match="acc_steps"):
        record.paper_metrics(
            A=A, n=[1, 1, 1], acc_steps=[98.4, 90.0, 89.0], text_means=None,
            image_means_last_batch=None, image_means_full=None, features=None, last_batch_size=0,
        )


def test_paper_metrics_zero_image_prototype_makes_m1_undefined_not_an_error():
    """No test sample with an image (modality-absence study): the image prototypes are zero, so the
    task similarity and M1 are undefined; the run must still get its other metrics."""
    A = m.lower_triangle_to_matrix(FIXTURE_ROWS)
    zeros = [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    out = record.paper_metrics(
        A=A, n=[1, 1, 1], text_means=TEXT, image_means_last_batch=zeros, image_means_full=zeros,
        features=None, last_batch_size=0,
    )
    for variant in ("official", "full"):
        assert out[variant]["m1"] is None
        assert out[variant]["forgetting_steps"] is not None
    assert any("image (last batch) prototype is zero" in note for note in out["notes"])


def test_paper_metrics_carries_our_variants_without_touching_the_paper_values():
    A = m.lower_triangle_to_matrix(FIXTURE_ROWS)
    g = torch.Generator().manual_seed(5)
    img = torch.randn(40, 6, generator=g)
    feats = {"image": img, "audio": torch.randn(40, 6, generator=g), "fused": img.clone()}
    out = record.paper_metrics(A=A, n=[1, 1, 1], text_means=TEXT, image_means_last_batch=IMG,
                               image_means_full=IMG, features=feats, last_batch_size=8)
    ref = paper.m1_m2_full(A, [1, 1, 1], TEXT, IMG, feats["image"], feats["audio"], feats["fused"])
    assert out["full"]["m2"] == pytest.approx(ref["m2"])
    o = out["ours"]
    assert o["cka_v"] == pytest.approx(1.0) and abs(o["cka_a"]) < 0.2
    assert o["m2_ours_cka"] == pytest.approx(
        ours.m2_ours_cka(out["full"]["aia"] / 100, ref["bwt_steps"], ref["fwt_steps"], o["cka_v"], o["cka_a"]))
    assert o["m1_ours_weighted"] == pytest.approx(ours.m1_ours_weighted(ref["aia"], ref["forgetting_steps"],
                                                                        ref["s_steps"]))
    assert o["m2_ours_posterior"] is None and any("posteriors" in n for n in o["notes"])
    post = {k: torch.softmax(v[:, :3], dim=1) for k, v in feats.items()}
    with_post = record.paper_metrics(A=A, n=[1, 1, 1], text_means=TEXT, image_means_last_batch=IMG,
                                     image_means_full=IMG, features=feats, last_batch_size=8, posteriors=post)
    assert with_post["ours"]["nmi_post_v"] == pytest.approx(ours.nmi_posterior(post["image"], post["fused"]))
    assert with_post["ours"]["m2_ours_posterior"] is not None
