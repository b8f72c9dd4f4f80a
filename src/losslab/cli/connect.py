"""``losslab connect``: paths between two solutions (linear, trained curves, AutoNEB), optionally aligned."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..errors import LosslabError
from ._common import add_precision_args, check_precision_bn, emit, precision_from_args, save_figure
from ._load import add_target_args, evaluator_loss, loss_description, resolve

METHODS = ("linear", "bezier", "polychain", "neb")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "connect",
        help="loss/error barriers between two solutions along linear paths, trained curves or AutoNEB",
        description=(
            "Connect two solutions A and B (run directories, or checkpoints with --model) on A's data: the "
            "linear path, a trained Bezier curve or polygonal chain (Garipov et al. 2018), or an AutoNEB path "
            "(Draxler et al. 2018). Barriers: max - mean of the endpoints and max above the chord, for loss and "
            "error on train and test. BatchNorm statistics are recomputed at every point. --align first permutes "
            "B's hidden units onto A (weight matching), verifies the outputs are unchanged, and reports the linear "
            "barrier before and after."
        ),
        epilog="example: losslab connect runs/train-aaa runs/train-bbb --method linear bezier --align --plot conn.png",
    )
    add_target_args(p, positional="targets", nargs=2)
    p.add_argument("--method", nargs="+", choices=METHODS, default=["linear"],
                   help="one or more of linear, bezier, polychain, neb (default: linear)")
    p.add_argument("--align", action="store_true", help="align B to A by weight matching first (git re-basin)")
    p.add_argument("--spec", default=None, metavar="FILE",
                   help="with --align: a JSON permutation spec {group: [[tensor_name, axis(, block)], ...]} for "
                        "models whose spec cannot be derived from their forward pass")
    p.add_argument("--num", type=int, default=25, help="points on the linear path (default 25)")
    add_precision_args(p, over="the loss's range along each path",
                       note="; endpoints always exact; draws seeded by --seed; for neb the test split only (train is "
                            "its last cycle's exact evaluation)")
    g = p.add_argument_group("trained curves (bezier, polychain)")
    g.add_argument("--num-bends", type=int, default=1, help="trainable bends (default 1)")
    g.add_argument("--curve-epochs", type=int, default=20, help="curve training epochs (default 20)")
    g.add_argument("--curve-lr", type=float, default=0.05, help="curve base learning rate (default 0.05)")
    g.add_argument("--curve-points", type=int, default=61, help="points of t evaluated on the curve (default 61)")
    g.add_argument("--weight-decay", type=float, default=1e-4, help="L2 on the curve's weights (default 1e-4)")
    g2 = p.add_argument_group("AutoNEB (neb)")
    g2.add_argument("--neb-steps", type=int, default=100, help="steps per AutoNEB cycle (default 100)")
    g2.add_argument("--neb-lr", type=float, default=0.05, help="AutoNEB learning rate of the first cycles (default 0.05)")
    g2.add_argument("--neb-climb", action="store_true",
                    help="climbing image in the last (lr/100) cycles: the top pivot converges onto the saddle")
    g2.add_argument("--neb-cycles", type=int, default=None,
                    help="use only the first N cycles of the default 14-cycle schedule")
    p.add_argument("--batch-size", type=int, default=128, help="mini-batch size of curve/NEB training (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of curve/NEB training (default 0)")
    p.add_argument("--save", default=None, metavar="DIR", help="save each path result (.npz + .json) in DIR, and with --align the "
                   "alignment (align.*), with neb the whole AutoNEB result (neb_run.*)")
    p.add_argument("--plot", default=None, metavar="PATH", help="plot loss and error along every path on one figure")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: LOSSLAB_THREADS or 1)")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import params as P
    from ..connect import align as align_fn
    from ..connect.curves import train_curve
    from ..connect.neb import default_cycles, neb_path
    from ..connect.paths import linear_path

    if args.num < 2 or args.curve_points < 2:
        raise LosslabError("--num and --curve-points must be >= 2")
    precision = precision_from_args(args, seed=args.seed)  # a bad --rtol/--atol fails before anything is loaded
    ta, tb = resolve(args.targets[0], args), resolve(args.targets[1], args)
    model, bundle = ta.model, ta.bundle
    check_precision_bn(args, model, precision)
    pa = P.get_point(ta.model, buffers=True)
    pb = P.get_point(tb.model, buffers=True)
    names = [n for n, _ in model.named_parameters()]
    missing = [k for k in names if k not in pb]
    if missing:
        raise LosslabError(f"models A and B have different architectures: B lacks {missing[:5]}")
    P.check_compatible({k: pa[k] for k in names}, {k: pb[k] for k in names}, "models A and B")
    ev: dict[str, Any] = {"bn": args.bn, "loss": evaluator_loss(args, bundle)}  # every path: the same function
    if precision is not None:
        ev["precision"] = precision  # every path adaptive (with --align, both linear paths too)
    summary: dict[str, Any] = {"a": ta.description, "b": tb.description, "dataset": bundle.name,
                               **loss_description(args, bundle),
                               "distance": P.distance({k: pa[k] for k in names}, {k: pb[k] for k in names}),
                               "methods": {}}
    lines = [f"A: {args.targets[0]}", f"B: {args.targets[1]}", f"loss {summary['loss_fn']}, BatchNorm {args.bn}"]
    results: dict[str, Any] = {}
    aside: list[Any] = []  # paths computed but not reported as a method (counted in the precision totals)
    if args.spec is not None and not args.align:
        raise LosslabError("--spec is a permutation spec for --align; add --align")
    if args.align:
        t0 = time.perf_counter()
        spec = _read_spec(args.spec) if args.spec is not None else None
        pb_unaligned = pb
        # derive the spec and verify the permutation before any path is computed: a model it cannot handle
        # fails in a second, not after the unaligned path
        res = align_fn(model, bundle.train.x[:256], point_a=pa, point_b=pb, spec=spec)
        before = linear_path(model, bundle, point_a=pa, point_b=pb_unaligned, num=args.num, **ev)
        pb = res.point_b_aligned
        if args.save:
            res.save(Path(args.save) / "align")
        after = linear_path(model, bundle, point_a=pa, point_b=pb, num=args.num, **ev)
        results["linear (unaligned)"] = before
        split = "test" if "test" in before.metrics else "train"
        summary["align"] = {
            "verified": res.verified, "max_abs_output_diff": res.max_abs_output_diff,
            "float64_output_diff": res.float64_output_diff, "spec": args.spec or "derived from the forward pass",
            "iterations": res.info.iterations, "distance_after": P.distance({k: pa[k] for k in names},
                                                                             {k: pb[k] for k in names}),
            "split": split,
            "linear_error_barrier_before": before.barrier("error", split=split),
            "linear_error_barrier_after": after.barrier("error", split=split),
            "linear_loss_barrier_before": before.barrier("loss", split=split),
            "linear_loss_barrier_after": after.barrier("loss", split=split),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        if "linear" in args.method:
            results["linear"] = after
        else:
            aside.append(after)
        a = summary["align"]
        lines.append(f"aligned B to A: outputs verified (max |diff| {a['max_abs_output_diff']:.2e}); linear {split} "
                     f"error barrier {a['linear_error_barrier_before']:.4f} -> {a['linear_error_barrier_after']:.4f}, "
                     f"loss barrier {a['linear_loss_barrier_before']:.4f} -> {a['linear_loss_barrier_after']:.4f}")

    for method in args.method:
        t0 = time.perf_counter()
        extra: dict[str, Any] = {}
        if method == "linear":
            path = results.get("linear") or linear_path(model, bundle, point_a=pa, point_b=pb, num=args.num, **ev)
        elif method in ("bezier", "polychain"):
            c = train_curve(model, bundle, point_a=pa, point_b=pb, kind=method, num_bends=args.num_bends, epochs=args.curve_epochs,
                            lr=args.curve_lr, batch_size=args.batch_size, weight_decay=args.weight_decay,
                            seed=args.seed, num=args.curve_points, **ev)
            path = c.path
            extra = {"epochs": args.curve_epochs, "num_bends": args.num_bends,
                     "final_objective": c.history[-1]["loss"] if c.history else None}
            if args.save:
                c.save(Path(args.save) / method)
        else:
            cycles = default_cycles(steps=args.neb_steps, lr=args.neb_lr, climb=args.neb_climb)
            if args.neb_cycles is not None:
                if args.neb_cycles < 1:
                    raise LosslabError("--neb-cycles must be >= 1")
                cycles = cycles[: args.neb_cycles]
            r = neb_path(model, bundle, point_a=pa, point_b=pb, cycles=cycles, batch_size=args.batch_size, seed=args.seed,
                         **ev)
            path = r.path
            if args.save:
                r.save(Path(args.save) / "neb_run")
            extra = {"pivots": int(r.pivots.shape[0]), "saddle_train_loss": r.saddle_value,
                     "linear_saddle_train_loss": r.linear_saddle, "cycles": len(cycles)}
        results[method] = path
        split = "test" if "test" in path.metrics else "train"
        summary["methods"][method] = {**path.summary(), **extra, "points": int(path.alphas.size),
                                      "seconds": round(time.perf_counter() - t0, 3)}
        if args.save and method not in ("bezier", "polychain"):
            path.save(Path(args.save) / method)
        err = f"error barrier {path.barrier('error', split=split):.4f} (interp {path.barrier('error', split=split, kind='interp'):.4f}), " \
            if "error" in path.metrics[split] else ""
        lines.append(f"{method:9s} {split} {err}loss barrier {path.barrier('loss', split=split):.4f}")
    if precision is not None:
        summary["precision"] = _totals(precision, [*results.values(), *aside])
        p = summary["precision"]
        lines.append(f"adaptive: {p['example_evaluations']} example evaluations over {p['paths']} paths, "
                     f"{p['savings']:.3g}x fewer than exact")
    if args.plot:
        summary["plot"] = str(plot_paths(results, args.plot))
        lines.append(f"plot: {summary['plot']}")
    emit(args, summary, "\n".join(lines))
    return 0


def _totals(precision: Any, paths: list[Any]) -> dict[str, Any]:
    """The settings and the example evaluations of every path together (each path's own are under
    ``methods``): ``example_evaluations``, ``exact_equivalent``, ``savings`` and the number of ``paths``."""
    from ..connect.paths import precision_totals

    per = {str(i): r.meta["precision"] for i, r in enumerate(paths) if "precision" in r.meta}
    return {**precision_totals(precision, per, by=None), "paths": len(per)}


def plot_paths(results: dict[str, Any], path: str | Path) -> Path:
    """Loss (left) and error (right) along every path on one figure (:class:`~losslab.plot.PathsDisplay`)."""
    from ..plot import PathsDisplay

    return save_figure(lambda: PathsDisplay.from_result(results), path)


def _read_spec(path: str) -> dict[str, Any]:
    """A permutation spec from a JSON file: ``{group: [[tensor_name, axis], [tensor_name, axis, block], ...]}``."""
    from .._io import read_json

    spec = read_json(path)
    if not isinstance(spec, dict) or not spec or not all(
            isinstance(g, str) and isinstance(v, list) and all(isinstance(e, list) and len(e) in (2, 3) for e in v)
            for g, v in spec.items()):
        raise LosslabError(f"--spec {path}: expected a JSON object {{group: [[tensor_name, axis(, block)], ...]}}")
    return {g: [tuple(e) for e in v] for g, v in spec.items()}

