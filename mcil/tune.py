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

``extend: N`` (numeric grids only): a choice at the edge of its grid is not known to be an optimum —
the score may go on rising past it — so the step adds the grid's next value beyond that edge
(continuing its progression: 1e-4, 3e-4, … 3e-2 → 1e-1, 3e-1; 2, 4, 8 → 16) for the method whose
choice is there, trains it and chooses again, at most ``N`` times per edge. ``best`` extends at both
edges; ``flattened`` only past the last value (the curve is still rising by more than ``tolerance``
there); its first value is the floor the spec sets (e.g. the shortest schedule worth calling training).
Every method of a step gets the same rule, so none is cut off by where its grid happened to end.

Runs go to ``OUT/runs/<step>/<method>/<key>=<value>_s<seed>-<hash>/result.json`` (hash: the run's
full overrides) and are skipped when finished (a killed tune resumes) or when another step already
made the same run (same hash: its result.json is copied); ``OUT/selection.{md,json}``
are written last, atomically. selection.md gives each choice's margin over its strongest rival seed
by seed (:func:`seed_margins`), so a reader sees which choices the validation split resolves. A step's runs are independent of each other, so ``jobs > 1`` trains
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

__all__ = ["TuneStep", "TuneSpec", "load_spec", "pick_value", "run_tune", "seed_margins", "selection_markdown"]


@dataclass(frozen=True)
class TuneStep:
    name: str
    key: str
    values: tuple[str, ...]
    methods: tuple[str, ...]
    pick: str = "best"          # best | flattened
    shared: bool = False
    tolerance: float = 1.0      # points, for pick=flattened
    extend: int = 0             # candidates a step may add past an edge its choice sits on (per edge)

    def __post_init__(self) -> None:
        if self.pick not in ("best", "flattened"):
            raise UserError(f"tune step {self.name!r}: pick must be 'best' or 'flattened', got {self.pick!r}")
        if not self.values or not self.methods:
            raise UserError(f"tune step {self.name!r}: needs at least one value and one method")
        if self.extend < 0:
            raise UserError(f"tune step {self.name!r}: extend must be >= 0, got {self.extend}")
        if self.extend and next_value(self.values, "up") is None:
            raise UserError(f"tune step {self.name!r}: extend needs at least two positive numeric values in "
                            f"increasing order (got {list(self.values)}); drop `extend` for this step")


@dataclass(frozen=True)
class TuneSpec:
    base: dict[str, Any]
    seeds: tuple[int, ...]
    steps: tuple[TuneStep, ...]
    fixed: dict[str, dict[str, Any]] = field(default_factory=dict)   # per-method overrides before tuning


def _value_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _number(text: str) -> float | None:
    try:
        x = float(text)
    except ValueError:
        return None
    return x if x > 0 and x == x and x != float("inf") else None


def next_value(values: tuple[str, ...] | list[str], direction: str) -> str | None:
    """The grid's next candidate past its last (``up``) or first (``down``) value, or ``None``.

    The grid must be positive numbers in increasing order. It is continued with the progression of
    its last (first) two steps: ``x[-2] · x[-1] / x[-3]``, which continues a 1-3-10-30 grid (1e-2, 3e-2
    → 1e-1) and a geometric one (2, 4, 8 → 16); with two values, their ratio. An integer grid stays
    integer (``None`` when the next value is not a positive integer); other values are written with
    one significant digit, in the grid's notation (``1e-1``, ``3e-5``; ``3``, ``0.03``).
    """
    nums = [_number(v) for v in values]
    if len(nums) < 2 or any(x is None for x in nums) or any(b <= a for a, b in zip(nums, nums[1:])):
        return None
    seq = nums if direction == "up" else [1.0 / x for x in reversed(nums)]
    nxt = seq[-1] * seq[-1] / seq[-2] if len(seq) == 2 else seq[-2] * seq[-1] / seq[-3]
    x = nxt if direction == "up" else 1.0 / nxt
    if all(v.lstrip("+").isdigit() for v in values):
        r = round(x)
        return str(r) if r >= 1 and abs(x - r) < 1e-9 * max(1.0, x) and str(r) not in values else None
    if any("e" in v.lower() for v in values):
        mantissa, exponent = f"{x:.0e}".split("e")
        text = f"{mantissa}e{int(exponent)}"
    else:
        text = f"{x:.1g}"
    return text if text not in values else None


