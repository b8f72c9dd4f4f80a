"""GPU check: the CUDA path agrees with CPU float64 references, and how fast surfaces and HVPs run.

Prints one JSON object (progress on stderr). Nothing is downloaded: MNIST-1D is generated locally
(cached under ``LOSSLAB_CACHE``), the CIFAR-shaped batch is synthetic, models come from the zoo.

Sections:

* ``checks`` (float64, tiny models: an MLP and a BatchNorm ResNet on 64 random examples): a plane
  surface on the device with each strategy (``loop``, ``vmap``) vs the CPU float64 surface; the
  float32 device surface vs the same reference; Hessian-vector products with each backend
  (``reuse``, ``fresh``, ``jvp``) and the top-2 Lanczos eigenvalues vs CPU; a 1-rank process group
  on the device's backend (NCCL+gloo on CUDA) running a :class:`~losslab.distributed.DistributedOperator`;
  and (time permitting) a real 2-rank job on this one device (``run_local``, gloo for the operator:
  NCCL refuses two ranks on one GPU) whose sharded surface and data-parallel HVP must equal the
  single-process ones. Each check reports its max error and ``ok`` (tolerance in the JSON).
* ``surface``: points/s of :func:`losslab.surface.plane` (float32) with ``strategy="loop"`` (the
  per-point loop), ``"vmap"`` (batched points) and ``"auto"``, after a warm-up, for ``cnn1d`` on
  MNIST-1D (4000 examples), the zoo ``resnet`` on MNIST-1D, and a 2-D ``resnet`` on 2048 synthetic
  3x32x32 images (BatchNorm statistics recomputed at every point, the default), and an MLP
  784-512-512-10 on 4096 synthetic 1x28x28 images, whose first layer is precomputed per direction
  (``first_layer="auto"``; the same strategies with ``first_layer="compute"`` give the gain).
* ``hvp``: seconds per Hessian-vector product (median of 5 after a warm-up) per backend, a gradient
  for scale, and a top-1 Lanczos run, for ``cnn1d`` and ``resnet`` on MNIST-1D.

A time budget (``--budget``, default 200 s after start-up) is checked before every item: what does
not fit is listed under ``skipped``, so the script ends well within 4 minutes on an H100.
``--cpu-smoke`` runs everything on the CPU with tiny sizes (seconds) to test the script itself.

Usage::

    bash bench/gpu.sh                                  # on the GPU machine (JSON on stdout)
    .venv/bin/python bench/gpu_check.py --cpu-smoke    # here: does the script run?
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import _common as C  # noqa: E402

HERE = Path(__file__).resolve()
T0 = time.monotonic()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="run on the CPU with tiny sizes (tests the script)")
    p.add_argument("--device", default=None, help="device (default cuda, or cpu with --cpu-smoke)")
    p.add_argument("--budget", type=float, default=200.0, help="seconds for all items (default 200)")
    p.add_argument("--no-two-ranks", action="store_true", help="skip the 2-process check")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: 2-rank check result file
    return p.parse_args(argv)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.skipped: list[str] = []

    def left(self) -> float:
        return self.end - time.monotonic()

    def allows(self, name: str, needs: float) -> bool:
        if self.left() >= needs:
            return True
        self.skipped.append(f"{name} (needs ~{needs:g} s, {max(0.0, self.left()):.0f} s left)")
        C.log(f"skip {name}: time budget")
        return False


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def guarded(out: dict[str, Any], name: str, fn: Callable[[], Any]) -> None:
    """Run one item; an exception is recorded (the script goes on)."""
    t = time.monotonic()
    try:
        out[name] = fn()
    except Exception as e:  # noqa: BLE001
        out[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
        C.log(f"{name} FAILED: {type(e).__name__}: {e}")
    else:
        C.log(f"{name}: done in {time.monotonic() - t:.1f} s")


# ---- tiny float64 problems -----------------------------------------------------------------------------


def tiny_problems() -> dict[str, tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]]:
    from losslab import models

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 40, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (64,), generator=g)
    mlp = models.build("mlp", input_shape=(40,), num_classes=4, seed=0, width=16, depth=2).double().eval()
    res = models.build("resnet", input_shape=(40,), num_classes=4, seed=0, width=4, depth=1).double().eval()
    return {"mlp": (mlp, (x, y)), "resnet_bn": (res, (x, y))}


def directions(model: nn.Module, seed: int = 0) -> tuple[dict, dict]:
    from losslab.directions import random_plane

    dx, dy = random_plane(model, seed=seed)
    return dx.vector, dy.vector


def check_surface(model: nn.Module, data: tuple, device: torch.device) -> dict[str, Any]:
    from losslab.surface import plane

    dx, dy = directions(model)
    grid = dict(nx=5, ny=4, x_span=(-1.0, 1.0), y_span=(-0.5, 1.0), progress=False, points_per_chunk=8)
    ref = plane(model, data, dx=dx, dy=dy, strategy="loop", **grid).metrics["loss"]
    out: dict[str, Any] = {}
    for strategy in ("loop", "vmap"):
        got = plane(model, data, dx=dx, dy=dy, strategy=strategy, device=device, **grid).metrics["loss"]
        out[f"float64_{strategy}_max_abs_err"] = float(np.max(np.abs(got - ref)))
    got32 = plane(model, data, dx=dx, dy=dy, strategy="vmap", device=device, dtype=torch.float32, **grid)
    out["float32_vmap_max_abs_err"] = float(np.max(np.abs(got32.metrics["loss"] - ref)))
    out["tolerance"] = {"float64": 1e-9, "float32": 1e-4}
    out["ok"] = bool(max(out["float64_loop_max_abs_err"], out["float64_vmap_max_abs_err"]) < 1e-9
                     and out["float32_vmap_max_abs_err"] < 1e-4)
    return out


def on_device(model: nn.Module, data: tuple, device: torch.device) -> tuple[nn.Module, tuple]:
    return copy.deepcopy(model).to(device), (data[0].to(device), data[1].to(device))


def check_hvp(model: nn.Module, data: tuple, device: torch.device) -> dict[str, Any]:
    from losslab.curvature import HessianOperator, lanczos_eigs

    loss = nn.CrossEntropyLoss()
    H = HessianOperator(model, data, loss=loss, batch_size=24)
    n = H.shape[0]
    V = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = H @ V
    ref_eig = lanczos_eigs(H, k=2, seed=0).eigenvalues
    m, d = on_device(model, data, device)
    out: dict[str, Any] = {"n": n}
    worst = 0.0
    for backend in ("reuse", "fresh", "jvp"):
        Hd = HessianOperator(m, d, loss=loss, batch_size=24, backend=backend)
        got = Hd @ V.to(device)
        err = float(((got.cpu() - ref).norm() / ref.norm()))
        out[f"{backend}_rel_err"] = err
        worst = max(worst, err)
    Hd = HessianOperator(m, d, loss=loss, batch_size=24)
    eig = lanczos_eigs(Hd, k=2, seed=0)
    out["lanczos_top2"] = eig.eigenvalues.tolist()
    out["lanczos_top2_ref"] = ref_eig.tolist()
    out["lanczos_rel_err"] = float(((eig.eigenvalues.cpu() - ref_eig).abs() / ref_eig.abs()).max())
    out["tolerance"] = {"hvp": 1e-10, "lanczos": 1e-8}
    out["ok"] = bool(worst < 1e-10 and out["lanczos_rel_err"] < 1e-8)
    return out


def check_process_group(model: nn.Module, data: tuple, device: torch.device) -> dict[str, Any]:
    """A 1-rank group on the device's default backend: collectives and DistributedOperator on device tensors."""
    import torch.distributed as dist

    from losslab.curvature import HessianOperator, lanczos_eigs
    from losslab.distributed import DistributedOperator, all_reduce_sum, choose_backend, free_port

    backend = choose_backend(device)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        loss = nn.CrossEntropyLoss()
        m, d = on_device(model, data, device)
        H = HessianOperator(m, d, loss=loss, batch_size=24)
        W = DistributedOperator(HessianOperator(m, d, loss=loss, batch_size=24))
        v = torch.randn(H.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(2)).to(device)
        err = float((W @ v - H @ v).abs().max())
        t_cpu = all_reduce_sum(torch.ones(3, dtype=torch.float64))
        t_dev = all_reduce_sum(torch.ones(3, dtype=torch.float64, device=device))
        e1, e2 = lanczos_eigs(W, k=1, seed=0), lanczos_eigs(H, k=1, seed=0)
        return {"backend": backend, "max_abs_err": err, "all_reduce_cpu": t_cpu.tolist(),
                "all_reduce_device": t_dev.tolist(), "all_reduce_device_type": t_dev.device.type,
                "lanczos_equal": bool(torch.equal(e1.eigenvalues, e2.eigenvalues)),
                "ok": bool(err < 1e-12 and t_dev.device.type == device.type and torch.equal(e1.eigenvalues, e2.eigenvalues))}
    finally:
        dist.destroy_process_group()


