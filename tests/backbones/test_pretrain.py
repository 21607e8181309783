"""Contrastive pre-training of the tiny backbone and its zero-shot evaluation."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mcil.backbones.base import Backbone
from mcil.backbones.contrastive import PretrainData, attribute_codes, class_contrastive_loss, texts_and_positives
from mcil.backbones.pretrain import PretrainOptions, pretrain
from mcil.backbones.tiny import TinyBackbone
from mcil.backbones.tiny_towers import TinyConfig
from mcil.backbones.tiny_vocab import synav_templates
from mcil.backbones.zeroshot_eval import zeroshot_accuracy, zeroshot_markdown
from mcil.data.spec import PreprocessSpec, normalise_images, scale_audio

NAMES = ["red solid square, low steady hum", "blue solid square, high steady hum",
         "red striped circle, low pulsing buzz", "blue striped circle, high pulsing buzz"]
SMALL = TinyConfig(embed_dim=32, width=32, depth=1, heads=2, mlp_ratio=2.0)


def _toy_data(per_class: int = 12, seed: int = 0) -> PretrainData:
    """4 classes: colour → image channel, shape → patch position, pitch/rhythm → a tone's frequency/AM."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(NAMES)).repeat_interleave(per_class)
    n = len(labels)
    images = (torch.rand(n, 3, 64, 64, generator=g) * 60).to(torch.uint8)
    t = torch.arange(16000) / 16000.0
    audio = torch.zeros(n, 16000)
    for i, y in enumerate(labels.tolist()):
        ch = 0 if y % 2 == 0 else 2
        r0 = 8 if y < 2 else 36
        images[i, ch, r0 : r0 + 20, r0 : r0 + 20] = 230
        freq = 220.0 if y % 2 == 0 else 880.0
        am = 1.0 if y < 2 else 0.5 * (1 + torch.sin(2 * math.pi * 6 * t))
        audio[i] = 0.5 * am * torch.sin(2 * math.pi * freq * t + float(torch.rand(1, generator=g)) * 6.28)
    ones = torch.ones(n, dtype=torch.bool)
    return PretrainData(images, audio.half(), labels, ones, ones.clone(), list(NAMES))


def _full_loss(model: TinyBackbone, data: PretrainData) -> float:
    """Mean of the three pair losses over all samples, prompts from the test template."""
    spec = model.preprocess
    with torch.no_grad():
        zi = model.encode_image(normalise_images(data.images, spec))
        za = model.encode_audio(scale_audio(data.audio, spec))
        zt = model.encode_text(model.tokenize([f"a {data.class_names[y]}." for y in data.labels.tolist()]))
        s = model.logit_scale_tensor()
        pairs = [(zi, zt), (za, zt), (zi, za)]
        return float(sum(class_contrastive_loss(a, b, data.labels, s) for a, b in pairs) / 3)


# -- the loss ---------------------------------------------------------------------------------------
def test_loss_with_distinct_labels_is_clip_infonce() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    scale = torch.tensor(10.0)
    logits = scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t()
    target = torch.arange(6)
    clip = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    torch.testing.assert_close(class_contrastive_loss(a, b, target, scale), clip)


def test_loss_treats_same_class_pairs_as_positives() -> None:
    eye = torch.eye(2)
    # two samples of one class, orthogonal embeddings, scale 1: each row's target is (½, ½)
    # CE = −½(1 − log(1+e)) − ½(0 − log(1+e)) = log(1+e) − ½ (one-hot InfoNCE would give log(1+e) − 1)
    loss = class_contrastive_loss(eye, eye, torch.tensor([0, 0]), torch.tensor(1.0))
    assert math.isclose(float(loss), math.log(1 + math.e) - 0.5, rel_tol=1e-6)
    # collapsing a class onto one point is optimal for same-class pairs: lower loss than keeping them apart
    same = class_contrastive_loss(torch.ones(2, 2), torch.ones(2, 2), torch.tensor([0, 0]), torch.tensor(1.0))
    assert float(same) < float(loss)


