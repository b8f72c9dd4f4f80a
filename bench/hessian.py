"""Benchmark: Hessian-vector products, λmax by Lanczos vs power iteration, Hutchinson's error bars.

One case, on one torch thread: the zoo MLP 40-200-200-10 (50,410 parameters) on the first 1000
MNIST-1D training examples, after 300 SGD steps (so the Hessian is that of a partly trained net,
not of the initialization). Everything is full-batch over the 1000 examples.

* ``hvp``: seconds per product of :class:`losslab.curvature.HessianOperator` for each backend
  (``reuse``: double backward through a kept graph; ``fresh``: rebuild forward + backward per product;
  ``jvp``: ``torch.func`` forward-over-reverse), of the :class:`GGNOperator`, and their ratio to one
  full-batch gradient (plain ``torch.autograd.grad`` of the loss). Medians over repeats, after a warm-up.
* ``lambda_max``: products needed to get λmax within 1e-3 relative error. Reference: Lanczos on the
  float64 operator to a 1e-10 residual. Lanczos (float32 operator, the default) is read off its Ritz
  history; *power iteration* is the plain baseline PyHessian uses (``v ← Hv/‖Hv‖``, estimate ``vᵀHv``),
  with the same Gaussian start vectors. Also reported: where each method stops by its own rule
  (Lanczos: ``lambda_max``'s default residual tolerance 1e-4; power: PyHessian's relative change < 1e-3)
  and its error there. Medians over seeds.
* ``trace``: coverage of Hutchinson's standard error: ``trials`` independent estimates with ``probes``
  Rademacher probes each; each is compared with the mean of the *other* trials (a leave-one-out
  reference with a standard error ``sqrt(trials-1)`` times smaller); reported are the fractions inside
  ±1 and ±1.96 stderr (nominal 0.683 / 0.95) and the ratio of the mean reported stderr to the observed
  spread of the estimates. Hutch++ with the same number of products is shown for its spread.

* ``memory`` (``--memory``): peak RSS and products of λmax on the torchvision-layout ResNet-18
  (``bench/_models.py``: 7x7 stride-2 stem and max-pool, BasicBlocks [2, 2, 2, 2], 1000 classes,
  11,689,512 weights; batch norm in train mode, i.e. batch statistics) on 64 synthetic 3x32x32 images
  with labels in 0-9, float32, one thread. Each measurement runs in its own subprocess, so its peak RSS
  (``ru_maxrss``) is its own: ``gradient`` (one full-batch ``torch.autograd.grad``: the baseline),
  ``hvp`` (one product of :class:`losslab.curvature.HessianOperator`), then λmax by ``lanczos_eigs(k=1,
  tol=1e-4, return_eigenvectors=False)`` (what ``lambda_max`` runs) for each basis option: ``float64_all``
  (the old algorithm: float64 basis, every vector held, full reorthogonalization), ``float32_all``
  (operator-dtype basis, every vector held), ``restart_32`` / ``restart_16`` (full reorthogonalization,
  thick restart at 32 / 16 vectors), ``recurrence`` (the default for one eigenvalue without its vector:
  three vectors) and ``vector`` (the default when the eigenvector is asked for: float32, 32 vectors).
  Reported: peak RSS, its ratio to the gradient's, products, λmax and its relative difference from
  ``float64_all``'s, CPU seconds.

Timings are medians of per-repeat ratios, methods timed round-robin (one of each per repeat), so machine
load hits them alike; on a loaded machine (load average above the core count) prefer the ``*_cpu`` fields.

Usage::

    .venv/bin/python bench/hessian.py               # ~2-4 min on one core
    .venv/bin/python bench/hessian.py --quick       # fewer repeats, seeds and trials (~1 min)
    .venv/bin/python bench/hessian.py --memory      # the ResNet-18 memory section only (~6 min of CPU)
    .venv/bin/python bench/hessian.py --memory --quick   # gradient, float64_all, recurrence (~3 min of CPU)
    .venv/bin/python bench/hessian.py --out hessian.json
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import _common as C  # noqa: E402


def build_case(n: int, steps: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    from losslab import data, models

    b = data.load("mnist1d")
    x, y = b.train.x[:n].contiguous(), b.train.y[:n].contiguous()
    model = models.build("mlp", input_shape=tuple(b.input_shape), num_classes=b.num_classes, seed=0,
                         width=200, depth=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, n, (100,), generator=g)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model, x, y


def bench_hvp(model, x, y, repeats: int) -> dict[str, Any]:
    """Seconds per call, methods timed round-robin (one of each per repeat) so load hits them alike."""
    from losslab.curvature import GGNOperator, HessianOperator

    params = [p for p in model.parameters()]

    def grad() -> None:
        loss = F.cross_entropy(model(x), y)
        torch.autograd.grad(loss, params)

    n = sum(p.numel() for p in params)
    v = torch.randn(n, generator=torch.Generator().manual_seed(1))
    ops = {
        "hessian_reuse": HessianOperator(model, (x, y), loss=F.cross_entropy, backend="reuse"),
        "hessian_fresh": HessianOperator(model, (x, y), loss=F.cross_entropy, backend="fresh"),
        "hessian_jvp": HessianOperator(model, (x, y), loss=F.cross_entropy, backend="jvp"),
        "ggn_auto": GGNOperator(model, (x, y), loss=F.cross_entropy),
    }
    calls: dict[str, Any] = {"gradient": grad}
    calls.update({name: (lambda op=op: op @ v) for name, op in ops.items()})
    ref = ops["hessian_reuse"] @ v
    out: dict[str, Any] = {}
    for name, op in ops.items():
        hv = op @ v
        out[name] = {"backend": op.backend}
        if name.startswith("hessian"):
            out[name]["rel_diff_vs_reuse"] = float((hv - ref).norm() / ref.norm())
    for fn in calls.values():  # warm-up
        fn()
        fn()
    walls: dict[str, list[float]] = {k: [] for k in calls}
    cpus: dict[str, list[float]] = {k: [] for k in calls}
    for r in range(repeats):
        C.log(f"hvp repeat {r + 1}/{repeats}")
        for name, fn in calls.items():
            t = C.timed(fn)
            walls[name].append(t.wall)
            cpus[name].append(t.cpu)
    out["gradient"] = {"wall_s": C.median(walls["gradient"]), "cpu_s": C.median(cpus["gradient"])}
    for name in ops:
        out[name].update(
            wall_s=C.median(walls[name]), cpu_s=C.median(cpus[name]),
            ratio_to_gradient_wall=C.median([a / b for a, b in zip(walls[name], walls["gradient"])]),
            ratio_to_gradient_cpu=C.median([a / max(b, 1e-9) for a, b in zip(cpus[name], cpus["gradient"])]),
        )
    return out


def power_iteration(op, v0: torch.Tensor, max_iter: int, ref: float, tol: float = 1e-3) -> dict[str, Any]:
    """PyHessian's loop: v ← Hv/‖Hv‖, eigenvalue estimate vᵀHv; stops when the relative change < tol."""
    v = v0 / v0.norm()
    prev = None
    first_hit = None
    stop = None
    est = []
    for i in range(1, max_iter + 1):
        hv = op @ v
        lam = float(v @ hv)
        est.append(lam)
        if first_hit is None and abs(lam - ref) / ref <= 1e-3:
            first_hit = i
        if stop is None and prev is not None and abs(lam - prev) / (abs(prev) + 1e-6) < tol:
            stop = {"matvecs": i, "rel_error": abs(lam - ref) / ref}
        if first_hit is not None and stop is not None:
            break
        prev = lam
        v = hv / hv.norm()
    return {"matvecs_to_1e-3": first_hit, "own_stop": stop, "estimates": est}