def _edge_extension(values: list[str], scores: dict[str, float], step: TuneStep, added: dict[str, int]) -> tuple[str, str] | None:
    """``(direction, value)`` to add to a method's candidates ``values`` (ordered), or ``None``."""
    if not step.extend:
        return None
    chosen = pick_value(scores, tuple(values), step.pick, step.tolerance)
    for direction, edge in (("up", values[-1]), ("down", values[0])):
        if direction == "down" and step.pick != "best":
            continue
        if chosen == edge and len(values) > 1 and added[direction] < step.extend:
            nxt = next_value(values, direction)
            if nxt is not None:
                return direction, nxt
    return None


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
                                  shared=bool(s.get("shared", False)), tolerance=float(s.get("tolerance", 1.0)),
                                  extend=int(s.get("extend", 0))))
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
            # Each method's candidates, in grid order: the step's values, plus any it adds past an edge.
            candidates = {m: list(step.values) for m in step.methods}
            added = {m: {"up": 0, "down": 0} for m in step.methods}
            while True:
                runs = _step_runs(spec, step, candidates, shared, chosen, out)
                _train_runs(step, runs, out, pool, threads, jobs)
                means = _step_means(runs)
                extensions = _step_extensions(step, candidates, means, added)
                if not extensions:
                    break
                for method, (direction, value) in extensions.items():
                    log.info("tune %s: %s's choice is at the %s edge of %s; adding %s=%s", step.name, method,
                             "upper" if direction == "up" else "lower", candidates[method], step.key, value)
                    added[method][direction] += 1
                    candidates[method] = ([value] if direction == "down" else []) + candidates[method] + (
                        [value] if direction == "up" else [])
            # 3. score and choose
            for method, value, seed, folder, _ in runs:
                result = json.loads((folder / RESULT_FILE).read_text())
                table.append({"step": step.name, "method": method, "key": step.key, "value": value,
                              "seed": seed, "val_score": _score(result),
                              "train_s": result["timings"]["train_s"]})
            _decide(step, means, candidates, shared, chosen, decisions)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    selection = {"seeds": list(spec.seeds), "base": spec.base, "shared": shared, "chosen": chosen,
                 "decisions": decisions, "runs": table}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "selection.json", json.dumps(selection, indent=2) + "\n")
    atomic_write_text(out / "selection.md", selection_markdown(selection))
    return selection


def _step_runs(
    spec: TuneSpec,
    step: TuneStep,
    candidates: dict[str, list[str]],
    shared: dict[str, str],
    chosen: dict[str, dict[str, str]],
    out: Path,
) -> list[tuple[str, str, int, Path, list[str]]]:
    """1. every run of the step, at the choices of the steps before it: (method, value, seed, folder, overrides)."""
    runs = []
    for method in step.methods:
        for value in candidates[method]:
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
    return runs


def _train_runs(step: TuneStep, runs: list[tuple[str, str, int, Path, list[str]]], out: Path, pool: Any,
                threads: int | None, jobs: int) -> None:
    """2. train the unfinished runs (validation only), in parallel when asked.

    A run with the same full overrides made by another step (each step's first candidate is usually
    the run the step before chose) is the same deterministic run: its result is copied, not retrained.
    """
    import concurrent.futures

    from mcil.config import load_config
    from mcil.train import RESULT_FILE

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


