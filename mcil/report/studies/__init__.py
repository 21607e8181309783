"""`mcil studies`: the validation studies (config/checks.yaml) → tables, figures and ``claims.md``.

The paper leaves gaps that its own text points at: th = 0.8 fixed without a sensitivity analysis,
lr and batch size unreported, MIFE never run beyond 8 tasks, a fusion rule that has to cope with
a missing modality, and M1/M2 never checked against standard metrics. Each study below answers
one of those questions from the check runs (``snakemake checks``) with one function in a module of
its own, registered under its name with its title and question (:mod:`.registry`)::

    @register_study(name, title=..., question=...)

    study_<name>(data: StudyData, datasets: list[str], s: StudySettings) -> StudyResult

that reads the tidy run table (and, for T scaling, the per-task table) and returns a tidy table
(CSV), its wide view (Markdown, LaTeX), a seaborn figure and a paragraph (a dict with the question,
the verdict, a text with the numbers and the individual findings). All of them are pure functions
of DataFrames; :func:`write_studies` renders them (:mod:`.render`), :func:`run_cli` is the command
(:mod:`.cli`). The statistics are :mod:`mcil.report.stats`, shared with claims.py.

Statistics (stated again at the top of claims.md): every comparison pairs the two settings by
seed; the difference A − B over seeds gets a two-sided t-interval at ``confidence`` (95 %).
Verdict of a comparison: **equivalent** when the interval lies inside ±``tolerance`` AIA points
(negligible, even if certainly not 0), else **higher** when it lies above 0, **lower** when below
0, otherwise **inconclusive** (the seeds disagree, or fewer than two pair up). A *material loss*
is an interval below 0 with a mean below −tolerance. Study-level answers combine these as each study
says; anything resting on an inconclusive comparison is inconclusive. Kendall τ intervals (metric
study) are percentile bootstrap intervals over seeds.

Which runs a study reads: its datasets (``--study NAME=DS1,DS2``) at their main T (``--task-counts``;
only the T study reads other T), its methods, and the "base" value of every knob that varies between check runs (any ``config.*`` column outside the run's
identity, e.g. ``optim.lr`` or ``data.missing_audio_test``) except the knobs it sweeps. The base
value is the one of the runs in the ``base`` variant folder (the checks' own ``run:`` setting).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

# The study modules register in import order, which is the order of STUDIES: no sorting here.
# isort: off
from mcil.report.stats import bootstrap_tau, kendall_tau  # noqa: E402
from mcil.report.studies.registry import STUDIES, STUDY_INFO, register_study  # noqa: E402
from mcil.report.studies.data import (  # noqa: E402
    BASE,
    BATCH,
    EQUIVALENT,
    HIGHER,
    IDENTITY_CONFIG,
    INCONCLUSIVE,
    LOWER,
    LR,
    MISSING,
    QUANTILE,
    StudyData,
    StudyResult,
    StudySettings,
    at_base,
    base_values,
    collect_study_data,
    knob_columns,
    load_study_data,
    task_rows,
    variant_of,
)
from mcil.report.studies.common import compare, compare_verdict, per_seed, summarise_ci  # noqa: E402

# the order of these imports is the order of STUDIES (default plan, claims.md, --help)
from mcil.report.studies.hyperparams import study_hyperparams  # noqa: E402
from mcil.report.studies.threshold_noise import study_threshold_noise  # noqa: E402
from mcil.report.studies.adaptive_threshold import study_adaptive_threshold  # noqa: E402
from mcil.report.studies.alpha import study_alpha  # noqa: E402
from mcil.report.studies.components import study_components  # noqa: E402
from mcil.report.studies.tasks import study_tasks  # noqa: E402
from mcil.report.studies.absence import study_absence  # noqa: E402
from mcil.report.studies.metrics import study_metrics  # noqa: E402
from mcil.report.studies.render import render_claims, run_studies, write_studies  # noqa: E402
from mcil.report.studies.cli import configure_parser, run_cli  # noqa: E402
# isort: on

__all__ = [
    "STUDIES",
    "HIGHER",
    "LOWER",
    "EQUIVALENT",
    "INCONCLUSIVE",
    "StudySettings",
    "StudyData",
    "StudyResult",
    "variant_of",
    "task_rows",
    "collect_study_data",
    "load_study_data",
    "knob_columns",
    "base_values",
    "at_base",
    "compare_verdict",
    "compare",
    "summarise_ci",
    "kendall_tau",
    "bootstrap_tau",
    "study_hyperparams",
    "study_threshold_noise",
    "study_adaptive_threshold",
    "study_alpha",
    "study_components",
    "study_tasks",
    "study_absence",
    "study_metrics",
    "run_studies",
    "render_claims",
    "write_studies",
    "configure_parser",
    "run_cli",
    "STUDY_INFO",
    "register_study",
    "BASE",
    "LR",
    "BATCH",
    "QUANTILE",
    "MISSING",
    "IDENTITY_CONFIG",
    "per_seed",
]