def bench_lambda_max(model, x, y, seeds: int, max_iter: int) -> dict[str, Any]:
    from losslab.curvature import HessianOperator, lanczos_eigs

    C.log("lambda_max reference (float64)")
    op64 = HessianOperator(model, (x, y), loss=F.cross_entropy, dtype=torch.float64)
    r = lanczos_eigs(op64, k=2, tol=1e-10, seed=123)
    lam, lam2 = float(r.eigenvalues[0]), float(r.eigenvalues[1])
    op = HessianOperator(model, (x, y), loss=F.cross_entropy)
    n = op.shape[0]
    lz, lz_stop, pw, pw_stop = [], [], [], []
    for s in range(seeds):
        C.log(f"lambda_max seed {s}")
        v0 = torch.randn(n, generator=torch.Generator().manual_seed(1000 + s), dtype=torch.float64)
        long = lanczos_eigs(op, k=1, tol=1e-12, max_iter=max_iter, v0=v0, return_eigenvectors=False)
        errs = np.abs(long.history[:, 0] - lam) / lam
        hit = np.flatnonzero(errs <= 1e-3)
        lz.append(int(hit[0]) + 1 if hit.size else None)
        own = lanczos_eigs(op, k=1, tol=1e-4, v0=v0, return_eigenvectors=False)  # lambda_max's default
        lz_stop.append({"matvecs": own.num_matvecs, "rel_error": abs(float(own.eigenvalues[0]) - lam) / lam})
        p = power_iteration(op, v0.float(), 4 * max_iter, lam)
        pw.append(p["matvecs_to_1e-3"])
        pw_stop.append(p["own_stop"])

    def med(xs: list) -> float | None:
        xs = [v for v in xs if v is not None]
        return C.median(xs) if xs else None

    return {
        "reference": {"lambda_1": lam, "lambda_2": lam2, "gap_ratio": lam2 / lam, "converged": bool(r.converged)},
        "lanczos_matvecs_to_1e-3": lz, "power_matvecs_to_1e-3": pw,
        "lanczos_median": med(lz), "power_median": med(pw),
        "lanczos_own_stop_tol_1e-4": lz_stop, "power_own_stop_pyhessian_tol_1e-3": pw_stop,
        "power_own_stop_median_matvecs": med([s["matvecs"] for s in pw_stop if s]),
        "power_own_stop_median_rel_error": med([s["rel_error"] for s in pw_stop if s]),
    }


