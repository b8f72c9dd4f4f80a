"""``losslab trajectory``: the run's path projected on its PCA plane, over the loss contours there."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import LosslabError
from ._common import emit
from ._load import add_loss_args, evaluator_loss, loss_description, run_loss_defaults


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "trajectory",
        help="PCA plane of a run's checkpoints, the projected path and the loss around it",
        description=(
            "PCA of the checkpoints' displacements from the final weights (Li et al. 2018, sec. 7): "
            "explained variance, each checkpoint's coordinates in the plane and its residual distance out "
            "of it (how much the 2-D picture hides), and the loss contours over the plane."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a losslab run directory with >= 3 checkpoints")
    p.add_argument("--grid", type=int, default=21, help="grid points per axis (default 21; 0: no surface)")
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--out", default=None, help="output directory (default RUN_DIR/trajectory)")
    p.add_argument("--plot", action="store_true", help="write trajectory.png")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    add_loss_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import params as P
    from ..directions import pca_directions
    from ..runs import Run
    from ..surface import plane

    run_ = Run.open(args.run_dir)
    traj = run_.trajectory()
    if len(traj) < 3:
        raise LosslabError(f"{args.run_dir} has {len(traj)} checkpoints; PCA of a trajectory needs at least 3")
    model = run_.build_model()
    bundle = run_.bundle()
    run_loss_defaults(args, run_.config)
    final = P.get_point(model)
    pca = pca_directions([pt for _, pt in traj], center=final, n_components=2)
    out = Path(args.out) if args.out else run_.path / "trajectory"
    out.mkdir(parents=True, exist_ok=True)
    pca.save(out / "pca")
    surf = None
    if args.grid:
        c = np.asarray(pca.coords)
        lo, hi = c.min(axis=0), c.max(axis=0)
        pad = 0.25 * np.maximum(hi - lo, 1e-3)
        data = getattr(bundle, args.split)
        surf = plane(model, data, dx=pca.directions[0], dy=pca.directions[1],
                     x=np.linspace(lo[0] - pad[0], hi[0] + pad[0], args.grid),
                     y=np.linspace(lo[1] - pad[1], hi[1] + pad[1], args.grid),
                     loss=evaluator_loss(args, bundle), bn=args.bn,
                     **({"bn_data": bundle.train} if args.split == "test" else {}),
                     progress=not args.no_progress, checkpoint_path=out / "surface", resume_from=out / "surface")
    summary = {
        "run_dir": str(run_.path), "steps": [s for s, _ in traj],
        "explained_variance_ratio": [float(v) for v in pca.explained_variance_ratio],
        "coords": np.asarray(pca.coords).tolist(), "residual": np.asarray(pca.residual).tolist(),
        "max_residual_over_path_length": float(np.max(pca.residual) / max(P.distance(traj[0][1], final), 1e-12)),
        "out": str(out), **loss_description(args, bundle),
    }
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from ..plot import TrajectoryDisplay

        disp = TrajectoryDisplay.from_result(pca, surf)
        summary["plot"] = str(disp.savefig(out / "trajectory.png", dpi=120, bbox_inches="tight"))
        plt.close(disp.figure_)
    ev = summary["explained_variance_ratio"]
    text = (f"{len(traj)} checkpoints; PCA plane explains {100 * sum(ev):.1f}% "
            f"(PC1 {100 * ev[0]:.1f}%, PC2 {100 * ev[1]:.1f}%); largest residual out of the plane "
            f"{max(summary['residual']):.4g}\nloss {summary['loss_fn']}, BatchNorm {args.bn}; saved in {out}")
    emit(args, summary, text)
    return 0
