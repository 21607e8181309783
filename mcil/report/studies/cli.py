"""`mcil studies`: the command line (see :mod:`mcil.report.studies`)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from mcil.grid import th_fusion, th_label
from mcil.report.studies.data import StudySettings, load_study_data
from mcil.report.studies.registry import STUDIES
from mcil.report.studies.render import run_studies, write_studies

log = logging.getLogger(__name__)


def _pairs(items: Sequence[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise argparse.ArgumentTypeError(f"{what}: expected NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", nargs="+", default=["results/checks/runs"], help="folders of the check runs")
    p.add_argument("--main-runs", nargs="*", default=["results/runs"],
                   help="the default pipeline's runs (metric study: used when they rank three or more methods)")
    p.add_argument("--out", default="results/checks", help="claims.md, claims.csv, all_runs.csv, tables/ go here")
    p.add_argument("--figures", default="figures/checks", help="figure folder (PNG + PDF)")
    p.add_argument("--study", nargs="*", default=None, metavar="NAME[:KIND]=DS1,DS2",
                   help="studies to report and their datasets (default: every kind on every dataset); KIND (default: "
                        f"NAME) is one of {', '.join(STUDIES)}")
    p.add_argument("--noise-levels", nargs="*", default=[], metavar="DATASET=LEVEL",
                   help="corruption level of each dataset (threshold and adaptive studies)")
    p.add_argument("--task-counts", nargs="*", default=[], metavar="DATASET=T",
                   help="each dataset's main T (every study but the T study reads only those runs; default: the "
                        "T most runs of the dataset have)")
    p.add_argument("--default-th", default="0.8", help="threshold label of the check runs' main setting")
    p.add_argument("--default-alpha", type=float, default=0.7, help="α of the check runs' main setting")
    p.add_argument("--main-th", default="0.8", help="threshold label of the default pipeline's main setting")
    p.add_argument("--main-alpha", type=float, default=0.7, help="α of the default pipeline's main setting")
    p.add_argument("--tolerance", type=float, default=2.0, help="± AIA points inside which a difference is negligible")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--bootstrap", type=int, default=2000, help="resamples of the Kendall τ intervals")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")


def run_cli(args: argparse.Namespace) -> int:
    from mcil.errors import UserError

    try:
        levels = {k: float(v) for k, v in _pairs(args.noise_levels, "--noise-levels").items()}
        task_counts = {k: int(v) for k, v in _pairs(args.task_counts, "--task-counts").items()}
        plan_raw = _pairs(args.study, "--study") if args.study is not None else None
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise UserError(str(exc)) from None
    data = load_study_data(args.runs, args.main_runs or [])
    all_datasets = sorted(data.runs["dataset"].unique()) if not data.runs.empty else []
    plan, kinds = {}, {}
    for key, value in (plan_raw if plan_raw is not None else {k: ",".join(all_datasets) for k in STUDIES}).items():
        name, _, kind = key.partition(":")
        plan[name] = [d for d in value.split(",") if d]
        kinds[name] = kind or name
    unknown = sorted({k for k in kinds.values() if k not in STUDIES})
    if unknown:
        raise UserError(f"--study: unknown kind {', '.join(unknown)}; known: {', '.join(STUDIES)}")
    th = th_label(th_fusion(str(args.default_th)))
    main_th = th_label(th_fusion(str(args.main_th)))
    s = StudySettings(default_th=th, default_alpha=args.default_alpha, main_th=main_th, main_alpha=args.main_alpha,
                      tolerance=args.tolerance, confidence=args.confidence, bootstrap=args.bootstrap, seed=args.seed,
                      noise_levels=levels, task_counts=task_counts)
    results = run_studies(data, plan, s, kinds)
    write_studies(results, data, args.out, args.figures, s)
    log.info("wrote %d studies into %s and %s", len(results), args.out, args.figures)
    return 0
