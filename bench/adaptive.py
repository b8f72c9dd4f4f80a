"""Adaptive-precision surfaces (issue 19): exact vs adaptive 2-D surfaces, computed in the same run.

For each case a model is trained (``losslab.train``, cached in ``--work``), a filter-normalized
random plane is drawn (seed 0), and the same grid is evaluated twice in one process: exactly
(``plane(...)``, every point on every example) and adaptively (``plane(..., precision=
Precision(rtol=R))``). Reported per case:

* ``example_evaluations``: examples evaluated by each (exact: points x N), and their ratio;
* ``wall_s`` / ``cpu_s`` (process CPU time, steadier on a shared machine) and their ratios;
* ``max_abs_error_over_range``: max over the grid of |adaptive - exact| / (max - min of exact);
* ``coverage``: fraction of points whose exact value lies inside estimate +- 1.96 SE, over all
  points and separately over estimated and interpolated points; a point evaluated on every example
  (SE 0) counts as inside when within 1e-6 x (|value| + range), float rounding (summation order, the
  first-layer precompute); ``max_abs_error_exact_points`` shows that rounding;
* ``rerun_identical``: a second adaptive run with the same seed gives the same arrays bit for bit;
  ``resume_identical``: a run stopped after half its points and resumed from its checkpoint file does.

Cases: ``mnist1d_cnn1d`` and ``mnist1d_mlp`` (zoo models trained on ``--num-samples`` generated
MNIST-1D examples, 80% of them the training split the surface is measured on), ``digits_mlp``
(1347 examples: few examples per point, so little to save; reported as such). ``--figure PATH``
writes a PNG of the exact and adaptive surfaces of the first case side by side.

Usage: ``python bench/adaptive.py [--grid 41] [--rtol 0.01] [--cases mnist1d_cnn1d mnist1d_mlp digits_mlp]``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_average, log, machine_info, set_threads, timed  # noqa: E402

CASES: dict[str, tuple[str, str, int]] = {  # name -> (dataset, model, epochs)
    "mnist1d_cnn1d": ("mnist1d", "cnn1d", 10),
    "mnist1d_mlp": ("mnist1d", "mlp", 10),
    "digits_mlp": ("digits", "mlp", 30),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", type=int, default=41, help="grid side N (N x N points; default 41)")
    p.add_argument("--rtol", type=float, default=0.01, help="tolerance relative to the surface's range (default 0.01)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subsample draws (default 0)")
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="cases to run (default all)")
    p.add_argument("--num-samples", type=int, default=25000,
                   help="MNIST-1D examples generated (80%% train; default 25000 -> N = 20000)")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "losslab-bench-adaptive"),
                   help="where the trained runs are kept (reused)")
    p.add_argument("--figure", default=None, help="write a PNG of the first case's exact and adaptive surfaces")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    return p.parse_args(argv)


def train_case(name: str, args: argparse.Namespace) -> Any:
    from losslab.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
    from losslab.train import train

    dataset, model, epochs = CASES[name]
    kw = {"num_samples": args.num_samples} if dataset == "mnist1d" else {}
    cfg = TrainConfig(data=DataConfig(dataset=dataset, dataset_kwargs=kw), model=ModelConfig(model=model),
                      optim=OptimConfig(epochs=epochs), ckpt=CheckpointConfig("none"))
    return train(cfg, out=Path(args.work) / name, progress=False)


def same(a: Any, b: Any) -> bool:
    return (all(np.array_equal(a.metrics[k], b.metrics[k], equal_nan=True) for k in a.metrics)
            and a.arrays.keys() == b.arrays.keys()
            and all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays))


def run_case(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], Any, Any]:
    from losslab.directions import random_plane
    from losslab.precision import Precision
    from losslab.surface import plane

    run = train_case(name, args)
    model, data = run.build_model(), run.bundle().train
    n = int(data.x.shape[0])
    dx, dy = random_plane(model, normalization="filter", seed=0)
    kw = dict(dx=dx, dy=dy, nx=args.grid, ny=args.grid, progress=False)
    prec = Precision(rtol=args.rtol, seed=args.seed)
    log(f"{name}: N = {n}, {args.grid} x {args.grid}, exact ...")
    load0 = load_average()
    ex = timed(lambda: plane(model, data, **kw))
    log(f"{name}: exact {ex.wall:.1f} s wall, {ex.cpu:.1f} s CPU; adaptive ...")
    ad = timed(lambda: plane(model, data, precision=prec, **kw))
    load1 = load_average()
    log(f"{name}: adaptive {ad.wall:.1f} s wall, {ad.cpu:.1f} s CPU; rerun and resume checks ...")
    e, r = ex.value.metrics["loss"], ad.value
    a, se = r.metrics["loss"], r.stderr["loss"]
    span = float(e.max() - e.min())
    err = np.abs(a - e)
    inside = err <= 1.96 * se + 1e-6 * (np.abs(e) + span)
    est, interp = ~r.exact & ~r.interpolated, r.interpolated
    rerun = plane(model, data, precision=prec, **kw)
    with tempfile.TemporaryDirectory() as tmp:
        half = max(1, r.meta["precision"]["points_evaluated"] // 2)
        part = plane(model, data, precision=prec, checkpoint_path=Path(tmp) / "s", max_points=half, **kw)
        resumed = plane(model, data, precision=prec, checkpoint_path=Path(tmp) / "s", resume_from=Path(tmp) / "s", **kw)
    p = r.meta["precision"]
    out = {
        "n_examples": n, "grid": [args.grid, args.grid], "points": args.grid ** 2,
        "model": CASES[name][1], "dataset": CASES[name][0], "train_summary": {k: run.summary.get(k) for k in
                                                                            ("train_loss", "train_error", "epochs")},
        "exact": {"wall_s": ex.wall, "cpu_s": ex.cpu, "example_evaluations": args.grid ** 2 * n,
                  "strategy": ex.value.meta["evaluator"]["strategy"],
                  "first_layer": ex.value.meta["evaluator"]["first_layer"]["used"]},
        "adaptive": {"wall_s": ad.wall, "cpu_s": ad.cpu, "example_evaluations": p["example_evaluations"],
                     "tolerance": p["tolerance"], "points_exact": p["points_exact"],
                     "points_estimated": int(est.sum()), "points_interpolated": p["points_interpolated"],
                     "mean_examples_per_estimated_point": float(r.examples_used[est].mean()) if est.any() else None},
        "example_evaluation_ratio": args.grid ** 2 * n / p["example_evaluations"],
        "wall_ratio": ex.wall / ad.wall, "cpu_ratio": ex.cpu / ad.cpu,
        "loss_range": span,
        "max_abs_error_over_range": float(err.max() / span),
        "max_abs_error_over_range_estimated": float(err[est].max() / span) if est.any() else None,
        "max_abs_error_over_range_interpolated": float(err[interp].max() / span) if interp.any() else None,
        "max_abs_error_exact_points": float(err[r.exact].max()),
        "coverage": float(inside.mean()),
        "coverage_estimated": float(inside[est].mean()) if est.any() else None,
        "coverage_interpolated": float(inside[interp].mean()) if interp.any() else None,
        "rerun_identical": same(r, rerun),
        "resume_identical": (not part.complete) and same(r, resumed),
        "load_average": [load0, load1],
    }
    out["targets"] = {"evaluations_10x": out["example_evaluation_ratio"] >= 10, "wall_5x": out["wall_ratio"] >= 5,
                      "cpu_5x": out["cpu_ratio"] >= 5, "max_error_le_tolerance": out["max_abs_error_over_range"] <= args.rtol,
                      "coverage_93": out["coverage"] >= 0.93}
    return out, ex.value, r


def figure(path: str, name: str, exact: Any, adaptive: Any, summary: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from losslab.plot import ContourDisplay

    e = exact.metrics["loss"]
    levels = np.linspace(float(e.min()), float(e.max()), 25)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.8), constrained_layout=True)
    lim = dict(kind="contourf", levels=levels, vmin=levels[0], vmax=levels[-1])  # the same colours; extend both ends
    ContourDisplay.from_result(exact, ax=ax[0], colorbar=False, **lim)
    ContourDisplay.from_result(adaptive, ax=ax[1], **lim)
    gy, gx = np.meshgrid(adaptive.y, adaptive.x, indexing="ij")
    ev = ~adaptive.interpolated
    ax[1].scatter(gx[ev & ~adaptive.exact], gy[ev & ~adaptive.exact], s=2, color="white", linewidths=0)
    ax[1].scatter(gx[adaptive.exact], gy[adaptive.exact], s=10, facecolors="none", edgecolors="red", linewidths=0.7)
    ax[0].set_title(f"exact: {summary['exact']['example_evaluations']:.3g} example evaluations", fontsize=9)
    ax[1].set_title(f"adaptive (rtol 1%): {summary['example_evaluation_ratio']:.0f}x fewer, max error "
                    f"{100 * summary['max_abs_error_over_range']:.2f}% of range", fontsize=9)
    fig.suptitle(f"{name}, {exact.shape[1]} x {exact.shape[0]}, N = {summary['n_examples']} "
                 "(dots: estimated, circles: exact, elsewhere interpolated)", fontsize=9)
    fig.savefig(path, dpi=72)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_threads(1)
    result: dict[str, Any] = {"benchmark": "adaptive", "machine": machine_info(), "settings": vars(args), "cases": {}}
    for i, name in enumerate(args.cases):
        summary, ex, ad = run_case(name, args)
        result["cases"][name] = summary
        log(f"{name}: {json.dumps({k: summary[k] for k in ('example_evaluation_ratio', 'wall_ratio', 'cpu_ratio')})}")
        if i == 0 and args.figure:
            figure(args.figure, name, ex, ad, summary)
    result["machine"]["load_average_end"] = load_average()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