def _step_means(runs: list[tuple[str, str, int, Path, list[str]]]) -> dict[str, dict[str, float]]:
    """method → value → mean validation score over the seeds."""
    from mcil.train import RESULT_FILE

    per_method: dict[str, dict[str, list[float]]] = {}
    for method, value, _, folder, _ in runs:
        result = json.loads((folder / RESULT_FILE).read_text())
        per_method.setdefault(method, {}).setdefault(value, []).append(_score(result))
    return {m: {v: sum(x) / len(x) for v, x in d.items()} for m, d in per_method.items()}


def _shared_mean(step: TuneStep, per_method: dict[str, dict[str, float]], values: list[str]) -> dict[str, float]:
    return {v: sum(per_method[m][v] for m in step.methods) / len(step.methods) for v in values}


def _step_extensions(
    step: TuneStep,
    candidates: dict[str, list[str]],
    per_method: dict[str, dict[str, float]],
    added: dict[str, dict[str, int]],
) -> dict[str, tuple[str, str]]:
    """method → (direction, value) for every method whose choice sits on an edge it may extend.

    A shared step decides on the mean over its methods and extends all of them together.
    """
    if not step.extend:
        return {}
    if step.shared:
        first = step.methods[0]
        ext = _edge_extension(candidates[first], _shared_mean(step, per_method, candidates[first]), step, added[first])
        return {m: ext for m in step.methods} if ext else {}
    out = {}
    for method in step.methods:
        ext = _edge_extension(candidates[method], per_method[method], step, added[method])
        if ext:
            out[method] = ext
    return out


def _decide(
    step: TuneStep,
    per_method: dict[str, dict[str, float]],
    candidates: dict[str, list[str]],
    shared: dict[str, str],
    chosen: dict[str, dict[str, str]],
    decisions: list[dict[str, Any]],
) -> None:
    """Record the step's choice: one value for all its methods (``shared``) or one per method."""
    if step.shared:
        values = candidates[step.methods[0]]
        mean = _shared_mean(step, per_method, values)
        value = pick_value(mean, tuple(values), step.pick, step.tolerance)
        shared[step.key] = value
        for method in step.methods:
            chosen.setdefault(method, {})[step.key] = value
        decisions.append({"step": step.name, "key": step.key, "methods": list(step.methods), "value": value,
                          "scores": mean, "pick": step.pick, "extended": _added(step, values)})
    else:
        for method in step.methods:
            values = candidates[method]
            value = pick_value(per_method[method], tuple(values), step.pick, step.tolerance)
            chosen.setdefault(method, {})[step.key] = value
            decisions.append({"step": step.name, "key": step.key, "methods": [method], "value": value,
                              "scores": {v: per_method[method][v] for v in values}, "pick": step.pick,
                              "extended": _added(step, values)})


def _added(step: TuneStep, values: list[str]) -> list[str]:
    return [v for v in values if v not in step.values]


def _columns(decisions: list[dict[str, Any]]) -> list[str]:
    """A step table's candidate columns: its grid, with any extension at the end it extends."""
    cols = list(decisions[0]["scores"])
    for d in decisions[1:]:
        for v in d["scores"]:
            if v not in cols:
                cols.append(v)
    if any(d.get("extended") for d in decisions):
        cols.sort(key=lambda v: float(v))   # extended steps are numeric grids (TuneStep checks it)
    return cols


Margins = tuple[str, dict[int, float]] | None   # (rival, {seed: chosen minus rival}); None: no rival


