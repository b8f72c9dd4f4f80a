"""``losslab interpolate``: loss and error along the segment between two models (Goodfellow et al. 2015)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import LosslabError
from ._common import add_precision_args, check_precision_bn, emit, precision_from_args, result_dir, save_figure, settings_hash
from ._load import add_target_args, evaluator_loss, loss_description, resolve


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "interpolate",
        help="loss/error along (1-a)A + aB, with Goodfellow's monotonicity check",
        description=(
            "Evaluate train and test loss/error along theta(a) = (1-a) A + a B. With one run directory, "
            "A is its initialization (step 0) and B its final checkpoint. Reports monotonic linear "
            "interpolation: non-monotone steps, bumps and bump height of the train loss on a in [0, 1]."
        ),
        epilog="examples: losslab interpolate runs/train-<hash> --json   |   losslab interpolate RUN_A RUN_B --plot",
    )
    add_target_args(p, positional="a")
    p.add_argument("b", nargs="?", default=None, metavar="B", help="second run dir or checkpoint (default: A's init)")
    p.add_argument("--num", type=int, default=51, help="grid points in [0, 1] (default 51)")
    p.add_argument("--range", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="a-range, may extend beyond [0, 1] (default 0 1)")
    p.add_argument("--tol", type=float, default=0.0, help="a rise must exceed this to count as non-monotone")
    add_precision_args(p, over="the loss's range along the path",
                       note="; a = 0 and 1 always exact; monotonicity is judged on the estimates (see --tol)")
    p.add_argument("--out", default=None, help="output directory (default: A's RUN_DIR/interpolations/<pair>-<hash>,"
                   " or ./interpolations/<pair>-<hash> for a checkpoint)")
    p.add_argument("--plot", action="store_true", help="write a PNG of loss and error along the path")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import params as P
    from ..interpolation import monotonicity
    from ..surface import line

    precision = precision_from_args(args)  # a bad --rtol/--atol fails before anything is loaded
    ta = resolve(args.a, args)
    if args.b is None:
        if ta.run is None:
            raise LosslabError("with a single target, A must be a run directory (interpolation from its init)")
        step_b = args.step
        args.step = 0
        start = resolve(args.a, args)
        args.step = step_b
        end, ta = ta, start
        label = "init -> final"
    else:
        end = resolve(args.b, args)
        start = ta
        label = "A -> B"
    pa, pb = P.get_point(start.model), P.get_point(end.model)
    P.check_compatible(pa, pb, "the two models' parameters")
    check_precision_bn(args, end.model, precision)
    lo, hi = args.range if args.range else (0.0, 1.0)
    if lo >= hi:
        raise LosslabError(f"--range needs LO < HI, got {lo} {hi}")
    if args.num < 2:
        raise LosslabError(f"--num must be >= 2, got {args.num}")
    # one spacing h = 1/(num-1) everywhere, so [0, 1] is sampled exactly as without --range
    h = 1.0 / (args.num - 1)
    alphas = np.arange(int(np.floor(lo / h + 1e-9)), int(np.ceil(hi / h - 1e-9)) + 1) * h
    bundle = end.bundle
    loss = evaluator_loss(args, bundle)
    tag = label.replace(" -> ", "_to_").replace(" ", "")
    # its own directory per pair of models and settings: another pair or --range never overwrites it
    name = f"{tag}-{settings_hash(args, ('num', 'range', 'bn', 'loss', 'output_key'), a=start.description, b=end.description)}"
    if precision is not None:  # never the exact result's directory
        name += f"-adaptive-{settings_hash(args, ('rtol', 'atol'))}"
    out = result_dir(args, ta, "interpolations", name)
    res = {}
    for split in ("train", "test"):
        data = getattr(bundle, split)
        if len(data) == 0:
            continue
        kw = {"bn_data": bundle.train} if split == "test" else {}
        res[split] = line(end.model, data, start=pa, end=pb, alphas=alphas, loss=loss, bn=args.bn,
                          progress=not args.no_progress, meta={"label": label, "split": split}, precision=precision,
                          **kw)
    out.mkdir(parents=True, exist_ok=True)
    for split, r in res.items():
        r.save(out / f"{tag}_{split}")
    mono = monotonicity(alphas, res["train"].metrics["loss"], tol=args.tol)
    summary = {
        "a": start.description, "b": end.description, "label": label, "alphas": alphas.tolist(),
        "monotonicity": mono, "out": str(out), "distance": P.distance(pa, pb),
        **loss_description(args, bundle),
    }
    for split, r in res.items():
        summary[f"{split}_loss"] = r.metrics["loss"].tolist()
        if "accuracy" in r.metrics:
            summary[f"{split}_error"] = (1.0 - r.metrics["accuracy"]).tolist()
        if precision is not None:  # error bars per point (the error's are the accuracy's)
            summary[f"{split}_loss_stderr"] = r.stderr["loss"].tolist()
            if "accuracy" in r.metrics:
                summary[f"{split}_error_stderr"] = r.stderr["accuracy"].tolist()
            summary[f"{split}_examples_used"] = r.examples_used.tolist()
    if precision is not None:
        from ..connect.paths import precision_totals

        summary["precision"] = precision_totals(precision, {s: r.meta["precision"] for s, r in res.items()})
    if args.plot:
        summary["plot"] = str(_plot(alphas, res, out / f"{tag}.png", label))
    text = (f"{label}: distance {_g(summary['distance'])}, {len(alphas)} points, loss {summary['loss_fn']}, "
            f"BatchNorm {args.bn}\n"
            f"train loss {_g(mono['start'])} -> {_g(mono['end'])}; non-monotone steps "
            f"{mono['non_monotone_steps']} of {mono['steps']}, bumps {mono['bumps']}, "
            f"bump height {_g(mono['bump_height'], 3)}\nsaved in {out}")
    if mono["monotone"] is None:
        text += "\nmonotonicity undecided: the train loss is NaN/inf somewhere on the path"
    if precision is not None:
        pr = summary["precision"]
        text += (f"\nadaptive: {pr['example_evaluations']} example evaluations, {pr['savings']:.3g}x fewer than exact"
                 if pr["savings"] else "")
    emit(args, summary, text)
    return 0


def _g(v: Any, digits: int = 4) -> str:
    """``v`` in ``.{digits}g``, or "n/a" for a missing (None) value."""
    return "n/a" if v is None else f"{v:.{digits}g}"


def _plot(alphas, res, path: Path, label: str) -> Path:
    from ..plot import InterpolationDisplay

    return save_figure(lambda: InterpolationDisplay.from_result(res, alphas=alphas, label=label), path, format="png",
                       dpi=120)
