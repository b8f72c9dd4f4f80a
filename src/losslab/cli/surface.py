"""``losslab surface``: a 1-D or 2-D loss surface around a run's (or a checkpoint's) solution."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import DamagedFile, LosslabError
from ._common import add_precision_args, emit, precision_from_args, result_dir, settings_hash
from ._load import add_target_args, evaluator_loss, resolve, target_loss


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "surface",
        help="1-D or 2-D loss surface along filter-normalized, PCA or model-to-model directions",
        description=(
            "Evaluate loss and accuracy on a line or plane through parameter space around the model "
            "(Li et al. 2018). Results are saved as .npz + .json (resumable: rerun the same command "
            "after an interruption), with optional PNG, offline HTML (Plotly) and ParaView .vtp."
        ),
        epilog="example: losslab surface runs/train-<hash> --grid 41 --plot --html --json",
    )
    add_target_args(p)
    p.add_argument("--dim", type=int, choices=(1, 2), default=2, help="1-D line or 2-D plane (default 2)")
    p.add_argument("--directions", default="random", action=_DirectionsAction, metavar="{%s} or FILE" % ",".join(KINDS),
                   help="random (Gaussian, normalized), pca (of the run's trajectory), to (towards --to), "
                        "hessian (top eigenvectors), or FILE: a .pt/.npz of named tensors keyed like the "
                        "model's parameters (one direction: a line, two: a plane; normalized by --normalization, "
                        "none keeps them raw) (default random)")
    p.add_argument("--save-vectors", action="store_true",
                   help="write the tensors of seeded random directions too (default: a recipe that regenerates them)")
    p.add_argument("--to", default=None, help="other run dir or checkpoint for --directions to")
    p.add_argument("--normalization", choices=("filter", "layer", "model", "none"), default="filter",
                   help="normalization of random directions (default filter)")
    p.add_argument("--keep-1d", action="store_true",
                   help="also perturb 1-D tensors (biases, norm affine); ignored by default as in Li et al.")
    p.add_argument("--orthogonalize", action="store_true", help="make dy orthogonal to dx (random directions)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random directions (default 0)")
    p.add_argument("--grid", type=int, nargs="+", default=None, metavar="N",
                   help="points per axis: N, or NX NY (default 51 for 1-D, 21 for 2-D)")
    p.add_argument("--range", type=float, nargs="+", default=None, metavar="V",
                   help="LO HI (both axes) or XLO XHI YLO YHI (default -1 1; for pca: the path's extent + margin)")
    p.add_argument("--split", choices=("train", "test"), default="train", help="data split (default train)")
    p.add_argument("--points-per-chunk", type=int, default=None, help="grid points evaluated per batch")
    p.add_argument("--strategy", choices=("auto", "loop", "vmap"), default="auto",
                   help="per-point loop or vmap over stacked points (default: measured)")
    p.add_argument("--first-layer", choices=("auto", "precompute", "compute"), default="auto",
                   help="precompute the first Linear/Conv layer's output per direction and combine it at each "
                        "point (exact to rounding; auto: where it pays, e.g. wide-input MLPs)")
    add_precision_args(p)
    p.add_argument("--out", default=None, help="output directory (default: RUN_DIR/surfaces/<name> or ./surfaces/<name>)")
    p.add_argument("--force", action="store_true",
                   help="start over: discard a saved (partial or finished) surface in the output directory")
    p.add_argument("--plot", action="store_true", help="write PNG plots")
    p.add_argument("--html", action="store_true", help="write an interactive offline HTML surface (2-D)")
    p.add_argument("--vtp", action="store_true", help="write a ParaView .vtp surface (2-D)")
    p.add_argument("--log", action="store_true", help="log-scale the loss in plots and exports")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=run)


KINDS = ("random", "pca", "to", "hessian")


class _DirectionsAction(argparse.Action):
    """``--directions KIND`` or ``--directions FILE``; a file sets ``--dim`` to its number of directions."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any,
                 option_string: str | None = None) -> None:
        if value not in KINDS:
            if not value.endswith((".pt", ".npz")):
                parser.error(f"argument --directions: {value!r} is not one of {', '.join(KINDS)} nor a .pt/.npz file")
            from ..directions import count_directions

            try:
                namespace.dim = count_directions(value)
            except LosslabError:
                pass  # build_directions reports the file's problem in one line
        setattr(namespace, self.dest, value)


def _grid(args: argparse.Namespace) -> tuple[int, int]:
    g = args.grid or ([51] if args.dim == 1 else [21])
    if len(g) > 2 or any(n < 2 for n in g):
        raise LosslabError(f"--grid takes N or NX NY with values >= 2, got {g}")
    return (g[0], g[-1])


def _ranges(args: argparse.Namespace, default: tuple[float, float, float, float]) -> tuple[float, ...]:
    r = args.range
    if r is None:
        return default
    if len(r) == 2:
        r = [r[0], r[1], r[0], r[1]]
    if len(r) != 4 or r[0] >= r[1] or r[2] >= r[3]:
        raise LosslabError(f"--range takes LO HI or XLO XHI YLO YHI with LO < HI, got {args.range}")
    return tuple(r)


