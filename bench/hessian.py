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

Timings are medians of per-repeat ratios, methods timed round-robin (one of each per repeat), so machine
load hits them alike; on a loaded machine (load average above the core count) prefer the ``*_cpu`` fields.

Usage::

    .venv/bin/python bench/hessian.py               # ~2-4 min on one core
    .venv/bin/python bench/hessian.py --quick       # fewer repeats, seeds and trials (~1 min)
    .venv/bin/python bench/hessian.py --out hessian.json
"""
from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, seeds and trials")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--examples", type=int, default=1000)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    a = ap.parse_args()
    C.set_threads(a.threads)
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
