"""MIFE: mixture-of-experts bottleneck adapters on the image and text towers.

Every adapter site of the image and text towers (``backbone.image_sites()``,
``backbone.text_sites()``; the audio tower stays untouched) gets a :class:`MoEAdapter`: a pool
of bottleneck experts and a router that picks ``top_k`` of them per sample. It is attached as a
*parallel* adapter through a forward hook: ``site_output + Σ_e g_e · Expert_e(site_input)``.

Expert (official "lora" adapter): ``x ↦ s · W_up(Dropout(ReLU(W_down x)))`` with bottleneck 64,
``s = 0.1``, dropout 0.1, ``W_down`` Kaiming-uniform (a = √5), ``W_up`` zero — so a new expert
adds exactly nothing until it is trained. For ``BCHW`` sites both maps are 1×1 convolutions.

Router: logits ``c · W_rᵀ`` (no bias, ``W_r`` zero-initialised) from the router input ``c``
(``mean`` over tokens / positions, ``prompt-mean`` = the mean over a text prompt's own tokens
<sot>…<eot> given by :meth:`MIFE.token_mask`, or ``first-token`` = CLS/SOT as in the official code);
:func:`route` keeps the ``top_k`` logits and their softmax (renormalised over the selected k)
weights the experts. With ``top_k = 1`` that gate is always 1, so the router gets **no gradient**
(the official code's situation). With ``top_k >= 2`` the gates are a softmax over ≥ 2 selected
logits and the router is trained as soon as the selected experts' outputs differ (not at the
very first step, where every ``W_up`` is still zero).

Expert presets (``method.options.experts``):

- ``task-experts`` (default, paper figure "Router 1…T / Expert 1…T"): each task adds
  ``experts_per_task`` experts and as many router columns ("router t"); after their task they are
  frozen (``freeze_old``) and bit-identical from then on. While task t trains, routing keeps at
  least one of task t's experts among the selected (``route_current``): a zero-initialised new
  router column would otherwise lose to old columns and its expert would never train. Inference
  routes freely over all experts (no task id).
- ``official``: one shared pool of ``n_experts`` experts per site, trainable in every task.
  ``official_freeze_hack`` reproduces the code's hack: in a training forward, every expert that
  some sample did not select gets ``requires_grad=False`` for good.

Statistics: per site, per phase (``train`` / ``eval``) and per task, the number of top-k picks of
each expert and the mean router entropy. The phase is the adapter's ``training`` flag.

No global state: hooks close over a weak reference to their :class:`MIFE` and act only inside
``with mife.active():``, so a backbone shared by two learners (or used bare) is never changed
behind anyone's back; :meth:`MIFE.detach` removes them.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from mcil.backbones.base import AdapterSite

__all__ = ["MifeConfig", "Expert", "route", "router_input", "MoEAdapter", "MIFE"]

Layout = Literal["BLD", "LBD", "BCHW"]


@dataclass(frozen=True)
class MifeConfig:
    """MIFE hyper-parameters (the learner fills it from ``method.options``; see docs/method.md)."""

    experts: Literal["task-experts", "official"] = "task-experts"
    n_experts: int = 5
    experts_per_task: int = 2
    top_k: int = 2
    route_current: bool = True
    freeze_old: bool = True
    official_freeze_hack: bool = False
    router_input: Literal["mean", "prompt-mean", "first-token"] = "mean"
    bottleneck: int = 64
    adapter_scale: float = 0.1
    dropout: float = 0.1
    balance: bool = False


class Expert(nn.Module):
    """Bottleneck adapter ``s · up(dropout(relu(down(x))))``; Linear on the last dim, or 1×1 convs (``conv``)."""

    def __init__(self, width: int, bottleneck: int, scale: float, dropout: float, conv: bool = False) -> None:
        super().__init__()
        if conv:
            self.down: nn.Module = nn.Conv2d(width, bottleneck, 1)
            self.up: nn.Module = nn.Conv2d(bottleneck, width, 1)
        else:
            self.down = nn.Linear(width, bottleneck)
            self.up = nn.Linear(bottleneck, width)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.drop = nn.Dropout(dropout)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(self.drop(F.relu(self.down(x))))


def route(
    logits: torch.Tensor, k: int, current: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k routing: logits ``(B, E)`` → expert indices ``(B, k')`` and gates ``(B, k')``,
    ``k' = min(k, E)``, gates = softmax over the selected logits (rows sum to 1).

    current: optional ``(E,)`` bool, the experts of the task being trained; when given, a row
    whose top-k holds none of them swaps its lowest pick for its best-scoring current expert.
    """
    n_experts = logits.shape[1]
    k = min(k, n_experts)
    idx = logits.topk(k, dim=1).indices
    if current is not None:
        cur = current.to(device=logits.device, dtype=torch.bool)
        if bool(cur.any()) and not bool(cur.all()):
            has_cur = cur[idx].any(dim=1)
            best_cur = logits.masked_fill(~cur, float("-inf")).argmax(dim=1)
            idx = idx.clone()
            idx[:, -1] = torch.where(has_cur, idx[:, -1], best_cur)
    gates = torch.softmax(logits.gather(1, idx), dim=1)
    return idx, gates