def test_partial_descriptions_are_positive_for_every_class_that_has_their_attributes() -> None:
    parts = [{"image": ("red", "solid", "square"), "audio": ("low", "steady", "hum")},
             {"image": ("blue", "solid", "square"), "audio": ("high", "steady", "hum")},
             {"image": ("red", "striped", "circle"), "audio": ("low", "pulsing", "buzz")},
             None]  # a class without attributes always gets its full name
    names = ["red solid square, low steady hum", "blue solid square, high steady hum",
             "red striped circle, low pulsing buzz", "plain thing"]
    data = PretrainData(torch.zeros(0), torch.zeros(0), torch.zeros(0), torch.zeros(0), torch.zeros(0), names, parts)
    labels = torch.tensor([0, 1, 2, 3] * 8)
    codes = attribute_codes(data, "image")
    texts, pos = texts_and_positives(labels, data, "image", codes, ["a {}."], 1.0, torch.Generator().manual_seed(0))
    assert pos.diagonal().all()
    described = set()
    for j, text in enumerate(texts):
        words = text[2:-1]
        if labels[j] == 3:
            assert words == "plain thing" and pos[:, j].tolist() == (labels == 3).tolist()
            continue
        values = words.split()
        assert values and values == [v for v in parts[int(labels[j])]["image"] if v in values]  # name order
        described.add(tuple(values))
        expected = [parts[y] is not None and set(values) <= set(parts[y]["image"]) for y in labels.tolist()]
        assert pos[:, j].tolist() == expected, text
    assert len(described) > 5  # many different subsets were drawn
    # without partial descriptions every text is the full name and positives are the same class
    texts, pos = texts_and_positives(labels, data, "image", codes, ["a {}."], 0.0, torch.Generator().manual_seed(0))
    assert texts[:4] == [f"a {n}." for n in names] and torch.equal(pos, labels[:, None] == labels[None, :])


# -- training ---------------------------------------------------------------------------------------
def _run(seed: int, data: PretrainData) -> tuple[TinyBackbone, list[float]]:
    model = TinyBackbone.random(seed=seed, vocab=NAMES, config=SMALL)
    opts = PretrainOptions(epochs=2, batch_size=8, lr=3e-3, seed=seed, warmup_frac=0.1)
    result = pretrain(model, data, synav_templates()["train"], opts)
    assert result.steps == 2 * (len(data) // 8) and len(result.epoch_losses) == 2
    assert all(math.isfinite(x) for x in result.epoch_losses)
    return model, result.epoch_losses


def test_pretrain_is_deterministic_and_lowers_the_loss() -> None:
    data = _toy_data(per_class=24)
    before = _full_loss(TinyBackbone.random(seed=0, vocab=NAMES, config=SMALL), data)
    m1, losses1 = _run(0, data)
    m2, losses2 = _run(0, data)
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert losses1 == losses2
    after = _full_loss(m1, data)
    assert after < before - 0.2, (before, after)


def test_pretrain_skips_pairs_with_a_missing_modality() -> None:
    data = _toy_data(per_class=4)
    data.has_audio[:] = False
    model = TinyBackbone.random(seed=0, vocab=NAMES, config=SMALL)
    audio_before = {k: v.clone() for k, v in model.audio.state_dict().items()}
    pretrain(model, data, ["a {}."], PretrainOptions(epochs=1, batch_size=8, augment=False))
    # no pair involves audio, so the audio tower never receives a gradient
    assert all(torch.equal(audio_before[k], v) for k, v in model.audio.state_dict().items())


# -- zero-shot ----------------------------------------------------------------------------------------
class _OracleBackbone(Backbone):
    """Reads the label off the input: image pixel [0, 0, 0] and audio sample 0 hold label + 1
    (0 = "I don't know", which maps to a fixed wrong direction); text = one-hot of the class."""

    name = "oracle"
    embed_dim = 8

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = list(names)
        self.preprocess = PreprocessSpec(64, "exact-bilinear", (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255), 16000, 16000, "unit")

    def _onehot(self, idx: torch.Tensor) -> torch.Tensor:
        return F.one_hot(idx.long(), self.embed_dim).float()

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self._onehot(images[:, 0, 0, 0].round())

    def encode_audio(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self._onehot((waveforms[:, 0] * 10).round())

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([[next(i for i, n in enumerate(self.names) if n in t) + 1] for t in texts])

    def encode_text(self, tokens: torch.Tensor, embeddings: torch.Tensor | None = None) -> torch.Tensor:
        return self._onehot(tokens[:, 0])


def test_zeroshot_accuracy_counts_each_path_over_the_candidate_classes() -> None:
    names = ["c0", "c1", "c2", "c3", "pre"]
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 4])  # the last sample's class is not a candidate: ignored
    n = len(labels)
    images = torch.zeros(n, 3, 64, 64, dtype=torch.uint8)
    audio = torch.zeros(n, 16000, dtype=torch.float16)
    images[:, 0, 0, 0] = (labels + 1).to(torch.uint8)
    audio[:, 0] = ((labels + 1).float() / 10).half()
    images[3, 0, 0, 0] = 1  # image of sample 3 looks like class 0 → wrong
    audio[1, 0] = 0.0  # audio of sample 1 carries nothing (zero vector: ties, argmax = class 0) → wrong
    has_image = torch.ones(n, dtype=torch.bool)
    has_audio = torch.ones(n, dtype=torch.bool)
    has_audio[5] = False  # sample 5: image only (not in audio or fused counts)
    out = zeroshot_accuracy(_OracleBackbone(names), images, audio, labels, has_image, has_audio, names, [0, 1, 2, 3], "a {}.")
    assert out["classes"] == 4 and out["chance"] == 25.0
    assert out["samples"] == {"image": 6, "audio": 5, "fused": 5}
    assert out["accuracy"]["image"] == pytest.approx(100 * 5 / 6)
    assert out["accuracy"]["audio"] == pytest.approx(100 * 4 / 5)
    # fused: sample 1 (image right, audio zero-vector) → right; sample 3 (image wrong, audio right) → tie
    # between classes 0 and 3 at equal weight; argmax picks the first, class 0 → wrong
    assert out["accuracy"]["fused"] == pytest.approx(100 * 4 / 5)
    md = zeroshot_markdown({**out, "data": "x", "split": "test"}, "mcil pretrain ...")
    assert "| image → text | 83.3 | 6 |" in md and "| chance | 25.0 | |" in md


