"""B1 — Filter-normalized slices; skip connections smooth the landscape (Li et al. 2018).

Two deep 1-D ResNets of identical parameters, with and without shortcuts (``resnet`` zoo model,
``skip=True/False``), are trained on MNIST-1D. Around each solution :math:`\\theta^*` the loss is
evaluated on the plane

.. math::

    L(\\theta^* + x\\,d_x + y\\,d_y), \\qquad (x, y) \\in [-s, s]^2,

with Gaussian directions filter-normalized against :math:`\\theta^*`
(:func:`losslab.directions.random_plane`; each filter :math:`d_{x,i} \\leftarrow d_{x,i} \\,
\\lVert\\theta^*_i\\rVert / \\lVert d_{x,i}\\rVert`, biases and norm parameters zeroed) through
:func:`losslab.surface.plane` (BatchNorm statistics recomputed at every grid point).

Checks:

* the per-filter norms of both directions equal the weights' (relative deviation ``<= norm_rtol``);
* the surface at the origin equals :math:`L(\\theta^*)` evaluated directly (``<= origin_rtol``);
* the net without skips is rougher than the net with skips. Roughness is the **radial
  non-monotone fraction**: the share of grid points where the loss *falls* (by more than
  ``rtol``) when stepping one grid cell outward from :math:`\\theta^*`, i.e. compared with the
  neighbour one step closer to the origin (0 for any basin whose loss grows along every ray,
  however sharp or saturating; positive for the bumps and secondary minima of a chaotic surface),
  averaged over the plane seeds. Also reported, as context: grid-local minima, the non-convex
  fraction (interior points whose finite-difference Hessian has a negative eigenvalue; saturating
  walls of a sharp basin count here too), the mean :math:`|\\Delta \\log L|` and the share of
  :math:`\\log L` not explained by a quadratic fit.

Precondition: the net with skips trained (train error ``<= max_train_error``); the net without
skips training worse is part of Li et al.'s finding and is reported, not required to match.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..config import TrainConfig
from . import recipes
from ._base import Check, ExperimentResult, Verdict, verdict_from_checks
from .common import Timer, describe_data, evaluator, new_figure, save_figure, train_run

ID = "B1"
VERSION = 1
COST = {"quick": 80, "full": 900}


@dataclass(frozen=True)
class Config:
    """B1 settings.

    Attributes:
        skip, noskip: the two runs (:func:`recipes.skip_resnet`; same init seed, same parameters).
        plane_seeds: seeds of the random planes (one plane per seed and net).
        grid: points per axis (odd, so the origin is a grid point).
        span: the plane covers ``[-span, span]^2``.
        eval_examples: the first this many training examples are the evaluation (and BN) data; 0: all.
        norm_rtol: tolerance of the per-filter norm equality (float32 directions).
        origin_rtol: tolerance of surface(0, 0) vs L(theta*).
        max_train_error: precondition on the net with skips.
        roughness_rtol: a step outward counts as a fall when the loss drops by more than this fraction.
    """

    skip: TrainConfig = field(default_factory=lambda: recipes.skip_resnet(True, "quick"))
    noskip: TrainConfig = field(default_factory=lambda: recipes.skip_resnet(False, "quick"))
    plane_seeds: tuple[int, ...] = (0,)
    grid: int = 9
    span: float = 1.0
    eval_examples: int = 256
    norm_rtol: float = 1e-5
    origin_rtol: float = 1e-5
    max_train_error: float = 0.1
    roughness_rtol: float = 1e-3

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        return cls(skip=recipes.skip_resnet(True, "full"), noskip=recipes.skip_resnet(False, "full"),
                   plane_seeds=(0, 1, 2), grid=21, eval_examples=1000)


# ---- roughness numbers ----------------------------------------------------------------------------


def roughness(loss: np.ndarray, x: np.ndarray, y: np.ndarray, *, rtol: float = 1e-3) -> dict[str, float]:
    """Roughness numbers of a loss grid ``loss[j, i] = L(x[i], y[j])`` (uniform grid, origin at the centre).

    * ``radial_nonmonotone_fraction``: share of non-centre points ``p`` with
      ``L(p) < (1 - rtol) L(q)``, ``q`` the neighbour one step closer to the centre
      (``q = p - (sign(di), sign(dj))`` in grid offsets ``(di, dj)`` from the centre);
    * ``nonconvex_fraction``: share of interior points whose central-difference Hessian
      :math:`[[L_{xx}, L_{xy}], [L_{xy}, L_{yy}]]` has a negative eigenvalue (det < 0 or trace < 0);
    * ``local_minima``: points not above any of their (up to 8) neighbours;
    * ``mean_abs_laplacian_log``: mean :math:`|\\Delta \\log L|` over interior points;
    * ``quadratic_unexplained``: :math:`1 - R^2` of a least-squares quadratic fit to :math:`\\log L`.

    Example:
        >>> g = np.linspace(-1, 1, 7)
        >>> bowl = 1 + g[None, :] ** 2 + 2 * g[:, None] ** 2
        >>> r = roughness(bowl, g, g)
        >>> r["radial_nonmonotone_fraction"], r["nonconvex_fraction"], r["local_minima"]
        (0.0, 0.0, 1)
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
    fxx = (L[1:-1, 2:] - 2 * L[1:-1, 1:-1] + L[1:-1, :-2]) / hx**2
    fyy = (L[2:, 1:-1] - 2 * L[1:-1, 1:-1] + L[:-2, 1:-1]) / hy**2
    fxy = (L[2:, 2:] - L[2:, :-2] - L[:-2, 2:] + L[:-2, :-2]) / (4 * hx * hy)
    det = fxx * fyy - fxy**2
    tr = fxx + fyy
    nonconvex = (det < 0) | (tr < 0)
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
        "radial_nonmonotone_fraction": radial,
        "nonconvex_fraction": float(nonconvex.mean()),
        "local_minima": local_min,
        "mean_abs_laplacian_log": float(np.abs(lap).mean()),
        "quadratic_unexplained": float(resid.var() / var) if var > 0 else 0.0,
    }


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


