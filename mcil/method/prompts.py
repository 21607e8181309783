"""Prompt templates and text prototypes (the text-diversity strategy of the paper).

A template set (``mcil/resources/templates/<name>.yaml``) has one ``test`` template (the single
prompt of the official evaluation protocol) and a ``train`` list (the text-diversity set). Every
class gets one prototype: the average of the text embeddings of its prompts. Why: one
hand-written prompt is a noisy point in the text space; averaging many phrasings (paper figure:
"Prompt Templates 1…N → average → text prototype") gives a steadier class anchor.

Prompt order is class-major everywhere: ``[c0·t0, c0·t1, …, c1·t0, …]``, so a ``(C·N, D)``
embedding matrix reshapes to ``(C, N, D)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mcil.data.templates import TemplateSet, available_template_sets, fill_prompts, load_templates

__all__ = [
    "TemplateSet",
    "load_templates",
    "available_template_sets",
    "fill_prompts",
    "average_prototypes",
]


def average_prototypes(embeddings: torch.Tensor, n_templates: int, normalize_templates: bool) -> torch.Tensor:
    """Average class-major prompt embeddings into one prototype per class.

    embeddings: ``(C·N, D)`` text embeddings in :func:`fill_prompts` order; returns ``(C, D)``,
    *not* re-normalised. ``normalize_templates``: L2-normalise each prompt embedding before
    averaging (CLIP's prompt ensembling: every phrasing weighs the same) or average the raw
    embeddings (official code).
    """
    if embeddings.dim() != 2 or n_templates < 1 or embeddings.shape[0] % n_templates:
        raise ValueError(
            f"expected (C*N, D) embeddings with N={n_templates} templates per class, got {tuple(embeddings.shape)}"
        )
    if normalize_templates:
        embeddings = F.normalize(embeddings, dim=-1)
    return embeddings.view(-1, n_templates, embeddings.shape[1]).mean(dim=1)
