"""``mcil tune``: choose the default settings on the validation split, one step after another.

Why: a benchmark's defaults decide what its comparison says, so they must be chosen on data that is
never reported: every tune run trains on the train split minus the validation rows and is measured
on those rows (``data.eval_split=val``, mcil/data/splits.py). Test accuracy is never read here.

A spec (YAML, e.g. config/tune.yaml) has ``base`` (the ``mcil train`` overrides of every tune run:
dataset, backbone, the default run keys), ``seeds`` and a list of ``steps``. A step sweeps one
dotted key over candidate values for some methods, at the values chosen by the steps before it:

    steps:
      - {name: schedule, key: optim.epochs, values: [1, 2, 4, 8], methods: [mcil, finetune],
         pick: flattened, shared: true}
      - {name: lr, key: optim.lr, values: ["3e-4", "1e-3", "3e-3"], methods: [mcil, finetune, ...]}

``pick``: ``best`` (highest mean validation score) or ``flattened`` (the first listed value whose score
is within ``tolerance`` points of the best: on an ordered axis such as epochs, where the validation
curve has flattened, so more of the setting buys nothing; on a choice listed default-first, keep the
default unless another is clearly better). ``shared: true`` picks one value for all the step's
methods (the mean over them) and every later step's runs of *every* method use it; otherwise each
method gets its own — every method that trains gets the same candidates, so none loses for lack of
tuning. The score is validation AIA, or Last for one-task methods (joint).

Runs go to ``OUT/runs/<step>/<method>/<key>=<value>_s<seed>-<hash>/result.json`` (hash: the run's
full overrides) and are skipped when finished (a killed tune resumes) or when another step already
made the same run (same hash: its result.json is copied); ``OUT/selection.{md,json}``
are written last, atomically. A step's runs are independent of each other, so ``jobs > 1`` trains
them in that many worker processes (one torch thread each unless ``threads`` says otherwise); the
choices do not depend on ``jobs`` (each run is deterministic given its overrides).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcil.atomic import atomic_write_text
from mcil.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["TuneStep", "TuneSpec", "load_spec", "pick_value", "run_tune", "selection_markdown"]


@dataclass(frozen=True)
class TuneStep:
    name: str
    key: str
    values: tuple[str, ...]
    methods: tuple[str, ...]
    pick: str = "best"          # best | flattened
    shared: bool = False
    tolerance: float = 1.0      # points, for pick=flattened

    def __post_init__(self) -> None:
        if self.pick not in ("best", "flattened"):
            raise UserError(f"tune step {self.name!r}: pick must be 'best' or 'flattened', got {self.pick!r}")
        if not self.values or not self.methods:
            raise UserError(f"tune step {self.name!r}: needs at least one value and one method")


@dataclass(frozen=True)
class TuneSpec:
    base: dict[str, Any]
    seeds: tuple[int, ...]
    steps: tuple[TuneStep, ...]
    fixed: dict[str, dict[str, Any]] = field(default_factory=dict)   # per-method overrides before tuning


def _value_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def load_spec(path: str | Path) -> TuneSpec:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"tune spec {path} does not exist; pass the file with --spec (e.g. config/tune.yaml)")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - {"base", "seeds", "steps", "fixed"}
    if unknown:
        raise UserError(f"{path}: unknown keys {sorted(unknown)}; allowed: base, seeds, steps, fixed")
    steps = []
    for i, s in enumerate(data.get("steps") or []):
        try:
            steps.append(TuneStep(name=s["name"], key=s["key"], values=tuple(_value_text(v) for v in s["values"]),
                                  methods=tuple(s["methods"]), pick=s.get("pick", "best"),
                                  shared=bool(s.get("shared", False)), tolerance=float(s.get("tolerance", 1.0))))
        except KeyError as exc:
            raise UserError(f"{path}: steps[{i}] lacks {exc}; each step needs name, key, values, methods") from exc
    if not steps:
        raise UserError(f"{path}: no steps; list at least one under `steps:`")
    return TuneSpec(base=dict(data.get("base") or {}), seeds=tuple(int(s) for s in data.get("seeds") or [0]),
                    steps=tuple(steps), fixed={k: dict(v) for k, v in (data.get("fixed") or {}).items()})


def pick_value(scores: dict[str, float], values: tuple[str, ...], pick: str, tolerance: float) -> str:
    """The chosen candidate from ``value → mean validation score`` (candidates in ``values`` order).

    ``best``: the highest score (ties: the earlier candidate). ``flattened``: the first candidate whose
    score is within ``tolerance`` of the best — for an ordered axis such as epochs, the point after
    which the validation curve no longer rises.
    """
    present = [v for v in values if v in scores]
    if not present:
        raise UserError("tune: no finished run to choose from")
    best = max(scores[v] for v in present)
    if pick == "best":
        return next(v for v in present if scores[v] == best)
    return next(v for v in present if scores[v] >= best - tolerance)


def _score(result: dict[str, Any]) -> float:
    """Validation AIA; Last for a one-task run (joint), whose AIA is its only step."""
    m = result["metrics"]
    return float(m["last"] if len(result["accuracy_matrix"]) == 1 else m["aia"])


def _overrides(base: dict[str, Any], extra: dict[str, Any]) -> list[str]:
    merged = {**base, **extra}
    return [f"{k}={_value_text(v)}" for k, v in merged.items()]


def _reuse_same_run(out: Path, folder: Path) -> bool:
    """Copy the result.json of a finished run elsewhere under ``out/runs`` with ``folder``'s overrides hash."""
    from mcil.train import RESULT_FILE

    if (folder / RESULT_FILE).is_file():
        return False
    digest = folder.name.rsplit("-", 1)[1]
    for other in sorted((out / "runs").glob(f"*/{folder.parent.name}/*-{digest}/{RESULT_FILE}")):
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / RESULT_FILE, other.read_text())
        log.info("tune: %s is the run %s (same overrides): reused", folder, other.parent)
        return True
    return False


