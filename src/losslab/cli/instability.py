"""``losslab instability``: when does linear mode connectivity emerge (Frankle et al. 2020)?"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import DataConfig, ModelConfig, OptimConfig, SeedConfig, TrainConfig
from ._common import add_data_model_args, dataclass_from_args, emit, save_figure


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "instability",
        help="instability analysis: barrier between two children spawned at step k, swept over k",
        description=(
            "Train a parent k steps, spawn two children that differ only in data order (weights, optimizer state "
            "and schedule are copied), train both to the end and measure the linear test-error barrier between "
            "them (max - mean of the endpoints, --num points). Sweeping k shows when training becomes stable. "
            "Results are cached in OUT/instability-<hash>; rerunning the same command is instant."
        ),
        epilog="example: losslab instability --dataset mnist1d --model cnn1d --lr 0.2 --epochs 20 "
               "--spawn-at 0 4 16 64 256 --json",
    )
    add_data_model_args(p, training=True)
    p.add_argument("--spawn-at", type=int, nargs="+", default=[0, 1, 4, 16, 64, 256], metavar="K",
                   help="optimizer steps at which to spawn the children (default: 0 1 4 16 64 256)")
    p.add_argument("--threshold", type=float, default=0.02, help="stability threshold on the error barrier (0.02)")
    p.add_argument("--num", type=int, default=30, help="points on each linear path (default 30)")
    p.add_argument("--child-seeds", type=int, nargs=2, default=[1, 2], metavar=("C1", "C2"),
                   help="ids of the two children's data orders (default 1 2)")
    p.add_argument("--splits", nargs="+", choices=["train", "test"], default=["test"],
                   help="splits evaluated along the paths (default: test)")
    p.add_argument("--out", default="runs", help="parent directory of the cache directory (default: runs)")
    p.add_argument("--force", action="store_true", help="recompute even if cached")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: LOSSLAB_THREADS or 1)")
    p.add_argument("--plot", default=None, metavar="PATH", help="plot the barrier against k")
    p.add_argument("--progress", action="store_true", help="one line per spawn step on stderr")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..connect.instability import instability

    config = TrainConfig(
        data=dataclass_from_args(DataConfig, args),
        model=dataclass_from_args(ModelConfig, args),
        optim=dataclass_from_args(OptimConfig, args),
        seeds=dataclass_from_args(SeedConfig, args),
    ).validate()
    res = instability(config, args.spawn_at, out=args.out, threshold=args.threshold, num=args.num,
                      child_seeds=tuple(args.child_seeds), splits=tuple(args.splits), device=args.device,
                      threads=args.threads, force=args.force, progress=args.progress)
    s = res.summary()
    s["reused"] = bool(res.meta.get("reused", False))
    split = s["split"]
    lines = [f"instability sweep in {s['run_dir']}{' (reused)' if s['reused'] else ''}  ({s['total_steps']} steps)",
             f"{'k':>8}  {split} error barrier  (interp)  children's {split} error"]
    for r in s["sweep"]:
        ch = ", ".join(f"{e:.4f}" for e in r[f"{split}_error_children"])
        lines.append(f"{r['k']:>8}  {r[f'{split}_error_barrier']:.4f}  ({r[f'{split}_error_barrier_interp']:.4f})  {ch}")
    stable = s["stable_step"]
    lines.append(f"stable (barrier < {args.threshold:g}) from k = {stable}" if stable is not None
                 else f"no swept k has a barrier below {args.threshold:g}")
    if args.plot:
        s["plot"] = str(_plot(res, args.plot))
        lines.append(f"plot: {s['plot']}")
    emit(args, s, "\n".join(lines))
    return 0


def _plot(res, path: str) -> Path:
    from ..plot import InstabilityDisplay

    return save_figure(lambda: InstabilityDisplay.from_result(res), path)
