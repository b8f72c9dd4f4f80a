"""Benchmark: mode connectivity on MNIST-1D (SURVEY.md C2, C3, C4), one CPU thread.

Part 1 (C2 + C4): two MLPs 40-512-512-10 trained independently (different init and data-order seeds)
with SGD to ~zero training error (``losslab.train.train``, cached in ``--out``). Then, on the test
split (BatchNorm-free model, so no statistics to recompute):

* ``linear``: the linear-path test-error barrier (max − mean of the endpoints, 25 points);
* ``bezier``: a quadratic Bezier curve (one bend) trained with ``losslab.connect.train_curve``
  (Garipov schedule, one t per mini-batch), evaluated at 61 points;
  target: barrier <= 1/3 of the linear one;
* ``aligned``: the linear barrier after weight matching (``losslab.connect.align``, verified outputs);
  target: at most half the linear one;
* ``neb`` (skip with ``--no-neb``): a short AutoNEB (``neb_path``, 4 cycles) for reference.

Part 2 (C3): instability analysis (``losslab.connect.instability``) of the zoo CNN1D on MNIST-1D,
SGD momentum 0.9, LR 0.2 constant, 20 epochs, children spawned at k = 0, 4, 16, 64, 256;
target: unstable at k = 0 (barrier > 0.02) and stable (< 0.02) by the last k.

Prints one JSON object (progress on stderr). Every part's wall time is reported; nothing is
asserted. Usage::

    .venv/bin/python bench/connect.py                     # ~5-8 min on one loaded core
    .venv/bin/python bench/connect.py --skip-instability --out /tmp/conn-runs
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def part_connect(out: Path, *, width: int, epochs: int, curve_epochs: int, neb: bool) -> dict[str, Any]:
    from losslab import params
    from losslab.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, SeedConfig, TrainConfig
    from losslab.connect import NEBCycle, align, linear_path, neb_path, train_curve
    from losslab.train import train

    res: dict[str, Any] = {"setup": {"dataset": "mnist1d", "model": f"mlp 40-{width}-{width}-10",
                                     "optimizer": "sgd lr 0.05 momentum 0.9 batch 128", "epochs": epochs}}
    t0 = time.perf_counter()
    runs = []
    for seed in (0, 1):
        cfg = TrainConfig(data=DataConfig("mnist1d"), model=ModelConfig("mlp", {"width": width, "depth": 2}),
                          optim=OptimConfig(lr=0.05, epochs=epochs, batch_size=128), seeds=SeedConfig(seed=seed),
                          ckpt=CheckpointConfig("none"))
        C.log(f"training MLP seed {seed}")
        runs.append(train(cfg, out=out, progress=False))
    res["train"] = {"seconds": round(time.perf_counter() - t0, 1),
                    "train_error": [r.summary["train_error"] for r in runs],
                    "test_error": [r.summary["test_error"] for r in runs]}
    model = runs[0].build_model()
    bundle = runs[0].bundle()
    pa = params.get_point(model, buffers=True)
    pb = params.get_point(runs[1].build_model(), buffers=True)

    C.log("linear path")
    t = C.timed(lambda: linear_path(model, bundle, point_a=pa, point_b=pb, num=25))
    lin = t.value
    b_lin = lin.barrier("error")
    res["linear"] = {"test_error_barrier": b_lin, "test_error_barrier_interp": lin.barrier("error", kind="interp"),
                     "test_loss_barrier": lin.barrier("loss"), "train_error_barrier": lin.barrier("error", split="train"),
                     "endpoints_test_error": [lin.barriers["test"]["error"]["start"], lin.barriers["test"]["error"]["end"]],
                     "points": 25, "seconds": round(t.wall, 2)}

    C.log("bezier curve")
    t = C.timed(lambda: train_curve(model, bundle, point_a=pa, point_b=pb, kind="bezier", num_bends=1, epochs=curve_epochs, lr=0.05,
                                    batch_size=128, seed=0, num=61))
    cur = t.value
    b_cur = cur.path.barrier("error")
    res["bezier"] = {"test_error_barrier": b_cur, "test_error_barrier_interp": cur.path.barrier("error", kind="interp"),
                     "test_loss_barrier": cur.path.barrier("loss"),
                     "train_error_barrier": cur.path.barrier("error", split="train"),
                     "epochs": curve_epochs, "points": 61, "train_seconds": cur.meta["train_seconds"],
                     "seconds": round(t.wall, 2), "ratio_to_linear": C.ratio(b_cur, b_lin)}

    C.log("weight matching + aligned linear path")
    t0 = time.perf_counter()
    al = align(model, bundle.train.x[:512], point_a=pa, point_b=pb)
    align_s = time.perf_counter() - t0
    t = C.timed(lambda: linear_path(model, bundle, point_a=pa, point_b=al.point_b_aligned, num=25))
    ali = t.value
    b_ali = ali.barrier("error")
    res["aligned"] = {"test_error_barrier": b_ali, "test_error_barrier_interp": ali.barrier("error", kind="interp"),
                      "test_loss_barrier": ali.barrier("loss"), "train_error_barrier": ali.barrier("error", split="train"),
                      "verified": al.verified, "max_abs_output_diff": al.max_abs_output_diff,
                      "matching_iterations": al.info.iterations, "align_seconds": round(align_s, 2),
                      "seconds": round(t.wall + align_s, 2), "ratio_to_linear": C.ratio(b_ali, b_lin),
                      "distance_before": lin.meta["distance"], "distance_after": ali.meta["distance"]}

    if neb:
        C.log("AutoNEB (4 cycles)")
        cycles = [NEBCycle(60, 0.05, 3, "equal"), NEBCycle(60, 0.05, 2), NEBCycle(60, 0.005, 2), NEBCycle(60, 0.005, 2)]
        t = C.timed(lambda: neb_path(model, bundle, point_a=pa, point_b=pb, cycles=cycles, batch_size=128, seed=0))
        r = t.value
        res["neb"] = {"test_error_barrier": r.path.barrier("error"), "test_loss_barrier": r.path.barrier("loss"),
                      "train_loss_saddle": r.saddle_value, "train_loss_linear_saddle": r.linear_saddle,
                      "pivots": int(r.pivots.shape[0]), "cycles": len(cycles), "steps_per_cycle": 60,
                      "points": int(r.path.alphas.size), "seconds": round(t.wall, 2)}
    res["targets"] = {"bezier_le_third_of_linear": b_cur <= b_lin / 3,
                      "aligned_le_half_of_linear": b_ali <= b_lin / 2,
                      "endpoints_fit_train": max(res["train"]["train_error"]) <= 0.01}
    return res


def part_instability(out: Path, *, epochs: int, lr: float, ks: list[int]) -> dict[str, Any]:
    from losslab.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
    from losslab.connect import instability

    cfg = TrainConfig(data=DataConfig("mnist1d"), model=ModelConfig("cnn1d", {}),
                      optim=OptimConfig(lr=lr, epochs=epochs, batch_size=128, momentum=0.9),
                      ckpt=CheckpointConfig("none"))
    C.log(f"instability sweep k = {ks}")
    t = C.timed(lambda: instability(cfg, ks, out=out, num=30, threshold=0.02, progress=True))
    r = t.value
    s = r.summary()
    b = r.barriers("error")
    return {"setup": {"dataset": "mnist1d", "model": "cnn1d (zoo defaults)", "optimizer": f"sgd lr {lr} momentum 0.9 batch 128",
                      "epochs": epochs, "total_steps": r.total_steps, "points": 30, "threshold": 0.02},
            "sweep": [{"k": row["k"], "test_error_barrier": row["test_error_barrier"],
                       "test_error_barrier_interp": row["test_error_barrier_interp"],
                       "children_test_error": row["test_error_children"]} for row in s["sweep"]],
            "stable_step": s["stable_step"], "stable_from": s["stable_from"], "reused": bool(r.meta.get("reused")),
            "seconds": round(t.wall, 1),
            "targets": {"unstable_at_k0": bool(b[0] > 0.02), "stable_at_last_k": bool(b[-1] < 0.02)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="run/cache directory (default: a fresh temporary directory)")
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=30, help="MLP training epochs")
    ap.add_argument("--curve-epochs", type=int, default=10)
    ap.add_argument("--no-neb", action="store_true")
    ap.add_argument("--skip-instability", action="store_true")
    ap.add_argument("--inst-epochs", type=int, default=20)
    ap.add_argument("--inst-lr", type=float, default=0.2)
    ap.add_argument("--spawn-at", type=int, nargs="+", default=[0, 4, 16, 64, 256])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json-out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    C.set_threads(args.threads)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="losslab-bench-connect-"))
    result: dict[str, Any] = {"bench": "connect", "machine": C.machine_info(), "out": str(out)}
    t0 = time.perf_counter()
    result["connectivity"] = part_connect(out, width=args.width, epochs=args.epochs, curve_epochs=args.curve_epochs,
                                          neb=not args.no_neb)
    if not args.skip_instability:
        result["instability"] = part_instability(out, epochs=args.inst_epochs, lr=args.inst_lr, ks=args.spawn_at)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["machine"]["load_average_end"] = C.load_average()
    C.emit(C.rounded(result), args.json_out)


if __name__ == "__main__":
    main()
