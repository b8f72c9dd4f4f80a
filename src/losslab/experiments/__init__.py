"""The executable survey: one experiment module per SURVEY.md row, run by ``losslab reproduce``.

Adding a row (say C2) is one new module ``c2_<slug>.py`` in this package; it is discovered
automatically (:data:`EXPERIMENTS`) and appears in the report in place of "not yet implemented"::

    from dataclasses import dataclass
    from losslab.experiments import ExperimentResult, Check, verdict_from_checks, common, recipes

    ID = "C2"
    VERSION = 1                       # bump when run() measures something different
    COST = {"quick": 30, "full": 600}  # rough seconds on one core (scheduling only)

    @dataclass(frozen=True)
    class Config:
        train: TrainConfig = ...       # e.g. recipes.mnist1d_mlp("quick"): shares runs with A1/C4/C5
        seeds: tuple[int, ...] = (0, 1)

        @classmethod
        def quick(cls): return cls()
        @classmethod
        def full(cls): return cls(train=recipes.mnist1d_mlp("full"), seeds=(0, 1, 2))

    def run(config, *, cache_dir, work_dir, progress) -> ExperimentResult:
        runs = [common.train_run(replace(config.train, seeds=SeedConfig(seed=s)), cache_dir, progress)
                for s in config.seeds]            # trained once, shared through cache_dir/runs
        ...measure with the public API...
        m = {...numbers...}
        return ExperimentResult.create(ID, config, measurements=m, verdict=judge(m), figures=[...],
                                       key_numbers={...}, comparison="...", seeds=..., data=..., timings=...)

    def judge(m) -> Verdict:                      # pure: tests feed it synthetic measurements
        return verdict_from_checks([Check("trained", ..., precondition=True), Check("barrier falls", ...)])

``run`` must use only the public library API, write figures only into ``work_dir`` (see
:func:`common.save_figure`) and train through :func:`common.train_run` (locked, cached). ``judge``
turns measurements into ``reproduced`` / ``not reproduced`` (say by how much) / ``inconclusive``
(a precondition failed: runs not trained, not matched).

Running: :func:`run_experiment` (one row, saved and reused by id + config hash) and
:func:`run_many` (several, in parallel processes); the CLI is ``losslab reproduce``.
"""
from __future__ import annotations

from . import common, criteria, recipes
from ._base import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    PARTLY_REPRODUCED,
    REPRODUCED,
    VERDICTS,
    Check,
    ExperimentResult,
    FigureRef,
    Progress,
    Verdict,
    config_dict,
    result_key,
    verdict_from_checks,
)
from ._registry import BROKEN, EXPERIMENTS, get, implemented, row_order
from ._runner import PROFILES, Outcome, config_for, load_saved, result_dir, run_experiment, run_many, shift_seeds
from .criteria import Control, Criteria, Criterion, apply_control
from ._survey import ROWS, SECTIONS, SurveyRow

__all__ = [
    "EXPERIMENTS", "BROKEN", "ROWS", "SECTIONS", "SurveyRow", "PROFILES",
    "ExperimentResult", "Verdict", "Check", "FigureRef", "Progress", "Outcome",
    "REPRODUCED", "PARTLY_REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE", "VERDICTS",
    "Criteria", "Criterion", "Control", "apply_control", "shift_seeds", "criteria",
    "verdict_from_checks", "config_dict", "result_key",
    "get", "implemented", "row_order", "config_for", "load_saved", "result_dir", "run_experiment", "run_many",
    "common", "recipes",
]
