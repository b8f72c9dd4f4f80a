"""``losslab ntk``: empirical NTK along a run's trajectory (kernel distance and velocity) and, optionally,
training the model linearized at several checkpoints (Fort et al. 2020)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import LosslabError
from ._common import add_probe_output_args, emit, settings_hash
from ._load import add_loss_args, run_loss_defaults, target_loss


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ntk",
        help="empirical NTK along a run: kernel distance, kernel velocity, linearized training",
        description=(
            "Compute the empirical neural tangent kernel on a random subset of the data at every saved "
            "checkpoint of a run, the kernel distance 1 - <K1,K2>_F/(|K1||K2|) between consecutive "
            "checkpoints and the kernel velocity (distance per optimizer step and per unit of ln(1+step)). "
            "With --linearize, also train the model linearized at checkpoints (f(θt) + J(θt)(θ-θt)) and the "
            "full network from the same points with the same SGD loop, and compare test errors."
        ),
        epilog="example: losslab ntk runs/train-<hash> --n-examples 100 --linearize --plot --json",
    )
    p.add_argument("target", metavar="RUN_DIR", help="a losslab run directory (its saved trajectory is used)")
    p.add_argument("--n-examples", type=int, default=100, help="examples the kernel is computed on (default 100)")
    p.add_argument("--split", choices=("train", "test"), default="test", help="data split (default test)")
    p.add_argument("--mode", choices=("trace", "full", "diagonal"), default="trace",
                   help="kernel over outputs: trace (N x N, default), full (NK x NK) or diagonal (N x N x K)")
    p.add_argument("--method", choices=("jacobian", "ntvp"), default="jacobian",
                   help="materialize per-example Jacobians (default) or use vjp/jvp products chunk by chunk")
    p.add_argument("--chunk-size", type=int, default=64, help="examples per vectorized call (default 64)")
    p.add_argument("--max-checkpoints", type=int, default=None, help="use at most this many checkpoints")
    p.add_argument("--linearize", action="store_true", help="also train linearized models (see --linearize-at)")
    p.add_argument("--linearize-at", type=int, nargs="+", default=None, metavar="STEP",
                   help="checkpoint steps to linearize at (default: the first and the one nearest 1/4 of training)")
    p.add_argument("--linear-epochs", type=int, default=None, help="epochs of linearized training (default: the run's)")
    p.add_argument("--linear-lr", type=float, default=None, help="SGD learning rate (default: the run's)")
    p.add_argument("--n-train", type=int, default=None, help="train the linearized models on a random subset")
    p.add_argument("--seed", type=int, default=0, help="seed of the data subsets and the SGD order (default 0)")
    add_probe_output_args(p, "ntk")
    add_loss_args(p, bn=True)  # --bn for the kernels; the loss of --linearize's training (default: the run's)
    p.set_defaults(func=run)


def _name(args: argparse.Namespace) -> str:
    keys = ("n_examples", "split", "mode", "method", "max_checkpoints", "linearize", "linearize_at", "linear_epochs",
            "linear_lr", "n_train", "seed")
    loss = {k: getattr(args, k) for k in ("loss", "output_key") if getattr(args, k, None)}  # names kept when unset
    if getattr(args, "bn", "recompute") != "recompute":
        loss["bn"] = args.bn  # the default keeps the names of before
    return "ntk-" + settings_hash(args, keys, **loss)


def run(args: argparse.Namespace) -> int:
    from ..probes import linearized_vs_full, run_kernel_velocity
    from ..runs import Run

    path = Path(args.target)
    if not path.is_dir():
        raise LosslabError(f"{args.target} is not a run directory (ntk needs a run's trajectory)")
    r = Run.open(path)
    if len(r.checkpoints()) < 2:
        raise LosslabError(f"run {path} has fewer than 2 checkpoints; train with --checkpoints log:N or epoch:K")
    if args.n_examples < 1:
        raise LosslabError(f"--n-examples must be >= 1, got {args.n_examples}")
    out = Path(args.out) if args.out else path / "probes" / _name(args)
    out.mkdir(parents=True, exist_ok=True)
    vel = run_kernel_velocity(r, n_examples=args.n_examples, split=args.split, seed=args.seed,
                              max_checkpoints=args.max_checkpoints, mode=args.mode, method=args.method,
                              chunk_size=args.chunk_size, bn=args.bn)
    files: dict[str, str] = {"velocity": str(vel.save(out / "kernel_velocity"))}
    lin = None
    if args.linearize or args.linearize_at:
        run_loss_defaults(args, r.config)
        lin = linearized_vs_full(r, args.linearize_at, epochs=args.linear_epochs, lr=args.linear_lr, seed=args.seed,
                                 n_train=args.n_train, loss_fn=target_loss(args, r.bundle()))
        files["linearization"] = str(lin.save(out / "linearization"))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        from ..probes import NTKDisplay

        disp = NTKDisplay.from_result(vel, lin)
        files["png"] = str(disp.savefig(out / "ntk.png"))
        disp.close()
    summary: dict[str, Any] = {
        "run_dir": str(path), "out": str(out), "files": files, "mode": args.mode, "method": args.method,
        "n_examples": vel.meta["n_examples"], "split": args.split, "bn": vel.meta["bn"], "steps": vel.steps.tolist(),
        "distance": vel.distance.tolist(), "velocity_step": vel.velocity_step.tolist(),
        "velocity_logstep": vel.velocity_logstep.tolist(), "distance_from_init": vel.distance_from_init.tolist(),
        **vel.summary, "seconds": vel.meta["seconds"],
    }
    text = (f"NTK ({args.mode}) on {vel.meta['n_examples']} {args.split} examples at {len(vel.steps)} checkpoints, "
            f"BatchNorm {vel.meta['bn']} -> {out}\n"
            f"kernel distance init -> final: {vel.summary['distance_init_to_final']:.4f}\n"
            f"velocity per step: early {vel.summary['velocity_step_early']:.3g}, late {vel.summary['velocity_step_late']:.3g}")
    if lin is not None:
        summary["linearization"] = {
            "steps": lin.steps.tolist(), "linear_test_error": lin.linear_test_error.tolist(),
            "full_test_error": lin.full_test_error.tolist(), "start_test_error": lin.start_test_error.tolist(),
            **lin.summary, "settings": {k: lin.meta[k] for k in ("epochs", "lr", "batch_size", "momentum", "n_train")},
        }
        for s, a, b in zip(lin.steps, lin.linear_test_error, lin.full_test_error):
            text += f"\nlinearized at step {s}: test error {a:.4f} (full network from there: {b:.4f})"
    text += "".join(f"\n  {k}: {v}" for k, v in files.items())
    from ..results import jsonable

    emit(args, jsonable(summary), text)
    return 0