def _name(args: argparse.Namespace, description: dict[str, Any]) -> str:
    keys = ("dim", "directions", "to", "normalization", "keep_1d", "orthogonalize", "seed", "grid", "range",
            "split", "bn")
    kind = args.directions if args.directions in KINDS else "file"
    name = f"{args.dim}d-{kind}-{settings_hash(args, keys, target=description)}"
    return name if _precision(args) is None else f"{name}-adaptive-{settings_hash(args, ('rtol', 'atol'))}"


def _precision(args: argparse.Namespace) -> Any:
    """The :class:`~losslab.precision.Precision` ``--rtol``/``--atol`` ask for (seeded by ``--seed``), or None."""
    return precision_from_args(args, seed=args.seed)


def output_dir(args: argparse.Namespace, t: Any) -> Path:
    """``--out``, else RUN_DIR/surfaces/<name> (or ./surfaces/<name> for a bare checkpoint)."""
    return result_dir(args, t, "surfaces", _name(args, t.description))


def build_directions(args: argparse.Namespace, t: Any, data: Any, out: Path, *, write: bool = True
                     ) -> tuple[list[Any], Any, tuple[float, ...]]:
    """The directions the flags ask for, the PCA result (or None) and the (x, y) ranges.

    The flags mapped onto :func:`losslab.directions.build`; deterministic given the flags (seeded),
    so every rank of a distributed run builds the same ones; files (directions, PCA) are written
    only when ``write``: seeded random directions as recipes, the others as vectors (all as vectors
    with ``--save-vectors``).
    """
    from .. import directions as D
    from .. import params as P
    _ranges(args, (-1.0, 1.0, -1.0, 1.0))  # a bad --range fails before anything is computed
    weights = P.get_point(t.model)
    kw: dict[str, Any] = {}
    if args.directions == "to":
        if not args.to:
            raise LosslabError("--directions to needs --to OTHER (a run dir or checkpoint)")
        kw["other"] = P.get_point(resolve(args.to, args).model)
    elif args.directions == "pca":
        if t.run is None:
            raise LosslabError("--directions pca needs a run directory (its trajectory)")
        kw["trajectory"] = [pt for _, pt in t.run.trajectory()]
    elif args.directions == "hessian":
        kw.update(model=t.model, loss=target_loss(args, t.bundle), data=data)
    elif args.directions not in KINDS:
        kw["file"] = args.directions
    kind = args.directions if args.directions in KINDS else "file"
    built = D.build(kind, weights, dim=args.dim, normalization=args.normalization,
                    ignore_1d=not args.keep_1d, orthogonalize=args.orthogonalize, seed=args.seed, **kw)
    if write:
        built.save(out, vectors=args.save_vectors)
    return built.directions, built.pca, _ranges(args, built.span)


def evaluation_kwargs(args: argparse.Namespace, t: Any, out: Path) -> dict[str, Any]:
    """Keyword arguments of ``surface.plane``/``line`` shared by the plain and distributed commands
    (the loss and BatchNorm data from :func:`losslab.surface.bundle_settings`)."""
    from ..surface import bundle_settings

    kw: dict[str, Any] = dict(progress=not args.no_progress, strategy=args.strategy, bn=args.bn,
                              first_layer=args.first_layer,
                              checkpoint_path=out / "surface", resume_from=out / "surface",
                              meta={"target": t.description, "seed": args.seed, "split": args.split})
    kw.update(bundle_settings(t.bundle, args.split), loss=evaluator_loss(args, t.bundle))
    if args.split == "test":
        kw["bn_data"] = t.bundle.train  # BatchNorm statistics from the training data, as every command takes them
    if args.points_per_chunk is not None:
        kw["points_per_chunk"] = args.points_per_chunk  # 0 or less: a one-line error from the evaluator
    return kw


def summarize(res: Any, t: Any, args: argparse.Namespace, out: Path, files: dict[str, str]) -> dict[str, Any]:
    """The --json summary of a finished (or partial) surface."""
    import numpy as np

    loss = res.metrics["loss"]
    finite = np.isfinite(loss)
    return {
        **t.description, "dim": args.dim, "directions": args.directions, "grid": list(loss.shape),
        "out": str(out), "files": files, "points": int(res.n_points), "done": int(res.n_done),
        "loss_at_origin": _at_origin(res), "loss_min": float(loss[finite].min()) if finite.any() else None,
        "loss_max": float(loss[finite].max()) if finite.any() else None,
        "non_finite_points": int((~finite & res.done).sum()),
        "seconds": res.meta.get("timing", {}).get("seconds"),
        "points_per_second": res.meta.get("timing", {}).get("points_per_s"),
        "strategy": res.meta.get("evaluator", {}).get("strategy"),
        "first_layer": res.meta.get("evaluator", {}).get("first_layer"),
    }