def bench_trace(model, x, y, trials: int, probes: int) -> dict[str, Any]:
    from losslab.curvature import HessianOperator, hutchinson_trace, hutchpp_trace

    op = HessianOperator(model, (x, y), loss=F.cross_entropy)
    est, se = [], []
    for t in range(trials):
        r = hutchinson_trace(op, num_probes=probes, seed=10_000 + t, return_frobenius=False)
        est.append(r.trace)
        se.append(r.stderr)
    est_a, se_a = np.array(est), np.array(se)
    total = est_a.sum()
    loo = (total - est_a) / (trials - 1)  # leave-one-out reference: mean of the other trials
    z = np.abs(est_a - loo) / se_a
    pp = [hutchpp_trace(op, num_matvecs=probes, seed=20_000 + t).trace for t in range(max(3, trials // 4))]
    return {
        "trials": trials, "probes_per_trial": probes,
        "pooled_trace": float(est_a.mean()), "pooled_stderr": float(est_a.std(ddof=1) / math.sqrt(trials)),
        "coverage_1se": float(np.mean(z <= 1.0)), "coverage_1.96se": float(np.mean(z <= 1.96)),
        "nominal": {"1se": 0.683, "1.96se": 0.95},
        "mean_reported_stderr": float(se_a.mean()), "observed_std_of_estimates": float(est_a.std(ddof=1)),
        "stderr_calibration_ratio": float(se_a.mean() / est_a.std(ddof=1)),
        "hutchpp_same_matvecs_std": float(np.std(pp, ddof=1)), "hutchpp_mean": float(np.mean(pp)),
        "hutchpp_trials": len(pp),
    }


#: λmax basis options of the memory section: keyword arguments of ``lanczos_eigs``.
BASIS_OPTIONS: dict[str, dict[str, Any]] = {
    "float64_all": {"basis_dtype": torch.float64, "full_reorth": True, "max_basis": 10**6},
    "float32_all": {"full_reorth": True, "max_basis": 10**6},
    "restart_32": {"full_reorth": True, "max_basis": 32},
    "restart_16": {"full_reorth": True, "max_basis": 16},
    "recurrence": {},
    "vector": {"return_eigenvectors": True},
}


def resnet_case(examples: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The torchvision-layout ResNet-18 (1000 classes) and ``examples`` seeded 3x32x32 images, labels 0-9."""
    import _models

    model = _models.resnet18_tv(num_classes=1000, seed=0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(examples, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (examples,), generator=g)
    return model, x, y


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux


def memory_worker(mode: str, examples: int) -> dict[str, Any]:
    """One measurement of the memory section, in this (fresh) process: see the module docstring."""
    from losslab.curvature import HessianOperator, lanczos_eigs

    model, x, y = resnet_case(examples)
    out: dict[str, Any] = {"mode": mode, "parameters": sum(p.numel() for p in model.parameters()),
                           "rss_before_gb": _peak_rss_gb()}
    t0 = time.process_time()
    if mode == "gradient":
        loss = F.cross_entropy(model(x), y)
        torch.autograd.grad(loss, list(model.parameters()))
    else:
        op = HessianOperator(model, (x, y), loss=F.cross_entropy)
        if mode == "hvp":
            op @ torch.randn(op.shape[0], generator=torch.Generator().manual_seed(1))
            out["backend"] = op.backend
        else:
            kw = {"return_eigenvectors": False, **BASIS_OPTIONS[mode]}
            r = lanczos_eigs(op, k=1, which="LA", tol=1e-4, seed=0, **kw)
            out.update(lambda_max=float(r.eigenvalues[0]), matvecs=r.num_matvecs, converged=bool(r.converged))
    out["cpu_s"] = time.process_time() - t0
    out["peak_rss_gb"] = _peak_rss_gb()
    return out


def bench_memory(examples: int, quick: bool) -> dict[str, Any]:
    """Each measurement in a fresh subprocess (clean peak RSS); ratios to the gradient's peak RSS."""
    import subprocess

    modes = ["gradient", "float64_all", "recurrence"] if quick else ["gradient", "hvp", *BASIS_OPTIONS]
    runs: dict[str, Any] = {}
    for mode in modes:
        C.log(f"memory: {mode}")
        proc = subprocess.run([sys.executable, __file__, "--worker", mode, "--examples", str(examples)],
                              capture_output=True, text=True, check=True)
        runs[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    base = runs["gradient"]["peak_rss_gb"]
    ref = runs.get("float64_all", {})
    for r in runs.values():
        r["peak_rss_over_gradient"] = r["peak_rss_gb"] / base
        if "lambda_max" in r and "lambda_max" in ref:
            r["lambda_max_rel_diff_vs_float64_all"] = abs(r["lambda_max"] - ref["lambda_max"]) / abs(ref["lambda_max"])
            r["matvecs_minus_float64_all"] = r["matvecs"] - ref["matvecs"]
    default = runs.get("recurrence", {})
    return {
        "case": {"model": "torchvision-layout ResNet-18, 1000 classes", "parameters": runs["gradient"]["parameters"],
                 "examples": examples, "input": "3x32x32 synthetic, seeded", "bn": "train mode (batch statistics)",
                 "lanczos": "k=1, which=LA, tol=1e-4, seed=0, return_eigenvectors=False unless 'vector'"},
        "runs": runs,
        "targets": {
            "default_peak_rss_le_2.5x_gradient": default.get("peak_rss_over_gradient", 1e9) <= 2.5,
            "default_matvecs_within_2_of_float64_all": abs(default.get("matvecs_minus_float64_all", 1e9)) <= 2,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, seeds and trials")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--memory", action="store_true", help="only the ResNet-18 peak-RSS section (64 images)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    C.set_threads(a.threads)
    if a.worker:
        print(json.dumps(memory_worker(a.worker, a.examples)))
        return
    if a.memory:
        t0 = time.perf_counter()
        result = {"benchmark": "hessian_memory", "machine": C.machine_info()}
        result["memory"] = bench_memory(64 if a.examples == 1000 else a.examples, a.quick)
        result["machine"]["load_average_end"] = C.load_average()
        result["seconds"] = time.perf_counter() - t0
        C.emit(C.rounded(result), a.out)
        return
    from losslab.curvature._common import ensure_forward_ad

    ensure_forward_ad()
    repeats, seeds, trials = (5, 3, 20) if a.quick else (21, 5, 40)
    t0 = time.perf_counter()
    result: dict[str, Any] = {"benchmark": "hessian", "machine": C.machine_info()}
    C.log("building the case")
    model, x, y = build_case(a.examples, 300)
    n = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        loss = float(F.cross_entropy(model(x), y))
    result["case"] = {"data": f"MNIST-1D first {a.examples} train examples", "model": "mlp 40-200-200-10",
                      "parameters": n, "train_steps": 300, "loss": loss}
    result["hvp"] = bench_hvp(model, x, y, repeats)
    result["lambda_max"] = bench_lambda_max(model, x, y, seeds, max_iter=60)
    result["trace"] = bench_trace(model, x, y, trials, 20)
    lm, tr = result["lambda_max"], result["trace"]
    result["targets"] = {
        "lanczos_fewer_matvecs_than_power": (lm["lanczos_median"] or 1e9) < (lm["power_median"] or 1e9),
        "hvp_reuse_le_2x_gradient": result["hvp"]["hessian_reuse"]["ratio_to_gradient_cpu"] <= 2.0,
        "trace_coverage_1.96se_in_[0.85,1]": 0.85 <= tr["coverage_1.96se"] <= 1.0,
    }
    result["machine"]["load_average_end"] = C.load_average()
    result["seconds"] = time.perf_counter() - t0
    C.emit(C.rounded(result), a.out)


if __name__ == "__main__":
    main()
