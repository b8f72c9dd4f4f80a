"""B1 — Filter-normalized slices; skip connections smooth the landscape (Li et al. 2018).

Pairs of 1-D ResNets with identical parameters, without (``skip=False``) and with (``skip=True``)
shortcuts (``resnet`` zoo model), are trained the same way on MNIST-1D, one pair per seed (init and data
order from the seed). Around each solution :math:`\\theta^*` the loss is evaluated on the plane

.. math::

    L(\\theta^* + x\\,d_x + y\\,d_y), \\qquad (x, y) \\in [-s, s]^2,

with Gaussian directions filter-normalized against :math:`\\theta^*`
(:func:`losslab.directions.random_plane`; each filter :math:`d_{x,i} \\leftarrow d_{x,i} \\,
\\lVert\\theta^*_i\\rVert / \\lVert d_{x,i}\\rVert`, biases and norm parameters zeroed) through
:func:`losslab.surface.plane` (BatchNorm statistics recomputed at every grid point). Both nets of a pair
get the plane of the same seed (the same Gaussian draw, normalized against each net's own filters).

Pre-registered criteria (:data:`CRITERIA`):

* precondition: both nets of every pair trained to a minimum (train error <= 1%); an untrained net
  sits at a non-stationary point, where a random plane almost surely contains a descent direction;
* exact: the per-filter norms of both directions equal the weights' (relative deviation <= 1e-5) and
  the surface at the origin equals :math:`L(\\theta^*)` evaluated directly (<= 1e-5), every seed;
* decisive roughness: the **non-convexity** of Li et al.'s Fig. 7, in its 2-D slice form: at every
  interior grid point the 2x2 Hessian of :math:`L` in the plane (central differences) has eigenvalues
  :math:`\\lambda_1 \\le \\lambda_2`; the point's ratio is :math:`\\min(1, |\\lambda_1 / \\lambda_2|)`
  when :math:`\\lambda_1 < 0` (1 when both are negative) and 0 otherwise; the statistic is its mean
  over the interior points (81 on the quick 11x11 grid). Per seed, the difference no-skip minus skip
  must be > 0 on a 95% t-interval over seeds.
* context (never decisive, shown with their direction): the radial non-monotone fraction (the old
  statistic), the quadratic misfit of :math:`\\log L`, grid-local minima, mean
  :math:`|\\Delta \\log L|`, each as a per-seed difference no-skip minus skip.

Negative control: the same checks on pairs of two nets *with* skips (the second from another seed):
a null in which no roughness difference should appear.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..config import TrainConfig
from . import recipes
from ._base import ExperimentResult, Verdict, verdict_from_checks
from .common import (
    describe_data, evaluator, label_axes, new_figure, row_result, RowConfig, save_figure, Timer, train_config,
    train_run,
)
from .criteria import Control, Criteria, Criterion, per_seed, SEED_PLAN_2026_12_04, trained_to_minimum

ID = "B1"
VERSION = 3  # 3: BatchNorm recompute uses the biased batch variance (one BN policy, issue 15)
COST = {"quick": 90, "full": 1800}

_NONCONVEXITY = ("mean over the interior points of a filter-normalized plane of the slice non-convexity "
                 "min(1, |lambda_min / lambda_max|) of the 2x2 finite-difference Hessian of L "
                 "(0 where lambda_min >= 0)")

CRITERIA = Criteria(
    preconditions=(
        trained_to_minimum(
            "train error of the worse-trained net of the pair",
            "issue 14: rows about minima need train error <= 1%; B1 compares two trained minima (an untrained "
            "no-skip net sits at a non-stationary point, where a random plane almost surely holds a descent "
            "direction)",
            name="both nets trained to a minimum"),
    ),
    claims=(
        Criterion("per-filter norms equal the weights'",
                  "largest relative deviation of a direction's per-filter norm from the weights' (both directions, "
                  "both nets; bias/BN entries, which must be 0, counted as absolute values)", "<=", 1e-5,
                  "Li et al. 2018 eq. (1): filter normalization is exact; 1e-5 allows float32 rounding", rule="all"),
        Criterion("surface at origin equals L(theta*)",
                  "relative difference of the plane's loss at (0, 0) and L(theta*) evaluated directly (both nets)",
                  "<=", 1e-5, "SURVEY B1 check (exact); 1e-5 allows float32 rounding", rule="all"),
        Criterion("rougher without skips",
                  f"non-convexity(A) - non-convexity(B), non-convexity = {_NONCONVEXITY}; A = the net without "
                  "skips, B = the net with skips of the same seed, same plane seed",
                  ">", 0.0,
                  "Li et al. 2018 Sec. 6 and Fig. 7 (the non-convexity map |lambda_min / lambda_max|; a non-convex "
                  "2-D random slice implies a non-convex full surface) and the SURVEY B1 check (non-convexity "
                  "ratio over the grid); 0: rougher by any amount, which the interval must establish"),
        Criterion("radial non-monotone",
                  "share of non-centre grid points where the loss falls stepping one cell outward, A - B", ">", 0.0,
                  "the statistic of VERSION 1 (chaotic bumps, insensitive to sharpness); context only", decisive=False),
        Criterion("quadratic misfit of log L",
                  "1 - R^2 of a least-squares quadratic fit to log L over the plane, A - B", ">", 0.0,
                  "reported in VERSION 1 (where it pointed the other way); context only", decisive=False),
        Criterion("grid-local minima", "grid points not above any neighbour, A - B", ">", 0.0,
                  "Li et al. 2018 Fig. 5 (secondary minima of chaotic surfaces); context only", decisive=False),
        Criterion("mean abs Laplacian of log L", "mean |Delta log L| over interior points, A - B", ">", 0.0,
                  "SURVEY B1 check names mean |Laplacian|; it also grows with sharpness; context only",
                  decisive=False),
    ),
    control="pairs of two nets WITH skips (A: a second net with skips from another seed, B: the same net with skips "
            "as in the row), same recipe, same plane seeds: a null in which no roughness difference should appear; "
            "same checks",
    seeds="5 independent pairs in quick and in full (init and data order from each net's seed; plane seed = pair "
          "seed); control pairs use the row's nets with skips and extra nets with skips from seeds 500+",
    registered="2026-12-04",
    changes=(
        "criterion changed on 2026-12-04 because issue 14 found the VERSION 1 comparison used a no-skip net that never "
        "trained (train error 0.66-0.74): both nets must now reach train error <= 1% (was: only the net with skips, "
        "<= 10%); to make the no-skip net train within the quick budget the nets are 4 blocks (9 conv layers) deep "
        "with LR warm-up instead of 20 blocks (Li et al.'s shallowest comparison, ResNet-20, is deeper)",
        "criterion changed on 2026-12-04 because the VERSION 1 roughness (radial non-monotone fraction, one plane, "
        "point values) rested on ~3 of 81 grid points: the decisive statistic is now Li et al.'s non-convexity ratio "
        "(Fig. 7) named by the SURVEY check, averaged over every interior point of the plane, as a per-seed difference "
        "on a 95% t-interval over >= 3 seeds; the radial fraction and the quadratic misfit stay as context",
        SEED_PLAN_2026_12_04,
    ),
)


def resnet_recipe(skip: bool, profile: str = "quick") -> TrainConfig:
    """The B1 ResNet (width 16, BatchNorm, SGD momentum 0.9, cosine schedule with linear warm-up).

    quick: 4 residual blocks (9 conv layers), 1000 MNIST-1D training examples (``num_samples=1250``:
    1000 train / 250 test), batch 64, LR 0.1 with 1 warm-up epoch, 30 epochs (about 8 s per net on one
    core; without skips this trains to train error <= 0.1% on every seed tried, while 5 blocks needed
    11 s and 20 blocks did not train at all in budget); full: 9 blocks (19 conv layers + head, the depth
    of Li et al.'s ResNet-20), 4000 training examples, batch 128, LR 0.1 with 2 warm-up epochs, 60 epochs
    (without skips, seed 0 reached train error 0 in about 110 s on one core).
    """
    if profile == "quick":
        return train_config(dataset="mnist1d", dataset_kwargs={"num_samples": 1250}, model="resnet",
                            model_kwargs={"width": 16, "depth": 4, "skip": bool(skip)}, optimizer="sgd", lr=0.1,
                            momentum=0.9, batch_size=64, epochs=30, schedule="cosine", warmup_epochs=1.0,
                            checkpoints="none")
    if profile == "full":
        return train_config(dataset="mnist1d", model="resnet",
                            model_kwargs={"width": 16, "depth": 9, "skip": bool(skip)},
                            optimizer="sgd", lr=0.1, momentum=0.9, batch_size=128, epochs=60, schedule="cosine",
                            warmup_epochs=2.0, checkpoints="none")
    from ..errors import LosslabError

    raise LosslabError(f"profile must be 'quick' or 'full', got {profile!r}")


@dataclass(frozen=True)
class Config(RowConfig):
    """B1 settings.

    Attributes:
        skip, noskip: the recipes of the nets with and without shortcuts (same parameters, same training).
        seeds: one pair (no-skip, skip) per seed; the plane of pair ``s`` has seed ``s``.
        control_seeds: seeds of the extra nets with skips of the control pairs (one per pair seed).
        grid: points per axis (odd, so the origin is a grid point).
        span: the plane covers ``[-span, span]^2``.
        eval_examples: the first this many training examples are the evaluation (and BN) data; 0: all.
        roughness_rtol: a step outward counts as a fall when the loss drops by more than this fraction
            (radial non-monotone fraction, context).
    """

    skip: TrainConfig = field(default_factory=lambda: resnet_recipe(True, "quick"))
    noskip: TrainConfig = field(default_factory=lambda: resnet_recipe(False, "quick"))
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    control_seeds: tuple[int, ...] = (500, 501, 502, 503, 504)
    grid: int = 11
    span: float = 1.0
    eval_examples: int = 256
    roughness_rtol: float = 1e-3

    @classmethod
    def full(cls) -> "Config":
        return cls(skip=resnet_recipe(True, "full"), noskip=resnet_recipe(False, "full"), seeds=(0, 1, 2, 3, 4),
                   control_seeds=(500, 501, 502, 503, 504), grid=17, eval_examples=512)


# ---- roughness numbers ----------------------------------------------------------------------------


def roughness(loss: np.ndarray, x: np.ndarray, y: np.ndarray, *, rtol: float = 1e-3) -> dict[str, float]:
    """Roughness numbers of a loss grid ``loss[j, i] = L(x[i], y[j])`` (uniform grid, origin at the centre).

    * ``nonconvexity``: mean over interior points of the slice non-convexity ratio: with
      :math:`\\lambda_1 \\le \\lambda_2` the eigenvalues of the central-difference Hessian
      :math:`[[L_{xx}, L_{xy}], [L_{xy}, L_{yy}]]`, the ratio is :math:`\\min(1, |\\lambda_1| /
      \\max(\\lambda_2, |\\lambda_1|))` where :math:`\\lambda_1 < 0` and 0 elsewhere (Li et al. 2018's
      :math:`|\\lambda_{min}/\\lambda_{max}|` map, Fig. 7, in the plane; 1 where both are negative);
    * ``nonconvex_fraction``: share of interior points with :math:`\\lambda_1 < 0`;
    * ``radial_nonmonotone_fraction``: share of non-centre points ``p`` with
      ``L(p) < (1 - rtol) L(q)``, ``q`` the neighbour one step closer to the centre;
    * ``local_minima``: points not above any of their (up to 8) neighbours;
    * ``mean_abs_laplacian_log``: mean :math:`|\\Delta \\log L|` over interior points;
    * ``quadratic_unexplained``: :math:`1 - R^2` of a least-squares quadratic fit to :math:`\\log L`;
    * ``interior_points``: how many points the Hessian statistics average over.

    Example:
        >>> g = np.linspace(-1, 1, 7)
        >>> bowl = 1 + g[None, :] ** 2 + 2 * g[:, None] ** 2
        >>> r = roughness(bowl, g, g)
        >>> r["radial_nonmonotone_fraction"], r["nonconvex_fraction"], r["nonconvexity"], r["local_minima"]
        (0.0, 0.0, 0.0, 1)
        >>> saddle = 1 + g[None, :] ** 2 - 0.5 * g[:, None] ** 2
        >>> round(roughness(saddle, g, g)["nonconvexity"], 6)
        0.5
    """
    L = np.asarray(loss, dtype=float)
    ny, nx = L.shape
    cj, ci = ny // 2, nx // 2
    jj, ii = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    qj, qi = jj - np.sign(jj - cj), ii - np.sign(ii - ci)
    outward_drop = L < (1 - rtol) * L[qj, qi]
    not_centre = (jj != cj) | (ii != ci)
    radial = float(outward_drop[not_centre].mean())
    hx = float(x[1] - x[0])
    hy = float(y[1] - y[0])
    ratio = nonconvexity_map(L, x, y)
    P = np.pad(L, 1, constant_values=np.inf)
    neigh = np.stack([P[1 + dj:1 + dj + ny, 1 + di:1 + di + nx] for dj in (-1, 0, 1) for di in (-1, 0, 1)
                      if (dj, di) != (0, 0)])
    local_min = int((L <= neigh.min(axis=0)).sum())
    Z = np.log(np.maximum(L, 1e-12))
    lap = ((Z[1:-1, 2:] - 2 * Z[1:-1, 1:-1] + Z[1:-1, :-2]) / hx**2
           + (Z[2:, 1:-1] - 2 * Z[1:-1, 1:-1] + Z[:-2, 1:-1]) / hy**2)
    X, Y = np.meshgrid(x, y)
    A = np.stack([np.ones_like(X), X, Y, X * X, X * Y, Y * Y], -1).reshape(-1, 6)
    coef, *_ = np.linalg.lstsq(A, Z.ravel(), rcond=None)
    resid = Z.ravel() - A @ coef
    var = float(Z.var())
    return {
        "nonconvexity": float(ratio.mean()),
        "nonconvex_fraction": float((ratio > 0).mean()),
        "radial_nonmonotone_fraction": radial,
        "local_minima": local_min,
        "mean_abs_laplacian_log": float(np.abs(lap).mean()),
        "quadratic_unexplained": float(resid.var() / var) if var > 0 else 0.0,
        "interior_points": int(ratio.size),
    }


def nonconvexity_map(loss: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The slice non-convexity ratio ``min(1, |lambda_1| / max(lambda_2, |lambda_1|))`` (0 where ``lambda_1 >= 0``)
    at each interior point of a uniform loss grid, from the central-difference Hessian (see :func:`roughness`)."""
    L = np.asarray(loss, dtype=float)
    hx, hy = float(x[1] - x[0]), float(y[1] - y[0])
    fxx = (L[1:-1, 2:] - 2 * L[1:-1, 1:-1] + L[1:-1, :-2]) / hx**2
    fyy = (L[2:, 1:-1] - 2 * L[1:-1, 1:-1] + L[:-2, 1:-1]) / hy**2
    fxy = (L[2:, 2:] - L[2:, :-2] - L[:-2, 2:] + L[:-2, :-2]) / (4 * hx * hy)
    mid, rad = (fxx + fyy) / 2, np.sqrt(((fxx - fyy) / 2) ** 2 + fxy**2)
    lam1, lam2 = mid - rad, mid + rad
    out = np.zeros_like(lam1)
    neg = lam1 < 0
    out[neg] = np.minimum(1.0, np.abs(lam1[neg]) / np.maximum(lam2[neg], np.abs(lam1[neg])))
    return out


def filter_norm_deviation(direction: Mapping[str, Any], weights: Mapping[str, Any]) -> dict[str, float]:
    """Max relative deviation of per-filter norms (dim-0 slices of tensors with dim > 1) of a direction
    from the weights', and the largest absolute entry of its 1-D tensors (which must be zero)."""
    dev, zero = 0.0, 0.0
    for k, d in direction.items():
        w = weights[k]
        if d.dim() > 1:
            dn = d.detach().double().flatten(1).norm(dim=1)
            wn = w.detach().double().flatten(1).norm(dim=1)
            keep = wn > 0
            if keep.any():
                dev = max(dev, float(((dn[keep] - wn[keep]).abs() / wn[keep]).max()))
        else:
            zero = max(zero, float(d.detach().abs().max())) if d.numel() else zero
    return {"max_rel_deviation": dev, "max_abs_1d": zero}


# ---- measurement ----------------------------------------------------------------------------------


def _measure_net(label: str, cfg: TrainConfig, plane_seed: int, config: Config, cache_dir: Path,
                 progress: Callable[[str], None], timer: Timer) -> tuple[dict[str, Any], Any]:
    from .. import directions, params
    from ..surface import plane

    with timer("train"):
        run = train_run(cfg, cache_dir, progress)
    model = run.build_model()
    bundle = run.bundle()
    n = config.eval_examples or len(bundle.train)
    data = (bundle.train.x[:n], bundle.train.y[:n])
    grid = np.linspace(-config.span, config.span, config.grid)
    c = config.grid // 2
    with timer("surface"):
        ev = evaluator(model, data)
        theta = params.get_point(model)
        l_star = ev.evaluate(theta)["loss"]
        dx, dy = directions.random_plane(model, seed=plane_seed, normalization="filter", ignore_1d=True)
        devs = [filter_norm_deviation(d.vector, theta) for d in (dx, dy)]
        res = plane(model, dx=dx, dy=dy, x=grid, y=grid, evaluator=ev, progress=False,
                    meta={"title": f"{label}, seed {cfg.seeds.seed}, plane seed {plane_seed}"})
    L = np.asarray(res.metrics["loss"], dtype=float)
    rough = roughness(L, grid, grid, rtol=config.roughness_rtol)
    s = run.summary
    rec = {
        "label": label,
        "skip": bool(cfg.model.model_kwargs.get("skip", True)),
        "seed": int(cfg.seeds.seed),
        "plane_seed": int(plane_seed),
        "train_error": float(s["train_error"]),
        "train_loss": float(s.get("train_loss", float("nan"))),
        "test_error": float(s["test_error"]),
        "loss_at_solution": float(l_star),
        "filter_norm_max_rel_deviation": max(d["max_rel_deviation"] for d in devs),
        "max_abs_1d": max(d["max_abs_1d"] for d in devs),
        "origin_loss": float(L[c, c]),
        "origin_rel_error": abs(float(L[c, c]) - l_star) / max(abs(l_star), 1e-12),
        "mean_plane_loss": float(L.mean()),
        **rough,
        "loss": L.tolist(),
        "run": run.path.name,
        "n_eval": n,
    }
    progress(f"{label} seed {rec['seed']} (train error {rec['train_error']:.3f}), plane seed {plane_seed}: "
             f"non-convexity {rough['nonconvexity']:.3f}")
    return rec, bundle


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    """Train (or reuse) the pairs and the control nets, measure the planes, judge, plot."""
    if config.grid % 2 != 1 or config.grid < 3:
        from ..errors import LosslabError

        raise LosslabError(f"B1 grid must be odd and >= 3 (the origin must be a grid point), got {config.grid}")
    if len(config.control_seeds) != len(config.seeds):
        from ..errors import LosslabError

        raise LosslabError("B1 needs one control seed per pair seed")
    timer = Timer()
    pairs, control_pairs = [], []
    bundle = None
    for seed, cseed in zip(config.seeds, config.control_seeds):
        b, bundle = _measure_net("with skips", recipes.with_seed(config.skip, seed), seed, config, cache_dir,
                                 progress, timer)
        a, _ = _measure_net("without skips", recipes.with_seed(config.noskip, seed), seed, config, cache_dir,
                            progress, timer)
        c, _ = _measure_net("with skips (control)", recipes.with_seed(config.skip, cseed), seed, config, cache_dir,
                            progress, timer)
        pairs.append({"seed": seed, "plane_seed": seed, "a": a, "b": b})
        control_pairs.append({"seed": seed, "plane_seed": seed, "a": c, "b": b})
    grid = np.linspace(-config.span, config.span, config.grid)
    m = {"pairs": pairs, "control": control_pairs, "grid": grid.tolist()}
    verdict = judge(m)
    control = Control(CRITERIA.control, judge({"pairs": control_pairs}))

    with timer("plot"):
        fig_ref = _figure(pairs, control_pairs, grid, work_dir)

    def diffs(ps: list[dict[str, Any]], key: str) -> list[float]:
        return [p["a"][key] - p["b"][key] for p in ps]

    def mean(v: list[float]) -> float:
        return float(np.mean(v))

    nc_a = [p["a"]["nonconvexity"] for p in pairs]
    nc_b = [p["b"]["nonconvexity"] for p in pairs]
    nc_c = [p["a"]["nonconvexity"] for p in control_pairs]
    row_check = next(c for c in verdict.checks if c.name == "rougher without skips")
    ctrl_check = next(c for c in control.verdict.checks if c.name == "rougher without skips")

    def iv(ch: Any) -> str:
        return "n/a" if ch.ci is None else f"[{ch.ci[0]:+.3f}, {ch.ci[1]:+.3f}]"

    key = {
        "non-convexity no-skip / skip (mean over seeds)": f"{mean(nc_a):.3f} / {mean(nc_b):.3f}",
        "difference, 95% interval": f"{mean(diffs(pairs, 'nonconvexity')):+.3f} {iv(row_check)}",
        "control (skip vs skip) difference, 95% interval":
            f"{mean(diffs(control_pairs, 'nonconvexity')):+.3f} {iv(ctrl_check)}",
        "train error no-skip / skip (worst seed)": f"{max(p['a']['train_error'] for p in pairs):.3f} / "
                                                   f"{max(p['b']['train_error'] for p in pairs):.3f}",
    }
    context_names = [c.name for c in CRITERIA.claims if not c.decisive]
    other_way = [c for c in verdict.checks if c.name in context_names and c.ci is not None and c.ci[1] < 0]
    depth = config.skip.model.model_kwargs.get("depth")
    n_int = pairs[0]["a"]["interior_points"]
    errs = lambda k: ", ".join(f"{p[k]['train_error']:.3f}" for p in pairs)  # noqa: E731
    comparison = (
        f"{len(pairs)} pairs of {depth}-block 1-D ResNets ({2 * depth + 1} conv layers, identical parameters), trained "
        f"the same way, seeds {', '.join(str(p['seed']) for p in pairs)}: train error without skips {errs('a')}, with "
        f"skips {errs('b')}. On {config.grid}x{config.grid} filter-normalized planes over [-{config.span:g}, "
        f"{config.span:g}]^2 (same plane seed for both nets of a pair) the slice non-convexity (mean of "
        f"min(1, |lambda_min/lambda_max|) over {n_int} interior points) was "
        f"{', '.join(f'{v:.3f}' for v in nc_a)} without skips vs {', '.join(f'{v:.3f}' for v in nc_b)} with skips; "
        f"difference {mean(diffs(pairs, 'nonconvexity')):+.3f}, 95% t-interval {iv(row_check)}. The control "
        f"(a second net with skips from seeds {', '.join(str(p['a']['seed']) for p in control_pairs)}: "
        f"{', '.join(f'{v:.3f}' for v in nc_c)}) differs by {mean(diffs(control_pairs, 'nonconvexity')):+.3f} "
        f"{iv(ctrl_check)} and comes out {control.verdict.status}. Context (no-skip minus skip, mean over seeds): "
        f"radial non-monotone fraction {mean(diffs(pairs, 'radial_nonmonotone_fraction')):+.3f}, quadratic misfit of "
        f"log L {mean(diffs(pairs, 'quadratic_unexplained')):+.3f}, grid-local minima "
        f"{mean(diffs(pairs, 'local_minima')):+.2f}, mean |Laplacian log L| "
        f"{mean(diffs(pairs, 'mean_abs_laplacian_log')):+.3g}; mean loss over the plane "
        f"{mean([p['a']['mean_plane_loss'] for p in pairs]):.3g} vs "
        f"{mean([p['b']['mean_plane_loss'] for p in pairs]):.3g}."
    )
    if other_way:
        comparison += (" Pointing the other way (interval entirely below 0): "
                       + "; ".join(f"{c.name}: {c.detail}" for c in other_way) + ".")
    notes = [
        f"Regime: {depth} residual blocks ({2 * depth + 1} conv layers). Li et al. see chaotic no-skip surfaces at "
        "ResNet-56/110 and a 'fairly benign' one at ResNet-20; the quick nets are shallower than ResNet-20 so that "
        "the net without skips trains to a minimum within the CPU budget (the VERSION 1 20-block no-skip net never "
        "trained). The full profile uses 9 blocks (ResNet-20 depth).",
        "The non-convexity is measured in 2-D random slices (Li et al.: a non-convex slice implies a non-convex "
        "surface; a convex slice proves nothing). It also counts the concave walls where a sharp basin saturates "
        "inside the plane, so a sharper basin scores higher without being chaotic; the radial non-monotone fraction "
        "(context) counts only loss that falls going outward.",
    ]
    if other_way:
        notes.append("Context statistics pointing the other way: " + ", ".join(c.name for c in other_way) + ".")
    return row_result(ID, CRITERIA, config, m, verdict, control, key, fig_ref, timer, comparison=comparison,
        notes=notes,
        seeds={"pairs (init/order of both nets, plane)": list(config.seeds),
               "control nets with skips": list(config.control_seeds)},
        data=describe_data(bundle) + f"; surfaces on the first {pairs[0]['a']['n_eval']} training examples "
        "(BatchNorm statistics recomputed on them at every grid point)",
    )


def _figure(pairs: list[dict[str, Any]], control_pairs: list[dict[str, Any]], grid: np.ndarray, work_dir: Path) -> Any:
    fig, axes = new_figure(3, 1, width=3.7, height=3.4)
    g = np.asarray(grid)
    Zs = [np.log10(np.maximum(np.asarray(pairs[0][k]["loss"]), 1e-12)) for k in ("b", "a")]
    lo, hi = min(float(z.min()) for z in Zs), max(float(z.max()) for z in Zs)
    levels = np.linspace(lo, hi, 18)
    for ax, k, Z in zip(axes[:2], ("b", "a"), Zs):
        rec = pairs[0][k]
        cs = ax.contourf(g, g, Z, levels=levels, cmap="viridis")
        nm = nonconvexity_map(rec["loss"], g, g)
        jj, ii = np.nonzero(nm > 0)
        ax.scatter(g[1:-1][ii], g[1:-1][jj], s=8 + 40 * nm[jj, ii], facecolors="none", edgecolors="w", lw=0.8,
                   label="non-convex point (size: ratio)")
        ax.plot([0], [0], "r*", ms=9)
        ax.set_title(f"{rec['label']}, seed {rec['seed']}: train err {rec['train_error']:.3f}\n"
                     f"non-convexity {rec['nonconvexity']:.3f}", fontsize=9)
        label_axes(ax, xlabel="x (filter-normalized)", ylabel="y", legend=7, loc="lower left")
    fig.colorbar(cs, ax=axes[1], label="log10 train loss (shared scale)")
    ax = axes[2]
    cols = {"with skips": "C0", "without skips": "C3", "control": "C2"}
    for i, (p, cp) in enumerate(zip(pairs, control_pairs)):
        ys = [p["b"]["nonconvexity"], p["a"]["nonconvexity"], cp["a"]["nonconvexity"]]
        xs = [x + (i - (len(pairs) - 1) / 2) * 0.08 for x in (0, 1, 2)]
        ax.plot(xs[:2], ys[:2], "-", color="0.6", lw=0.8)
        ax.plot([xs[0], xs[2]], [ys[0], ys[2]], ":", color="0.6", lw=0.8)
        for x, yv, c in zip(xs, ys, cols.values()):
            ax.plot(x, yv, "o", color=c, ms=5)
    for x, k in ((0, "b"), (1, "a")):
        v = [p[k]["nonconvexity"] for p in pairs]
        ax.hlines(np.mean(v), x - 0.2, x + 0.2, color="k", lw=1.5)
    v = [p["a"]["nonconvexity"] for p in control_pairs]
    ax.hlines(np.mean(v), 1.8, 2.2, color="k", lw=1.5)
    ax.set_xticks([0, 1, 2], ["with skips", "without\nskips", "control:\nskips, other seed"], fontsize=8)
    label_axes(ax, ylabel="slice non-convexity (mean ratio)", title="per seed (lines join a pair; bar: mean)",
               title_size=9)
    ax.set_xlim(-0.5, 2.5)
    return save_figure(fig, work_dir, "planes",
                       "Left, middle: log10 train loss on the filter-normalized plane of seed "
                       f"{pairs[0]['seed']} (shared color scale; star: the solution; circles: interior points where "
                       "the slice Hessian has a negative eigenvalue, sized by min(1, |lambda_min/lambda_max|)). Right: "
                       "the decisive non-convexity per seed for the nets with skips, without skips, and the control "
                       "nets with skips from other seeds.")


def judge(m: Mapping[str, Any]) -> Verdict:
    """Judge ``m["pairs"]`` by :data:`CRITERIA`: each pair ``{"seed", "a": net, "b": net}``, ``a`` the net claimed
    rougher (without skips; in the control a second net with skips), ``b`` the net with skips. A net record holds
    ``train_error``, ``filter_norm_max_rel_deviation``, ``max_abs_1d``, ``origin_rel_error``, ``nonconvexity``,
    ``radial_nonmonotone_fraction``, ``quadratic_unexplained``, ``local_minima``, ``mean_abs_laplacian_log``.
    The control is judged by calling this on ``{"pairs": m["control"]}``.
    """
    pairs = list(m["pairs"])
    seeds = [p["seed"] for p in pairs]
    a = [p["a"] for p in pairs]
    b = [p["b"] for p in pairs]

    def worst(key: str, *more: str) -> list[float]:
        return [max(float(r[k]) for r in (p["a"], p["b"]) for k in (key, *more)) for p in pairs]

    def diff(key: str) -> list[float]:
        return [float(x) - float(y) for x, y in zip(per_seed(a, key), per_seed(b, key))]

    return verdict_from_checks([
        CRITERIA["both nets trained to a minimum"].judge(worst("train_error"), seeds=seeds),
        CRITERIA["per-filter norms equal the weights'"].judge(
            worst("filter_norm_max_rel_deviation", "max_abs_1d"), seeds=seeds),
        CRITERIA["surface at origin equals L(theta*)"].judge(worst("origin_rel_error"), seeds=seeds),
        CRITERIA["rougher without skips"].judge(diff("nonconvexity"), seeds=seeds),
        CRITERIA["radial non-monotone"].judge(diff("radial_nonmonotone_fraction"), seeds=seeds),
        CRITERIA["quadratic misfit of log L"].judge(diff("quadratic_unexplained"), seeds=seeds),
        CRITERIA["grid-local minima"].judge(diff("local_minima"), seeds=seeds),
        CRITERIA["mean abs Laplacian of log L"].judge(diff("mean_abs_laplacian_log"), seeds=seeds),
    ])
