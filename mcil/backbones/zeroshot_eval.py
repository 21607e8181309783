"""Zero-shot accuracy of a frozen backbone: image→text, audio→text and fused→text top-1 over a
dataset's incremental classes, with its ``test`` template (``mcil pretrain`` writes it beside the
checkpoint as ``<stem>.zeroshot.{json,md}``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mcil.backbones.tiny import TinyBackbone
from mcil.backbones.tiny_vocab import prompt_templates
from mcil.data.spec import PreprocessSpec, normalise_images, scale_audio

__all__ = ["zeroshot_accuracy", "zeroshot_table", "zeroshot_markdown"]


@torch.no_grad()
def zeroshot_accuracy(
    backbone: TinyBackbone | Any,
    images: torch.Tensor,
    audio: torch.Tensor,
    labels: torch.Tensor,
    has_image: torch.Tensor,
    has_audio: torch.Tensor,
    class_names: Sequence[str],
    candidates: Sequence[int],
    template: str,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Zero-shot top-1 (%) of image→text, audio→text and fused→text over ``candidates``.

    images (N, 3, S, S) uint8 and audio (N, L) in [-1, 1] as in the cache; prompts are
    ``template.format(class_names[c])`` for c in ``candidates``. Fused = the normalised mean of the
    L2-normalised image and audio embeddings, over samples that have both. Works with any
    :class:`~mcil.backbones.base.Backbone`.
    """
    spec: PreprocessSpec = backbone.preprocess
    was_training = backbone.training
    backbone.eval()
    cand = torch.as_tensor(list(candidates), dtype=torch.int64)
    text = F.normalize(backbone.encode_text(backbone.tokenize([template.format(class_names[c]) for c in cand.tolist()])), dim=-1)
    keep = torch.isin(labels, cand)
    idx_all = torch.nonzero(keep).flatten()
    correct = {"image": 0, "audio": 0, "fused": 0}
    count = {"image": 0, "audio": 0, "fused": 0}
    for start in range(0, len(idx_all), batch_size):
        idx = idx_all[start : start + batch_size]
        y = labels[idx]
        hi, ha = has_image[idx], has_audio[idx]
        zi = F.normalize(backbone.encode_image(normalise_images(images[idx], spec)), dim=-1)
        za = F.normalize(backbone.encode_audio(scale_audio(audio[idx], spec)), dim=-1)
        zf = F.normalize(zi + za, dim=-1)
        for key, z, mask in (("image", zi, hi), ("audio", za, ha), ("fused", zf, hi & ha)):
            pred = cand[(z[mask] @ text.t()).argmax(dim=1)]
            correct[key] += int((pred == y[mask]).sum())
            count[key] += int(mask.sum())
    backbone.train(was_training)
    acc = {k: (100.0 * correct[k] / count[k] if count[k] else float("nan")) for k in correct}
    return {
        "classes": len(cand),
        "samples": {k: count[k] for k in count},
        "chance": 100.0 / len(cand),
        "accuracy": acc,
        "template": template,
    }


def zeroshot_table(
    backbone: TinyBackbone | Any,
    data_root: str | Path,
    cache_dir: str | Path = "data/cache",
    split: str = "test",
) -> dict[str, Any]:
    """Zero-shot accuracy of ``backbone`` on the incremental classes of ``data_root``'s ``split``.

    Uses the dataset's ``test`` template and the tensor cache (built on first use). Returns the
    dict of :func:`zeroshot_accuracy` plus ``data`` and ``split``.
    """
    from mcil.data.cache import load_split
    from mcil.data.manifest import read_manifest

    manifest = read_manifest(data_root, check_files=False)  # media are checked if the cache must be built
    templates = prompt_templates(manifest.templates)
    cached = load_split(data_root, split, backbone.preprocess, cache_dir)
    out = zeroshot_accuracy(
        backbone,
        torch.as_tensor(cached.images),
        torch.as_tensor(cached.audio),
        torch.as_tensor(cached.labels),
        torch.as_tensor(cached.has_image),
        torch.as_tensor(cached.has_audio),
        manifest.class_names,
        manifest.incremental_labels,
        templates["test"],
    )
    out.update({"data": str(data_root), "split": split, "cache_key": getattr(cached, "key", None)})
    return out


def zeroshot_markdown(result: dict[str, Any], command: str | None = None) -> str:
    """A small Markdown table of a :func:`zeroshot_table` result (+ the command that made it)."""
    acc, n = result["accuracy"], result["samples"]
    lines = [
        f"# Zero-shot accuracy of the tiny backbone ({result.get('data', '?')}, split {result.get('split', '?')})",
        "",
        f"Incremental classes (never seen in pre-training): {result['classes']}; "
        f"prompt template `{result['template']}`.",
        "",
        "| path | top-1 (%) | samples |",
        "|---|---:|---:|",
    ]
    for key, label in (("image", "image → text"), ("audio", "audio → text"), ("fused", "fused (image+audio) → text")):
        lines.append(f"| {label} | {acc[key]:.1f} | {n[key]} |")
    lines.append(f"| chance | {result['chance']:.1f} | |")
    if command:
        lines += ["", f"Command: `{command}`"]
    return "\n".join(lines) + "\n"
