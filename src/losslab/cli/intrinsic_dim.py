"""``losslab intrinsic-dim``: the intrinsic dimension of a built-in dataset/model pair (Li et al. 2018)."""
from __future__ import annotations

import argparse
import math
from typing import Any

from ..config import DataConfig, ModelConfig, SeedConfig, TrainConfig
from ..errors import LosslabError
from ._common import add_data_model_args, dataclass_from_args, emit

# Dense projections up to this many matrix entries (64 MiB in float32); larger ones use sparse.
AUTO_DENSE_ENTRIES = 1 << 24


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..config import INTRINSIC_DIMS as DEFAULT_DIMS

    p = sub.add_parser(
        "intrinsic-dim",
        help="intrinsic dimension: train in random d-dim subspaces, find d_int90",
        description=(
            "Train fresh models in random d-dimensional subspaces theta = theta0 + P theta_d for a grid of d "
            "and several seeds, train the same models in the full space as the baseline, and report d_int90: "
            "the smallest d whose mean accuracy reaches 90% of the baseline, interpolated in log d between "
            "the bracketing grid values (Li, Farkhoor, Liu & Yosinski 2018). With --out the result is saved "
            "after every run and an interrupted sweep resumes."
        ),
        epilog="example: losslab intrinsic-dim --dataset digits --model mlp --model-kwargs width=64 depth=1 "
               "--json --plot id.png",
    )
    add_data_model_args(p)
    g = p.add_argument_group("subspace sweep")
    g.add_argument("--dims", type=int, nargs="+", default=None, metavar="D",
                   help=f"subspace dimensions (default: {' '.join(map(str, DEFAULT_DIMS))}, capped at the model's D)")
    g.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="S",
                   help="seeds: init, data order and projection per run (default: 0 1 2)")
    g.add_argument("--projection", choices=("auto", "dense", "sparse", "fastfood"), default="auto",
                   help=f"random projection (default auto: dense when D x max(d) <= {AUTO_DENSE_ENTRIES}, else sparse)")
    g.add_argument("--origin", action="store_true",
                   help="subspaces through the origin (spanned by theta0 and d-1 random directions)")
    g.add_argument("--epochs", type=int, default=20, help="training epochs per run (default 20)")
    g.add_argument("--lr", type=float, default=0.05, help="subspace learning rate (default 0.05)")
    g.add_argument("--optimizer", choices=("adam", "sgd", "rmsprop"), default="adam", help="optimizer (default adam)")
    g.add_argument("--batch-size", type=int, default=128, help="mini-batch size, 0 = full batch (default 128)")
    g.add_argument("--baseline", type=float, default=None,
                   help="known full-space accuracy (default: train each seed's model in the full space)")
    g.add_argument("--baseline-lr", type=float, default=0.003, help="full-space learning rate (default 0.003)")
    g.add_argument("--baseline-epochs", type=int, default=None, help="full-space epochs (default: --epochs)")
    g.add_argument("--threshold", type=float, default=0.9, help="fraction of the baseline to reach (default 0.9)")
    g.add_argument("--metric", choices=("auto", "test_accuracy", "train_accuracy"), default="auto",
                   help="accuracy compared (default auto: train accuracy with --label-noise > 0, else test)")
    g.add_argument("--label-seed", type=int, default=0, help="seed of label noise/poisoning/subsampling (default 0)")
    p.add_argument("--out", default=None, help="save the result as OUT.npz + OUT.json (resumes if present)")
    p.add_argument("--plot", default=None, metavar="PATH", help="write accuracy vs d (log x) with the 90%% line")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: LOSSLAB_THREADS or 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=run)


def _fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4f}"


