"""Benchmark: intrinsic dimension of a digits MLP (Li et al. 2018), clean vs random labels, plus the
cost of one projection step for each projection kind.

Cases (one process, one torch thread, results as one JSON object on stdout, progress on stderr):

* ``clean``: zoo MLP 64-64-10 (D = 4810) on digits' 1347 training examples; dense projections,
  d in 10 20 50 100 200 500 1000, seeds 0 1 2, Adam (lr 0.05 on theta_d, 0.003 full space), 20 epochs,
  batch 128; ``d_int90`` on test accuracy (SURVEY.md D1 pilot: about 160).
* ``random_labels``: the same model with every training label replaced by a random class (p = 1);
  d up to 4096 (Fastfood, which stays cheap at large d), seeds 0 1, 40 epochs for subspace and
  full-space training alike; ``d_int90`` on *train* accuracy (memorisation), expected far larger than
  clean or not reached within the grid.
* ``projection_step``: wall seconds of one forward + backward of ``P(theta_d)`` for dense, sparse and
  Fastfood at D = 85002 (the zoo's default digits MLP 64-256-256-10) and d = 1000.

Usage::

    .venv/bin/python bench/intrinsic_dim.py                 # everything (a few minutes on one core)
    .venv/bin/python bench/intrinsic_dim.py --quick         # smoke run: 2 dims, 1 seed, 3 epochs
    .venv/bin/python bench/intrinsic_dim.py --out id.json --save-dir results/
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import emit, load_average, log, machine_info, rounded, set_threads, timed  # noqa: E402

from losslab import data, models  # noqa: E402
from losslab.subspace import intrinsic_dimension, make_projection  # noqa: E402


def sweep(name: str, bundle: Any, width: int, *, dims: list[int], seeds: list[int], epochs: int, projection: str,
          metric: str, save_dir: Path | None) -> dict[str, Any]:
    def factory(seed: int) -> torch.nn.Module:
        return models.build("mlp", input_shape=bundle.input_shape, num_classes=bundle.num_classes, seed=seed,
                            width=width, depth=1)

    log(f"{name}: dims {dims}, seeds {seeds}, {epochs} epochs, {projection}")
    path = None if save_dir is None else save_dir / f"intrinsic_dim_{name}"
    t = timed(lambda: intrinsic_dimension(
        factory, bundle, dims=dims, seeds=seeds, projection=projection, epochs=epochs, lr=0.05, baseline_lr=0.003,
        batch_size=128, metric=metric, path=path, progress=False,
        callback=lambda r: log(f"  {name}: {r.n_done}/{r.done.size} cells"),
    ))
    r = t.value
    s = r.summary()
    return {
        "model": f"mlp 64-{width}-10", "D": s["D"], "projection": projection, "metric": metric, "epochs": epochs,
        "dims": s["dims"], "seeds": s["seeds"], "d_int90": s["d_int90"], "d_int90_bracket": s["d_int90_bracket"],
        "status": s["d_int90_status"], "baseline": s["baseline"], "baseline_per_seed": s["baseline_per_seed"],
        "target": s["target"], "mean": s["mean"], "std": s["std"], "per_seed_d_int90": s["per_seed_d_int"],
        "mean_test_accuracy": s["mean_test_accuracy"], "mean_train_accuracy": s["mean_train_accuracy"],
        "seconds_wall": t.wall, "seconds_cpu": t.cpu,
        "seconds_per_run": t.wall / (r.done.size + int(r.baseline_done.sum())),
    }


def projection_step(D: int, d: int, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {"D": D, "d": d}
    for kind in ("dense", "sparse", "fastfood"):
        tb = timed(lambda: make_projection(kind, D, d, seed=0))
        P = tb.value
        z = torch.randn(d, requires_grad=True)
        P(z).sum().backward()  # warm-up
        times = []
        for _ in range(repeats):
            t = timed(lambda: P(z).sum().backward())
            times.append(t.wall)
        out[kind] = {"build_s": tb.wall, "step_s_median": sorted(times)[len(times) // 2], "step_s_min": min(times)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (tiny grid, 1 seed, 3 epochs)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-random", action="store_true", help="only the clean-label sweep")
    ap.add_argument("--save-dir", default=None, help="save the sweeps (.npz + .json) here; reruns resume")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    save_dir = Path(args.save_dir) if args.save_dir else None
    t0 = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "intrinsic_dim", "machine": machine_info(), "quick": args.quick}
    clean = data.load("digits")
    if args.quick:
        result["clean"] = sweep("clean", clean, 64, dims=[50, 200], seeds=[0], epochs=3, projection="dense",
                                metric="test_accuracy", save_dir=save_dir)
    else:
        result["clean"] = sweep("clean", clean, 64, dims=[10, 20, 50, 100, 200, 500, 1000], seeds=[0, 1, 2],
                                epochs=20, projection="dense", metric="test_accuracy", save_dir=save_dir)
    if not args.skip_random:
        noisy = data.corrupt_labels(clean, 1.0, seed=0)
        if args.quick:
            result["random_labels"] = sweep("random_labels", noisy, 64, dims=[200, 1000], seeds=[0], epochs=3,
                                            projection="fastfood", metric="train_accuracy", save_dir=save_dir)
        else:
            result["random_labels"] = sweep("random_labels", noisy, 64, dims=[100, 200, 500, 1000, 2000, 4096],
                                            seeds=[0, 1], epochs=40, projection="fastfood",
                                            metric="train_accuracy", save_dir=save_dir)
    log("projection step timings")
    result["projection_step"] = projection_step(85002, 1000, 3 if args.quick else 10)
    c = result["clean"]
    result["checks"] = {
        "clean_d_int90_found": c["d_int90"] is not None,
        "clean_d_int90_near_pilot_160": c["d_int90"] is not None and 50 <= c["d_int90"] <= 500,
    }
    if "random_labels" in result:
        rl = result["random_labels"]
        result["checks"]["random_labels_larger_or_not_reached"] = (
            rl["d_int90"] is None or (c["d_int90"] is not None and rl["d_int90"] > 2 * c["d_int90"]))
    result["machine"]["load_average_end"] = load_average()
    result["seconds_total"] = time.perf_counter() - t0
    emit(rounded(result), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
