"""``losslab train``: train a zoo model on a built-in dataset into a hash-named run directory."""
from __future__ import annotations

import argparse

from ..config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, SeedConfig, TrainConfig
from ._common import add_data_model_args, add_dataclass_args, dataclass_from_args, emit


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model and record its trajectory",
        description=(
            "Train a zoo model or your own (--model pkg.module:factory) on built-in data or yours (--data FILE or "
            "pkg.module:function), with a built-in loss or yours (--loss). The run lives in OUT/train-<hash>, the "
            "hash covering every non-default setting (your model, data and loss specs included): the same command "
            "reuses a finished run and resumes an interrupted one."
        ),
        epilog="example: losslab train --dataset mnist1d --model cnn1d --label-noise 0.2 --seed 3 --json   |   yours: "
               "losslab train --model mynets:make --data mydata.npz --loss token-cross-entropy",
    )
    add_data_model_args(p, training=True)
    add_dataclass_args(p, CheckpointConfig, title="trajectory")
    p.add_argument("--out", default="runs", help="parent directory of run directories (default: runs)")
    p.add_argument("--force", action="store_true", help="retrain even if a finished run exists")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: LOSSLAB_THREADS or 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train import train

    from pathlib import Path

    if args.dataset is not None and Path(args.dataset).exists():
        args.dataset = str(Path(args.dataset).resolve())  # a file: the run finds it from any directory
        if Path(args.dataset).is_file():  # its content is part of the run's hash
            from .._io import file_sha256

            args.dataset_sha256 = file_sha256(args.dataset)
    config = TrainConfig(
        data=dataclass_from_args(DataConfig, args),
        model=dataclass_from_args(ModelConfig, args),
        optim=dataclass_from_args(OptimConfig, args),
        seeds=dataclass_from_args(SeedConfig, args),
        ckpt=dataclass_from_args(CheckpointConfig, args),
    ).validate()
    already = False
    from ..runs import Run, run_dir_for

    already = Run(run_dir_for(config, args.out)).done and not args.force
    run = train(config, out=args.out, force=args.force, device=args.device, threads=args.threads,
                progress=False if args.no_progress else None)
    from ..evaluate._metrics import has_batchnorm

    s = dict(run.summary)
    s["reused"] = already
    # the trainer's metrics are eval-mode: BatchNorm with its running statistics (`evaluate --bn eval`)
    s["bn"] = "eval" if has_batchnorm(run.build_model()) else None
    text = (
        f"run {s['run_dir']}{' (reused)' if already else ''}\n"
        f"train loss {s['train_loss']:.4f}  error {s['train_error']:.4f}\n"
        f"test  loss {s['test_loss']:.4f}  error {s['test_error']:.4f}\n"
        f"{s['epochs']} epochs, {s['steps']} steps, {s['checkpoints']} checkpoints"
        + ("\nBatchNorm: metrics use the running statistics (as `losslab evaluate --bn eval`)" if s["bn"] else "")
    )
    emit(args, s, text)
    return 0