def seed_margins(selection: dict[str, Any], decision: dict[str, Any]) -> Margins:
    """The chosen value's validation score minus its strongest rival's, seed by seed.

    Why: a step decides on the mean over seeds, and two seeds of a small validation split can agree
    or disagree on that ranking; the per-seed margins say which choices the split resolves. The rival
    is the candidate with the highest mean other than the chosen one (for a ``flattened`` pick that
    is usually the best, so the margin is negative and within the tolerance). A shared step's
    per-seed score is the mean over its methods at that seed. Returns ``(rival, {seed: margin})``,
    or None for a step with one candidate.
    """
    others = [v for v in decision["scores"] if v != decision["value"]]
    if not others:
        return None
    rival = max(others, key=lambda v: decision["scores"][v])
    per_seed: dict[str, dict[int, list[float]]] = {}
    for r in selection["runs"]:
        if r["step"] == decision["step"] and r["method"] in decision["methods"]:
            per_seed.setdefault(r["value"], {}).setdefault(int(r["seed"]), []).append(float(r["val_score"]))
    chosen, other = per_seed.get(decision["value"], {}), per_seed.get(rival, {})
    seeds = sorted(set(chosen) & set(other))
    return rival, {s: sum(chosen[s]) / len(chosen[s]) - sum(other[s]) / len(other[s]) for s in seeds}


def _margin_cell(margins: Margins) -> str:
    if margins is None or not margins[1]:
        return "–"
    rival, per_seed = margins
    return " / ".join(f"{m:+.1f}" for m in per_seed.values()) + f" (vs {rival})"


def _agreement_lines(rows: list[tuple[dict[str, Any], Margins]]) -> list[str]:
    """Which choices every seed ranks the same way against their rival, and which not.

    ``rows`` pairs each decision with its :func:`seed_margins`.
    """
    split: list[str] = []
    n = 0
    for d, margins in rows:
        if margins is None or len(margins[1]) < 2:
            continue
        n += 1
        values = list(margins[1].values())
        if not (all(m > 0 for m in values) or all(m < 0 for m in values)):   # a tie counts as unresolved
            split.append(f"{d['step']} {', '.join(d['methods'])} ({d['value']} vs {margins[0]})")
    if not n:
        return []
    agree = n - len(split)
    text = (f"Seeds agree on the sign of the chosen value's margin over its rival in {agree} of {n} choices"
            + (f"; they disagree in {len(split)}, which this validation split does not resolve: "
               + "; ".join(split) if split else "") + ".")
    return [text, ""]


def selection_markdown(selection: dict[str, Any]) -> str:
    """One table per step: validation score per (method, candidate), the chosen value in bold, and the
    chosen value's margin over its strongest rival in each seed."""
    lines = ["# Settings chosen on the validation split", "",
             f"Validation AIA (Last for one-task runs) over seeds {selection['seeds']}; test accuracy is never "
             "read. `mcil tune` (docs/tuning.md). *Margin per seed*: the chosen value's score minus its "
             "rival's (the other candidate with the highest mean), seed by seed.", ""]
    rows = [(d, seed_margins(selection, d)) for d in selection["decisions"]]
    lines += _agreement_lines(rows)
    steps: dict[str, list[tuple[dict[str, Any], Margins]]] = {}
    for d, margins in rows:
        steps.setdefault(d["step"], []).append((d, margins))
    for name, step_rows in steps.items():
        decisions = [d for d, _ in step_rows]
        key = decisions[0]["key"]
        values = _columns(decisions)
        lines += [f"## {name}: `{key}` ({decisions[0]['pick']})", "",
                  "| methods | " + " | ".join(values) + " | chosen | margin per seed |",
                  "|---|" + "---|" * (len(values) + 2)]
        for d, margins in step_rows:
            cells = ["–" if v not in d["scores"] else f"**{d['scores'][v]:.1f}**" if v == d["value"]
                     else f"{d['scores'][v]:.1f}" for v in values]
            lines.append(f"| {', '.join(d['methods'])} | " + " | ".join(cells)
                         + f" | {d['value']} | {_margin_cell(margins)} |")
        lines.append("")
        grown = [d for d in decisions if d.get("extended")]
        if grown:
            lines += ["Grid extended past an edge where a choice sat on it (`extend`): "
                      + "; ".join(f"{', '.join(d['methods'])}: {', '.join(d['extended'])}" for d in grown)
                      + "; – not run (no choice sat on that edge).", ""]
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
