"""`mcil bench`: runs on a fresh install, and its equality check catches a path that computes differently.

Tiny sizes throughout (a few classes, one or two steps); no timing is asserted.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from mcil.backbones.registry import build_backbone
from mcil.bench import BenchSpec, bench_paths
from mcil.bench_env import SynthSizes, ensure_bench_env
from mcil.bench_equality import compare_paths
from mcil.cli import main
from mcil.config import load_config

SMALL = SynthSizes(n_classes=4, train_per_class=4, test_per_class=2)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return ensure_bench_env(tmp_path_factory.mktemp("bench"), SMALL)


def _cfg(env, *extra: str):
    return load_config(None, [
        f"data.root={env.data_root}", f"data.cache_dir={env.cache_dir}", "backbone.name=tiny",
        f"backbone.checkpoint={env.checkpoint}", "scenario.n_tasks=2", "optim.batch_size=4", *extra,
    ])


def test_bench_without_a_dataset_builds_its_own_and_prints_the_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)  # no data/synav-clean here: the self-contained path must not need one
    args = ["bench", "--synth-classes", "4", "--synth-train", "4", "--synth-test", "2", "--steps", "1",
            "--eval-batches", "1", "--json", str(tmp_path / "bench.json"), "scenario.n_tasks=2", "optim.batch_size=4"]
    assert main(args) == 0
    out = capsys.readouterr().out
    for text in ("official-style", "ours", "ratio", "equality (fp32", "-> OK"):
        assert text in out
    work = tmp_path / "xdg" / "mcil" / "bench"
    made = sorted(p.name for p in work.iterdir())
    assert any(n.startswith("synav-clean-") for n in made) and any(n.startswith("tiny-random-") for n in made)
    res = json.loads((tmp_path / "bench.json").read_text())
    assert res["equality"]["ok"] and res["backbone"] == "tiny"
    ckpt = next(work.glob("tiny-random-*.pt"))
    before = ckpt.stat().st_mtime_ns
    assert main(args) == 0  # the second call reuses the dataset and the backbone
    assert ckpt.stat().st_mtime_ns == before


def test_trimmed_text_path_is_exact_and_a_perturbed_path_fails_the_check(env):
    cfg = _cfg(env, "method.options.router_input=first-token", "fusion.gate=always")
    backbone = build_backbone("tiny", env.checkpoint)
    spec = BenchSpec(steps=1, eval_batches=1, warmup=0)
    res = bench_paths(cfg, backbone, spec)
    assert res["equality"]["ok"], res["equality"]
    assert res["text"]["ours"]["tokens"] < res["text"]["official-style"]["tokens"]  # trimming was on
    assert res["equality"]["grad_tensors"] > 10  # the random adapter state gives many non-zero gradients

    def nudge_audio(path, batch):  # ours serves a slightly wrong cached audio embedding
        if path == "optimised":  # (a direction change: the learner L2-normalises, so a scale would be invisible)
            batch.audio_emb = batch.audio_emb + 0.01 * batch.audio_emb.roll(1, dims=1)
        return batch

    bad = bench_paths(cfg, backbone, spec, perturb=nudge_audio)
    assert not bad["equality"]["ok"]
    assert bad["equality"]["loss_rel"] > spec.tolerance or bad["equality"]["grad_rel"] > spec.tolerance


def test_compare_paths_flags_each_kind_of_difference():
    base = {"loss": torch.tensor(2.0), "grads": [torch.ones(3), None], "logits": torch.ones(2, 2)}
    assert compare_paths(base, base, 1e-4)["ok"]
    assert not compare_paths(base, {**base, "loss": torch.tensor(2.001)}, 1e-4)["ok"]
    assert not compare_paths(base, {**base, "grads": [torch.ones(3) * 1.01, None]}, 1e-4)["ok"]
    assert compare_paths(base, {**base, "grads": [torch.ones(3), torch.ones(1)]}, 1e-4)["grad_rel"] == float("inf")
    assert not compare_paths(base, {**base, "logits": torch.ones(2, 2) * 0.9}, 1e-4)["ok"]


def test_bf16_and_channels_last_options_track_fp32_on_cpu(env):
    cfg = _cfg(env, "method.options.router_input=first-token")
    backbone = build_backbone("tiny", env.checkpoint)
    spec = dataclasses.replace(BenchSpec(steps=1, eval_batches=1, warmup=0), bf16=True, channels_last=True)
    res = bench_paths(cfg, backbone, spec)
    eq = res["equality"]
    assert res["optimised"]["bf16"] and eq["dtype"] == "bf16 vs fp32"
    assert eq["ok"] and eq["judged"] == ["loss_rel"] and eq["loss_rel"] < spec.bf16_tolerance
    assert 0 < eq["logits_rel"] < 1  # bf16 did change the numbers, boundedly
    assert all(p.is_contiguous() for p in backbone.parameters())  # channels_last was undone afterwards