def run(args: argparse.Namespace) -> int:
    from .. import models
    from ..subspace import DEFAULT_DIMS, IntrinsicDimDisplay, intrinsic_dimension
    from ..train import build_bundle

    data_cfg = dataclass_from_args(DataConfig, args)
    model_cfg = dataclass_from_args(ModelConfig, args)
    cfg = TrainConfig(data=data_cfg, model=model_cfg, seeds=SeedConfig(seed=args.label_seed))
    if not 0.0 <= data_cfg.label_noise <= 1.0:
        raise LosslabError(f"label noise p must be in [0, 1], got {data_cfg.label_noise}")
    if args.epochs < 1:
        raise LosslabError(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 0:
        raise LosslabError(f"--batch-size must be >= 0, got {args.batch_size}")
    bundle = build_bundle(cfg)

    def factory(seed: int):
        return models.build(model_cfg.model, input_shape=tuple(bundle.input_shape), num_classes=bundle.num_classes,
                            seed=seed, **model_cfg.model_kwargs)

    D = sum(p.numel() for p in factory(args.seeds[0]).parameters() if p.requires_grad)
    dims = args.dims if args.dims is not None else [d for d in DEFAULT_DIMS if d <= D]
    if not dims:
        raise LosslabError(f"no default dimension fits the model's D={D}; pass --dims")
    projection = args.projection
    if projection == "auto":
        projection = "dense" if D * max(dims) <= AUTO_DENSE_ENTRIES else "sparse"
    metric = args.metric
    if metric == "auto":
        metric = "train_accuracy" if data_cfg.label_noise > 0 else "test_accuracy"
    result = intrinsic_dimension(
        factory, bundle, dims=dims, seeds=args.seeds, projection=projection, epochs=args.epochs, lr=args.lr,
        optimizer=args.optimizer, batch_size=args.batch_size or None, baseline=args.baseline,
        baseline_lr=args.baseline_lr, baseline_epochs=args.baseline_epochs, threshold=args.threshold,
        metric=metric, origin=args.origin, path=args.out, progress=False if args.no_progress else None,
        device=args.device,
    )
    plot_path = None
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        disp = IntrinsicDimDisplay.from_result(
            result, title=f"{bundle.name} / {model_cfg.model} (D={D}, {projection}"
                          f"{', p=' + str(data_cfg.label_noise) if data_cfg.label_noise else ''})")
        plot_path = str(disp.savefig(args.plot))
        plt.close(disp.figure_)
    s = result.summary()
    s.update({"dataset": bundle.name, "model": model_cfg.model, "model_kwargs": model_cfg.model_kwargs,
              "label_noise": data_cfg.label_noise, "origin": bool(args.origin), "epochs": args.epochs,
              "lr": args.lr, "baseline_lr": args.baseline_lr,
              "out": None if args.out is None else str(args.out), "plot": plot_path})
    lines = [f"{bundle.name} / {model_cfg.model}: D={D}, {projection} projection, {metric}, seeds {args.seeds}",
             f"{'d':>8}  {'mean':>7}  {'std':>7}"]
    for d, m, sd in zip(s["dims"], s["mean"], s["std"]):
        lines.append(f"{d:>8}  {_fmt(m):>7}  {_fmt(sd):>7}")
    lines.append(f"baseline (full space) {_fmt(s['baseline'])}, target {args.threshold:g} x baseline = {_fmt(s['target'])}")
    c = result.crossing()
    if c["status"] == "interpolated":
        lines.append(f"d_int{round(100 * args.threshold)} = {c['d']:.1f} (between {c['d_lo']:.0f} and {c['d_hi']:.0f})")
    elif c["status"] == "at_first":
        lines.append(f"d_int{round(100 * args.threshold)} <= {c['d']:.0f} (reached at the smallest d)")
    elif c["status"] == "not_reached":
        lines.append(f"d_int{round(100 * args.threshold)} > {c['d_lo']:.0f}: not reached within the grid (inconclusive)")
    else:
        lines.append("d_int undetermined (no finished runs)")
    if plot_path:
        lines.append(f"plot: {plot_path}")
    emit(args, s, "\n".join(lines))
    return 0
