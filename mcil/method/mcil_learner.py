"""The paper's method as a learner: MIFE + AAVFM + text diversity + L_CW/L_MI, registered as ``mcil``.

Per batch (``train_step``)::

    f_v = normalise(E_v(image))            image tower with MIFE adapters (trainable)
    f_a = normalise(E_a(audio))            frozen audio tower (or the cached embedding)
    r   = pearson_r(f_v, f_a)              → gate (fusion.gate, fusion.th)
    f   = normalise(fusion(f_v, f_a))      where the gate is open; else f_v (f_a without image)
    t_c = text prototypes of the current task's classes (MIFE text adapters, gradients on)
    logits = s · cos(f, t_c)               current task's classes only (official)
    L = α·L_CW + (1 − α)·c·L_MI (+ balance)   c = ‖∂L_CW/∂f‖/‖∂L_MI/∂f‖ (loss.mi_scale=grad-norm) or 1

``predict`` scores all requested classes with prototypes of the evaluation template(s)
(``eval_template``), cached until the text adapters change. Every choice and its config key is
documented in ``docs/method.md``.

Resume: a fresh learner on which the trainer replays ``start_task`` for every task begun and then
loads a checkpoint reproduces the learner exactly; loading a checkpoint *without* the replay also
works, since every :class:`~mcil.method.mife.MoEAdapter` rebuilds its experts from its extra state
before its parameters load. As in the baselines, the frozen backbone is held *outside* the module
tree: ``state_dict`` and ``parameters()`` hold only what the method adds (checkpoints stay small,
parameter counts compare across methods) and the trainer moves the backbone itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mcil.backbones.base import Backbone
from mcil.config import RunConfig
from mcil.errors import UserError
from mcil.learners.base import Batch, BatchLoader, Learner, Prediction, Task
from mcil.learners.registry import register_learner, register_preset
from mcil.method.aavfm import DynamicFusion, adaptive_threshold, gate_decision, pearson_r, select_features
from mcil.method.losses import check_finite, cosine_logits, cw_loss, grad_norm, grad_norm_scale, mi_loss, total_loss
from mcil.method.mife import MIFE
from mcil.method.options import McilOptions
from mcil.method.prompts import fill_prompts, load_templates
from mcil.method.text_prototypes import TextPrototypes

__all__ = ["McilLearner", "OFFICIAL_LOGIT_SCALE"]

log = logging.getLogger(__name__)

#: The official code's logit scale: CLIP's ``logit_scale`` parameter used raw, ln(1/0.07) ≈ 2.659.
OFFICIAL_LOGIT_SCALE = math.log(1 / 0.07)


class _Fused(NamedTuple):
    """Per-batch output of the fusion stage (all features L2-normalised)."""

    final: torch.Tensor  # (B, D) the classifier's input
    fused: torch.Tensor  # (B,) bool, took the fusion path
    f_fused: torch.Tensor  # (n_fused, D)
    r: torch.Tensor  # (B,) Pearson r; NaN where a modality is missing
    both: torch.Tensor  # (B,) bool, has image and audio


@register_learner
class McilLearner(TextPrototypes, Learner):
    """MCIL (arXiv 2506.09999): MoE adapters, adaptive audio-visual fusion, text diversity, L_CW + L_MI.

    MIFE (``mcil.method.mife``) adapts the image and text towers; AAVFM (``mcil.method.aavfm``)
    gates and fuses the frozen audio embedding into the image feature; the classifier is a scaled
    cosine against averaged text prototypes (``mcil.method.prompts``); losses in
    ``mcil.method.losses``. Design choices and official variants: docs/method.md.
    """

    NAME = "mcil"
    MODALITIES = frozenset({"image", "audio", "text"})
    FROZEN_FEATURES = frozenset({"audio"})
    Options = McilOptions

    def __init__(
        self, backbone: Backbone, class_names: list[str], templates: str, cfg: RunConfig, options: McilOptions
    ) -> None:
        super().__init__()
        object.__setattr__(self, "backbone", backbone.freeze())  # not a submodule (see module docstring)
        self.class_names = list(class_names)
        self.template_set = load_templates(templates)
        self.cfg = cfg
        self.options = options
        device = next(backbone.parameters()).device
        image_sites, text_sites = list(backbone.image_sites()), list(backbone.text_sites())
        self.mife: MIFE | None = MIFE(image_sites + text_sites, options.mife_config()).to(device) if options.mife else None
        if self.mife is not None and options.text_router_input not in ("same", options.router_input):
            # Text sites are token layouts, where either router input is defined; the image sites
            # keep router_input (a convolutional tower only has the spatial mean).
            text_cfg = dataclasses.replace(options.mife_config(), router_input=options.text_router_input)
            for adapter in list(self.mife.adapters)[len(image_sites):]:
                adapter.cfg = text_cfg
        if self.mife is None:  # both encoders frozen: the trainer may serve cached image embeddings too
            self.FROZEN_FEATURES = frozenset({"image", "audio"})
        self.fusion: DynamicFusion | None = None
        if cfg.fusion.gate != "never":
            self.fusion = DynamicFusion(backbone.embed_dim, options.fusion_hidden, cfg.fusion.attention).to(device)
        self.register_buffer("adaptive_th", torch.tensor(float("nan"), device=device))
        self._task: Task | None = None
        self._label_map: torch.Tensor | None = None
        self._train_tokens: torch.Tensor | None = None
        self._train_protos: torch.Tensor | None = None  # cached when the text tower is frozen
        self._eval_protos: dict[int, torch.Tensor] = {}
        self._eval_version = -1
        self._text_version = 0
        self._r_running: list[torch.Tensor] = []
        self._fusion_stats: dict[tuple[str, str], torch.Tensor] = {}
        self._param_stats: dict[str, dict[str, int]] = {"added_per_task": {}, "trainable_per_task": {}}
        self._threshold_stats: dict[str, float] = {}
        self._own_params_last = 0
        self._task_step = 0  # training steps taken in the current task (gradient probe)
        self._grad_stats: dict[str, list[dict[str, Any]]] = {}

    # ------------------------------------------------------------------------------------------
    # small helpers
    # ------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.adaptive_th.device

    def _stats_key(self) -> str:
        return str(self._task.index) if self._task is not None else "before"

    def _scale(self) -> float:
        if self.options.logit_scale == "official-raw":
            return OFFICIAL_LOGIT_SCALE
        return float(self.backbone.logit_scale_value())


    # ------------------------------------------------------------------------------------------
    # features
    # ------------------------------------------------------------------------------------------
    def _encode(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised ``f_v, f_a`` ``(B, D)`` (zero rows where a modality is absent) and the
        ``has_image, has_audio`` masks ``(B,)``."""
        dev = self.device
        n = len(batch)
        has_image = batch.has_image.to(dev).bool()
        has_audio = batch.has_audio.to(dev).bool()
        if batch.image is not None:
            with self.mife.active() if self.mife is not None else contextlib.nullcontext():
                v = self._encode_rows(self.backbone.encode_image, batch.image.to(dev), has_image)
        elif batch.image_emb is not None and self.mife is None:
            v = batch.image_emb.to(dev).float()
        elif batch.image_emb is not None:
            raise UserError(
                "method mcil with MIFE adapts the image tower and needs raw images (batch.image), "
                "not cached image embeddings; set method.options.mife=false to use cached ones"
            )
        else:
            v = torch.zeros(n, self.backbone.embed_dim, device=dev)
            has_image = torch.zeros_like(has_image)
        if batch.audio_emb is not None:
            a = batch.audio_emb.to(dev).float()
        elif batch.audio is not None:
            with torch.no_grad():
                a = self._encode_rows(self.backbone.encode_audio, batch.audio.to(dev), has_audio)
        else:
            a = torch.zeros(n, self.backbone.embed_dim, device=dev)
            has_audio = torch.zeros_like(has_audio)
        v = v * has_image.unsqueeze(1)
        a = a.detach() * has_audio.unsqueeze(1)
        return F.normalize(v, dim=-1), F.normalize(a, dim=-1), has_image, has_audio

    def _encode_rows(self, encode: Any, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``encode`` only the rows where ``keep`` (absent modalities cost nothing and route nowhere);
        zeros elsewhere, float32 ``(B, D)``."""
        if bool(keep.all()):
            return encode(x).float()
        out = torch.zeros(x.shape[0], self.backbone.embed_dim, device=x.device)
        rows = torch.nonzero(keep, as_tuple=False).flatten()
        if rows.numel() == 0:
            return out
        return out.index_put((rows,), encode(x.index_select(0, rows)).float())

    def _threshold(self, r: torch.Tensor, both: torch.Tensor, training: bool) -> float:
        """``fusion.th``; for gate ``adaptive`` the estimated quantile (see docs/method.md)."""
        f = self.cfg.fusion
        if f.gate != "adaptive":
            return f.th
        if training:
            self._r_running.append(r[both].detach().float().cpu())
            th = adaptive_threshold(torch.cat(self._r_running), f.adaptive_quantile)
        else:
            th = float(self.adaptive_th)
        return f.th if math.isnan(th) else th

    def _fuse(
        self, v: torch.Tensor, a: torch.Tensor, has_image: torch.Tensor, has_audio: torch.Tensor, training: bool
    ) -> _Fused:
        r = pearson_r(v.detach(), a)
        both = has_image & has_audio
        if self.fusion is None:
            fused = torch.zeros_like(both)
        else:
            th = self._threshold(r, both, training)
            fused = gate_decision(r, th, self.cfg.fusion.gate, has_audio, has_image)
        if self.fusion is not None and bool(fused.any()):
            f_fused = F.normalize(self.fusion(v[fused], a[fused]), dim=-1)
        else:
            f_fused = v.new_zeros((0, v.shape[1]))
        final = select_features(v, a, fused, f_fused, has_image)
        r = torch.where(both, r, torch.full_like(r, float("nan")))
        return _Fused(final, fused, f_fused, r, both)

    def _record_fusion(self, phase: str, out: _Fused) -> None:
        with torch.no_grad():
            r_both = torch.nan_to_num(out.r, nan=0.0)
            row = torch.stack(
                [
                    torch.tensor(float(out.fused.numel()), device=out.r.device),
                    out.both.float().sum(),
                    out.fused.float().sum(),
                    r_both.sum(),
                ]
            )
            key = (phase, self._stats_key())
            prev = self._fusion_stats.get(key)
            self._fusion_stats[key] = row if prev is None else prev.to(row.device) + row

    # ------------------------------------------------------------------------------------------
    # the learner interface
    # ------------------------------------------------------------------------------------------
    def _prepare_task(self, task: Task) -> None:
        """Label map and tokenised training prompts of ``task`` (no parameters touched)."""
        self._task = task
        label_map = torch.full((len(self.class_names),), -1, dtype=torch.long)
        label_map[list(task.classes)] = torch.arange(len(task.classes))
        self._label_map = label_map.to(self.device)
        templates = self.template_set.for_training(self.options.text_diversity)
        prompts = fill_prompts(templates, [self.class_names[c] for c in task.classes])
        self._train_tokens = self.backbone.tokenize(prompts).to(self.device)
        self._train_protos = None
        self._text_version += 1

    def begin_task(self, task: Task) -> None:
        """Grow MIFE (task-experts), set trainable flags, prepare labels and prompts; count parameters."""
        if self.mife is not None:
            self.mife.begin_task(task.index)
        self._prepare_task(task)
        self._r_running = []
        self._task_step = 0
        own = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.trainable_parameters())
        key = str(task.index)
        added = own - self._own_params_last
        self._param_stats["added_per_task"][key] = added
        self._param_stats["trainable_per_task"][key] = trainable
        self._own_params_last = own
        log.info("mcil task %d: %d classes, %d parameters added, %d trainable", task.index + 1, len(task.classes), added, trainable)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self._task is None or self._label_map is None:
            raise RuntimeError("McilLearner.train_step before begin_task")
        labels = batch.labels.to(self.device).long()
        y = self._label_map[labels]
        if bool((y < 0).any()):
            bad = sorted({int(c) for c in labels[y < 0].tolist()})
            raise ValueError(f"batch holds labels {bad} outside the current task's classes {list(self._task.classes)}")
        v, a, has_image, has_audio = self._encode(batch)
        out = self._fuse(v, a, has_image, has_audio, training=True)
        protos = self._train_prototypes()
        logits = cosine_logits(out.final, protos, self._scale(), normalize_prototypes=self._normalize_templates)
        base = torch.where(has_image.unsqueeze(1), v, a)
        l_cw = cw_loss(logits, y, base, self.cfg.loss.cw, self.cfg.loss.label_smoothing)
        lc = self.cfg.loss
        l_mi = mi_loss(
            out.f_fused, v[out.fused], a[out.fused], lc.mi_reduction, lc.mi_input, lc.mi_estimator, 1.0 / self._scale()
        )
        terms = {"loss_cw": l_cw, "loss_mi": l_mi}
        mi_term = l_mi
        if lc.mi_scale == "grad-norm" and lc.alpha < 1.0:  # at α = 1 the MI term has no weight anyway
            c = grad_norm_scale(l_cw, l_mi, out.f_fused)
            mi_term = c * l_mi
            terms["mi_weight"] = c
        if self._task_step < self.options.grad_probe_steps:
            self._probe_gradients(l_cw, mi_term, out)
        self._task_step += 1
        loss = total_loss(l_cw, mi_term, lc.alpha)
        if self.mife is not None and self.options.balance_loss > 0:
            l_bal = self.mife.pop_balance_loss()
            if l_bal is not None:
                loss = loss + self.options.balance_loss * l_bal
                terms["loss_balance"] = l_bal
        check_finite({**terms, "loss": loss})
        if not loss.requires_grad:
            # Nothing on the graph this step (frozen towers and a closed gate): a zero-valued link
            # to the trainable parameters keeps loss.backward() valid and changes nothing.
            params = self.trainable_parameters()
            if params:
                loss = loss + sum(p.sum() for p in params) * 0.0
        if self.mife is not None:
            self._text_version += 1  # the optimiser step will change the text adapters
        self._record_fusion("train", out)
        result = {"loss": loss, **{k: t.detach() for k, t in terms.items()}}
        result["fusion_rate"] = out.fused.float().mean().detach()
        return result

    def _probe_gradients(self, l_cw: torch.Tensor, l_mi: torch.Tensor, out: _Fused) -> None:
        """Record ``‖∇L_MI‖ / ‖∇L_CW‖`` (unweighted by α; ``l_mi`` is the MI term as it enters the
        loss, i.e. times the grad-norm weight under ``loss.mi_scale=grad-norm``) w.r.t. the
        trainable fusion parameters and w.r.t. the fused features ``(n_fused, D)``: the two places
        both terms reach. Costs two ``autograd.grad`` calls through the fusion module only (not
        the towers), on the first ``grad_probe_steps`` steps of each task; steps where no sample
        fused are skipped."""
        if self.fusion is None or not bool(out.fused.any()) or not l_mi.requires_grad:
            return
        params = [p for p in self.fusion.parameters() if p.requires_grad]
        row: dict[str, Any] = {"step": self._task_step}
        for name, inputs in (("fusion_params", params), ("fused_features", [out.f_fused])):
            cw, mi = grad_norm(l_cw, inputs), grad_norm(l_mi, inputs)
            row[name] = {"cw": cw, "mi": mi, "ratio": mi / cw if cw > 0 else None}
        self._grad_stats.setdefault(self._stats_key(), []).append(row)

    def end_task(self, task: Task, loader: BatchLoader) -> None:
        """Adaptive gate: re-estimate the threshold over the task's whole train split (final adapters)."""
        if self.cfg.fusion.gate == "adaptive":
            was = self.training
            self.eval()
            rs = []
            try:
                with torch.no_grad():
                    ctx = self.mife.recording(False) if self.mife is not None else contextlib.nullcontext()
                    with ctx:
                        for batch in loader():
                            v, a, hi, ha = self._encode(batch)
                            rs.append(pearson_r(v, a)[hi & ha].cpu())
            finally:
                self.train(was)
            th = adaptive_threshold(torch.cat(rs) if rs else torch.empty(0), self.cfg.fusion.adaptive_quantile)
            self.adaptive_th.fill_(th)
            log.info("mcil task %d: adaptive threshold %.4f (quantile %.2f of r)", task.index + 1, th, self.cfg.fusion.adaptive_quantile)
        self._r_running = []
        th_eval = float(self.adaptive_th) if self.cfg.fusion.gate == "adaptive" else self.cfg.fusion.th
        self._threshold_stats[str(task.index)] = th_eval if not math.isnan(th_eval) else self.cfg.fusion.th
        self._text_version += 1

    def predict(self, batch: Batch, classes: Sequence[int]) -> Prediction:
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                v, a, has_image, has_audio = self._encode(batch)
                out = self._fuse(v, a, has_image, has_audio, training=False)
                protos = self._eval_prototypes(classes)
                s = self._scale()
                logits = s * out.final @ protos.t()
                self._record_fusion("eval", out)
                return Prediction(
                    logits=logits,
                    by_modality={"image": s * v @ protos.t(), "audio": s * a @ protos.t(), "fused": logits},
                    features={"image": v, "audio": a, "fused": out.final},
                    fused=out.fused,
                    r=out.r,
                )
        finally:
            self.train(was)

    # ------------------------------------------------------------------------------------------
    # statistics and checkpointing
    # ------------------------------------------------------------------------------------------
    def lr_scales(self, params: Sequence[nn.Parameter]) -> list[float]:
        """``method.options.adapter_lr_scale`` for the MIFE experts and routers, 1 for the rest (fusion MLP)."""
        scale = self.options.adapter_lr_scale
        if self.mife is None or scale == 1.0:
            return [1.0] * len(params)
        mife = {id(p) for p in self.mife.parameters()}
        return [scale if id(p) in mife else 1.0 for p in params]

    def statistics(self) -> dict[str, Any]:
        fusion: dict[str, Any] = {
            "gate": self.cfg.fusion.gate,
            "th": self.cfg.fusion.th,
            "attention": self.cfg.fusion.attention,
            "threshold_per_task": dict(self._threshold_stats),
        }
        for (phase, key), row in sorted(self._fusion_stats.items()):
            n, both, fused, r_sum = row.tolist()
            fusion.setdefault(phase, {})[key] = {
                "samples": int(n),
                "both_modalities": int(both),
                "fused": int(fused),
                "fusion_rate": fused / n if n else 0.0,
                "r_mean": r_sum / both if both else None,
            }
        out: dict[str, Any] = {
            "options": dataclasses.asdict(self.options),
            "parameters": {k: dict(v) for k, v in self._param_stats.items()},
            "fusion": fusion,
        }
        out["loss_gradients"] = _gradient_summary(self._grad_stats, self.options.grad_probe_steps)
        if self.mife is not None:
            out["experts"] = self.mife.statistics()
        return out

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "version": 1,
            "task": dataclasses.asdict(self._task) if self._task is not None else None,
            "param_stats": {k: dict(v) for k, v in self._param_stats.items()},
            "threshold_stats": dict(self._threshold_stats),
            "fusion_stats": {f"{p}|{k}": v.tolist() for (p, k), v in self._fusion_stats.items()},
            "r_running": torch.cat(self._r_running).tolist() if self._r_running else [],
            "own_params_last": self._own_params_last,
            "task_step": self._task_step,
            "grad_stats": {k: [dict(r) for r in v] for k, v in self._grad_stats.items()},
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("version") != 1:
            raise RuntimeError(f"mcil checkpoint: unknown extra-state version {state.get('version')!r}")
        task = state["task"]
        if task is not None:
            self._prepare_task(
                Task(**{**task, "classes": tuple(task["classes"]), "seen_classes": tuple(task["seen_classes"])})
            )
        self._param_stats = {k: dict(v) for k, v in state["param_stats"].items()}
        self._threshold_stats = dict(state["threshold_stats"])
        self._fusion_stats = {
            tuple(k.split("|", 1)): torch.tensor(v, device=self.device) for k, v in state["fusion_stats"].items()
        }
        self._r_running = [torch.tensor(state["r_running"], dtype=torch.float32)] if state["r_running"] else []
        self._own_params_last = int(state["own_params_last"])
        self._task_step = int(state.get("task_step", 0))
        self._grad_stats = {k: [dict(r) for r in v] for k, v in state.get("grad_stats", {}).items()}
        self._text_version += 1

    def close(self) -> None:
        """Remove the adapter hooks from the backbone (the backbone is bare afterwards)."""
        if self.mife is not None:
            self.mife.detach()


def _gradient_summary(stats: dict[str, list[dict[str, Any]]], probe_steps: int) -> dict[str, Any]:
    """``statistics()['loss_gradients']``: per task, the median ratio over the probed steps (None
    when every probed step had ‖∇L_CW‖ = 0) and the per-step norms."""

    def median(rows: list[dict[str, Any]], where: str) -> float | None:
        vals = sorted(r[where]["ratio"] for r in rows if r[where]["ratio"] is not None)
        if not vals:
            return None
        mid = len(vals) // 2
        return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2

    per_task = {
        key: {
            "ratio_fusion_params": median(rows, "fusion_params"),
            "ratio_fused_features": median(rows, "fused_features"),
            "steps": [dict(r) for r in rows],
        }
        for key, rows in stats.items()
    }
    return {"probe_steps": probe_steps, "per_task": per_task}


# ----------------------------------------------------------------------------------------------
# Ablation presets and official-behaviour variant
# ----------------------------------------------------------------------------------------------
register_preset(
    "mcil-no-mife",
    learner="mcil",
    overrides={"method.options.mife": False},
    doc="without MIFE: frozen image and text towers, only AAVFM (and its fusion MLP) trains",
)
register_preset(
    "mcil-no-aavfm", learner="mcil", overrides={"fusion.gate": "never"}, doc="without AAVFM: image feature only, no fusion, L_MI = 0"
)
register_preset(
    "mcil-no-text-diversity",
    learner="mcil",
    overrides={"method.options.text_diversity": False},
    doc="training prototypes from the single test template instead of the averaged template set",
)
register_preset("mcil-no-mi", learner="mcil", overrides={"loss.alpha": 1.0}, doc="without L_MI (alpha = 1)")
register_preset(
    "mcil-cw-weighted",
    learner="mcil",
    overrides={"loss.cw": "weighted"},
    doc="L_CW with image-similarity-softened targets (a reading of the paper's intent; the default "
    "is plain cross-entropy, which the official weights reduce to — see docs/method.md)",
)
register_preset(
    "mcil-gate-always", learner="mcil", overrides={"fusion.gate": "always"}, doc="fuse every sample that has audio (the default)"
)
register_preset(
    "mcil-gate-batch",
    learner="mcil",
    overrides={"fusion.gate": "batch", "fusion.th": 0.8},
    doc="the paper's masking threshold: fuse a batch only when its mean Pearson r >= th (0.8)",
)
register_preset(
    "mcil-gate-sample", learner="mcil", overrides={"fusion.gate": "sample"}, doc="per-sample threshold test r >= th"
)
register_preset(
    "mcil-official",
    learner="mcil",
    overrides={
        "method.options.experts": "official",
        "method.options.top_k": 1,
        "method.options.router_input": "first-token",
        "method.options.text_router_input": "same",
        "method.options.official_freeze_hack": True,
        "method.options.logit_scale": "official-raw",
        "method.options.adapter_lr_scale": 1.0,
        "loss.cw": "official",
        "loss.mi_reduction": "sum",
        "loss.mi_input": "official",
        "loss.mi_estimator": "official",
        "loss.mi_scale": "none",
        "fusion.gate": "batch",
        "fusion.th": 0.8,
        "fusion.attention": "batch-official",
    },
    doc="the official code's behaviour: shared 5-expert pool, top-1 (router cannot learn), freeze hack, "
    "raw logit scale, L_CW = CE, summed MI on unit vectors without gradient normalisation, batch gate at th 0.8, batch-mixing attention (add optim.pairing=official-shuffled "
    "for its unaligned image/audio loaders)",
)
