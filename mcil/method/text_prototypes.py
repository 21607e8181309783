"""The text side of the paper's method: prompts encoded through the adapted text tower (trimmed to
the longest prompt where that is exact), training prototypes of the current task, and evaluation
prototypes cached until the text adapters change.

:class:`TextPrototypes` is a mixin of :class:`mcil.method.mcil_learner.McilLearner`: it reads the
learner's ``backbone``, ``mife``, ``options``, ``cfg``, ``template_set``, ``class_names`` and
``device``, and the caches the learner sets up and invalidates (``_train_tokens``,
``_train_protos``, ``_eval_protos``, ``_eval_version``, ``_text_version``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from mcil.method.prompts import average_prototypes, fill_prompts

__all__ = ["TextPrototypes"]

_TEXT_CHUNK = 512  # prompts per text-encoder call at evaluation


class TextPrototypes:
    """Prompt encoding and the class prototypes of :class:`~mcil.method.mcil_learner.McilLearner`."""

    @property
    def _normalize_templates(self) -> bool:
        # CLIP-style ensembling (each prompt normalised) unless reproducing the official raw average.
        return self.options.logit_scale == "backbone"

    #: Encode prompts through the full context even where trimming is exact (``mcil bench``'s
    #: official-style reference path sets it; ``mcil train`` never does).
    full_text_context: bool = False

    @property
    def text_trim_exact(self) -> bool:
        """Whether prompts may be encoded with their common padding cut off without changing a feature.

        Holds when the bare text tower is invariant to it (``Backbone.TEXT_TRIM_EXACT``: causal or
        key-masked attention) and no text adapter reads a padding position: the MIFE experts act
        per position, a ``first-token`` router reads only SOT and a ``prompt-mean`` router only the
        prompt's own tokens. A ``mean`` router averages over all L positions, padding included, so
        trimming would change its routing (tested in tests/backbones/test_text_trim.py). Dropout inside the experts then draws its masks for a
        tensor of the trimmed shape: the same distribution, not the same draw (docs/benchmarks.md).
        """
        if not self.backbone.TEXT_TRIM_EXACT:
            return False
        return self.mife is None or self._text_router_input in ("first-token", "prompt-mean")

    @property
    def _text_router_input(self) -> str:
        o = self.options
        return o.router_input if o.text_router_input == "same" else o.text_router_input

    def _encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(P, L) prompt ids → (P, D) text features, trimmed to the longest prompt where exact."""
        if self.text_trim_exact and not self.full_text_context:
            tokens = self.backbone.trim_tokens(tokens)
        if self.mife is None:
            return self.backbone.encode_text(tokens)
        with self.mife.active(), self.mife.token_mask(self.backbone.text_token_mask(tokens)):
            return self.backbone.encode_text(tokens)

    def _train_prototypes(self) -> torch.Tensor:
        """``(n_t, D)`` prototypes of the current task's classes (gradients into the text adapters)."""
        if self._train_protos is not None:
            return self._train_protos
        n_templates = len(self.template_set.for_training(self.options.text_diversity))
        emb = self._encode_text(self._train_tokens).float()
        protos = average_prototypes(emb, n_templates, self._normalize_templates)
        if self.mife is None:  # frozen text tower: constant within the task
            self._train_protos = protos.detach()
        return protos

    @torch.no_grad()
    def _class_embeddings(self, classes: Sequence[int], normalize_templates: bool) -> torch.Tensor:
        """``(C, D)`` averaged evaluation-prompt embeddings of ``classes`` (not re-normalised)."""
        templates = self.template_set.for_evaluation(self.cfg.eval_template)
        prompts = fill_prompts(templates, [self.class_names[c] for c in classes])
        per_chunk = max(1, _TEXT_CHUNK // len(templates)) * len(templates)
        parts = []
        for start in range(0, len(prompts), per_chunk):
            tokens = self.backbone.tokenize(prompts[start : start + per_chunk]).to(self.device)
            parts.append(self._encode_text(tokens).float())
        return average_prototypes(torch.cat(parts), len(templates), normalize_templates)

    def _eval_prototypes(self, classes: Sequence[int]) -> torch.Tensor:
        """``(C, D)`` L2-normalised evaluation prototypes, cached per class until the text adapters change."""
        if self._eval_version != self._text_version:
            self._eval_protos = {}
            self._eval_version = self._text_version
        missing = [int(c) for c in dict.fromkeys(classes) if int(c) not in self._eval_protos]
        if missing:
            protos = F.normalize(self._class_embeddings(missing, self._normalize_templates), dim=-1)
            self._eval_protos.update(zip(missing, protos))
        return torch.stack([self._eval_protos[int(c)] for c in classes])

    def invalidate_text_cache(self) -> None:
        """Forget cached evaluation prototypes (``mcil bench``'s official-style reference path)."""
        self._text_version += 1

    def class_text_embeddings(self, classes: Sequence[int]) -> torch.Tensor:
        """``(C, D)`` unnormalised mean embedding of each class's evaluation prompts (metric M1)."""
        was = self.training
        self.eval()
        try:
            if self.mife is not None:
                with self.mife.recording(False):
                    return self._class_embeddings(list(classes), normalize_templates=False)
            return self._class_embeddings(list(classes), normalize_templates=False)
        finally:
            self.train(was)