def _train_one(overrides: list[str], folder: str, threads: int | None) -> str:
    """Train one tune run (in a worker process when ``jobs > 1``); returns its result.json path."""
    import torch

    from mcil.config import load_config
    from mcil.train import RESULT_FILE, train

    if threads:
        torch.set_num_threads(threads)
    train(load_config(None, overrides), folder)
    return str(Path(folder) / RESULT_FILE)


def _init_worker() -> None:
    from mcil.cli import configure_logging

    configure_logging()


def run_tune(spec: TuneSpec, out: Path, threads: int | None = None, jobs: int = 1) -> dict[str, Any]:
    """Run every step's grid (skipping finished runs), choose, write ``selection.{md,json}``."""
    import concurrent.futures
    import multiprocessing

    import torch

    from mcil.config import load_config
    from mcil.train import RESULT_FILE

    if jobs < 1:
        raise UserError(f"mcil tune: --jobs {jobs} must be >= 1")
    if threads:
        torch.set_num_threads(threads)
    pool = (
        concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker)
        if jobs > 1
        else None
    )
    chosen: dict[str, dict[str, str]] = {}          # method -> key -> value
    shared: dict[str, str] = {}                     # key -> value of shared steps: every later run uses it
    table: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    try:
        for step in spec.steps:
            # 1. every run of the step, at the choices of the steps before it
            runs: list[tuple[str, str, int, Path, list[str]]] = []
            for method in step.methods:
                for value in step.values:
                    for seed in spec.seeds:
                        # A method's own starting values (fixed) win over the shared choices, its own choices over both.
                        extra = {"method.name": method, **shared, **spec.fixed.get(method, {}), **chosen.get(method, {}),
                                 step.key: value, "train_seed": seed, "scenario.order_seed": seed}
                        overrides = _overrides(spec.base, extra)
                        # The folder names the run's full overrides (hash), so a changed earlier choice or
                        # base never reuses a result made under other settings.
                        digest = hashlib.sha256("\n".join(sorted(overrides)).encode()).hexdigest()[:8]
                        folder = out / "runs" / step.name / method / f"{step.key}={value}_s{seed}-{digest}"
                        runs.append((method, value, seed, folder, overrides))
            # 2. train the unfinished ones (validation only), in parallel when asked; a run with the same
            #    full overrides made by another step (each step's first candidate is usually the run the
            #    step before chose) is the same deterministic run: its result is copied, not retrained.
            for _, _, _, folder, _ in runs:
                _reuse_same_run(out, folder)
            todo = [r for r in runs if not (r[3] / RESULT_FILE).is_file()]
            for *_, overrides in todo:
                if load_config(None, overrides).data.eval_split != "val":
                    raise UserError("tune: base must set data.eval_split=val (settings are chosen on "
                                    "validation data, never on test)")
            log.info("tune %s: %d runs, %d to train (%d at a time)", step.name, len(runs), len(todo), jobs)
            if pool is None:
                for method, value, seed, folder, overrides in todo:
                    log.info("tune %s: %s %s=%s seed %d", step.name, method, step.key, value, seed)
                    _train_one(overrides, str(folder), threads)
            else:
                futures = [pool.submit(_train_one, r[4], str(r[3]), threads or 1) for r in todo]
                for f in concurrent.futures.as_completed(futures):
                    f.result()  # a failed run fails the tune, naming its error
            # 3. score and choose
            per_method: dict[str, dict[str, list[float]]] = {}
            for method, value, seed, folder, _ in runs:
                result = json.loads((folder / RESULT_FILE).read_text())
                per_method.setdefault(method, {}).setdefault(value, []).append(_score(result))
                table.append({"step": step.name, "method": method, "key": step.key, "value": value,
                              "seed": seed, "val_score": _score(result),
                              "train_s": result["timings"]["train_s"]})
            means = {m: {v: sum(x) / len(x) for v, x in d.items()} for m, d in per_method.items()}
            _decide(step, means, shared, chosen, decisions)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    selection = {"seeds": list(spec.seeds), "base": spec.base, "shared": shared, "chosen": chosen,
                 "decisions": decisions, "runs": table}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "selection.json", json.dumps(selection, indent=2) + "\n")
    atomic_write_text(out / "selection.md", selection_markdown(selection))
    return selection