# -- the command ----------------------------------------------------------------------------------------
def test_cli_pretrains_writes_checkpoint_and_zeroshot_table(tmp_path: Path) -> None:
    from mcil.backbones.tiny import load_tiny
    from mcil.cli import main
    from mcil.data.synth import generate
    from mcil.data.synth_classes import SynthConfig

    data = tmp_path / "synav"
    generate(data, SynthConfig(n_classes=2, train_per_class=1, test_per_class=2, pretrain_per_class=1), workers=1)
    out = tmp_path / "ckpt" / "tiny.pt"
    argv = ["pretrain", "--data", str(data), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
            "--epochs", "1", "--batch-size", "12", "--threads", "1"]
    assert main(argv) == 0
    model = load_tiny(out)
    info = model.pretrain_info
    assert info["split"] == "pretrain" and info["samples"] == 24 and info["steps"] == 2
    assert info["cpu"]   # the CPU model its weights were computed on
    assert info["cpu_signature"]["isa"]   # and its family, model and instruction set
    classes = json.loads((data / "classes.json").read_text())["classes"]
    assert set(info["classes"]) == {c["name"] for c in classes if c["group"] == "pretrain"}
    assert all(model.tokenizer.unk_id not in model.tokenize([c["name"]]).tolist()[0] for c in classes)
    table = json.loads((out.parent / "tiny.zeroshot.json").read_text())
    assert table["classes"] == 2 and table["chance"] == 50.0 and table["samples"]["fused"] == 4
    assert table["split"] == "test" and table["checkpoint_sha256"] == model.checkpoint_sha256
    assert "| chance | 50.0 | |" in (out.parent / "tiny.zeroshot.md").read_text()
    (out.parent / "tiny.zeroshot.json").unlink()
    assert main(argv + ["--eval-only"]) == 0
    assert json.loads((out.parent / "tiny.zeroshot.json").read_text())["accuracy"] == table["accuracy"]
    assert main(["pretrain", "--data", str(data), "--out", str(tmp_path / "none.pt"), "--eval-only"]) == 2
