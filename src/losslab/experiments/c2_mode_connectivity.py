"""C2 — Independent solutions are connected by simple low-loss curves (Garipov, Izmailov, Podoprikhin,
Vetrov & Wilson 2018; Draxler, Veschgini, Salmhofer & Hamprecht 2018).

Two MLPs trained independently on MNIST-1D (the shared recipe :func:`recipes.mnist1d_mlp`, the same
pair C4 aligns) are joined

* by the straight line :math:`\\theta(a) = (1 - a)\\,\\theta_A + a\\,\\theta_B`
  (:func:`losslab.connect.linear_path`), and
* by a quadratic Bezier curve with one trainable bend :math:`\\theta_1`,
  :math:`\\theta(t) = (1-t)^2 \\theta_A + 2t(1-t)\\,\\theta_1 + t^2 \\theta_B`, trained to minimise
  :math:`\\mathbb{E}_{t \\sim U(0,1)} L(\\theta(t))` with one :math:`t` per mini-batch and the reference
  code's schedule (:func:`losslab.connect.train_curve`).

Both are evaluated on the full train and test sets at ``num_points`` positions, and both barrier
definitions of SURVEY.md are reported for loss and error (max minus the endpoints' mean, and max height
above the chord). The figure also shows the test error on the plane through A, B and the bend.

Check: the curve's test-error barrier is at most ``max_ratio`` (1/3) of the linear path's.
Inconclusive when the endpoints are not matched in train error or the linear path has no barrier.
The train-loss barriers are reported as context.
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

ID = "C2"
VERSION = 1
COST = {"quick": 15, "full": 300}


@dataclass(frozen=True)
class Config:
    """C2 settings.

    Attributes:
        train: the recipe of both endpoints (:func:`recipes.mnist1d_mlp`, shared with A1, C4).
        pair: seeds of the two endpoints (init and data order).
        num_points: points of ``a`` / ``t`` on [0, 1] for the linear path and the curve.
        curve_epochs, curve_lr, curve_batch_size: curve training (Garipov schedule, momentum 0.9,
            weight decay 1e-4 on the curve's weights).
        curve_seed: seed of the curve's data order and draws of ``t``.
        plane_grid: ``n`` for an ``n x n`` test-error grid on the plane through A, B and the bend
            (figure only; 0 skips it).
        max_ratio: reproduced when curve barrier <= max_ratio x linear barrier (test error).
        min_barrier: the linear test-error barrier must exceed this.
        match_tolerance: endpoints' train errors must differ by at most this.
    """

    train: TrainConfig = field(default_factory=lambda: recipes.mnist1d_mlp("quick"))
    pair: tuple[int, int] = (0, 1)
    num_points: int = 31
    curve_epochs: int = 10
    curve_lr: float = 0.05
    curve_batch_size: int = 128
    curve_seed: int = 0
    plane_grid: int = 15
    max_ratio: float = 1 / 3
    min_barrier: float = 0.02
    match_tolerance: float = 0.05

    @classmethod
    def quick(cls) -> "Config":
        return cls()

    @classmethod
    def full(cls) -> "Config":
        return cls(train=recipes.mnist1d_mlp("full"), num_points=61, curve_epochs=30, plane_grid=25)


def _table(path: Any) -> dict[str, float]:
    out = {}
    for split, ms in path.barriers.items():
        for metric, b in ms.items():
            out[f"{split}_{metric}_mean"] = float(b["mean"])
            out[f"{split}_{metric}_interp"] = float(b["interp"])
    return out


def _curves(path: Any) -> dict[str, dict[str, list[float]]]:
    return {s: {k: np.asarray(v, dtype=float).tolist() for k, v in ms.items()} for s, ms in path.metrics.items()}


def run(config: Config, *, cache_dir: Path, work_dir: Path, progress: Callable[[str], None]) -> ExperimentResult:
    """Train (or reuse) the endpoints, evaluate the line, train and evaluate the curve, judge, plot."""
    from .. import params
    from ..connect import linear_path, train_curve

    timer = Timer()
    sa, sb = config.pair
    with timer("train"):
        ra = train_run(recipes.with_seed(config.train, sa), cache_dir, progress)
        rb = train_run(recipes.with_seed(config.train, sb), cache_dir, progress)
    model = ra.build_model()
    bundle = ra.bundle()
    pa = params.get_point(model)
    pb = params.get_point(rb.build_model())
    with timer("linear path"):
        line = linear_path(model, pa, pb, bundle, num=config.num_points)
    progress(f"linear path: test-error barrier {line.barrier('error'):.3f}")
    with timer("curve"):
        cur = train_curve(model, pa, pb, bundle, kind="bezier", num_bends=1, epochs=config.curve_epochs,
                          lr=config.curve_lr, batch_size=config.curve_batch_size, seed=config.curve_seed,
                          num=config.num_points)
    progress(f"Bezier curve ({config.curve_epochs} epochs, {cur.meta['train_seconds']:.1f}s): test-error barrier "
             f"{cur.path.barrier('error'):.3f}")
    plane: dict[str, Any] | None = None
    if config.plane_grid and cur.plane is not None and cur.plane_coords is not None:
        with timer("plane"):
            plane = _plane_grid(model, cur, bundle, config.plane_grid)
    m: dict[str, Any] = {
        "seeds": [sa, sb],
        "train_error": [ra.summary["train_error"], rb.summary["train_error"]],
        "test_error": [ra.summary["test_error"], rb.summary["test_error"]],
        "distance": params.distance(pa, pb),
        "linear": {"alpha": line.alphas.tolist(), "barriers": _table(line), **_curves(line)},
        "curve": {"t": cur.path.alphas.tolist(), "barriers": _table(cur.path), **_curves(cur.path),
                  "epochs": config.curve_epochs, "final_objective": cur.history[-1]["loss"] if cur.history else None,
                  "bend_distance_to_segment": None if cur.plane_coords is None else float(np.max(cur.plane_coords[:, 1])),
                  "train_seconds": cur.meta.get("train_seconds")},
        "plane": plane,
        "max_ratio": config.max_ratio,
        "min_barrier": config.min_barrier,
        "match_tolerance": config.match_tolerance,
        "runs": [ra.path.name, rb.path.name],
    }
    verdict = judge(m)

    with timer("plot"):
        fig_ref = _figure(m, work_dir)
    lb, cb = m["linear"]["barriers"], m["curve"]["barriers"]
    key = {
        "test-error barrier linear": lb["test_error_mean"],
        "test-error barrier curve": cb["test_error_mean"],
        "curve / linear": cb["test_error_mean"] / lb["test_error_mean"] if lb["test_error_mean"] > 0 else float("nan"),
        "train-loss barrier linear / curve": f"{lb['train_loss_mean']:.3g} / {cb['train_loss_mean']:.3g}",
    }
    comparison = (
        f"Between two independently trained MLPs (seeds {sa} and {sb}; test error {m['test_error'][0]:.3f} and "
        f"{m['test_error'][1]:.3f}; distance {m['distance']:.2f}) the straight line has a test-error barrier of "
        f"{lb['test_error_mean']:.3f} (train loss {lb['train_loss_mean']:.3f}); a one-bend Bezier curve trained for "
        f"{config.curve_epochs} epochs ({m['curve']['train_seconds']:.1f}s) has {cb['test_error_mean']:.3f} (train loss "
        f"{cb['train_loss_mean']:.3f}). Barriers above the chord: linear {lb['test_error_interp']:.3f}, curve "
        f"{cb['test_error_interp']:.3f} (test error)."
    )
    return ExperimentResult.create(
        ID, config, measurements=m, verdict=verdict, comparison=comparison, key_numbers=key, figures=[fig_ref],
        seeds={"endpoints": [sa, sb], "curve": config.curve_seed, "note": "init and data order from each run's seed"},
        data=describe_data(bundle) + "; paths evaluated on the full train and test sets", timings=timer.seconds,
    )


def _plane_grid(model: Any, cur: Any, bundle: Any, n: int) -> dict[str, Any]:
    """Test error on an ``n x n`` grid of the plane through A, B and the bend (coordinates as ``cur.plane_coords``)."""
    from ..surface import plane as surface_plane

    pl = cur.plane
    xy = np.asarray(cur.plane_coords, dtype=float)
    bend = np.asarray(pl.coords, dtype=float)[2]
    xs, ys = np.append(xy[:, 0], bend[0]), np.append(xy[:, 1], bend[1])
    xm, ym = xs.max() - xs.min(), max(ys.max() - ys.min(), 1e-3)
    gx = np.linspace(xs.min() - 0.2 * xm, xs.max() + 0.2 * xm, n)
    gy = np.linspace(ys.min() - 0.35 * ym, ys.max() + 0.35 * ym, n)
    ev = evaluator(model, bundle.test)
    res = surface_plane(model, dx=pl.dx, dy=pl.dy, origin=pl.origin, x=gx, y=gy, evaluator=ev, progress=False)
    err = 1.0 - np.asarray(res.metrics["accuracy"], dtype=float)
    return {"x": gx.tolist(), "y": gy.tolist(), "test_error": err.tolist(), "curve_xy": xy.tolist(),
            "bend_xy": bend.tolist()}


def _figure(m: Mapping[str, Any], work_dir: Path) -> Any:
    has_plane = m.get("plane") is not None
    fig, axes = new_figure(3 if has_plane else 2, 1, width=4.0, height=3.3)
    lin, cur = m["linear"], m["curve"]
    for ax, split, metric in ((axes[0], "test", "error"), (axes[1], "train", "loss")):
        ax.plot(lin["alpha"], lin[split][metric], "o-", ms=3, color="C3",
                label=f"line: barrier {lin['barriers'][f'{split}_{metric}_mean']:.3g}")
        ax.plot(cur["t"], cur[split][metric], "o-", ms=3, color="C0",
                label=f"Bezier curve: barrier {cur['barriers'][f'{split}_{metric}_mean']:.3g}")
        ax.set_xlabel("position a (line) / t (curve)")
        ax.set_ylabel(f"{split} {metric}")
        ax.legend(fontsize=8)
    axes[0].set_title(f"seeds {m['seeds'][0]} -> {m['seeds'][1]}", fontsize=10)
    if has_plane:
        p = m["plane"]
        ax = axes[2]
        Z = np.asarray(p["test_error"])
        cs = ax.contourf(p["x"], p["y"], Z, levels=np.linspace(float(Z.min()), float(Z.max()), 15), cmap="viridis")
        fig.colorbar(cs, ax=ax, shrink=0.85, label="test error")
        c = np.asarray(p["curve_xy"])
        ax.plot(c[:, 0], c[:, 1], "w-", lw=2, label="Bezier curve")
        ax.plot([c[0, 0], c[-1, 0]], [c[0, 1], c[-1, 1]], "r--", lw=1.5, label="line")
        ax.plot([c[0, 0], c[-1, 0]], [c[0, 1], c[-1, 1]], "wo", ms=6)
        ax.plot(*p["bend_xy"], "w^", ms=7, label="bend (control point)")
        ax.set_xlabel("along B - A")
        ax.set_ylabel("toward the bend (orthogonal)")
        ax.set_title("test error on the plane through A, B, bend", fontsize=9)
        ax.legend(fontsize=7, loc="upper right", framealpha=0.8)
    return save_figure(fig, work_dir, "mode_connectivity",
                       "Test error and train loss along the straight line between two independently trained MLPs "
                       "and along a trained one-bend Bezier curve"
                       + ("; right: test error on the plane through the endpoints and the bend." if has_plane else "."))


def judge(m: Mapping[str, Any]) -> Verdict:
    """``m``: ``seeds``, ``train_error`` (two), ``linear``/``curve`` with ``barriers`` (``test_error_mean``,
    ``train_loss_mean``), thresholds ``max_ratio``, ``min_barrier``, ``match_tolerance``."""
    ratio, min_b, tol = float(m["max_ratio"]), float(m["min_barrier"]), float(m["match_tolerance"])
    ea, eb = m["train_error"]
    lb, cb = m["linear"]["barriers"], m["curve"]["barriers"]
    lin, cur = float(lb["test_error_mean"]), float(cb["test_error_mean"])
    checks = [
        Check("endpoints matched", abs(ea - eb) <= tol, f"train errors {ea:.3f} vs {eb:.3f} (tolerance {tol:g})",
              precondition=True),
        Check("line has a barrier", lin > min_b, f"linear test-error barrier {lin:.3f} (needs > {min_b:g})",
              precondition=True),
        Check("curve removes the barrier", cur <= ratio * lin,
              f"test-error barrier {lin:.3f} on the line vs {cur:.3f} on the curve "
              f"({cur / lin:.0%} of it; needs <= {ratio:.0%})" if lin > 0 else f"curve barrier {cur:.3f}"),
    ]
    ll, cl = float(lb["train_loss_mean"]), float(cb["train_loss_mean"])
    checks.append(Check("train-loss barrier removed too", cl <= ratio * ll,
                        f"train-loss barrier {ll:.3f} on the line vs {cl:.3f} on the curve"
                        + (f" ({cl / ll:.0%} of it)" if ll > 0 else ""), decisive=False))
    return verdict_from_checks(checks)