def _decide(
    step: TuneStep,
    per_method: dict[str, dict[str, float]],
    shared: dict[str, str],
    chosen: dict[str, dict[str, str]],
    decisions: list[dict[str, Any]],
) -> None:
    """Record the step's choice: one value for all its methods (``shared``) or one per method."""
    if step.shared:
        mean = {v: sum(per_method[m][v] for m in step.methods) / len(step.methods) for v in step.values}
        value = pick_value(mean, step.values, step.pick, step.tolerance)
        shared[step.key] = value
        for method in step.methods:
            chosen.setdefault(method, {})[step.key] = value
        decisions.append({"step": step.name, "key": step.key, "methods": list(step.methods), "value": value,
                          "scores": mean, "pick": step.pick})
    else:
        for method in step.methods:
            value = pick_value(per_method[method], step.values, step.pick, step.tolerance)
            chosen.setdefault(method, {})[step.key] = value
            decisions.append({"step": step.name, "key": step.key, "methods": [method], "value": value,
                              "scores": per_method[method], "pick": step.pick})


def selection_markdown(selection: dict[str, Any]) -> str:
    """One table per step: validation score per (method, candidate), the chosen value in bold."""
    lines = ["# Settings chosen on the validation split", "",
             f"Validation AIA (Last for one-task runs) over seeds {selection['seeds']}; test accuracy is never "
             "read. `mcil tune` (docs/tuning.md).", ""]
    steps: dict[str, list[dict[str, Any]]] = {}
    for d in selection["decisions"]:
        steps.setdefault(d["step"], []).append(d)
    for name, decisions in steps.items():
        key = decisions[0]["key"]
        values = list(decisions[0]["scores"])
        lines += [f"## {name}: `{key}` ({decisions[0]['pick']})", "",
                  "| methods | " + " | ".join(values) + " | chosen |",
                  "|---|" + "---|" * (len(values) + 1)]
        for d in decisions:
            cells = [f"**{d['scores'][v]:.1f}**" if v == d["value"] else f"{d['scores'][v]:.1f}" for v in values]
            lines.append(f"| {', '.join(d['methods'])} | " + " | ".join(cells) + f" | {d['value']} |")
        lines.append("")
    if selection.get("shared"):
        lines += ["Chosen by shared steps (every later run starts from these; a method's own later choice wins): "
                  + ", ".join(f"`{k}={v}`" for k, v in selection["shared"].items()), ""]
    lines += ["## Chosen", "", "| method | settings |", "|---|---|"]
    for method, keys in selection["chosen"].items():
        lines.append(f"| {method} | " + ", ".join(f"`{k}={v}`" for k, v in keys.items()) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", required=True, help="tune spec YAML (config/tune.yaml)")
    p.add_argument("--out", default="results/tune", help="runs/ and selection.{md,json} go here")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (of each run)")
    p.add_argument("--jobs", type=int, default=1, help="runs of a step trained side by side, in worker processes")
    p.add_argument("overrides", nargs="*", help="extra `mcil train` overrides for every tune run (e.g. paths)")


def run_cli(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    if args.overrides:
        bad = [item for item in args.overrides if "=" not in item]
        if bad:
            raise UserError(f"mcil tune: override {bad[0]!r} is not key=value (e.g. data.root=data/synav-clean)")
        extra = dict(item.split("=", 1) for item in args.overrides)
        spec = TuneSpec(base={**spec.base, **extra}, seeds=spec.seeds, steps=spec.steps, fixed=spec.fixed)
    selection = run_tune(spec, Path(args.out), threads=args.threads, jobs=args.jobs)
    for method, keys in selection["chosen"].items():
        log.info("chosen for %s: %s", method, ", ".join(f"{k}={v}" for k, v in keys.items()))
    return 0