def run(args: argparse.Namespace) -> int:
    from ..surface import _check_grid_size

    nx, ny = _grid(args)
    # validate before anything is loaded or written (no direction files left behind by a bad flag)
    _check_grid_size(nx * (ny if args.dim == 2 else 1), f"a {nx} x {ny} grid" if args.dim == 2 else f"{nx} points")
    if args.points_per_chunk is not None and args.points_per_chunk < 1:
        raise LosslabError(f"--points-per-chunk must be >= 1, got {args.points_per_chunk}")
    t = resolve(args.target, args)
    data = t.bundle.train if args.split == "train" else t.bundle.test
    if len(data) == 0:
        raise LosslabError(f"the {args.split} split of {t.bundle.name} is empty")
    out = output_dir(args, t)
    fresh = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _compute(args, t, data, out, nx, ny)
    except Exception:
        if fresh and not (out / "surface.npz").exists():  # failed before any point was saved: leave nothing
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise


def _compute(args: argparse.Namespace, t: Any, data: Any, out: Path, nx: int, ny: int) -> int:
    """The body of :func:`run` once the flags are checked and ``out`` exists."""

    from ..surface import SurfaceResult, line, plane

    if not args.force and any(f.exists() for f in SurfaceResult.paths(out / "surface")):
        try:
            SurfaceResult.load(out / "surface")
        except DamagedFile as exc:  # a truncated or changed saved surface: say so, start over
            print(exc.recomputing(), file=sys.stderr, flush=True)
            args.force = True
    if args.force:
        for f in SurfaceResult.paths(out / "surface"):
            f.unlink(missing_ok=True)
    dirs, pca, xr = build_directions(args, t, data, out)
    res = compute_surface(args, t.model, data, dirs, xr, (nx, ny), evaluation_kwargs(args, t, out), line, plane)
    files = {"result": str(out / "surface.npz")}
    files.update(_render(res, out, args, pca))
    summary = summarize(res, t, args, out, files)
    return emit_surface(args, res, summary, files, f"{args.dim}-D surface, {res.n_done}/{res.n_points} points, "
                        f"loss {summary['loss_fn']}, BatchNorm {args.bn} -> {out}")


def emit_surface(args: argparse.Namespace, res: Any, summary: dict[str, Any], files: Mapping[str, str],
                 headline: str) -> int:
    """Print a computed surface's summary (``--json``) or its text lines, the adaptive-precision record
    (tolerance, example evaluations, exact equivalent, savings, counts) added when the run was adaptive.
    Shared by ``losslab surface`` and its torchrun form."""
    prec = res.meta.get("precision")
    if prec is not None:
        summary["precision"] = prec
    text = (f"{headline}\nloss range [{summary['loss_min']}, {summary['loss_max']}]"
            + ("" if prec is None else f"\nadaptive: {prec['example_evaluations']} example evaluations, "
               f"{prec['savings']:.3g}x fewer than exact; {prec['points_interpolated']} points interpolated")
            + "".join(f"\n  {k}: {v}" for k, v in files.items()))
    emit(args, summary, text)
    return 0


def compute_surface(args: argparse.Namespace, model: Any, data: Any, dirs: Any, xr: Any, grid: tuple[int, int],
                    kw: dict[str, Any], line_fn: Any, plane_fn: Any) -> Any:
    """The line (``--dim 1``) or plane the arguments ask for over the ranges ``xr``, with ``--rtol/--atol``
    passed on; ``line_fn``/``plane_fn`` are :func:`losslab.surface.line`/``plane`` or their sharded forms."""
    import numpy as np

    nx, ny = grid
    if _precision(args) is not None:
        kw = {**kw, "precision": _precision(args)}
    if args.dim == 1:
        return line_fn(model, data, direction=dirs[0], alphas=np.linspace(xr[0], xr[1], nx), **kw)
    return plane_fn(model, data, dx=dirs[0], dy=dirs[1], x=np.linspace(xr[0], xr[1], nx),
                    y=np.linspace(xr[2], xr[3], ny), **kw)


def _at_origin(res: Any) -> float | None:
    import numpy as np

    x = np.asarray(res.x)
    i = int(np.argmin(np.abs(x)))
    if abs(x[i]) > 1e-12:
        return None
    if res.kind == "line":
        return float(res.metrics["loss"][i])
    y = np.asarray(res.y)
    j = int(np.argmin(np.abs(y)))
    return float(res.metrics["loss"][j, i]) if abs(y[j]) <= 1e-12 else None


def _render(res: Any, out: Path, args: argparse.Namespace, pca: Any) -> dict[str, str]:
    """The files --plot, --html and --vtp ask for (:func:`losslab.surface.render`)."""
    from ..surface import render

    plane = res.kind == "plane"
    files = render(res, out, png=args.plot, html=args.html and plane, vtp=args.vtp and plane, log=args.log,
                   pca=pca)
    if not plane and (args.html or args.vtp):
        raise LosslabError("--html and --vtp need a 2-D surface (--dim 2)")
    return files