def _measure_net(label: str, cfg: TrainConfig, config: Config, cache_dir: Path, progress: Callable[[str], None],
                 timer: Timer) -> tuple[dict[str, Any], list[Any], Any]:
    from .. import directions, params
    from ..surface import plane

    with timer("train"):
        run = train_run(cfg, cache_dir, progress)
    model = run.build_model()
    bundle = run.bundle()
    n = config.eval_examples or len(bundle.train)
    data = (bundle.train.x[:n], bundle.train.y[:n])
    ev = evaluator(model, data)
    theta = params.get_point(model)
    l_star = ev.evaluate(theta)["loss"]
    grid = np.linspace(-config.span, config.span, config.grid)
    c = config.grid // 2
    planes, results = [], []
    for seed in config.plane_seeds:
        dx, dy = directions.random_plane(model, seed=seed, normalization="filter", ignore_1d=True)
        devs = [filter_norm_deviation(d.vector, theta) for d in (dx, dy)]
        with timer("surface"):
            res = plane(model, dx=dx, dy=dy, x=grid, y=grid, evaluator=ev, progress=False,
                        meta={"title": f"{label}, plane seed {seed}"})
        L = np.asarray(res.metrics["loss"], dtype=float)
        rough = roughness(L, grid, grid, rtol=config.roughness_rtol)
        planes.append({
            "seed": seed,
            "filter_norm_max_rel_deviation": max(d["max_rel_deviation"] for d in devs),
            "max_abs_1d": max(d["max_abs_1d"] for d in devs),
            "origin_loss": float(L[c, c]),
            "origin_rel_error": abs(float(L[c, c]) - l_star) / max(abs(l_star), 1e-12),
            "seconds": float(res.meta.get("timing", {}).get("seconds", float("nan")))
            if isinstance(res.meta.get("timing"), dict) else float("nan"),
            **rough,
            "loss": L.tolist(),
        })
        results.append(res)
        progress(f"{label} plane seed {seed}: radial non-monotone fraction "
                 f"{rough['radial_nonmonotone_fraction']:.3f}, {rough['local_minima']} local minima")
    rec = {
        "label": label,
        "skip": bool(cfg.model.model_kwargs.get("skip", True)),
        "train_error": run.summary["train_error"],
        "test_error": run.summary["test_error"],
        "loss_at_solution": l_star,
        "planes": planes,
        "radial_nonmonotone_fraction": float(np.mean([p["radial_nonmonotone_fraction"] for p in planes])),
        "nonconvex_fraction": float(np.mean([p["nonconvex_fraction"] for p in planes])),
        "local_minima": float(np.mean([p["local_minima"] for p in planes])),
        "quadratic_unexplained": float(np.mean([p["quadratic_unexplained"] for p in planes])),
        "mean_abs_laplacian_log": float(np.mean([p["mean_abs_laplacian_log"] for p in planes])),
        "run": run.path.name,
        "n_eval": n,
    }
    return rec, results, bundle


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    from ..plot import ContourDisplay

    if config.grid % 2 != 1 or config.grid < 3:
        from ..errors import LosslabError

        raise LosslabError(f"B1 grid must be odd and >= 3 (the origin must be a grid point), got {config.grid}")
    timer = Timer()
    skip, skip_res, bundle = _measure_net("with skips", config.skip, config, cache_dir, progress, timer)
    noskip, noskip_res, _ = _measure_net("without skips", config.noskip, config, cache_dir, progress, timer)
    m = {"skip": skip, "noskip": noskip, "grid": np.linspace(-config.span, config.span, config.grid).tolist(),
         "norm_rtol": config.norm_rtol, "origin_rtol": config.origin_rtol, "max_train_error": config.max_train_error}
    verdict = judge(m)
    with timer("plot"):
        fig, axes = new_figure(2, 1, width=4.6, height=3.8)
        for ax, rec, res in ((axes[0], skip, skip_res[0]), (axes[1], noskip, noskip_res[0])):
            ContourDisplay.from_result(res, ax=ax, kind="contourf", log=True, levels=18)
            ax.set_title(f"{rec['label']}: train err {rec['train_error']:.3f}, radial non-monotone "
                         f"{rec['planes'][0]['radial_nonmonotone_fraction']:.2f}", fontsize=9)
            ax.plot([0], [0], "w*", ms=9)
        fig_ref = save_figure(fig, work_dir, "planes",
                              "log10 train loss on a filter-normalized random plane through each solution (star), "
                              "each panel on its own color scale; left with skip connections, right without.")
    key = {
        "radial non-monotone skip / no-skip": f"{skip['radial_nonmonotone_fraction']:.3f} / "
                                              f"{noskip['radial_nonmonotone_fraction']:.3f}",
        "local minima skip / no-skip": f"{skip['local_minima']:g} / {noskip['local_minima']:g}",
        "filter-norm max rel. deviation": max(p["filter_norm_max_rel_deviation"] for r in (skip, noskip)
                                              for p in r["planes"]),
        "train error skip / no-skip": f"{skip['train_error']:.3f} / {noskip['train_error']:.3f}",
    }
    depth = config.skip.model.model_kwargs.get("depth")
    comparison = (
        f"Two {depth}-block 1-D ResNets with identical parameters, trained the same way: with skips train error "
        f"{skip['train_error']:.3f} (test {skip['test_error']:.3f}), without skips {noskip['train_error']:.3f} "
        f"(test {noskip['test_error']:.3f}). On {config.grid}x{config.grid} filter-normalized planes over "
        f"[-{config.span:g}, {config.span:g}]^2 the loss falls when stepping outward from the solution at "
        f"{noskip['radial_nonmonotone_fraction']:.1%} of the grid points without skips vs "
        f"{skip['radial_nonmonotone_fraction']:.1%} with skips (grid-local minima {noskip['local_minima']:g} vs "
        f"{skip['local_minima']:g}; non-convex fraction {noskip['nonconvex_fraction']:.1%} vs "
        f"{skip['nonconvex_fraction']:.1%}; log-loss not explained by a quadratic "
        f"{noskip['quadratic_unexplained']:.1%} vs {skip['quadratic_unexplained']:.1%})."
    )
    notes = ["Roughness is measured on 2-D random slices only; Li et al.'s Hessian non-convexity map "
             "|lambda_min / lambda_max| waits for losslab.curvature."]
    if noskip["train_error"] > 0.3:
        notes.append(f"The net without skips barely trains in this regime (train error {noskip['train_error']:.3f} after "
                     "the same schedule as the net with skips): deep plain nets are hard to optimize, which is part of "
                     "Li et al.'s observation, but its surface is that of a poor solution. The full profile trains "
                     "longer on 4x the data.")
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        notes=notes,
        seeds={"init/order": config.skip.seeds.seed, "planes": list(config.plane_seeds)},
        data=describe_data(bundle) + f"; surfaces on the first {skip['n_eval']} training examples "
        "(BatchNorm statistics recomputed on them at every grid point)",
        timings=timer.seconds,
    )


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m["skip"]``/``m["noskip"]``: ``train_error``, ``planes`` (each with
    ``filter_norm_max_rel_deviation``, ``origin_rel_error``); tolerances ``norm_rtol``, ``origin_rtol``,
    ``max_train_error``."""
    s, n = m["skip"], m["noskip"]
    norm_tol, origin_tol, max_err = float(m["norm_rtol"]), float(m["origin_rtol"]), float(m["max_train_error"])
    checks = [Check("net with skips trained", s["train_error"] <= max_err,
                    f"train error {s['train_error']:.3f} (needs <= {max_err:g})", precondition=True)]
    dev = max(p["filter_norm_max_rel_deviation"] for r in (s, n) for p in r["planes"])
    checks.append(Check("per-filter norms equal the weights'", dev <= norm_tol,
                        f"max relative deviation {dev:.1e} over all filters of all directions (tolerance {norm_tol:g})"))
    oe = max(p["origin_rel_error"] for r in (s, n) for p in r["planes"])
    checks.append(Check("surface at origin equals L(theta*)", oe <= origin_tol,
                        f"max relative difference {oe:.1e} (tolerance {origin_tol:g})"))
    fs, fn = s["radial_nonmonotone_fraction"], n["radial_nonmonotone_fraction"]
    checks.append(Check("no-skip surface rougher", fn > fs,
                        f"radial non-monotone fraction {fn:.3f} without skips vs {fs:.3f} with skips "
                        f"({'+' if fn >= fs else ''}{fn - fs:.3f})"))
    if "local_minima" in s and "local_minima" in n:
        checks.append(Check("no-skip surface has more local minima", n["local_minima"] > s["local_minima"],
                            f"{n['local_minima']:g} vs {s['local_minima']:g} grid-local minima", decisive=False))
    checks.append(Check("no-skip net trains worse", n["train_error"] > s["train_error"],
                        f"train error {n['train_error']:.3f} without vs {s['train_error']:.3f} with skips",
                        decisive=False))
    return verdict_from_checks(checks)