def check_two_ranks(device: torch.device, smoke: bool, timeout: float) -> dict[str, Any]:
    """A real 2-process job on this device: sharded surface and data-parallel HVP vs 1 process."""
    import tempfile

    from losslab.curvature import HessianOperator
    from losslab.distributed import run_local
    from losslab.surface import plane

    with tempfile.TemporaryDirectory() as d:
        result = Path(d) / "r.json"
        argv = [str(HERE), "--worker", str(result), "--device", str(device)] + (["--cpu-smoke"] if smoke else [])
        t = time.monotonic()
        procs = run_local(argv, 2, timeout=timeout)
        wall = time.monotonic() - t
        for r, p in enumerate(procs):
            if p.returncode != 0:
                return {"error": f"rank {r} exited {p.returncode}", "stderr": p.stderr[-2000:], "ok": False}
        got = json.loads(result.read_text())
    model, data = tiny_problems()["resnet_bn"]
    dx, dy = directions(model)
    ref = plane(model, data, dx=dx, dy=dy, nx=6, ny=5, points_per_chunk=3, strategy="loop", progress=False)
    H = HessianOperator(model, data, loss=nn.CrossEntropyLoss(), batch_size=24)
    v = torch.randn(H.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    surf_err = float(np.max(np.abs(np.asarray(got["loss"]) - ref.metrics["loss"])))
    hvp_err = float(np.max(np.abs(np.asarray(got["hv"]) - (H @ v).numpy())))
    return {"seconds_with_startup": wall, "surface_max_abs_err": surf_err, "hvp_max_abs_err": hvp_err,
            "points_per_rank": got["points_per_rank"], "device_per_rank": got["device"],
            "tolerance": 1e-9, "ok": bool(surf_err < 1e-9 and hvp_err < 1e-9)}


def two_rank_worker(args: argparse.Namespace) -> int:
    from losslab.curvature import HessianOperator
    from losslab.distributed import DistributedOperator, distributed_plane, init_distributed, shard, shutdown

    ctx = init_distributed(backend="gloo", device=args.device, timeout=120)  # gloo: NCCL needs a GPU per rank
    model, data = tiny_problems()["resnet_bn"]
    dx, dy = directions(model)
    res = distributed_plane(model, data, dx=dx, dy=dy, nx=6, ny=5, points_per_chunk=3, strategy="loop",
                            progress=False, device=ctx.device)
    m, d = on_device(model, shard(data, sizes=[20, 44]), ctx.device)
    H = DistributedOperator(HessianOperator(m, d, loss=nn.CrossEntropyLoss(), batch_size=24))
    v = torch.randn(H.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    hv = (H @ v.to(ctx.device)).cpu()
    if ctx.is_root:
        Path(args.worker).write_text(json.dumps({
            "loss": res.metrics["loss"].tolist(), "hv": hv.tolist(), "device": str(ctx.device),
            "points_per_rank": [p.get("points") for p in res.meta["distributed"]["per_rank"]]}))
    shutdown(ctx)
    return 0


# ---- throughput -----------------------------------------------------------------------------------------


def load_cases(smoke: bool) -> dict[str, tuple[nn.Module, tuple[torch.Tensor, torch.Tensor], str]]:
    from losslab import data, models

    g = torch.Generator().manual_seed(0)
    if smoke:  # synthetic stand-ins of the same shapes, tiny
        x1 = torch.randn(128, 40, generator=g)
        y1 = torch.randint(0, 10, (128,), generator=g)
        n2 = 32
    else:
        b = data.load("mnist1d")
        x1, y1 = b.train.x, b.train.y
        n2 = 2048
    x2 = torch.randn(n2, 3, 32, 32, generator=g)
    y2 = torch.randint(0, 10, (n2,), generator=g)
    cnn = models.build("cnn1d", input_shape=(40,), num_classes=10, seed=0).eval()
    res1 = models.build("resnet", input_shape=(40,), num_classes=10, seed=0).eval()
    res2 = models.build("resnet", input_shape=(3, 32, 32), num_classes=10, seed=0).eval()
    n3 = 64 if smoke else 4096
    x3, y3 = torch.rand(n3, 1, 28, 28, generator=g), torch.randint(0, 10, (n3,), generator=g)
    mlp784 = models.build("mlp", input_shape=(1, 28, 28), num_classes=10, seed=0, width=512, depth=2).eval()
    src = "synthetic (smoke)" if smoke else "MNIST-1D train (generated locally)"
    return {
        "cnn1d_mnist1d": (cnn, (x1, y1), src),
        "resnet_mnist1d": (res1, (x1, y1), src),
        "resnet2d_synthetic32": (res2, (x2, y2), "synthetic N(0,1) 3x32x32 (no download)"),
        "mlp784_synthetic28": (mlp784, (x3, y3), "synthetic U(0,1) 1x28x28 (MNIST's shape; first layer precomputed)"),
    }


def surface_speed(model: nn.Module, data: tuple, desc: str, device: torch.device, side: int,
                  budget: Budget, name: str) -> dict[str, Any]:
    from losslab.surface import plane

    dx, dy = directions(model)
    coords = np.linspace(-1.0, 1.0, side)
    out: dict[str, Any] = {"data": desc, "n_examples": int(data[0].shape[0]), "grid": [side, side],
                           "parameters": int(sum(p.numel() for p in model.parameters()))}
    grids = {}
    for strategy in ("loop", "vmap", "auto"):
        if not budget.allows(f"surface {name} {strategy}", 5.0):
            continue
        warm = np.linspace(-1.0, 1.0, 2)
        plane(model, data, dx=dx, dy=dy, x=warm, y=warm, progress=False, strategy=strategy, device=device)
        sync(device)
        t = time.perf_counter()
        r = plane(model, data, dx=dx, dy=dy, x=coords, y=coords, progress=False, strategy=strategy, device=device)
        sync(device)
        wall = time.perf_counter() - t
        grids[strategy] = r.metrics["loss"]
        ev = r.meta["evaluator"]
        out[strategy] = {"points_per_s": side * side / wall, "seconds": wall, "strategy": ev["strategy"],
                         "points_per_chunk": ev["points_per_chunk"], "batch_size": ev["batch_size"],
                         "bn": ev["bn"], "auto_timing": ev.get("timing"), "first_layer": ev.get("first_layer")}
    used = [k for k in ("loop", "vmap") if (out.get(k, {}).get("first_layer") or {}).get("used")]
    for strategy in used:  # what precomputing the first layer gains on this device
        if not budget.allows(f"surface {name} {strategy} first layer computed", 5.0):
            continue
        t = time.perf_counter()
        plane(model, data, dx=dx, dy=dy, x=coords, y=coords, progress=False, strategy=strategy, device=device,
              first_layer="compute")
        sync(device)
        wall = time.perf_counter() - t
        out[f"{strategy}_first_layer_computed"] = {"points_per_s": side * side / wall, "seconds": wall}
        out[f"{strategy}_first_layer_gain"] = out[strategy]["points_per_s"] / (side * side / wall)
    big = 16384.0 if device.type == "cuda" else 64.0
    if budget.allows(f"surface {name} vmap big budget", 5.0):  # more points per vmap call than the default
        warm = np.linspace(-1.0, 1.0, 2)
        plane(model, data, dx=dx, dy=dy, x=warm, y=warm, progress=False, strategy="vmap", device=device,
              memory_budget_mb=big)
        sync(device)
        t = time.perf_counter()
        r = plane(model, data, dx=dx, dy=dy, x=coords, y=coords, progress=False, strategy="vmap", device=device,
                  memory_budget_mb=big)
        sync(device)
        wall = time.perf_counter() - t
        ev = r.meta["evaluator"]
        out[f"vmap_memory_budget_{int(big)}mb"] = {
            "points_per_s": side * side / wall, "seconds": wall, "points_per_chunk": ev["points_per_chunk"],
            "batch_size": ev["batch_size"]}
    if "loop" in grids and "vmap" in grids:
        out["loop_vs_vmap_max_abs_diff"] = float(np.nanmax(np.abs(grids["loop"] - grids["vmap"])))
        out["vmap_over_loop"] = out["vmap"]["points_per_s"] / out["loop"]["points_per_s"]
    return out


def timed_median(fn: Callable[[], Any], device: torch.device, reps: int) -> float:
    fn()
    sync(device)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def hvp_speed(model: nn.Module, data: tuple, desc: str, device: torch.device, budget: Budget,
              name: str) -> dict[str, Any]:
    from losslab.curvature import HessianOperator, gradient, lanczos_eigs

    m, d = on_device(model, data, device)
    loss = nn.CrossEntropyLoss()
    out: dict[str, Any] = {"data": desc, "n_examples": int(d[0].shape[0])}
    out["gradient_s"] = timed_median(lambda: gradient(m, d, loss=loss), device, 5)
    for backend in ("reuse", "fresh", "jvp"):
        if not budget.allows(f"hvp {name} {backend}", 5.0):
            continue
        H = HessianOperator(m, d, loss=loss, backend=backend)
        v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(0)).to(device)
        s = timed_median(lambda: H @ v, device, 5)
        out[backend] = {"seconds_per_hvp": s, "hvp_over_gradient": s / out["gradient_s"]}
    out["parameters"] = int(sum(p.numel() for p in m.parameters()))
    if budget.allows(f"lanczos {name}", 10.0):
        H = HessianOperator(m, d, loss=loss)
        sync(device)
        t = time.perf_counter()
        e = lanczos_eigs(H, k=1, seed=0, tol=1e-4, max_iter=60)
        sync(device)
        out["lanczos_top1"] = {"seconds": time.perf_counter() - t, "matvecs": e.num_matvecs,
                               "eigenvalue": float(e.eigenvalues[0]), "converged": bool(e.converged),
                               "backend": H.backend}
    return out


# ---- main -----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return two_rank_worker(args)
    result: dict[str, Any] = {}
    try:
        return run(args, result)
    except KeyboardInterrupt:  # gpu.sh's hard timeout: still print what was measured
        result["interrupted"] = True
        C.emit(_clean(result), args.out)
        return 130


def run(args: argparse.Namespace, result: dict[str, Any]) -> int:
    C.set_threads(int(os.environ.get("LOSSLAB_THREADS", "1")))
    smoke = args.cpu_smoke
    device = torch.device(args.device or ("cpu" if smoke else "cuda"))
    result.update({"benchmark": "gpu_check", "mode": "cpu-smoke" if smoke else "gpu",
                   "device": str(device), "machine": C.machine_info()})
    if device.type == "cuda":
        if not torch.cuda.is_available():
            result["error"] = "CUDA is not available (use --cpu-smoke to test the script on the CPU)"
            C.emit(result, args.out)
            return 1
        p = torch.cuda.get_device_properties(device)
        result["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                         "capability": f"{p.major}.{p.minor}", "cuda": torch.version.cuda,
                         "cudnn": torch.backends.cudnn.version()}
        torch.backends.cuda.matmul.allow_tf32 = False  # measure plain float32
        torch.backends.cudnn.allow_tf32 = False
    budget = Budget(args.budget)
    result["startup_s"] = time.monotonic() - T0

    checks: dict[str, Any] = {}
    result["checks"] = checks
    for name, (model, data) in tiny_problems().items():
        guarded(checks, f"surface_{name}", lambda: check_surface(model, data, device))
        guarded(checks, f"hvp_{name}", lambda: check_hvp(model, data, device))
    model, data = tiny_problems()["mlp"]
    guarded(checks, "process_group_1rank", lambda: check_process_group(model, data, device))
    if not args.no_two_ranks and budget.allows("two_ranks_one_device", 60.0):
        guarded(checks, "two_ranks_one_device",
                lambda: check_two_ranks(device, smoke, timeout=min(150.0, max(30.0, budget.left() - 60))))
    result["checks"] = checks
    result["all_checks_ok"] = all(isinstance(v, dict) and v.get("ok") is True for v in checks.values())

    cases = load_cases(smoke)
    sides = {"cnn1d_mnist1d": 16, "resnet_mnist1d": 12, "resnet2d_synthetic32": 8, "mlp784_synthetic28": 16} \
        if not smoke else {"cnn1d_mnist1d": 3, "resnet_mnist1d": 3, "resnet2d_synthetic32": 2, "mlp784_synthetic28": 3}
    surface: dict[str, Any] = {}
    result["surface"] = surface
    for name, (model, data, desc) in cases.items():
        if budget.allows(f"surface {name}", 15.0):
            guarded(surface, name, lambda: surface_speed(model, data, desc, device, sides[name], budget, name))
    result["surface"] = surface
    hvp: dict[str, Any] = {}
    result["hvp"] = hvp
    for name in ("cnn1d_mnist1d", "resnet_mnist1d"):
        model, data, desc = cases[name]
        if budget.allows(f"hvp {name}", 15.0):
            guarded(hvp, name, lambda: hvp_speed(model, data, desc, device, budget, name))
    result["hvp"] = hvp
    result["skipped"] = budget.skipped
    result["total_s"] = time.monotonic() - T0
    if device.type == "cuda":
        result["gpu"]["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    result["machine"]["load_average_end"] = C.load_average()
    C.emit(C.rounded(_clean(result), 5), args.out)
    return 0 if result["all_checks_ok"] else 3


def _clean(obj: Any) -> Any:
    """JSON-safe: non-finite floats to None, numpy scalars to Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


if __name__ == "__main__":
    sys.exit(main())
