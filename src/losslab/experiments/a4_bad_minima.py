"""A4 — Bad global minima lie near good ones and near the trajectory (Huang et al. 2020).

Protocol (Huang et al.'s reference code, ``wronnyhuang/gen-viz``), repeated on independent seeds (each
seed sets the initialization, the data order and the poison draw and labels):

* **Good vs bad minimum, sharpness** (their swiss-roll / SVHN experiments): two MLPs from the *same*
  initialization :math:`\\theta_0`; one trains on the clean training set (:math:`\\theta_c`), the other
  from scratch on the clean set plus as many fresh same-distribution examples with wrong labels
  (:func:`losslab.data.poison`; :math:`\\theta_p`). Their curvature is measured on the clean training set
  (as ``get_hessian(xtrain, ytrain)`` there): :math:`\\lambda_{max}` of the Hessian
  (:func:`losslab.curvature.lambda_max`) and the mean 1-D basin width :math:`r(d) + r(-d)` along random
  filter-normalized directions (:func:`losslab.curvature.basin_width`, loss rise ``basin_threshold``).
* **The primary distance measurement: gen-viz's minefield search** (``minefield/trace_trajectory.py``):
  the poisoned training is warm-started at the clean solution :math:`\\theta_c` (a point of the good
  trajectory) with the same optimizer and epochs as the poisoned run; its end :math:`\\theta_b` is a bad
  minimum when it fits its training set (clean + poison) and generalizes worse. Measured:
  :math:`d(\\theta_c, \\theta_b) / d(\\theta_0, \\theta_c)` (Euclidean over all parameters; gen-viz's
  layer-normalized distance for context).
* **Searches in balls** (:class:`TrustRegion`: the same warm-started search, projected after every step onto
  :math:`\\|\\theta - \\theta_c\\| \\le \\rho\\, d(\\theta_0, \\theta_c)`). A ball end lies inside the ball by
  construction, so it *counts* as a bad minimum only when it fits its training set (poison included), is
  stationary (full-batch gradient norm of its training loss no larger than the from-scratch poisoned
  solution's, the reference minimum of that loss reached by the same optimizer and budget) and is worse on
  test than the clean solution by ``gap_margin``.
* **The null** (issue 14): every search is repeated with the poison replaced by correctly labelled data (the
  same extra inputs with their true labels, :class:`TrueLabels`). Its nearest "bad minimum" (same rules) is
  what a search finds without poison; the poisoned search must beat it.

The distance to the nearest bad minimum is reported as a bracket: the upper end is the nearest bad minimum
found (:func:`nearest_bad_minimum`); the lower end is the largest ball radius below it whose search found
none (a search-based bound, not a proof of absence).

Pre-registered criteria: :data:`CRITERIA`. Negative control: the whole protocol without poison (the
from-scratch model and every search trained with the extra rows correctly labelled), judged by the same
:func:`judge`.

The warm-started runs live in ``cache_dir/warm/<clean run>-step<t>/`` (a run directory of
:func:`losslab.train.train` whose step-0 checkpoint is the warm start); the from-scratch null runs in
``cache_dir/warm/<poisoned run>-null/``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..config import TrainConfig
from . import recipes
from ._base import ExperimentResult, Verdict, verdict_from_checks
from .common import (
    describe_data, evaluator, example_subset, label_axes, new_figure, ratio_panel, row_result, RowConfig, run_lock,
    same_seeds, save_figure, Timer, train_run,
)
from .criteria import Control, Criteria, Criterion, SEED_PLAN_2026_12_04, t_interval, trained_to_minimum

ID = "A4"
VERSION = 4
COST = {"quick": 90, "full": 2400}

__all__ = ["ID", "VERSION", "COST", "CRITERIA", "Config", "run", "judge", "train_warm_started",
           "layer_relative_distance", "sharpness_of", "TrustRegion", "TrueLabels", "qualifies",
           "nearest_bad_minimum", "seed_statistics"]

CRITERIA = Criteria(
    preconditions=(
        trained_to_minimum("clean solution's error on its training set",
                           "a claim about minima needs minima: train error <= 1% (issue 14, like with like)",
                           name="clean model fits"),
        trained_to_minimum("from-scratch poisoned solution's error on its training set (clean + "
                           "poison rows)",
                           "as above: the bad minimum must fit the poison too (Huang et al.)",
                           name="poisoned model fits"),
        trained_to_minimum("error of the unconstrained warm-started poisoned search's end on its "
                           "training set (clean + poison rows)",
                           "the primary measurement must end at a minimum of the poisoned loss (train error <= 1%)",
                           name="gen-viz end fits"),
    ),
    claims=(
        Criterion("generalizes worse", "test error of the poisoned solution - test error of the clean solution",
                  ">", 0.05, "SURVEY check: the poisoned model's test error far above the clean model's (pilot "
                  "0.68 vs 0.35); 0.05 is the row's gap margin since VERSION 1"),
        Criterion("near", "d(clean, nearest bad minimum found) / min(d(init, clean), d(clean, nearest 'bad minimum' "
                  "the same searches find without poison))", "<", 1.0,
                  "SURVEY check 'its distance to the clean solution small vs distance to init' (Huang et al. 2020, "
                  "minefield). A bad minimum found is the end of the unconstrained gen-viz search (primary) or of a "
                  "ball search that fits its training set (<= 1%), has test error >= the clean solution's + 0.05 "
                  "and, for a ball search, a gradient norm <= that of the from-scratch solution of the same training "
                  "set (stationary); the qualification, the null and the bracket are issue 14 item 6"),
        Criterion("sharper (lambda_max)", "log(lambda_max(poisoned) / lambda_max(clean)) on the clean training set",
                  ">", 0.0, "SURVEY check 'sharper (lambda_max)': Huang et al. 2020, bad minima are sharper"),
        Criterion("narrower (1-D width)", "log(mean 1-D width(clean) / mean 1-D width(poisoned)), loss rise 0.1, "
                  "filter-normalized directions", ">", 0.0,
                  "SURVEY check 'sharper (1-D width)': Huang et al. 2020, bad minima have narrower basins"),
        Criterion("gen-viz distance", "d(clean, end of the unconstrained gen-viz search) / d(init, clean), whether "
                  "or not the end is a bad minimum", "<", 1.0, "context: the primary search's own ratio",
                  decisive=False),
        Criterion("bracket lower end", "largest ball radius below the nearest bad minimum whose search found none, "
                  "/ d(init, clean) (0 when none)", "<", 1.0,
                  "context: the lower end of the distance bracket (a search-based bound)", decisive=False),
    ),
    control="the same protocol without poison: the from-scratch model and every warm-started search (unconstrained "
            "and in balls) trained with the extra rows correctly labelled; same checks (the control has no null of "
            "its own)",
    seeds="5 independent seeds (init, data order, poison draw and labels from each seed) in quick and in full; "
          "the control uses the same seeds",
    registered="2026-12-04",
    changes=(
        "criterion changed on 2026-12-04 because issue 14 requires train error <= 1% on the model's own training "
        "set for rows about minima (was <= 2% on the clean set)",
        "criterion changed on 2026-12-04 because VERSION 3's nearness passed by construction (ball ends counted "
        "without fitting the poison or being stationary); issue 14 item 6: the unconstrained gen-viz search is "
        "primary, a ball search counts only if its end fits the poisoned set, is stationary and beats the same "
        "search without poison",
        "criterion changed on 2026-12-04 because one-seed point comparisons became per-seed statistics judged on "
        "a 95% t-interval over seeds (issue 14); sharpness as log ratios > 0",
        "profile changed on 2026-12-04 AFTER a pilot: the quick profile runs no ball searches (trust_radii=()) for "
        "CPU cost; in the pilot the 0.5-ball ends neither fit the poisoned set (train error 0.28) nor were "
        "stationary, so they would not have counted; without balls 'near' can only be harder to pass; the full "
        "profile keeps balls at 0.25, 0.5, 0.75",
        SEED_PLAN_2026_12_04,
    ),
)


@dataclass(frozen=True)
class Config(RowConfig):
    """A4 settings.

    Attributes:
        clean, poisoned: the pair of runs (:func:`recipes.poison_pair`; same seeds, so same init). C1 and
            C9 use the same pair (shared through the run cache); each seed of ``seeds`` is applied with
            :func:`recipes.with_seed`.
        seeds: independent seeds (init, data order, poison draw and labels).
        warm_epochs: epochs of each warm-started search (0: the poisoned run's own epochs).
        warm_checkpoint_every: epochs between the checkpoints of a warm-started run (the figure's curve).
        trust_radii: radii, as fractions of :math:`d(\\theta_0, \\theta_c)`, of the balls around the clean
            solution inside which the search is repeated (:class:`TrustRegion`), each with and without poison.
            ``()`` in quick: two ball searches per seed and radius cost about as much as the rest of the row, and
            leaving them out can only make the nearness check harder to pass (a ball end can only lower the
            nearest bad minimum found); the bracket's lower end is then 0.
        sharpness_examples: clean training examples for the Hessian and the basin (0: all of them).
        basin_directions: random directions for the 1-D width (each measured in both signs).
        basin_threshold: the width is measured up to the loss ``L(theta*) + basin_threshold``.
        basin_rtol: relative precision of each basin radius (bisection).
        seed: seed of the Lanczos start vectors and of the directions (plus the run's seed).
    """

    clean: TrainConfig = field(default_factory=lambda: recipes.poison_pair("quick")[0])
    poisoned: TrainConfig = field(default_factory=lambda: recipes.poison_pair("quick")[1])
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    fit_tolerance: float = 0.01
    gap_margin: float = 0.05
    warm_epochs: int = 0
    warm_checkpoint_every: int = 20
    trust_radii: tuple[float, ...] = ()
    sharpness_examples: int = 0
    basin_directions: int = 6
    basin_threshold: float = 0.1
    basin_rtol: float = 1e-2
    seed: int = 0

    @classmethod
    def full(cls) -> "Config":
        c, p = recipes.poison_pair("full")
        return cls(clean=c, poisoned=p, seeds=(0, 1, 2, 3, 4), warm_checkpoint_every=10, trust_radii=(0.25, 0.5, 0.75),
                   basin_directions=20, basin_rtol=1e-3)


# ---- callbacks and training -------------------------------------------------------------------------


class _WarmStart:
    """A :func:`losslab.train.train` callback: load ``point`` into the model before the first step.

    The step-0 checkpoint (written by ``train`` before the callbacks run) is overwritten with the warm
    start, so the run's trajectory begins where training began. A resumed run (step > 0) is left alone.
    """

    def __init__(self, point: Mapping[str, Any], source: Mapping[str, Any]) -> None:
        self.point = {k: v.detach().clone() for k, v in point.items()}
        self.source = dict(source)

    def cache_key(self) -> dict[str, Any]:
        """The warm start (its source run and step) is part of the run's identity."""
        return {"warm_start": self.source}

    def on_train_start(self, state: Any) -> None:
        import torch

        from .._io import atomic_torch_save, atomic_write_json
        from ..results import seal

        if state.step != 0:
            return
        with torch.no_grad():
            own = {**dict(state.model.named_parameters()), **dict(state.model.named_buffers())}
            for k, v in self.point.items():
                if k in own:
                    own[k].copy_(v)
        run_dir = Path(state.run_dir)
        atomic_torch_save(run_dir / "checkpoints" / "step_00000000.pt", state.model.state_dict())
        atomic_write_json(run_dir / "warm_start.json", seal(self.source))  # a record, with its content hash


class TrustRegion:
    """A :func:`losslab.train.train` callback: keep the parameters in the ball :math:`\\|\\theta - c\\| \\le r`.

    After every optimizer step the parameters (all of them, as one vector; buffers are left alone) are
    projected onto the ball: :math:`\\theta \\leftarrow c + (\\theta - c)\\, \\min(1, r / \\|\\theta - c\\|)`.
    Training with it searches for a minimum of the training loss within distance ``r`` of ``c`` (projected
    gradient descent, or projected Adam). The optimizer's state is not touched.

    Args:
        center: the ball's center (a parameter point: every trained parameter must be in it).
        radius: :math:`r > 0`.
        source: what the center is (recorded in the run's identity, with the radius).
    """

    def __init__(self, center: Mapping[str, Any], radius: float, source: Mapping[str, Any] | None = None) -> None:
        from ..errors import LosslabError

        if not radius > 0:
            raise LosslabError(f"TrustRegion radius must be > 0, got {radius}")
        self.center = {k: v.detach().clone() for k, v in center.items()}
        self.radius = float(radius)
        self.source = dict(source or {})
        self.projections = 0
        self._centers: list[Any] | None = None

    def cache_key(self) -> dict[str, Any]:
        """The ball (its center's source and its radius) is part of the run's identity."""
        return {"trust_region": {"radius": self.radius, **self.source}}

    def on_step_end(self, state: Any) -> None:
        import torch

        from ..errors import LosslabError

        with torch.no_grad():
            ps = [(k, p) for k, p in state.model.named_parameters() if p.requires_grad]
            if self._centers is None:  # the center on the parameters' devices and dtypes, once
                missing = [k for k, _ in ps if k not in self.center]
                if missing:
                    raise LosslabError(f"TrustRegion center lacks parameters {missing[:3]}")
                self._centers = [self.center[k].to(device=p.device, dtype=p.dtype) for k, p in ps]
            sq = torch.stack([(p.double() - c.double()).square().sum() for (_, p), c in zip(ps, self._centers)])
            norm = float(sq.sum()) ** 0.5
            if norm > self.radius:
                scale = self.radius / norm
                for (_, p), c in zip(ps, self._centers):
                    p.copy_(c + (p - c) * scale)
                self.projections += 1


class TrueLabels:
    """A :func:`losslab.train.train` callback: train on the poisoned data set with every row correctly labelled.

    The null of issue 14: the same extra inputs as the poison, with their true labels
    (``bundle.train.clean_y``), so that the only difference from the poisoned run is the labels. The labels
    are replaced in place before the first step (the trainer reads the training labels from the bundle's
    tensor, which on the CPU is the tensor it trains on).
    """

    def cache_key(self) -> dict[str, Any]:
        """Training on the true labels is part of the run's identity."""
        return {"labels": "true"}

    def on_train_start(self, state: Any) -> None:
        from ..errors import LosslabError

        tr = state.bundle.train
        if tr.clean_y is None:
            raise LosslabError("TrueLabels needs a poisoned or corrupted training set (no clean labels recorded)")
        devs = {p.device.type for p in state.model.parameters()}
        if devs != {"cpu"} or tr.y.device.type != "cpu":
            raise LosslabError("TrueLabels relabels the training tensor in place: train on the CPU")
        tr.y.copy_(tr.clean_y.to(tr.y.dtype))


def train_warm_started(config: TrainConfig, start: Mapping[str, Any], *, cache_dir: str | Path, tag: str,
                       source: Mapping[str, Any] | None = None,
                       progress: Callable[[str], None] | None = None,
                       callbacks: Sequence[Any] = ()) -> Any:
    """Train ``config`` starting from the parameters ``start`` (or reuse the finished run).

    The run lives in ``cache_dir/warm/<tag>/train-<hash of config>[-<hash of callbacks>]`` (``tag`` names
    the start, e.g. ``"<run>-step960"``), under a lock, so experiments running in parallel train it once.
    ``callbacks`` (e.g. a :class:`TrustRegion` around ``start``) run after the warm start and are part of
    the run's identity.

    Returns:
        The :class:`losslab.runs.Run`; its step-0 checkpoint is ``start``.
    """
    callback = _WarmStart(start, {"tag": tag, **dict(source or {})})

    def what() -> str:
        labels = ("extra rows correctly labelled" if any(isinstance(c, TrueLabels) for c in callbacks)
                  else f"poison {config.data.poison}")
        return (f" warm-started: {config.optim.optimizer} lr {config.optim.lr:g}, {config.optim.epochs} epochs, "
                f"{labels}")

    return _train_cached(config, cache_dir=cache_dir, tag=tag, callbacks=[callback, *callbacks], progress=progress,
                         reused="warm-started run", training=what)


def train_with_callbacks(config: TrainConfig, *, cache_dir: str | Path, tag: str, callbacks: Sequence[Any],
                         progress: Callable[[str], None] | None = None) -> Any:
    """Train ``config`` from its own initialization with ``callbacks`` (e.g. :class:`TrueLabels`), or reuse the
    finished run, in ``cache_dir/warm/<tag>/`` under a lock (like :func:`train_warm_started`)."""
    return _train_cached(config, cache_dir=cache_dir, tag=tag, callbacks=callbacks, progress=progress, reused="run",
                         training=lambda: f": {config.optim.optimizer} lr {config.optim.lr:g}, "
                                          f"{config.optim.epochs} epochs")


def _train_cached(config: TrainConfig, *, cache_dir: str | Path, tag: str, callbacks: Sequence[Any],
                  progress: Callable[[str], None] | None, reused: str, training: Callable[[], str]) -> Any:
    """Train ``config`` with ``callbacks`` into ``cache_dir/warm/<tag>/`` or reuse the finished run, under a
    lock; ``reused`` and ``training()`` complete the progress messages."""
    from ..runs import Run, run_dir_for
    from ..train import train

    out = Path(cache_dir) / "warm" / tag
    rdir = run_dir_for(config, out, callbacks)
    if Run(rdir).done:
        if progress:
            progress(f"reusing {reused} {tag}/{rdir.name}")
        return Run(rdir)
    with run_lock(Path(cache_dir) / "warm" / ".locks" / f"{tag}-{rdir.name}.lock"):
        if Run(rdir).done:
            return Run(rdir)
        if progress:
            progress(f"training {tag}/{rdir.name}{training()}")
        return train(config, out=out, callbacks=list(callbacks), progress=False, force=True)


def layer_relative_distance(a: Mapping[str, Any], b: Mapping[str, Any], ref: Mapping[str, Any]) -> float:
    """gen-viz's layer-normalized distance: :math:`\\operatorname{mean}_\\ell \\|a_\\ell - b_\\ell\\| / \\|ref_\\ell\\|`
    over the weight matrices (tensors with more than one dimension)."""
    keys = [k for k, v in ref.items() if v.dim() > 1]
    return float(np.mean([float((a[k] - b[k]).norm() / ref[k].norm()) for k in keys]))


def sharpness_of(model: Any, point: Mapping[str, Any], data: tuple[Any, Any], *, num_directions: int,
                 threshold: float, seed: int, basin: bool = True, rtol: float = 1e-3) -> dict[str, Any]:
    """λmax of the Hessian of the mean cross-entropy on ``data`` and (optionally) basin radii, at ``point``."""
    import torch.nn.functional as F

    from ..curvature import HessianOperator, basin_width, lambda_max

    H = HessianOperator(model, data, loss=F.cross_entropy, point=point)
    out: dict[str, Any] = {"lambda_max": lambda_max(H, seed=seed), "lambda_max_matvecs": H.num_matvecs}
    H.release()
    if basin:
        b = basin_width(model, data, loss="cross_entropy", num_directions=num_directions, threshold=threshold,
                        threshold_kind="additive", seed=seed, point=point, rtol=rtol)
        s = b.summary()
        out.update(width_mean=s["width_mean"], widths=b.widths.tolist(), radius_mean=s["radius_mean"],
                   base_loss=s["base_loss"], threshold_loss=s["threshold_loss"], censored=s["censored"],
                   log_volume=s["log_volume"], effective_radius=s["effective_radius"], dim=s["dim"])
    return out


# ---- the verdict's statistics -------------------------------------------------------------------------


def _fit() -> float:
    return CRITERIA["clean model fits"].threshold


def _gap() -> float:
    return CRITERIA["generalizes worse"].threshold


def qualifies(rec: Mapping[str, Any], clean_test_error: float) -> bool:
    """Is a search's end a bad minimum found?

    It must fit its training set (``train_error`` <= the fit threshold of :data:`CRITERIA`, 1%), be worse on
    test than the clean solution by the gap margin (``test_error >= clean_test_error + 0.05``) and, for a
    ball search (``rho`` not None), be stationary: ``grad_norm <= grad_bound`` (the full-batch gradient norm
    of its training loss no larger than that of the from-scratch solution of the same training set).
    """
    if not float(rec["train_error"]) <= _fit():
        return False
    if not float(rec["test_error"]) - float(clean_test_error) >= _gap() - 1e-12:
        return False
    if rec.get("rho") is not None and not float(rec["grad_norm"]) <= float(rec["grad_bound"]):
        return False
    return True


def nearest_bad_minimum(searches: Sequence[Mapping[str, Any]], clean_test_error: float) -> dict[str, Any] | None:
    """The nearest (smallest ``distance`` from the clean solution) search end that :func:`qualifies`, or None."""
    bad = [dict(r) for r in searches if qualifies(r, clean_test_error)]
    return min(bad, key=lambda r: float(r["distance"])) if bad else None


def _search_name(r: Mapping[str, Any] | None) -> str:
    if r is None:
        return "none"
    return "unconstrained" if r.get("rho") is None else f"ball {float(r['rho']):g}"


def seed_statistics(rec: Mapping[str, Any]) -> dict[str, Any]:
    """One seed's statistics: the nearest bad minimum found with poison (``upper``, the bracket's upper end)
    and without (``null``), the ``near`` ratio ``upper / min(d(init, clean), null)`` (NaN when no bad
    minimum was found), the bracket's ``lower`` end, and the unconstrained search's own ``genviz`` ratio."""
    d0c = float(rec["distance_init_clean"])
    ct = float(rec["clean"]["test_error"])
    searches = list(rec["searches"])
    nb = nearest_bad_minimum(searches, ct)
    nn = nearest_bad_minimum(rec.get("null_searches") or (), ct)
    upper = math.inf if nb is None else float(nb["distance"])
    null = math.inf if nn is None else float(nn["distance"])
    ref = min(d0c, null)
    near = upper / ref if math.isfinite(upper) else math.nan
    lower = max([float(r["radius"]) for r in searches if r.get("rho") is not None
                 and not qualifies(r, ct) and float(r["radius"]) < upper], default=0.0)
    gv = next((r for r in searches if r.get("rho") is None), None)
    return {"seed": rec.get("seed"), "d0c": d0c, "upper": upper, "null": null, "near": near, "lower": lower,
            "lower_ratio": lower / d0c, "upper_ratio": upper / d0c, "null_ratio": null / d0c,
            "nearest": _search_name(nb), "nearest_null": _search_name(nn), "genviz": gv,
            "genviz_ratio": math.nan if gv is None else float(gv["distance"]) / d0c,
            "qualified": [_search_name(r) for r in searches if qualifies(r, ct)],
            "null_qualified": [_search_name(r) for r in rec.get("null_searches") or () if qualifies(r, ct)]}


def _log_ratio(a: float, b: float) -> float:
    a, b = float(a), float(b)
    return math.log(a / b) if a > 0 and b > 0 else math.nan


def judge(m: Mapping[str, Any]) -> Verdict:
    """Judge A4 by :data:`CRITERIA` from the per-seed records ``m["seeds"]``.

    Each record: ``seed``, ``distance_init_clean``; ``clean`` (``train_error``, ``test_error``, ``lambda_max``,
    ``width_mean``); ``poisoned`` (the same, ``train_error`` on its own training set); ``searches`` (the
    poisoned searches from the clean solution: ``rho`` (None: unconstrained), ``radius``, ``distance``,
    ``train_error``, ``test_error``, ``grad_norm``, ``grad_bound``) and ``null_searches`` (the same searches
    without poison). The control is judged by calling this on ``{"seeds": m["control"]}``.
    """
    recs = list(m["seeds"])
    seeds = [r.get("seed") for r in recs]
    st = [seed_statistics(r) for r in recs]
    gv_err = [math.nan if s["genviz"] is None else float(s["genviz"]["train_error"]) for s in st]
    note = "; ".join(
        f"seed {s['seed']}: nearest bad minimum {s['upper_ratio']:.2f} d(init, clean) ({s['nearest']}), without "
        f"poison {s['null_ratio']:.2f} ({s['nearest_null']}), bracket [{s['lower_ratio']:.2f}, "
        f"{s['upper_ratio']:.2f}]" for s in st)
    return verdict_from_checks([
        CRITERIA["clean model fits"].judge([r["clean"]["train_error"] for r in recs], seeds=seeds),
        CRITERIA["poisoned model fits"].judge([r["poisoned"]["train_error"] for r in recs], seeds=seeds),
        CRITERIA["gen-viz end fits"].judge(gv_err, seeds=seeds),
        CRITERIA["generalizes worse"].judge(
            [float(r["poisoned"]["test_error"]) - float(r["clean"]["test_error"]) for r in recs], seeds=seeds),
        CRITERIA["near"].judge([s["near"] for s in st], seeds=seeds, note=note),
        CRITERIA["sharper (lambda_max)"].judge(
            [_log_ratio(r["poisoned"]["lambda_max"], r["clean"]["lambda_max"]) for r in recs], seeds=seeds),
        CRITERIA["narrower (1-D width)"].judge(
            [_log_ratio(r["clean"]["width_mean"], r["poisoned"]["width_mean"]) for r in recs], seeds=seeds),
        CRITERIA["gen-viz distance"].judge([s["genviz_ratio"] for s in st], seeds=seeds),
        CRITERIA["bracket lower end"].judge([s["lower_ratio"] for s in st], seeds=seeds),
    ])


# ---- measurements -----------------------------------------------------------------------------------


def _trajectory(run: Any, names: set[str]) -> list[tuple[int, dict[str, Any]]]:
    """(step, parameters) of a run's checkpoints, without rebuilding its data set."""
    from ..runs import load_state

    return [(s, {k: v for k, v in load_state(f).items() if k in names}) for s, f in run.checkpoints()]


class _Probe:
    """Evaluates points of one seed: errors on the clean rows, the extra rows (poison or true labels) and the
    test set, and the full-batch gradient norm of the poisoned or the correctly labelled training loss."""

    def __init__(self, model: Any, clean_bundle: Any, pois_bundle: Any) -> None:
        import torch

        from .. import data
        from ..errors import LosslabError

        self.model = model
        mask = data.row_mask(pois_bundle.train, "poisoned")
        x, y = pois_bundle.train.x, pois_bundle.train.y
        y_true = pois_bundle.train.clean_y
        if not (torch.equal(x[~mask], clean_bundle.train.x) and torch.equal(y[~mask], clean_bundle.train.y)):
            raise LosslabError("the poisoned training set does not start with the clean training set")
        self.n_clean, self.n_extra = int((~mask).sum()), int(mask.sum())
        self.data = {"poison": (x, y), "true": (x, y_true)}
        self.ev = {"clean": evaluator(model, clean_bundle.train),
                   "test": evaluator(model, clean_bundle.test, bn_data=clean_bundle.train),
                   "poison": evaluator(model, (x[mask], y[mask])),
                   "true": evaluator(model, (x[mask], y_true[mask]))}

    def error(self, name: str, pt: Mapping[str, Any]) -> float:
        return 1.0 - float(self.ev[name].evaluate(pt)["accuracy"])

    def train_error(self, labels: str, pt: Mapping[str, Any]) -> tuple[float, float, float]:
        """(error on clean + extra rows, on the clean rows, on the extra rows) with ``labels`` on the extra rows."""
        ce, xe = self.error("clean", pt), self.error(labels, pt)
        return (self.n_clean * ce + self.n_extra * xe) / (self.n_clean + self.n_extra), ce, xe

    def grad_norm(self, labels: str, pt: Mapping[str, Any]) -> float:
        import torch.nn.functional as F

        from .. import params
        from ..curvature import gradient

        return params.norm(gradient(self.model, self.data[labels], loss=F.cross_entropy, point=pt))

    def describe(self, labels: str, pt: Mapping[str, Any]) -> dict[str, Any]:
        tr, ce, xe = self.train_error(labels, pt)
        return {"labels": labels, "train_error": tr, "clean_train_error": ce, "extra_error": xe,
                "test_error": self.error("test", pt), "grad_norm": self.grad_norm(labels, pt)}


def _searches(config: Config, rc: Any, warm_cfg: TrainConfig, start: Mapping[str, Any], step: int, d0c: float,
              probe: _Probe, labels: str, grad_bound: float, names: set[str], cache_dir: Path,
              progress: Callable[[str], None], timer: Timer) -> list[dict[str, Any]]:
    """The unconstrained warm-started search and the ball searches from ``start``, on the poisoned training set
    (``labels="poison"``) or on the same rows correctly labelled (``"true"``, the null)."""
    from .. import params

    tag = f"{rc.path.name}-step{step}"
    base_cbs = [] if labels == "poison" else [TrueLabels()]
    out = []
    for rho in (None, *config.trust_radii):
        cbs = list(base_cbs)
        if rho is not None:
            cbs.append(TrustRegion(start, rho * d0c, {"rho": float(rho), "run": rc.path.name, "step": step}))
        with timer("warm-start"):
            rw = train_warm_started(warm_cfg, start, cache_dir=cache_dir, tag=tag, progress=progress,
                                    source={"run": rc.path.name, "step": step}, callbacks=cbs)
        with timer("evaluate"):
            traj = _trajectory(rw, names)
            end = traj[-1][1]
            rec = {"search": "unconstrained" if rho is None else "ball", "rho": None if rho is None else float(rho),
                   "radius": None if rho is None else float(rho) * d0c, "distance": params.distance(start, end),
                   "distance_layer_relative": layer_relative_distance(start, end, start),
                   **probe.describe(labels, end), "grad_bound": grad_bound,
                   "curve": {"step": [s for s, _ in traj], "distance": [params.distance(start, p) for _, p in traj],
                             "train_error": [probe.train_error(labels, p)[0] for _, p in traj]},
                   "run": f"{tag}/{rw.path.name}"}
        progress(f"{'poisoned' if labels == 'poison' else 'null'} search "
                 f"{'unconstrained' if rho is None else f'in ball {rho:g}'}: distance {rec['distance'] / d0c:.2f} "
                 f"d(init, clean), train error {rec['train_error']:.4f}, test error {rec['test_error']:.3f}, "
                 f"gradient norm {rec['grad_norm']:.3g} (bound {grad_bound:.3g})")
        out.append(rec)
    return out


def _measure_seed(config: Config, seed: int, runs: tuple[Any, Any, Any], cache_dir: Path,
                  progress: Callable[[str], None], timer: Timer) -> tuple[dict[str, Any], dict[str, Any], Any]:
    from .. import params

    rc, rp, rn = runs
    clean_bundle, pois_bundle = rc.bundle(), rp.bundle()
    model = rc.build_model()
    names = {n for n, _ in model.named_parameters()}
    traj_c = _trajectory(rc, names)
    theta0, (step, theta_c) = traj_c[0][1], traj_c[-1]
    theta_p, theta_n = _trajectory(rp, names)[-1][1], _trajectory(rn, names)[-1][1]
    d0c = params.distance(theta0, theta_c)
    probe = _Probe(model, clean_bundle, pois_bundle)
    xs, ys = example_subset(clean_bundle.train, config.sharpness_examples, config.seed + seed)

    def sharp(pt: Mapping[str, Any]) -> dict[str, Any]:
        with timer("sharpness"):
            return sharpness_of(model, pt, (xs, ys), num_directions=config.basin_directions,
                                threshold=config.basin_threshold, seed=config.seed + seed, rtol=config.basin_rtol)

    with timer("evaluate"):
        ce = probe.error("clean", theta_c)
        clean = {"train_error": ce, "clean_train_error": ce, "test_error": probe.error("test", theta_c)}
        pois = {**probe.describe("poison", theta_p), "distance_to_clean": params.distance(theta_c, theta_p),
                "distance_to_init": params.distance(theta0, theta_p)}
        null = {**probe.describe("true", theta_n), "distance_to_clean": params.distance(theta_c, theta_n),
                "distance_to_init": params.distance(theta0, theta_n)}
    clean.update(sharp(theta_c))
    pois.update(sharp(theta_p))
    null.update(sharp(theta_n))
    cfg_p = recipes.with_seed(config.poisoned, seed)
    warm_cfg = dataclasses.replace(
        cfg_p, optim=dataclasses.replace(cfg_p.optim, epochs=config.warm_epochs or cfg_p.optim.epochs),
        ckpt=dataclasses.replace(cfg_p.ckpt, checkpoints=f"epoch:{max(1, config.warm_checkpoint_every)}"))
    args = (config, rc, warm_cfg, theta_c, step, d0c, probe)
    searches = _searches(*args, "poison", pois["grad_norm"], names, cache_dir, progress, timer)
    null_searches = _searches(*args, "true", null["grad_norm"], names, cache_dir, progress, timer)
    common_keys = {"seed": seed, "distance_init_clean": d0c, "same_init_distance": params.distance(
        theta0, _trajectory(rp, names)[0][1]), "start_step": step, "n_clean": probe.n_clean,
        "n_extra": probe.n_extra, "runs": {"clean": rc.path.name, "poisoned": rp.path.name,
                                           "null": f"{rn.path.parent.name}/{rn.path.name}"}}
    rec = {**common_keys, "clean": clean, "poisoned": pois, "searches": searches, "null_searches": null_searches}
    crec = {**common_keys, "clean": clean, "poisoned": null, "searches": null_searches, "null_searches": []}
    s = seed_statistics(rec)
    progress(f"seed {seed}: test error clean {clean['test_error']:.3f} / poisoned {pois['test_error']:.3f}; nearest "
             f"bad minimum {s['upper_ratio']:.2f} d(init, clean) ({s['nearest']}), without poison "
             f"{s['null_ratio']:.2f}; lambda_max {clean['lambda_max']:.3g} -> {pois['lambda_max']:.3g}, width "
             f"{clean['width_mean']:.3g} -> {pois['width_mean']:.3g}")
    return rec, crec, pois_bundle


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    """Train (or reuse) every seed's runs, search for bad minima with and without poison, judge, plot."""
    timer = Timer()
    runs = []
    with timer("train"):  # every from-scratch run first: C1 and C9 reuse them when they run in parallel
        for s in config.seeds:
            cfg_c, cfg_p = recipes.with_seed(config.clean, s), recipes.with_seed(config.poisoned, s)
            runs.append((train_run(cfg_c, cache_dir, progress), train_run(cfg_p, cache_dir, progress)))
        full = []
        for (rc, rp), s in zip(runs, config.seeds):
            rn = train_with_callbacks(recipes.with_seed(config.poisoned, s), cache_dir=cache_dir,
                                      tag=f"{rp.path.name}-null",
                                      callbacks=[TrueLabels()], progress=progress)
            full.append((rc, rp, rn))
    recs, crecs = [], []
    bundle = None
    for s, r3 in zip(config.seeds, full):
        rec, crec, bundle = _measure_seed(config, s, r3, cache_dir, progress, timer)
        recs.append(rec)
        crecs.append(crec)
    m: dict[str, Any] = {"seeds": recs, "control": crecs, "basin_threshold": config.basin_threshold,
                         "basin_directions": config.basin_directions, "trust_radii": list(config.trust_radii)}
    verdict = judge(m)
    control = Control(CRITERIA.control, judge({"seeds": crecs}))
    st = [seed_statistics(r) for r in recs]
    cst = [seed_statistics(r) for r in crecs]
    with timer("plot"):
        fig_ref = _figure(m, st, work_dir)
    key, comparison = _text(m, st, cst, control)
    return row_result(ID, CRITERIA, config, m, verdict, control, key, fig_ref, timer, comparison=comparison,
        seeds=same_seeds(config.seeds, "init, data order, poison draw and poison labels derive from each run's seed",
                         {"directions/lanczos": [config.seed + s for s in config.seeds]}),
        data=describe_data(bundle) + f"; clean runs on the first {recs[0]['n_clean']} rows; curvature on the clean "
             "training set",
        notes=["Searches start at the final clean checkpoint (gen-viz traces every tenth epoch of the trajectory; "
               "here the end of the trajectory only). A search's end counts as a bad minimum only when it fits its "
               "training set, is 0.05 worse on test than the clean solution and, in a ball, is stationary "
               "(gradient norm <= the from-scratch solution's on the same training set); the same searches "
               "without poison are the null.",
               "The bracket's lower end is the largest ball radius whose search found no bad minimum: a "
               "search-based bound, not a proof that none exists nearer."],
    )


def _fmt_iv(vals: Sequence[float]) -> str:
    v = [float(x) for x in vals if math.isfinite(float(x))]
    if len(v) < 2:
        return "n/a" if not v else f"{v[0]:.3g}"
    iv = t_interval(v)
    return f"{iv.mean:.3g} [{iv.lo:.3g}, {iv.hi:.3g}]"


def _text(m: Mapping[str, Any], st: Sequence[Mapping[str, Any]], cst: Sequence[Mapping[str, Any]],
          control: Control) -> tuple[dict[str, Any], str]:
    recs = m["seeds"]
    gap = [r["poisoned"]["test_error"] - r["clean"]["test_error"] for r in recs]
    lam = [_log_ratio(r["poisoned"]["lambda_max"], r["clean"]["lambda_max"]) for r in recs]
    wid = [_log_ratio(r["clean"]["width_mean"], r["poisoned"]["width_mean"]) for r in recs]
    per = lambda xs, f="{:.2f}": ", ".join("none" if not math.isfinite(x) else f.format(x) for x in xs)  # noqa: E731
    key = {
        "test error clean / poisoned (per seed)": "; ".join(
            f"{r['clean']['test_error']:.3f} / {r['poisoned']['test_error']:.3f}" for r in recs),
        "gen-viz d(clean, bad) / d(init, clean) (per seed)": per([s["genviz_ratio"] for s in st]),
        "bracket of the nearest bad minimum / d(init, clean) (per seed)": "; ".join(
            f"[{s['lower_ratio']:.2f}, {per([s['upper_ratio']])}]" for s in st),
        "near ratio, mean [95% CI]": _fmt_iv([s["near"] for s in st]),
        "log lambda_max poisoned/clean, mean [95% CI]": _fmt_iv(lam),
        "log 1-D width clean/poisoned, mean [95% CI]": _fmt_iv(wid),
    }
    gv = [s["genviz"] for s in st]
    ngv = [next((r for r in rec["null_searches"] if r.get("rho") is None), None) for rec in recs]

    def ball(r: Mapping[str, Any], clean_test: float) -> str:
        return (f"ball {r['rho']:g}: train error {r['train_error']:.3f}, test error {r['test_error']:.3f}, gradient "
                f"norm {r['grad_norm']:.3g} vs bound {r['grad_bound']:.3g} "
                f"({'counts' if qualifies(r, clean_test) else 'does not count'})")

    balls = "none in this profile" if not m.get("trust_radii") else "; ".join(
        f"seed {rec['seed']}: " + ", ".join(ball(r, rec["clean"]["test_error"]) for r in rec["searches"]
                                            if r.get("rho") is not None) for rec in recs)
    te = lambda rs: per([r["test_error"] if r else math.nan for r in rs], "{:.3f}")  # noqa: E731
    comparison = (
        f"Over {len(recs)} seeds the clean MLP reaches test error {te([r['clean'] for r in recs])} and the poisoned "
        f"one (same initialization, trained from scratch with {recs[0]['n_extra']} wrongly labelled extra examples) "
        f"{te([r['poisoned'] for r in recs])} (gap mean {np.mean(gap):.3f}); error on their own training sets: "
        f"{per([r['clean']['train_error'] for r in recs], '{:.4f}')} (clean), "
        f"{per([r['poisoned']['train_error'] for r in recs], '{:.4f}')} (poisoned). "
        f"The primary gen-viz search (poisoned training warm-started at the clean solution) ends at "
        f"{per([s['genviz_ratio'] for s in st])} x d(init, clean) from it, with train error "
        f"{per([g['train_error'] for g in gv], '{:.4f}')} and test error {te(gv)}; the same search without poison "
        f"(the extra rows correctly labelled) travels "
        f"{per([(g['distance'] / s['d0c']) if g else math.nan for g, s in zip(ngv, st)])} x d(init, clean) and "
        f"ends at test error {te(ngv)}. Searches in balls: {balls}. Nearest bad minimum found per seed: "
        f"{per([s['upper_ratio'] for s in st])} x d(init, clean) (bracket lower ends "
        f"{per([s['lower_ratio'] for s in st])}); without poison the same searches find a 'bad minimum' at "
        f"{per([s['null_ratio'] for s in st])}. On the clean training set log(lambda_max poisoned / clean) = "
        f"{per(lam)} and log(1-D width clean / poisoned) = {per(wid)} (loss rise {m['basin_threshold']:g}, "
        f"{m['basin_directions']} filter-normalized directions). Control (the protocol without poison): test error "
        f"of the from-scratch model {te([r['poisoned'] for r in m['control']])}, nearest 'bad minimum' "
        f"{per([s['upper_ratio'] for s in cst])} x d(init, clean); verdict {control.status}."
    )
    return key, comparison


def _figure(m: Mapping[str, Any], st: Sequence[Mapping[str, Any]], work_dir: Path) -> Any:
    recs = m["seeds"]
    fig, axes = new_figure(2, 2, width=4.3, height=3.2)
    ax = axes[0, 0]
    for i, (rec, s) in enumerate(zip(recs, st)):
        d0c, ct = s["d0c"], rec["clean"]["test_error"]
        for r in rec["searches"]:
            mk = "o" if r.get("rho") is None else "s"
            q = qualifies(r, ct)
            ax.plot(i - 0.12, r["distance"] / d0c, mk, color="C3", mfc="C3" if q else "none", ms=7)
        for r in rec["null_searches"]:
            mk = "o" if r.get("rho") is None else "s"
            q = qualifies(r, ct)
            ax.plot(i + 0.12, r["distance"] / d0c, mk, color="0.45", mfc="0.45" if q else "none", ms=7)
        hi = s["upper_ratio"] if math.isfinite(s["upper_ratio"]) else None
        if hi is not None:
            ax.plot([i - 0.25, i - 0.25], [s["lower_ratio"], hi], "-", color="C3", lw=3, alpha=0.5)
    ax.axhline(1.0, color="C0", ls="--", lw=1)
    ax.plot([], [], "o", color="C3", label="poisoned search, unconstrained")
    if m.get("trust_radii"):
        ax.plot([], [], "s", color="C3", mfc="none", label="poisoned search in a ball")
    ax.plot([], [], "o", color="0.45", mfc="none", label="same search without poison")
    ax.plot([], [], "-", color="C3", lw=3, alpha=0.5, label="bracket of the nearest bad minimum")
    ax.set_xticks(range(len(recs)), [f"seed {r['seed']}" for r in recs])
    label_axes(ax, ylabel="d(clean, search end) / d(init, clean)", title="search ends (filled: a bad minimum found)",
               title_size=9)
    ax.set_ylim(0, max(1.3, 1.15 * max(r["distance"] / s["d0c"] for rec, s in zip(recs, st)
                                           for r in (*rec["searches"], *rec["null_searches"]))))
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    ax = axes[0, 1]
    for i, (rec, s) in enumerate(zip(recs, st)):
        for r, ls in ((next(x for x in rec["searches"] if x.get("rho") is None), "-"),
                      (next(x for x in rec["null_searches"] if x.get("rho") is None), "--")):
            cv = r["curve"]
            ax.plot(cv["step"], np.asarray(cv["distance"]) / s["d0c"], ls, color=f"C{i}", lw=1.2)
    ax.axhline(1.0, color="0.5", ls=":", lw=1)
    for i, rec in enumerate(recs):
        ax.plot([], [], "-", color=f"C{i}", label=f"seed {rec['seed']}")
    ax.plot([], [], "--", color="0.3", label="without poison")
    label_axes(ax, xlabel="step of the unconstrained warm-started search",
               ylabel="distance from start / d(init, clean)", title="unconstrained search: distance travelled",
               title_size=9, legend=7)
    ax = axes[1, 0]
    for i, rec in enumerate(recs):
        gv = next(x for x in rec["searches"] if x.get("rho") is None)
        ys = [rec["clean"]["test_error"], rec["poisoned"]["test_error"], gv["test_error"]]
        ax.plot([0, 1, 2], ys, "o-", color=f"C{i}", label=f"seed {rec['seed']}")
    ax.set_xticks([0, 1, 2], ["clean", "poisoned\n(from scratch)", "gen-viz\nsearch end"])
    label_axes(ax, ylabel="test error", title="generalization per seed", title_size=9, legend=7)
    ax = axes[1, 1]
    lam = [_log_ratio(r["poisoned"]["lambda_max"], r["clean"]["lambda_max"]) for r in recs]
    wid = [_log_ratio(r["clean"]["width_mean"], r["poisoned"]["width_mean"]) for r in recs]
    ratio_panel(ax, [(lam, "log λmax\npoisoned/clean", "C1"), (wid, "log 1-D width\nclean/poisoned", "C1")])
    label_axes(ax, ylabel="log ratio per seed (> 0: poisoned sharper)", title="sharpness (clean training set)",
               title_size=9)
    return save_figure(fig, work_dir, "poisoned",
                       "Top left: distance of each search's end from the clean solution, per seed (circles: "
                       "unconstrained gen-viz search; squares: search inside a ball; red: with poison, grey: the same "
                       "search without poison; filled: the end counts as a bad minimum: fits its training set, test "
                       "error 0.05 above the clean solution's, stationary in a ball); bar: the bracket of the nearest "
                       "bad minimum. Top right: distance travelled by the unconstrained search. Bottom left: test "
                       "errors per seed. Bottom right: per-seed log ratios of lambda_max and 1-D width with their "
                       "95% t-interval.")