def router_input(h: torch.Tensor, layout: Layout, mode: str, token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The router's view of a hidden state: ``(B, W)``. ``mean`` over tokens / positions,
    ``prompt-mean`` (the mean over the positions where ``token_mask`` (B, L) is true: a prompt's
    own tokens, padding excluded, so that the routing does not depend on how far a prompt is
    padded) or ``first-token`` (token 0: CLS for images, SOT for CLIP text)."""
    if layout == "BCHW":
        if mode != "mean":
            raise ValueError(f"router_input {mode!r} is undefined for BCHW (convolutional) sites; use 'mean'")
        return h.mean(dim=(2, 3))
    tok_dim = 1 if layout == "BLD" else 0
    if mode == "mean":
        return h.mean(dim=tok_dim)
    if mode == "first-token":
        return h.select(tok_dim, 0)
    if mode == "prompt-mean":
        hb = _batch_first(h, layout)  # (B, L, W)
        if token_mask is None or tuple(token_mask.shape) != tuple(hb.shape[:2]):
            raise ValueError(
                f"router_input 'prompt-mean' needs the prompts' token mask of shape {tuple(hb.shape[:2])} "
                f"(MIFE.token_mask), got {None if token_mask is None else tuple(token_mask.shape)}"
            )
        m = token_mask.to(hb.dtype).unsqueeze(-1)  # (B, L, 1)
        return (hb * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
    raise ValueError(f"router_input: unknown mode {mode!r}; allowed: mean, prompt-mean, first-token")


def _batch_first(h: torch.Tensor, layout: Layout) -> torch.Tensor:
    return h.transpose(0, 1) if layout == "LBD" else h


class MoEAdapter(nn.Module):
    """Experts + router of one site. ``forward(h)`` returns the adapter output (same shape as h).

    Experts come in *groups* (one group per task for ``task-experts``; a single group 0 for
    ``official``); each group has its own router chunk ``(n, W)`` so that it can be frozen with
    its experts.
    """

    def __init__(self, name: str, width: int, layout: Layout, cfg: MifeConfig) -> None:
        super().__init__()
        if layout not in ("BLD", "LBD", "BCHW"):
            raise ValueError(f"adapter site {name}: unknown layout {layout!r}")
        if layout == "BCHW" and cfg.router_input != "mean":
            raise ValueError(f"adapter site {name} is convolutional (BCHW): method.options.router_input must be 'mean'")
        self.name, self.width, self.layout, self.cfg = name, width, layout, cfg
        self.experts = nn.ModuleList()
        self.router = nn.ParameterList()
        self.expert_group: list[int] = []
        self.chunk_group: list[int] = []
        self.hack_frozen: list[bool] = []
        self.current_group = 0
        self.stats_key = "before"
        self.recording = True
        self.balance_terms: list[torch.Tensor] = []
        self._usage: dict[tuple[str, str], torch.Tensor] = {}
        self._entropy: dict[tuple[str, str], torch.Tensor] = {}
        self.register_buffer("_probe", torch.empty(0), persistent=False)

    # -- structure ----------------------------------------------------------------------------------
    @property
    def n_experts(self) -> int:
        return len(self.experts)

    @property
    def n_groups(self) -> int:
        return len(self.chunk_group)

    def add_experts(self, n: int, group: int) -> None:
        """Append ``n`` fresh experts (zero output) and a zero router chunk for them."""
        dev, dt = self._probe.device, self._probe.dtype
        for _ in range(n):
            self.experts.append(
                Expert(self.width, self.cfg.bottleneck, self.cfg.adapter_scale, self.cfg.dropout, self.layout == "BCHW").to(dev, dt)
            )
            self.expert_group.append(group)
            self.hack_frozen.append(False)
        self.router.append(nn.Parameter(torch.zeros(n, self.width, device=dev, dtype=dt)))
        self.chunk_group.append(group)

    def group_trainable(self, group: int) -> bool:
        """Policy: the official pool always; task-experts: the current task's group, older ones unless ``freeze_old``."""
        if self.cfg.experts == "official":
            return True
        return group == self.current_group or (group < self.current_group and not self.cfg.freeze_old)

    def apply_trainable(self) -> None:
        """Set ``requires_grad`` (and eval mode for frozen experts) from the policy and the hack flags."""
        for e, expert in enumerate(self.experts):
            on = self.group_trainable(self.expert_group[e]) and not self.hack_frozen[e]
            expert.requires_grad_(on)
            if not on:
                expert.eval()
        for chunk, group in zip(self.router, self.chunk_group):
            chunk.requires_grad_(self.group_trainable(group))

    def train(self, mode: bool = True) -> MoEAdapter:
        """Frozen experts stay in eval mode (no dropout): their function no longer changes."""
        super().train(mode)
        for e, expert in enumerate(self.experts):
            if not (self.group_trainable(self.expert_group[e]) and not self.hack_frozen[e]):
                expert.eval()
        return self

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, h: torch.Tensor, token_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``h``: the site's input in its layout; ``token_mask`` (B, L): a ``prompt-mean`` router's positions."""
        n = self.n_experts
        c = router_input(h, self.layout, self.cfg.router_input, token_mask)  # (B, W)
        weight = torch.cat(list(self.router), dim=0)  # (E, W)
        logits = c @ weight.t().to(c.dtype)  # (B, E)
        current = None
        if self.training and self.cfg.experts == "task-experts" and self.cfg.route_current:
            current = torch.tensor([g == self.current_group for g in self.expert_group], device=logits.device)
        idx, gates = route(logits, self.cfg.top_k, current)
        batch = logits.shape[0]
        counts = torch.bincount(idx.flatten(), minlength=n)
        if self.recording:
            self._record(counts, logits)
        if self.training and self.cfg.balance:
            probs = torch.softmax(logits.float(), dim=1)
            frac = counts.to(probs.dtype) / idx.numel()
            self.balance_terms.append(n * (frac * probs.mean(dim=0)).sum())
        if self.training and self.cfg.official_freeze_hack:
            for e, k in enumerate(counts.tolist()):
                if k < batch and not self.hack_frozen[e]:
                    self.hack_frozen[e] = True
                    self.experts[e].requires_grad_(False)
        hb = _batch_first(h, self.layout)
        out = torch.zeros_like(hb)
        for e in torch.unique(idx).tolist():
            hit = idx == e  # (B, k)
            g = (gates * hit).sum(dim=1)  # (B,)
            rows = torch.nonzero(hit.any(dim=1), as_tuple=False).flatten()
            shape = (-1,) + (1,) * (hb.dim() - 1)
            if rows.numel() == batch:
                out = out + (self.experts[e](hb) * g.view(shape)).to(out.dtype)
            else:
                y = self.experts[e](hb.index_select(0, rows))
                out = out.index_add(0, rows, (y * g.index_select(0, rows).view(shape)).to(out.dtype))
        return _batch_first(out, self.layout)

    def _record(self, counts: torch.Tensor, logits: torch.Tensor) -> None:
        phase = "train" if self.training else "eval"
        key = (phase, self.stats_key)
        with torch.no_grad():
            prev = self._usage.get(key)
            c = counts.detach().long()
            if prev is not None:
                if prev.numel() < c.numel():
                    prev = F.pad(prev, (0, c.numel() - prev.numel()))
                c = prev.to(c.device) + c
            self._usage[key] = c
            logp = torch.log_softmax(logits.detach().float(), dim=1)
            ent = -(logp.exp() * logp).sum(dim=1)
            acc = torch.stack([ent.sum(), torch.tensor(float(ent.numel()), device=ent.device)])
            prev_e = self._entropy.get(key)
            self._entropy[key] = acc if prev_e is None else prev_e.to(acc.device) + acc

    # -- statistics and checkpointing -----------------------------------------------------------------
    def usage(self) -> dict[str, dict[str, list[int]]]:
        """``{phase: {task: [picks per expert]}}`` (lists padded to the current number of experts)."""
        out: dict[str, dict[str, list[int]]] = {}
        for (phase, key), c in sorted(self._usage.items()):
            vals = c.tolist() + [0] * (self.n_experts - c.numel())
            out.setdefault(phase, {})[key] = [int(v) for v in vals]
        return out

    def entropy(self) -> dict[str, dict[str, float]]:
        """``{phase: {task: mean router entropy (nats) over routed samples}}``."""
        out: dict[str, dict[str, float]] = {}
        for (phase, key), acc in sorted(self._entropy.items()):
            s, n = acc.tolist()
            out.setdefault(phase, {})[key] = float(s / n) if n else 0.0
        return out

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "expert_group": list(self.expert_group),
            "chunk_sizes": [int(c.shape[0]) for c in self.router],
            "chunk_group": list(self.chunk_group),
            "hack_frozen": list(self.hack_frozen),
            "current_group": self.current_group,
            "stats_key": self.stats_key,
            "usage": {f"{p}|{k}": v.tolist() for (p, k), v in self._usage.items()},
            "entropy": {f"{p}|{k}": v.tolist() for (p, k), v in self._entropy.items()},
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Grow to the checkpoint's expert structure (before the child parameters load), restore flags and statistics."""
        sizes, groups = state["chunk_sizes"], state["chunk_group"]
        mine = [int(c.shape[0]) for c in self.router]
        if mine != sizes[: len(mine)] or self.chunk_group != groups[: len(mine)]:
            raise RuntimeError(
                f"adapter site {self.name}: checkpoint expert groups {list(zip(groups, sizes))} do not extend this "
                f"model's {list(zip(self.chunk_group, mine))}; was it written with other method.options?"
            )
        for n, g in zip(sizes[len(mine):], groups[len(mine):]):
            self.add_experts(n, g)
        self.hack_frozen = [bool(x) for x in state["hack_frozen"]]
        self.current_group = int(state["current_group"])
        self.stats_key = str(state["stats_key"])
        dev = self._probe.device
        self._usage = {tuple(k.split("|", 1)): torch.tensor(v, dtype=torch.long, device=dev) for k, v in state["usage"].items()}
        self._entropy = {tuple(k.split("|", 1)): torch.tensor(v, dtype=torch.float32, device=dev) for k, v in state["entropy"].items()}
        self.apply_trainable()


def _make_hook(ref: weakref.ReferenceType[MIFE], i: int):
    def hook(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
        mife = ref()
        if mife is None or not mife.is_active:
            return None
        adapter = mife.adapters[i]
        if adapter.n_experts == 0:
            return None
        return output + adapter(inputs[0], mife.current_token_mask).to(output.dtype)

    return hook


def _remove_handles(handles: list[Any]) -> None:
    for h in handles:
        h.remove()


class MIFE(nn.Module):
    """One :class:`MoEAdapter` per site, hooked onto the sites' modules (see the module docstring)."""

    def __init__(self, sites: Sequence[AdapterSite], cfg: MifeConfig) -> None:
        super().__init__()
        if cfg.top_k < 1 or cfg.experts_per_task < 1 or cfg.n_experts < 1 or cfg.bottleneck < 1:
            raise ValueError("MIFE: top_k, experts_per_task, n_experts and bottleneck must be >= 1")
        self.cfg = cfg
        self.site_names = [s.name for s in sites]
        if len(set(self.site_names)) != len(self.site_names):
            raise ValueError(f"MIFE: adapter site names repeat: {self.site_names}")
        self.adapters = nn.ModuleList(MoEAdapter(s.name, s.width, s.layout, cfg) for s in sites)
        if cfg.experts == "official":
            for a in self.adapters:
                a.add_experts(cfg.n_experts, 0)
        self._active = 0
        self.current_token_mask: torch.Tensor | None = None
        ref = weakref.ref(self)
        self._handles = [s.module.register_forward_hook(_make_hook(ref, i)) for i, s in enumerate(sites)]
        weakref.finalize(self, _remove_handles, list(self._handles))

    # -- hooks ----------------------------------------------------------------------------------------
    @property
    def is_active(self) -> bool:
        return self._active > 0

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Adapters act on the backbone only inside this context."""
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1

    @contextlib.contextmanager
    def token_mask(self, mask: torch.Tensor) -> Iterator[None]:
        """Positions ``(B, L)`` bool of the token sequences encoded inside this context (a text
        tower's prompts), read by ``prompt-mean`` routers."""
        before, self.current_token_mask = self.current_token_mask, mask
        try:
            yield
        finally:
            self.current_token_mask = before

    @contextlib.contextmanager
    def recording(self, on: bool) -> Iterator[None]:
        """Switch usage/entropy recording (off for internal passes such as threshold estimation)."""
        before = [a.recording for a in self.adapters]
        for a in self.adapters:
            a.recording = on
        try:
            yield
        finally:
            for a, b in zip(self.adapters, before):
                a.recording = b

    def detach(self) -> None:
        """Remove the forward hooks from the backbone (idempotent)."""
        _remove_handles(self._handles)

    # -- tasks --------------------------------------------------------------------------------------------
    def begin_task(self, t: int) -> None:
        """Grow (task-experts: groups 0..t exist afterwards, idempotent) and set trainable flags for task ``t``."""
        for a in self.adapters:
            if self.cfg.experts == "task-experts":
                while a.n_groups <= t:
                    a.add_experts(self.cfg.experts_per_task, a.n_groups)
                a.current_group = t
            a.stats_key = str(t)
            a.apply_trainable()
            a.train(self.training)

    def pop_balance_loss(self) -> torch.Tensor | None:
        """Mean Switch load-balancing term over the site forwards since the last call (None if none)."""
        terms = [t for a in self.adapters for t in a.balance_terms]
        for a in self.adapters:
            a.balance_terms = []
        return torch.stack(terms).mean() if terms else None

    def clear_balance_terms(self) -> None:
        for a in self.adapters:
            a.balance_terms = []

    # -- statistics -----------------------------------------------------------------------------------------
    def statistics(self) -> dict[str, Any]:
        """Expert usage and router entropy per phase, task and site (JSON-serialisable)."""
        usage: dict[str, dict[str, dict[str, list[int]]]] = {}
        entropy: dict[str, dict[str, dict[str, float]]] = {}
        for a in self.adapters:
            for phase, per_task in a.usage().items():
                for task, counts in per_task.items():
                    usage.setdefault(phase, {}).setdefault(task, {})[a.name] = counts
            for phase, per_task in a.entropy().items():
                for task, value in per_task.items():
                    entropy.setdefault(phase, {}).setdefault(task, {})[a.name] = value
        out: dict[str, Any] = {
            "preset": self.cfg.experts,
            "top_k": self.cfg.top_k,
            "sites": list(self.site_names),
            "experts_per_site": self.adapters[0].n_experts if len(self.adapters) else 0,
            "expert_task": list(self.adapters[0].expert_group) if len(self.adapters) else [],
            "usage": usage,
            "router_entropy": entropy,
        }
        if self.cfg.official_freeze_hack:
            out["hack_frozen"] = {a.name: list(a.hack_frozen) for a in self.adapters}
        return out
