"""Benchmark / small-scale reproduction of the probe findings (SURVEY rows C5, C6, C7, C11), one torch thread.

Prints one JSON object on stdout (progress on stderr); never asserts, the survey's checks are reported as
booleans under ``"checks"``:

* ``stiffness_digits`` (C7): zoo MLP 64-128-128-10 trained on digits (SGD, 20 epochs); cosine and sign
  stiffness of 20 training examples per class at init and at the end; check: within-class > between-class
  at the end. Also the gradient noise scale B_simple at both points.
* ``ntk_mnist1d`` (C6): MLP 40-256-256-10 on MNIST-1D (SGD 0.05, momentum 0.9, 30 epochs, 24 log-spaced
  checkpoints); trace-NTK on 100 test examples at every checkpoint; kernel velocity per step, mean over
  the first vs second half of the transitions; check: late < early. Then the model linearized at init
  and at the checkpoint nearest 1/4 of training is trained with the run's SGD settings for 10 epochs
  (and the full network from the same points with the same loop); check: linearizing later gives a
  lower test error.
* ``diversity_mnist1d`` (C5): 3 independent runs of the MNIST-1D MLP (seeds 0-2, checkpoints every
  epoch); disagreement across runs vs within a trajectory at similar accuracy (non-final checkpoints
  within 0.01 of their run's final test accuracy), and
  ensembles (independent / last checkpoints of one run / subspace samples); checks: across > within,
  independent ensemble > trajectory ensemble.
* ``completion_2x2`` (C11): deep factorization of Razin & Cohen's 2x2 completion at depths 2, 3, 4
  (20000 normalized GD steps, init 0.1 I); check at depth 3: loss falls while |w11|, the nuclear and
  Frobenius norms grow.
* ``timing``: per-example gradients of 200 digits examples, ``vmap(grad)`` vs a loop of backward passes.

Usage::

    .venv/bin/python bench/probes.py [--out probes.json] [--runs DIR]   # ~2-4 min on one core
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import _common as C  # noqa: E402
from losslab import params as P  # noqa: E402
from losslab.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, SeedConfig, TrainConfig  # noqa: E402
from losslab.probes import (  # noqa: E402
    deep_matrix_completion, diversity, gradient_noise, linearized_vs_full, per_example_grads, run_kernel_velocity,
    stiffness,
)
from losslab.train import train  # noqa: E402


def digits_cfg(seed: int, ckpt: str = "log:8") -> TrainConfig:
    return TrainConfig(data=DataConfig(dataset="digits"), model=ModelConfig(model_kwargs={"width": 128, "depth": 2}),
                       optim=OptimConfig(epochs=20, lr=0.05), seeds=SeedConfig(seed=seed),
                       ckpt=CheckpointConfig(checkpoints=ckpt))


def mnist1d_cfg(seed: int, ckpt: str) -> TrainConfig:
    return TrainConfig(data=DataConfig(dataset="mnist1d"), model=ModelConfig(model_kwargs={"width": 256, "depth": 2}),
                       optim=OptimConfig(epochs=30, lr=0.05), seeds=SeedConfig(seed=seed),
                       ckpt=CheckpointConfig(checkpoints=ckpt))


def stiffness_case(out: Path) -> dict[str, Any]:
    C.log("stiffness: training digits MLP")
    run = train(digits_cfg(0), out=out, progress=False)
    res: dict[str, Any] = {"run_test_error": run.summary["test_error"]}
    bundle = run.bundle()
    steps = [s for s, _ in run.checkpoints()]
    for name, step in (("init", steps[0]), ("final", steps[-1])):
        model = run.build_model(step)
        t = C.timed(lambda: stiffness(model, bundle.train, n_per_class=20, seed=0))
        r = t.value
        noise = gradient_noise(model, bundle.train, n_examples=512, k=5, seed=0)
        res[name] = {"step": step, **{k: r.summary[k] for k in ("within_cos", "between_cos", "within_sign",
                                                                 "between_sign", "gap_cos", "zero_crossing_distance")},
                     "b_simple": noise.b_simple, "top_cov_eigs": noise.eigenvalues[:3].tolist(),
                     "seconds": t.wall}
    return res


def ntk_case(out: Path) -> dict[str, Any]:
    C.log("ntk: training MNIST-1D MLP")
    run = train(mnist1d_cfg(0, "log:24"), out=out, progress=False)
    C.log("ntk: kernel velocity")
    t = C.timed(lambda: run_kernel_velocity(run, n_examples=100, split="test", seed=0))
    v = t.value
    res: dict[str, Any] = {
        "run_test_error": run.summary["test_error"], "steps": v.steps.tolist(),
        "velocity_step": v.velocity_step.tolist(), "velocity_logstep": v.velocity_logstep.tolist(),
        **{k: v.summary[k] for k in ("velocity_step_early", "velocity_step_late", "velocity_logstep_early",
                                     "velocity_logstep_late", "distance_init_to_final")},
        "kernel_velocity_seconds": t.wall,
    }
    C.log("ntk: linearized vs full training")
    t = C.timed(lambda: linearized_vs_full(run, epochs=10, seed=0))
    lz = t.value
    res["linearization"] = {"steps": lz.steps.tolist(), "linear_test_error": lz.linear_test_error.tolist(),
                            "full_test_error": lz.full_test_error.tolist(),
                            "start_test_error": lz.start_test_error.tolist(), "epochs": 10, "seconds": t.wall}
    return res


def diversity_case(out: Path) -> dict[str, Any]:
    C.log("diversity: training 3 MNIST-1D MLPs")
    runs = [train(mnist1d_cfg(s, "epoch:1"), out=out, progress=False) for s in (0, 1, 2)]
    t = C.timed(lambda: diversity(runs, seed=0, tail=5))
    r = t.value
    s = r.summary
    return {"final_accuracy": r.final_accuracy.tolist(), "across_run_disagreement": s["across_run_disagreement"],
            "within_trajectory_disagreement": s["within_trajectory_disagreement"],
            "within_trajectory_matched_checkpoints": s["within_trajectory_matched_checkpoints"],
            "across_run_js": s["across_run_js"], "across_run_weight_cosine": s["across_run_weight_cosine"],
            "ensemble_accuracy": s["ensemble_accuracy"], "subspace_samples": s["subspace_samples"],
            "seconds": t.wall}


def completion_case() -> dict[str, Any]:
    out = {}
    for depth in (2, 3, 4):
        C.log(f"2x2 completion depth {depth}")
        r = deep_matrix_completion(depth, steps=20000)
        out[f"depth{depth}"] = {**r.summary(), "det_last": float(r.det[-1]), "seconds": r.meta["seconds"],
                                "w11_last": float(r.product[0, 0])}
    return out


def timing_case() -> dict[str, Any]:
    from losslab import data, models

    b = data.load("digits")
    model = models.build("mlp", input_shape=tuple(b.input_shape), num_classes=10, seed=0, width=128, depth=2)
    x, y = b.train.x[:200], b.train.y[:200]
    per_example_grads(model, (x[:8], y[:8]))  # warm-up

    def loop() -> torch.Tensor:
        rows = []
        for i in range(len(x)):
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
            rows.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
        model.zero_grad()
        return torch.stack(rows)

    tv = [C.timed(lambda: per_example_grads(model, (x, y))) for _ in range(3)]
    tl = [C.timed(loop) for _ in range(3)]
    diff = float((tv[0].value - tl[0].value).abs().max())
    wv, wl = C.median(t.wall for t in tv), C.median(t.wall for t in tl)
    return {"n_examples": 200, "n_params": P.numel(P.get_point(model)), "vmap_seconds": wv, "loop_seconds": wl,
            "speedup": wl / wv, "max_abs_diff": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--runs", default=None, help="directory for the training runs (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    C.set_threads(args.threads)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(args.runs) if args.runs else Path(tmp)
        result: dict[str, Any] = {"bench": "probes", "machine": C.machine_info()}
        result["stiffness_digits"] = stiffness_case(runs)
        result["ntk_mnist1d"] = ntk_case(runs)
        result["diversity_mnist1d"] = diversity_case(runs)
        result["completion_2x2"] = completion_case()
        result["timing"] = timing_case()
    st, nt, dv, cp = (result[k] for k in ("stiffness_digits", "ntk_mnist1d", "diversity_mnist1d", "completion_2x2"))
    lin = nt["linearization"]["linear_test_error"]
    result["checks"] = {
        "C7_within_gt_between_final": st["final"]["within_cos"] > st["final"]["between_cos"],
        "C7_zero_crossing_distance_shrinks":
            st["final"]["zero_crossing_distance"] < st["init"]["zero_crossing_distance"],
        "C6_kernel_velocity_falls": nt["velocity_step_late"] < nt["velocity_step_early"],
        "C6_linearize_later_better": lin[-1] < lin[0],
        "C5_across_run_gt_within_trajectory": dv["across_run_disagreement"] > dv["within_trajectory_disagreement"],
        "C5_independent_ensemble_beats_trajectory":
            dv["ensemble_accuracy"]["independent"] > dv["ensemble_accuracy"]["trajectory"],
        "C11_depth3_loss_falls_norms_grow": cp["depth3"]["loss_falls_norms_grow"],
    }
    result["seconds"] = time.perf_counter() - t0
    C.emit(C.rounded(result), args.out)


if __name__ == "__main__":
    main()
