"""The executable survey: one experiment module per survey row (docs/findings.md), run by ``losslab reproduce``.

Adding a row (say C2) is one new module ``c2_<slug>.py`` in this package; it is discovered
automatically (:data:`EXPERIMENTS`) and appears in the report in place of "not yet implemented"::

    from dataclasses import dataclass
    from losslab.experiments import (Control, Criteria, Criterion, ExperimentResult, common, recipes,
                                     verdict_from_checks)

    ID = "C2"
    VERSION = 1                       # bump when run() measures something different
    COST = {"quick": 30, "full": 600}  # rough seconds on one core (scheduling only)

    CRITERIA = Criteria(              # fixed before measuring; the report prints these lines verbatim
        preconditions=(Criterion("trained", "final train error", "<=", 0.01, "minima: <= 1%",
                                 precondition=True),),
        claims=(Criterion("curve removes the barrier", "curve / line test-error barrier", "<", 1 / 3,
                          "Garipov et al. 2018 (pilot ratio 0.09)"),),
        control="the same curve left untrained (a straight line); same checks",
        seeds="3 disjoint pairs in quick, 5 in full", registered="2026-12-04")

    @dataclass(frozen=True)
    class Config(common.RowConfig):    # quick() = the defaults
        train: TrainConfig = ...       # e.g. recipes.mnist1d_mlp("quick"): shares runs with A1/C4/C5
        seeds: tuple[int, ...] = (0, 1, 2, 3, 4, 5)   # `reproduce --seed S` shifts every *seed* field

        @classmethod
        def full(cls): return cls(train=recipes.mnist1d_mlp("full"), seeds=tuple(range(10)))

    def run(config, *, cache_dir, work_dir, progress) -> ExperimentResult:
        runs = [common.train_run(recipes.with_seed(config.train, s), cache_dir, progress)
                for s in config.seeds]            # trained once, shared through cache_dir/runs
        ...measure one value per seed (pair) for each statistic, for the row and for its control...
        m = {"pairs": [...], "control": [...]}
        control = Control(CRITERIA.control, judge({"pairs": m["control"]}))   # the same judge
        return common.row_result(ID, CRITERIA, config, m, judge(m), control, {...key numbers}, figure, timer,
                                 seeds=..., data=..., comparison="...")   # = ExperimentResult.create(...)

    def judge(m) -> Verdict:                      # pure: tests feed it synthetic per-seed values
        return CRITERIA.judge_records(m["pairs"], {      # record key (or per-seed values) per criterion
            "trained": "train_error",                   # every seed (a precondition)
            "curve removes the barrier": "ratio",       # 95% t-interval over the seeds
        })

``run`` must use only the public library API, write figures only into ``work_dir`` (see
:func:`common.save_figure`) and train through :func:`common.train_run` (locked, cached). ``judge``
turns measurements into ``reproduced`` / ``not reproduced`` (say by how much) / ``inconclusive``
(a precondition failed, or an interval over seeds straddles its threshold) / ``partly reproduced``;
a negative control that passes the same checks makes the row ``inconclusive`` and flagged
(:mod:`losslab.experiments.criteria`).

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
from ._findings import findings_markdown  # noqa: F401  (docs/findings.md, make docs)

__all__ = [
    "EXPERIMENTS", "BROKEN", "ROWS", "SECTIONS", "SurveyRow", "PROFILES",
    "ExperimentResult", "Verdict", "Check", "FigureRef", "Progress", "Outcome",
    "REPRODUCED", "PARTLY_REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE", "VERDICTS",
    "Criteria", "Criterion", "Control", "apply_control", "shift_seeds", "criteria",
    "verdict_from_checks", "config_dict", "result_key",
    "get", "implemented", "row_order", "config_for", "load_saved", "result_dir", "run_experiment", "run_many",
    "common", "recipes",
]
