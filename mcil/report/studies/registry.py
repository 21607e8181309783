"""Name → study function, with the title and question each study answers.

A study registers itself where it is defined::

    @register_study("alpha", title="Loss weight α", question="Does L_MI help (α < 1 vs α = 1), ...?")
    def study_alpha(data: StudyData, datasets: Sequence[str], s: StudySettings) -> StudyResult: ...

:data:`STUDIES` keeps the order of registration, which is the order of the study modules imported
by :mod:`mcil.report.studies` (the default plan, claims.md and ``mcil studies --help`` follow it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mcil.report.studies.data import StudyData, StudyResult, StudySettings

    StudyFn = Callable[[StudyData, Sequence[str], StudySettings], StudyResult]

__all__ = ["STUDIES", "STUDY_INFO", "register_study"]

STUDIES: dict[str, StudyFn] = {}
# name → (title, question): the heading and the question of the study's paragraph in claims.md
STUDY_INFO: dict[str, tuple[str, str]] = {}


def register_study(name: str, title: str, question: str) -> Callable[[StudyFn], StudyFn]:
    """Function decorator: register a study under ``name`` (the ``KIND`` of ``mcil studies --study``)."""

    def register(fn: StudyFn) -> StudyFn:
        if name in STUDIES and STUDIES[name] is not fn:
            raise ValueError(f"study name {name!r} registered twice")
        STUDIES[name] = fn
        STUDY_INFO[name] = (title, question)
        return fn

    return register
