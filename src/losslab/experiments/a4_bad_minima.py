"""A4 — Bad global minima lie near good ones and near the trajectory (Huang et al. 2020).

Protocol (Huang et al.'s reference code, ``wronnyhuang/gen-viz``):

* **Good vs bad minimum, sharpness** (their swiss-roll / SVHN experiments): two MLPs from the *same*
  initialization :math:`\\theta_0`; one trains on the clean training set (:math:`\\theta_c`), the other
  from scratch on the clean set plus as many fresh same-distribution examples with wrong labels
  (:func:`losslab.data.poison`; :math:`\\theta_p`). Both fit the clean training set; the poisoned one
  generalizes worse. Their curvature is measured on the clean training set (as ``get_hessian(xtrain,
  ytrain)`` there): :math:`\\lambda_{max}` of the Hessian (:func:`losslab.curvature.lambda_max`) and the
  1-D basin width :math:`r(d) + r(-d)` along random filter-normalized directions
  (:func:`losslab.curvature.basin_width`, threshold :math:`L(\\theta^*) + \\Delta`).
* **Bad minima near the trajectory** (their "minefield", ``minefield/trace_trajectory.py``): the bad
  minimum is searched *from a point of the good trajectory*: the poisoned training is warm-started at
  the checkpoint :math:`\\theta_c^{(t)}` (the final solution by default, more checkpoints in the full
  profile) with the same optimizer and number of epochs as the poisoned run, giving
  :math:`\\theta_b^{(t)}`. Huang et al. then compare the good and bad weights checkpoint by checkpoint.
  Measured: :math:`d(\\theta_c^{(t)}, \\theta_b^{(t)})` (Euclidean over all parameters, and gen-viz's
  layer-normalized distance :math:`\\operatorname{mean}_\\ell \\|W_b^\\ell - W_c^\\ell\\| / \\|W_c^\\ell\\|`).
* **The nearest bad minimum** (VERSION 3): unconstrained poisoned training does not try to stay near its
  start (Adam moves every coordinate by about its learning rate per step, whatever the gradient), so its
  end point only bounds the distance to the nearest bad minimum from above. The same warm-started search
  is therefore repeated inside balls :math:`\\|\\theta - \\theta_c^{(t)}\\| \\le \\rho\\, d(\\theta_0, \\theta_c)`
  (:class:`TrustRegion`: the parameters are projected back onto the ball after every optimizer step) for
  each :math:`\\rho` of ``Config.trust_radii``. Every end point that fits the clean training set and
  generalizes worse by ``gap_margin`` is a bad minimum found; the nearest one is judged.

Checks (each relative, measured in the same run):

* preconditions: the clean and the poisoned models fit the clean training set (``<= fit_tolerance``),
  and so does every warm-started bad minimum (else it is no minimum of the clean loss);
* the poisoned model's test error exceeds the clean one's by ``>= gap_margin``; so does every
  warm-started bad minimum's;
* near: the nearest bad minimum found from a trajectory point :math:`\\theta_c^{(t)}` (unconstrained or in a
  ball) is closer to it than the good solution is to its initialization, :math:`d < d(\\theta_0, \\theta_c)`;
  no bad minimum found by any search is a contradiction too;
* sharper: :math:`\\lambda_{max}(\\theta_p) > \\lambda_{max}(\\theta_c)` and the mean 1-D width of
  :math:`\\theta_p` is smaller than :math:`\\theta_c`'s (same direction seeds, filter-normalized to each).

The distance of the *independently* poisoned model, :math:`d(\\theta_c, \\theta_p) / d(\\theta_0,
\\theta_c)`, is reported for context (VERSION 1 judged it, which is not Huang et al.'s protocol).
``judge`` still judges VERSION 1 measurements (without ``minefield``/``sharpness``) by that ratio.

The warm-started runs live in ``cache_dir/warm/<clean run>-step<t>/`` (a run directory of
:func:`losslab.train.train` whose step-0 checkpoint is the warm start), so C1 and reruns reuse them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..config import TrainConfig
from . import recipes
from ._base import Check, ExperimentResult, Verdict, verdict_from_checks
from .common import Timer, describe_data, evaluator, interpolate, new_figure, run_lock, save_figure, train_run

ID = "A4"
VERSION = 3
COST = {"quick": 70, "full": 900}

__all__ = ["ID", "VERSION", "COST", "Config", "run", "judge", "train_warm_started", "layer_relative_distance",
           "sharpness_of", "TrustRegion", "is_bad_minimum", "nearest_bad_minimum"]


@dataclass(frozen=True)
class Config:
    """A4 settings.

    Attributes:
        clean, poisoned: the pair of runs (:func:`recipes.poison_pair`; same seeds, so same init). C1 and
            C9 use the same pair (shared through the run cache).
        fit_tolerance: a model fits the clean training set when its error there is ``<=`` this.
        gap_margin: a model is "bad" when its test error is ``>=`` the clean model's + this.
        num_points: points of the clean -> bad-minimum path in the figure (a in [-0.5, 1.5]).
        warm_starts: where on the clean trajectory the bad-minimum search starts, as fractions of the
            list of saved checkpoints (1.0: the final solution; 0.5: the middle checkpoint).
        warm_epochs: epochs of each warm-started poisoned training (0: the poisoned run's own epochs).
        warm_checkpoint_every: epochs between the checkpoints of a warm-started run (the distance-vs-epoch
            curve of the figure; the first checkpoint fitting both the clean and the poison set is reported).
        trust_radii: radii, as fractions of :math:`d(\\theta_0, \\theta_c)`, of the balls around each warm
            start inside which the search is repeated (:class:`TrustRegion`); ``()`` turns it off.
        sharpness_examples: clean training examples for the Hessian and the basin (0: all of them).
        basin_directions: random directions for the 1-D width (each measured in both signs).
        basin_threshold: the width is measured up to the loss ``L(theta*) + basin_threshold``.
        seed: seed of the Lanczos start vectors and of the directions.
    """

    clean: TrainConfig = field(default_factory=lambda: recipes.poison_pair("quick")[0])
    poisoned: TrainConfig = field(default_factory=lambda: recipes.poison_pair("quick")[1])
    fit_tolerance: float = 0.02
    gap_margin: float = 0.05
    num_points: int = 21
    warm_starts: tuple[float, ...] = (1.0,)
    warm_epochs: int = 0
    warm_checkpoint_every: int = 5
    trust_radii: tuple[float, ...] = (0.25, 0.5, 0.75)
    sharpness_examples: int = 0
    basin_directions: int = 6
    basin_threshold: float = 0.1
    seed: int = 0

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        c, p = recipes.poison_pair("full")
        return cls(clean=c, poisoned=p, num_points=41, warm_starts=(0.25, 0.5, 0.75, 1.0), basin_directions=20)


# ---- warm-started poisoned training -----------------------------------------------------------------


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

        if state.step != 0:
            return
        with torch.no_grad():
            own = {**dict(state.model.named_parameters()), **dict(state.model.named_buffers())}
            for k, v in self.point.items():
                if k in own:
                    own[k].copy_(v)
        run_dir = Path(state.run_dir)
        atomic_torch_save(run_dir / "checkpoints" / "step_00000000.pt", state.model.state_dict())
        atomic_write_json(run_dir / "warm_start.json", self.source)


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


def is_bad_minimum(rec: Mapping[str, Any], clean_test_error: float, *, fit_tolerance: float,
                   gap_margin: float) -> bool:
    """Does a searched point (``clean_train_error``, ``test_error``) fit the clean training set (``<=
    fit_tolerance``) and generalize worse than the clean solution by ``>= gap_margin``?"""
    return (float(rec["clean_train_error"]) <= fit_tolerance
            and float(rec["test_error"]) - float(clean_test_error) >= gap_margin)


def nearest_bad_minimum(rec: Mapping[str, Any], clean_test_error: float, *, fit_tolerance: float,
                        gap_margin: float) -> dict[str, Any] | None:
    """The nearest bad minimum among one warm start's searches: the unconstrained one (``rec`` itself) and
    the trust-region ones (``rec["trust"]``). Returns ``{"search", "distance", "rho", ...}`` or ``None``."""
    cands = [dict(r, search="trust region", rho=r["rho"]) for r in rec.get("trust", ())]
    cands.append({**{k: rec[k] for k in ("clean_train_error", "test_error", "distance")},
                  "search": "unconstrained", "rho": None})
    bad = [c for c in cands if is_bad_minimum(c, clean_test_error, fit_tolerance=fit_tolerance,
                                              gap_margin=gap_margin)]
    return min(bad, key=lambda c: float(c["distance"])) if bad else None


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
    from ..runs import Run, run_dir_for
    from ..train import train

    out = Path(cache_dir) / "warm" / tag
    callback = _WarmStart(start, {"tag": tag, **dict(source or {})})
    cbs = [callback, *callbacks]
    rdir = run_dir_for(config, out, cbs)
    if Run(rdir).done:
        if progress:
            progress(f"reusing warm-started run {tag}/{rdir.name}")
        return Run(rdir)
    with run_lock(Path(cache_dir) / "warm" / ".locks" / f"{tag}-{rdir.name}.lock"):
        if Run(rdir).done:
            return Run(rdir)
        if progress:
            progress(f"training {tag}/{rdir.name} warm-started: {config.optim.optimizer} lr {config.optim.lr:g}, "
                     f"{config.optim.epochs} epochs, poison {config.data.poison}")
        return train(config, out=out, callbacks=cbs, progress=False, force=True)


# ---- measurements -----------------------------------------------------------------------------------


def layer_relative_distance(a: Mapping[str, Any], b: Mapping[str, Any], ref: Mapping[str, Any]) -> float:
    """gen-viz's layer-normalized distance: :math:`\\operatorname{mean}_\\ell \\|a_\\ell - b_\\ell\\| / \\|ref_\\ell\\|`
    over the weight matrices (tensors with more than one dimension)."""
    keys = [k for k, v in ref.items() if v.dim() > 1]
    return float(np.mean([float((a[k] - b[k]).norm() / ref[k].norm()) for k in keys]))


def sharpness_of(model: Any, point: Mapping[str, Any], data: tuple[Any, Any], *, num_directions: int,
                 threshold: float, seed: int, basin: bool = True) -> dict[str, Any]:
    """λmax of the Hessian of the mean cross-entropy on ``data`` and (optionally) basin radii, at ``point``."""
    import torch.nn.functional as F

    from ..curvature import HessianOperator, basin_width, lambda_max

    H = HessianOperator(model, F.cross_entropy, data, point=point)
    out: dict[str, Any] = {"lambda_max": lambda_max(H, seed=seed), "lambda_max_matvecs": H.num_matvecs}
    H.release()
    if basin:
        b = basin_width(model, "cross_entropy", data, num_directions=num_directions, threshold=threshold,
                        threshold_kind="additive", seed=seed, point=point)
        s = b.summary()
        out.update(width_mean=s["width_mean"], widths=b.widths.tolist(), radius_mean=s["radius_mean"],
                   base_loss=s["base_loss"], threshold_loss=s["threshold_loss"], censored=s["censored"],
                   log_volume=s["log_volume"], effective_radius=s["effective_radius"], dim=s["dim"])
    return out


def _subset(x: Any, y: Any, n: int, seed: int) -> tuple[Any, Any]:
    import torch

    if n <= 0 or n >= len(x):
        return x, y
    idx = torch.sort(torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]).values
    return x[idx], y[idx]


def _warm_indices(n_ckpt: int, fractions: Sequence[float]) -> list[int]:
    idx = sorted({min(n_ckpt - 1, max(1, int(round(f * (n_ckpt - 1))))) for f in fractions})
    return idx


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    from .. import data, params

    timer = Timer()
    with timer("train"):
        rc = train_run(config.clean, cache_dir, progress)
        rp = train_run(config.poisoned, cache_dir, progress)
    clean_bundle = rc.bundle()
    pois_bundle = rp.bundle()
    model = rc.build_model()
    traj_c = rc.trajectory()
    traj_p = rp.trajectory()
    theta0, theta_c = traj_c[0][1], traj_c[-1][1]
    theta_p = traj_p[-1][1]
    same_init = params.distance(theta0, traj_p[0][1])
    mask = data.row_mask(pois_bundle.train, "poisoned")
    ev_clean = evaluator(model, clean_bundle.train)
    ev_test = evaluator(model, clean_bundle.test, bn_data=clean_bundle.train)
    ev_poison = evaluator(model, (pois_bundle.train.x[mask], pois_bundle.train.y[mask]))

    def errors(pt: Mapping[str, Any]) -> dict[str, float]:
        return {"clean_train_error": 1 - ev_clean.evaluate(pt)["accuracy"],
                "test_error": 1 - ev_test.evaluate(pt)["accuracy"],
                "poison_fit_error": 1 - ev_poison.evaluate(pt)["accuracy"]}

    with timer("evaluate"):
        err = {"clean": errors(theta_c), "poisoned": errors(theta_p)}
    d_0c = params.distance(theta0, theta_c)

    # -- the minefield: bad minima searched from points of the clean trajectory ----------------------
    warm_cfg = dataclasses.replace(
        config.poisoned,
        optim=dataclasses.replace(config.poisoned.optim, epochs=config.warm_epochs or config.poisoned.optim.epochs),
        ckpt=dataclasses.replace(config.poisoned.ckpt, checkpoints=f"epoch:{max(1, config.warm_checkpoint_every)}"))
    minefield = []
    bad_final = bad_nearest = None
    for i in _warm_indices(len(traj_c), config.warm_starts):
        step, start = traj_c[i]
        tag = f"{rc.path.name}-step{step}"
        with timer("warm-start"):
            rw = train_warm_started(warm_cfg, start, cache_dir=cache_dir, tag=tag, progress=progress,
                                    source={"run": rc.path.name, "step": step})
        traj_w = rw.trajectory()
        theta_b = traj_w[-1][1]
        curve: dict[str, list[float]] = {"step": [], "distance": [], "clean_train_error": [], "test_error": [],
                                         "poison_fit_error": []}
        with timer("evaluate"):
            for s_w, pt in traj_w:
                e = errors(pt)
                curve["step"].append(s_w)
                curve["distance"].append(params.distance(start, pt))
                for k in ("clean_train_error", "test_error", "poison_fit_error"):
                    curve[k].append(e[k])
        fits = [j for j in range(len(curve["step"])) if curve["clean_train_error"][j] <= config.fit_tolerance
                and curve["poison_fit_error"][j] <= config.fit_tolerance]
        dists = [(s, params.distance(theta_b, p)) for s, p in traj_c]
        near_step, near = min(dists, key=lambda t: t[1])
        rec = {
            "start_step": step, "start_index": i, "run": f"{tag}/{rw.path.name}",
            "start_test_error": 1 - ev_test.evaluate(start)["accuracy"],
            **errors(theta_b),
            "distance": params.distance(start, theta_b),
            "distance_layer_relative": layer_relative_distance(start, theta_b, start),
            "distance_init_start": params.distance(theta0, start),
            "distance_to_clean_trajectory": near, "nearest_clean_step": near_step,
            "first_fit_step": curve["step"][fits[0]] if fits else None,
            "first_fit_distance": curve["distance"][fits[0]] if fits else None,
            "curve": curve,
        }
        progress(f"bad minimum from step {step}: test error {rec['test_error']:.3f}, clean-train error "
                 f"{rec['clean_train_error']:.3f}, distance {rec['distance']:.2f} (d(init, clean) {d_0c:.2f})")
        # the same search inside balls around the start: the nearest bad minimum, not just any
        rec["trust"] = []
        ends = {"unconstrained": theta_b}
        for rho in config.trust_radii:
            region = TrustRegion(start, rho * d_0c, {"rho": float(rho), "run": rc.path.name, "step": step})
            with timer("warm-start"):
                rt = train_warm_started(warm_cfg, start, cache_dir=cache_dir, tag=tag, progress=progress,
                                        source={"run": rc.path.name, "step": step}, callbacks=[region])
            traj_t = rt.trajectory()
            end = traj_t[-1][1]
            with timer("evaluate"):
                tr = {"rho": float(rho), "radius": rho * d_0c, "distance": params.distance(start, end), **errors(end),
                      "curve": {"step": [s_t for s_t, _ in traj_t],
                                "distance": [params.distance(start, pt) for _, pt in traj_t]}}
            tr["bad"] = is_bad_minimum(tr, err["clean"]["test_error"], fit_tolerance=config.fit_tolerance,
                                       gap_margin=config.gap_margin)
            rec["trust"].append(tr)
            ends[f"rho={rho:g}"] = end
            progress(f"search from step {step} within {rho:g} d(init, clean): clean-train error "
                     f"{tr['clean_train_error']:.3f}, test error {tr['test_error']:.3f}, poison-fit error "
                     f"{tr['poison_fit_error']:.3f} -> {'bad minimum' if tr['bad'] else 'no bad minimum'}")
        rec["nearest_bad"] = nearest_bad_minimum(rec, err["clean"]["test_error"], fit_tolerance=config.fit_tolerance,
                                                 gap_margin=config.gap_margin)
        minefield.append(rec)
        if i == len(traj_c) - 1:
            bad_final = theta_b
            nb = rec["nearest_bad"]
            if nb is not None:
                bad_nearest = ends["unconstrained" if nb["rho"] is None else f"rho={nb['rho']:g}"]

    # -- sharpness of the clean and the poisoned solutions on the clean training set ------------------
    xs, ys = _subset(clean_bundle.train.x, clean_bundle.train.y, config.sharpness_examples, config.seed)
    with timer("sharpness"):
        sharp = {name: sharpness_of(model, pt, (xs, ys), num_directions=config.basin_directions,
                                    threshold=config.basin_threshold, seed=config.seed)
                 for name, pt in (("clean", theta_c), ("poisoned", theta_p))}
        if bad_final is not None:
            sharp["bad_from_final"] = sharpness_of(model, bad_final, (xs, ys), num_directions=0, threshold=0.0,
                                                   seed=config.seed, basin=False)
    progress(f"lambda_max clean {sharp['clean']['lambda_max']:.3g} vs poisoned {sharp['poisoned']['lambda_max']:.3g}; "
             f"1-D width {sharp['clean']['width_mean']:.3g} vs {sharp['poisoned']['width_mean']:.3g}")

    dists_traj = [(s, params.distance(theta_p, p)) for s, p in traj_c]
    nearest_step, nearest = min(dists_traj, key=lambda t: t[1])
    m: dict[str, Any] = {
        "clean": err["clean"],
        "poisoned": err["poisoned"],
        "n_clean": int((~mask).sum()),
        "n_poison": int(mask.sum()),
        "distance_init_clean": d_0c,
        "distance_init_poisoned": params.distance(theta0, theta_p),
        "distance_clean_poisoned": params.distance(theta_c, theta_p),
        "distance_poisoned_to_clean_trajectory": nearest,
        "nearest_clean_checkpoint_step": nearest_step,
        "same_init_distance": same_init,
        "fit_tolerance": config.fit_tolerance,
        "gap_margin": config.gap_margin,
        "minefield": minefield,
        "sharpness": sharp,
        "sharpness_examples": int(len(xs)),
        "basin_threshold": config.basin_threshold,
    }
    m["distance_ratio"] = m["distance_clean_poisoned"] / d_0c
    verdict = judge(m)

    if bad_nearest is not None:
        path_end, path_name = bad_nearest, "nearest bad minimum found from the clean solution"
    elif bad_final is not None:
        path_end, path_name = bad_final, "bad minimum (warm-started at the clean solution)"
    else:
        path_end, path_name = theta_p, "poisoned"
    with timer("path"):
        alphas = np.linspace(-0.5, 1.5, config.num_points)
        tr = interpolate(model, theta_c, path_end, alphas, evaluator=ev_clean)
        te = interpolate(model, theta_c, path_end, alphas, evaluator=ev_test)
        m["path"] = {"end": path_name, "alpha": alphas.tolist(), "clean_train_error": tr["error"].tolist(),
                     "test_error": te["error"].tolist(), "clean_train_loss": tr["loss"].tolist()}
    with timer("plot"):
        fig_ref = _figure(m, work_dir)

    last = minefield[-1] if minefield else None
    s_c, s_p = sharp["clean"], sharp["poisoned"]
    key: dict[str, Any] = {
        "test error clean / poisoned": f"{err['clean']['test_error']:.3f} / {err['poisoned']['test_error']:.3f}",
    }
    if last is not None:
        nb = last.get("nearest_bad")
        key["d(clean, nearest bad minimum) / d(init, clean)"] = (nb["distance"] / d_0c) if nb else "none found"
        if nb:
            key["nearest bad minimum: test error, clean-train error"] = \
                f"{nb['test_error']:.3f}, {nb['clean_train_error']:.4f}"
        key["d(clean, bad) / d(init, clean), unconstrained search"] = last["distance"] / d_0c
    key["lambda_max clean / poisoned"] = f"{s_c['lambda_max']:.3g} / {s_p['lambda_max']:.3g}"
    key["1-D width clean / poisoned"] = f"{s_c['width_mean']:.3g} / {s_p['width_mean']:.3g}"
    key["d(clean, poisoned from scratch) / d(init, clean)"] = m["distance_ratio"]

    mine_txt = " ".join(
        f"Warm-started at the clean checkpoint of step {r['start_step']} and trained on the poisoned set, the "
        f"search reached a minimum with clean-train error {r['clean_train_error']:.3f} and test error "
        f"{r['test_error']:.3f} at distance {r['distance']:.2f} from its start (layer-relative "
        f"{r['distance_layer_relative']:.2f}); the clean solution lies {d_0c:.2f} from the initialization "
        f"(ratio {r['distance'] / d_0c:.2f})." + _trust_text(r, d_0c) for r in minefield)
    comparison = (
        f"Both models start from the same initialization (distance {same_init:.1e}). The clean model reaches "
        f"clean-train error {err['clean']['clean_train_error']:.3f} and test error {err['clean']['test_error']:.3f}; "
        f"the poisoned model (trained from scratch also on {m['n_poison']} wrongly labelled examples, fitting "
        f"{1 - err['poisoned']['poison_fit_error']:.0%} of them) reaches clean-train error "
        f"{err['poisoned']['clean_train_error']:.3f} but test error {err['poisoned']['test_error']:.3f}. {mine_txt} "
        f"On the clean training set the poisoned solution has lambda_max {s_p['lambda_max']:.3g} vs "
        f"{s_c['lambda_max']:.3g} and mean 1-D width {s_p['width_mean']:.3g} vs {s_c['width_mean']:.3g} "
        f"(loss rise {config.basin_threshold:g}, {config.basin_directions} filter-normalized directions). For "
        f"context, the independently poisoned model lies {m['distance_clean_poisoned']:.2f} from the clean one "
        f"(ratio {m['distance_ratio']:.2f})."
    )
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"init/order/poison": config.clean.seeds.seed, "directions/lanczos": config.seed},
        data=describe_data(pois_bundle) + f"; clean runs on the first {m['n_clean']} rows; curvature on "
             f"{m['sharpness_examples']} clean training examples",
        timings=timer.seconds,
        notes=["Bad minima near the trajectory follow gen-viz's minefield protocol: poisoned training warm-started "
               "at clean checkpoints (same optimizer and epochs as the poisoned run); Huang et al. searched from "
               "every tenth epoch, here from " + ", ".join(str(r['start_step']) for r in minefield) + ".",
               "Nearness is judged on the nearest bad minimum found (VERSION 3). Unconstrained warm-started "
               "training only bounds that distance from above (Adam moves every weight by about its learning rate "
               "per step), so the same search is repeated inside balls of radius rho x d(init, clean), rho in "
               f"{tuple(config.trust_radii)}, projecting onto the ball after each step; an end point counts as a "
               "bad minimum when it fits the clean training set and generalizes worse by the gap margin."],
    )


def _trust_text(r: Mapping[str, Any], d_0c: float) -> str:
    trust = r.get("trust") or []
    if not trust:
        return ""
    parts = [f"within {t['rho']:g} d(init, clean): clean-train error {t['clean_train_error']:.3f}, test error "
             f"{t['test_error']:.3f}, {'a bad minimum' if t['bad'] else 'no bad minimum'}" for t in trust]
    nb = r.get("nearest_bad")
    tail = (f" The nearest bad minimum found lies {nb['distance']:.2f} from the start (ratio "
            f"{nb['distance'] / d_0c:.2f}; {nb['search']} search)." if nb else " No search found a bad minimum.")
    return " Searching again inside balls around the start, " + "; ".join(parts) + "." + tail


def _figure(m: Mapping[str, Any], work_dir: Path) -> Any:
    fig, axes = new_figure(3, 1, width=4.3, height=3.3)
    p = m["path"]
    ax = axes[0]
    ax.plot(p["alpha"], p["clean_train_error"], "o-", ms=3, label="clean train error")
    ax.plot(p["alpha"], p["test_error"], "s-", ms=3, label="test error")
    ax.axvline(0, color="0.6", lw=0.8)
    ax.axvline(1, color="0.6", lw=0.8)
    ax.set_xlabel("a  (θ = (1-a)·θ_clean + a·θ_bad)")
    ax.set_ylabel("error")
    ax.set_title("clean solution → " + ("bad minimum found from it" if p["end"] != "poisoned" else "poisoned"),
                 fontsize=9)
    ax.legend(fontsize=8)
    ax = axes[1]
    d0c = m["distance_init_clean"]
    for n, r in enumerate(m.get("minefield", [])):
        cv = r["curve"]
        ax.plot(cv["step"], cv["distance"], "o-", ms=3, color=f"C{3 + n}",
                label=f"from clean step {r['start_step']}")
        ax.plot(cv["step"], np.asarray(cv["poison_fit_error"]) * d0c, ":", color=f"C{3 + n}", lw=1)
    mine = m.get("minefield") or []
    for t in (mine[-1].get("trust") or []) if mine else []:
        cv = t["curve"]
        ax.plot(cv["step"], cv["distance"], "--", color="0.35", lw=0.9)
        ax.plot(cv["step"][-1:], cv["distance"][-1:], "o", ms=6, color="k" if t["bad"] else "none", mec="k")
    if mine and mine[-1].get("trust"):
        ax.plot([], [], "--o", color="0.35", ms=5, label="in a ball (filled: bad minimum)")
    ax.axhline(d0c, color="C0", ls="--", label="d(init, clean)")
    ax.axhline(m["distance_clean_poisoned"], color="0.5", ls="-.", label="d(clean, poisoned from scratch)")
    ax.set_xlabel("step of the warm-started poisoned training")
    ax.set_ylabel("distance from the start checkpoint")
    top = max([d0c, m["distance_clean_poisoned"]] + [max(r["curve"]["distance"]) for r in m.get("minefield", [])])
    ax.set_ylim(0, 1.45 * top)
    ax.set_title("bad-minimum search (dotted: poison-fit error × d(init, clean))", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", ncol=2)
    ax = axes[2]
    s = m["sharpness"]
    labels = ["clean", "poisoned"]
    lam = [s["clean"]["lambda_max"], s["poisoned"]["lambda_max"]]
    wid = [s["clean"]["width_mean"], s["poisoned"]["width_mean"]]
    x = np.arange(2)
    ax.bar(x - 0.2, lam, 0.4, color="C1", label="λmax (Hessian)")
    ax.set_ylabel("λmax", color="C1")
    ax2 = ax.twinx()
    ax2.bar(x + 0.2, wid, 0.4, color="C2", label="mean 1-D width")
    ax2.set_ylabel(f"mean 1-D width (loss rise {m.get('basin_threshold', 0.1):g})", color="C2")
    ax.set_xticks(x, labels)
    ax.set_title("curvature on the clean training set", fontsize=9)
    return save_figure(fig, work_dir, "poisoned",
                       "Left: errors along the line from the clean solution (a=0) to the nearest bad minimum found "
                       "from it by poisoned training (a=1). Middle: distance travelled by the warm-started poisoned training "
                       "from its clean start checkpoint, against the clean solution's distance from its "
                       "initialization; dashed: the same search from the final checkpoint inside balls of radius "
                       "rho x d(init, clean), its end filled when it is a bad minimum. Right: λmax and mean 1-D basin width of the clean and the "
                       "poisoned solutions.")


def judge(m: Mapping[str, Any]) -> Verdict:
    """Judge A4 from its measurements.

    ``m["clean"]``/``m["poisoned"]``: ``clean_train_error``, ``test_error``; ``distance_init_clean``;
    thresholds ``fit_tolerance``, ``gap_margin``. VERSION 2 adds ``m["minefield"]`` (records with
    ``start_step``, ``clean_train_error``, ``test_error``, ``distance``) and ``m["sharpness"]``
    (``clean``/``poisoned`` with ``lambda_max``, ``width_mean``). Without ``minefield`` (VERSION 1
    measurements) the distance check is :math:`d(\\theta_c, \\theta_p) < d(\\theta_0, \\theta_c)` on
    ``distance_clean_poisoned``. VERSION 3 records carry ``trust`` (the searches inside balls: ``rho``,
    ``distance``, ``clean_train_error``, ``test_error``); the near check then judges the nearest bad minimum
    among the unconstrained and the ball searches (:func:`nearest_bad_minimum`), and finding none fails it.
    """
    tol, margin = float(m["fit_tolerance"]), float(m["gap_margin"])
    c, p = m["clean"], m["poisoned"]
    d_0c = float(m["distance_init_clean"])
    checks = [
        Check("clean model fits", c["clean_train_error"] <= tol,
              f"clean-train error {c['clean_train_error']:.4f} (tolerance {tol:g})", precondition=True),
        Check("poisoned model fits the clean set", p["clean_train_error"] <= tol,
              f"clean-train error {p['clean_train_error']:.4f} (tolerance {tol:g})", precondition=True),
    ]
    mine = m.get("minefield")
    for r in mine or ():
        checks.append(Check(f"bad minimum from step {r['start_step']} fits the clean set",
                            r["clean_train_error"] <= tol,
                            f"clean-train error {r['clean_train_error']:.4f} (tolerance {tol:g})", precondition=True))
    gap = p["test_error"] - c["test_error"]
    checks.append(Check("poisoned generalizes worse", gap >= margin,
                        f"test error {p['test_error']:.3f} vs {c['test_error']:.3f} (gap {gap:+.3f}, needs >= {margin:g})"))
    if mine:
        for r in mine:
            g = r["test_error"] - c["test_error"]
            checks.append(Check(f"minimum from step {r['start_step']} is bad", g >= margin,
                                f"test error {r['test_error']:.3f} vs clean {c['test_error']:.3f} "
                                f"(gap {g:+.3f}, needs >= {margin:g})"))
        for r in mine:
            d = float(r["distance"])
            if "trust" not in r:  # VERSION 2: the unconstrained search's end point
                checks.append(Check(f"bad minimum near step {r['start_step']}", d < d_0c,
                                    f"d(checkpoint {r['start_step']}, bad minimum) = {d:.2f} vs d(init, clean) = "
                                    f"{d_0c:.2f} (ratio {d / d_0c:.2f}, needs < 1)"))
                continue
            nb = nearest_bad_minimum(r, c["test_error"], fit_tolerance=tol, gap_margin=margin)
            tried = ", ".join([f"unconstrained {d / d_0c:.2f}"] + [
                f"ball {t['rho']:g}: " + ("bad" if is_bad_minimum(t, c["test_error"], fit_tolerance=tol,
                                                                  gap_margin=margin) else "not bad")
                for t in r["trust"]])
            if nb is None:
                checks.append(Check(f"bad minimum near step {r['start_step']}", False,
                                    f"no search from checkpoint {r['start_step']} found a bad minimum ({tried})"))
                continue
            dn = float(nb["distance"])
            where = "unconstrained search" if nb["rho"] is None else f"search within {nb['rho']:g} d(init, clean)"
            checks.append(Check(f"bad minimum near step {r['start_step']}", dn < d_0c,
                                f"nearest bad minimum from checkpoint {r['start_step']}: {dn:.2f} ({where}) vs "
                                f"d(init, clean) = {d_0c:.2f} (ratio {dn / d_0c:.2f}, needs < 1; searches: {tried})"))
    else:
        d_cp = float(m["distance_clean_poisoned"])
        checks.append(Check("bad minimum near the good one", d_cp < d_0c,
                            f"d(clean, poisoned) = {d_cp:.2f} vs d(init, clean) = {d_0c:.2f} (ratio {d_cp / d_0c:.2f})"))
    s = m.get("sharpness")
    if s:
        lc, lp = float(s["clean"]["lambda_max"]), float(s["poisoned"]["lambda_max"])
        checks.append(Check("poisoned is sharper (lambda_max)", lp > lc,
                            f"lambda_max {lp:.4g} (poisoned) vs {lc:.4g} (clean), ratio {lp / lc:.2f}"))
        wc, wp = float(s["clean"]["width_mean"]), float(s["poisoned"]["width_mean"])
        checks.append(Check("poisoned basin is narrower (1-D width)", wp < wc,
                            f"mean 1-D width {wp:.4g} (poisoned) vs {wc:.4g} (clean), ratio {wp / wc:.2f}"))
    return verdict_from_checks(checks)
