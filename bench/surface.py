"""Benchmark: throughput of 2-D loss surfaces (grid points per second) on one CPU thread.

Same model, data and ``N x N`` grid for every method, in one process:

* ``losslab_auto`` / ``losslab_loop`` / ``losslab_vmap``: :func:`losslab.surface.plane` with
  filter-normalized directions from :func:`losslab.directions.random_plane` (``strategy="auto"``,
  the default, and each strategy forced). Each call is a fresh ``plane(model, (x, y), ...)``, so
  ``auto`` includes its one-off strategy selection. The first layer is precomputed per direction
  where the evaluator's ``first_layer="auto"`` rule applies (the MLPs).
* ``losslab_computed``: ``losslab_auto`` with ``first_layer="compute"`` (every layer computed at
  every point), to show what the precomputation gains.
* ``baseline_dataloader``: the per-point recipe of older tools (tomgoldstein/loss-landscape's
  ``set_weights`` + ``eval_loss``): for every grid point copy ``w0 + a dx + b dy`` into the module in
  place (``p.data.copy_``), then one pass of a ``DataLoader(batch_size=128)`` over the same data
  under ``torch.no_grad()``, accumulating loss and accuracy. Same directions as losslab, so the
  loss grids are compared (``check.max_abs_loss_diff_vs_baseline``).
* ``loss_landscapes``: the PyPI package ``loss-landscapes``:
  ``loss_landscapes.random_plane(model, Loss(CrossEntropyLoss(), x, y), distance=1, steps=N,
  normalization="filter", deepcopy_model=True)``. It draws its own directions, so only its
  throughput is compared.
* ``reference_forward`` (not a competitor): the bare full-batch ``model(x)`` + cross-entropy under
  ``torch.inference_mode()``, i.e. the best a per-point method could do with this model and PyTorch.

Achieved GFLOP/s = points/s x (analytic forward FLOPs per example x N examples), compared to the
float32 ``torch.mm`` peak measured in the same run (once per repeat). Methods run round-robin
(one of each per repeat, after a warm-up, the order rotated by one at each repeat), so machine
load and position effects hit them alike; the reported numbers
are medians over repeats, from wall-clock time (``paired_ratios``: the ratios repeat by repeat, median
and range, i.e. the noise on the ratio itself); ``*_cpu`` fields use process CPU time instead
(steadier on a shared machine), ``*_best`` each method's fastest repeat (load only slows a repeat
down; targets are also reported on these). The matmul peak of a case is the best of its samples (3 per
repeat); ``system_time_fraction`` and ``minor_page_faults_per_point`` show allocator cost
(activations that ``malloc`` hands back to the OS are page-faulted and zeroed again at each use).

Targets (reported as booleans, never asserted): losslab (auto) >= 2x the DataLoader recipe and
>= the loss-landscapes package in every case, and >= 60% of the matmul peak on the MNIST-1D
40-512-512-10 MLP.

Real networks (issue 18; ``--model real``, or ``resnet`` / ``transformer``): ResNet-18 with the CIFAR
stem on 256 images, ResNet-18 with torchvision's layout at 32 px on 192 images (1000 classes, 11.7 M
weights) and a 2-layer transformer LM on 512 x 32 tokens (token targets), synthetic data, architectures
in ``_common.py``. Each compares ``losslab`` (:func:`losslab.surface.plane`, defaults) with
``plain_loop`` (a model copy; per point ``base + a dx + b dy`` written into its parameters in place
under ``no_grad``, one full-batch forward + cross-entropy), with BatchNorm in eval mode and, for the
ResNets, recomputed (``bn="recompute"``; the loop resets the statistics and runs one full-batch
train-mode forward with ``momentum=None`` first). The methods run interleaved in one process (order
rotated per repeat); ``losslab_over_loop`` gives the CPU-time and wall-time ratios (loop seconds /
losslab seconds per point, > 1 = losslab faster) and the CPU ratio repeat by repeat; ``peak_rss_mb``
runs each method once more in a fresh process on a 2 x 1 grid and reports its peak resident set
(``VmHWM`` after resetting it once the model, data and directions are built). ``arch_targets``: the
issue's acceptance (>= 1.0x with BatchNorm in eval mode, >= 0.6x recomputed).

Usage::

    .venv/bin/python bench/surface.py                # all cases, 8 x 8 grid, 3 repeats (~3-5 min)
    .venv/bin/python bench/surface.py --quick        # smoke run: 4 x 4 grid, 1 repeat
    .venv/bin/python bench/surface.py --model cnn1d --grid 11 --out surface.json
    .venv/bin/python bench/surface.py --model real --repeats 2  # the real networks (~15 min on 2 cores)
    .venv/bin/python bench/surface.py --case resnet18_tv32 --arch-grid 4
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import _common as C  # noqa: E402

# case name -> (dataset, model name, model kwargs, description); "mlp_target" is the >= 60% case
CASES: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "digits_mlp": ("digits", "mlp", {"width": 256, "depth": 2}, "digits (1347 train), zoo mlp 64-256-256-10"),
    "mnist1d_mlp": ("mnist1d", "mlp", {"width": 512, "depth": 2}, "MNIST-1D (4000 train), mlp 40-512-512-10"),
    "mnist1d_cnn1d": ("mnist1d", "cnn1d", {}, "MNIST-1D (4000 train), zoo cnn1d (3 x Conv1d 32, k5 s2) + head"),
    "mnist_shaped_mlp": ("synthetic784", "mlp", {"width": 512, "depth": 2},
                         "MNIST-shaped synthetic images (1000 x 1x28x28, 10 classes), mlp 784-512-512-10"),
}
# real networks (issue 18): case name -> (model, examples, default grid side, description)
ARCH_CASES: dict[str, tuple[str, int, int, str]] = {
    "resnet18_cifar": ("resnet18_cifar", 256, 3,
                       "ResNet-18, CIFAR stem (3x3 conv, no max-pool), 256 synthetic 3x32x32 images, 10 classes"),
    "resnet18_tv32": ("resnet18_tv", 192, 8,
                      "ResNet-18, torchvision layout (7x7/2 stem + max-pool), 192 synthetic 3x32x32 images, "
                      "1000 classes (11.7 M weights)"),
    "tiny_lm": ("tiny_lm", 512, 4,
                "transformer LM (2 pre-LN layers, d 128, 4 heads, vocab 256), 512 random sequences x 32 tokens, "
                "token targets (N, T), token cross-entropy"),
}
ARCH_METHODS = ("losslab", "plain_loop")
PEAK_CASE = "mnist1d_mlp"
PEAK_TARGET = 0.60
METHODS = ("losslab_auto", "losslab_loop", "losslab_vmap", "losslab_computed", "baseline_dataloader", "loss_landscapes",
           "reference_forward")
BASELINE_BATCH = 128


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 4 x 4 grid, 1 repeat (numbers are indicative only)")
    p.add_argument("--grid", type=int, default=None, help="grid side N (N x N points; default 8, 4 with --quick)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per method (default 3, 1 with --quick)")
    p.add_argument("--model", choices=["all", "mlp", "cnn1d", "resnet", "transformer", "real"], default="all",
                   help="mlp: the three MLP cases; cnn1d: the MNIST-1D CNN; resnet: the two ResNet-18 cases; "
                        "transformer: the small LM; real: resnet + transformer; all (default): every case")
    p.add_argument("--case", choices=["all", *CASES, *ARCH_CASES], default="all", help="run one case only (default all)")
    p.add_argument("--arch-grid", type=int, default=None,
                   help="grid side of the ResNet/transformer cases (default: each case's own, see ARCH_CASES)")
    p.add_argument("--no-rss", action="store_true", help="ResNet/transformer cases: skip the peak-RSS subprocesses")
    p.add_argument("--rss-child", nargs=3, metavar=("CASE", "METHOD", "BN"), help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--peak-n", type=int, default=2048, help="matrix size for the matmul peak (default 2048)")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    args = p.parse_args(argv)
    args.grid = args.grid if args.grid is not None else (4 if args.quick else 8)
    args.repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if args.grid < 2 or args.repeats < 1 or args.threads < 1:
        p.error("--grid must be >= 2, --repeats and --threads >= 1")
    return args


# ---- the methods ---------------------------------------------------------------------------------


def losslab_plane(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dx: Any, dy: Any, coords: np.ndarray,
                  strategy: str, first_layer: str = "auto") -> tuple[np.ndarray, dict[str, Any]]:
    from losslab.surface import plane

    res = plane(model, (x, y), dx=dx, dy=dy, x=coords, y=coords, progress=False, strategy=strategy,
                first_layer=first_layer)
    return res.metrics["loss"], res.meta["evaluator"]


def baseline_plane(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dx: dict[str, torch.Tensor],
                   dy: dict[str, torch.Tensor], coords: np.ndarray) -> np.ndarray:
    """tomgoldstein/loss-landscape style: in-place weight copy per point + DataLoader pass (bs 128)."""
    from torch.utils.data import DataLoader, TensorDataset

    net = copy.deepcopy(model)
    net.eval()
    names = [n for n, _ in net.named_parameters()]
    w0 = [p.detach().clone() for p in net.parameters()]
    d1 = [dx[n] for n in names]
    d2 = [dy[n] for n in names]
    loader = DataLoader(TensorDataset(x, y), batch_size=BASELINE_BATCH, shuffle=False)
    criterion = nn.CrossEntropyLoss()
    loss = np.full((len(coords), len(coords)), np.nan)
    acc = np.full_like(loss, np.nan)
    for j, b in enumerate(coords):
        for i, a in enumerate(coords):
            for p, w, u, v in zip(net.parameters(), w0, d1, d2):  # set_weights
                p.data.copy_(w + float(a) * u + float(b) * v)
            total_loss, correct, total = 0.0, 0, 0  # eval_loss
            with torch.no_grad():
                for xb, yb in loader:
                    bs = xb.size(0)
                    out = net(xb)
                    total_loss += criterion(out, yb).item() * bs
                    correct += out.argmax(1).eq(yb).sum().item()
                    total += bs
            loss[j, i] = total_loss / total
            acc[j, i] = correct / total
    return loss


def _has_loss_landscapes() -> bool:
    """Whether the ``loss-landscapes`` package (the ``[bench]`` extra) is installed; without it that
    method is left out and its ratios are null."""
    import importlib.util

    return importlib.util.find_spec("loss_landscapes") is not None


def loss_landscapes_plane(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> np.ndarray:
    import loss_landscapes
    import loss_landscapes.metrics

    metric = loss_landscapes.metrics.Loss(nn.CrossEntropyLoss(), x, y)
    return np.asarray(loss_landscapes.random_plane(model, metric, distance=1, steps=steps,
                                                   normalization="filter", deepcopy_model=True))


def reference_forward(model: nn.Module, x: torch.Tensor, y: torch.Tensor, reps: int) -> None:
    net = copy.deepcopy(model).eval()
    with torch.inference_mode():
        for _ in range(reps):
            nn.functional.cross_entropy(net(x), y).item()


# ---- one case ------------------------------------------------------------------------------------


def build_case(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor, dict[str, Any]]:
    from losslab import data, models

    dataset, model_name, kw, desc = CASES[name]
    if dataset == "synthetic784":  # MNIST's shape without MNIST (nothing is downloaded)
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(1000, 1, 28, 28, generator=g), torch.randint(0, 10, (1000,), generator=g)
        input_shape, num_classes = (1, 28, 28), 10
    else:
        bundle = data.load(dataset)
        x, y = bundle.train.x.contiguous(), bundle.train.y.contiguous()
        input_shape, num_classes = bundle.input_shape, bundle.num_classes
    model = models.build(model_name, input_shape=input_shape, num_classes=num_classes, seed=0, **kw)
    model.eval()
    info = {
        "description": desc,
        "dataset": dataset,
        "model": model_name,
        "model_kwargs": kw,
        "weights": "zoo init, seed 0 (throughput does not depend on the weight values)",
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "n_examples": int(x.shape[0]),
        "input_shape": list(input_shape),
    }
    return model, x, y, info


def run_case(name: str, args: argparse.Namespace, peak_samples: dict[str, list[float]]) -> dict[str, Any]:
    from losslab.directions import random_plane

    C.log(f"case {name}: loading data and model")
    model, x, y, info = build_case(name)
    fl = C.forward_flops(model, x[:1])
    flops_per_point = fl["per_example"] * info["n_examples"]
    info.update(flops_per_example=fl["per_example"], flops_per_point=flops_per_point, flops_layers=fl["layers"])
    dx, dy = random_plane(model, seed=0)
    n = args.grid
    coords = np.linspace(-1.0, 1.0, n)
    points = n * n
    ref_reps = max(1, min(points, 8))

    def methods(grid: np.ndarray, steps: int) -> dict[str, Callable[[], Any]]:
        return {
            "losslab_auto": lambda: losslab_plane(model, x, y, dx, dy, grid, "auto"),
            "losslab_loop": lambda: losslab_plane(model, x, y, dx, dy, grid, "loop"),
            "losslab_vmap": lambda: losslab_plane(model, x, y, dx, dy, grid, "vmap"),
            "losslab_computed": lambda: losslab_plane(model, x, y, dx, dy, grid, "auto", "compute"),
            "baseline_dataloader": lambda: baseline_plane(model, x, y, dx.vector, dy.vector, grid),
            "loss_landscapes": lambda: loss_landscapes_plane(model, x, y, steps),
            "reference_forward": lambda: reference_forward(model, x, y, ref_reps),
        }

    # warm-up: every method once on a 2 x 2 grid
    C.log(f"case {name}: warm-up")
    torch.manual_seed(0)  # loss_landscapes draws from the global RNG
    run_methods = tuple(m for m in METHODS if m != "loss_landscapes" or _has_loss_landscapes())
    warm = methods(np.linspace(-1.0, 1.0, 2), 2)
    for m in run_methods:
        warm[m]()

    timed = methods(coords, n)
    npts = {m: (ref_reps if m == "reference_forward" else points) for m in run_methods}
    wall: dict[str, list[float]] = {m: [] for m in run_methods}
    cpu: dict[str, list[float]] = {m: [] for m in run_methods}
    sys_frac: dict[str, list[float]] = {m: [] for m in run_methods}
    faults: dict[str, list[float]] = {m: [] for m in run_methods}
    peak_wall: list[float] = []
    peak_cpu: list[float] = []
    extra: dict[str, Any] = {}
    for r in range(args.repeats):
        pk = C.matmul_peak(args.peak_n)
        peak_wall += pk["gflops_wall"]
        peak_cpu += pk["gflops_cpu"]
        k = r % len(run_methods)  # rotate the order: no method always runs first (right after the peak)
        for m in run_methods[k:] + run_methods[:k]:
            C.log(f"case {name}: repeat {r + 1}/{args.repeats}: {m} ({npts[m]} points)")
            t = C.timed(timed[m])
            wall[m].append(npts[m] / t.wall)
            cpu[m].append(npts[m] / max(t.cpu, 1e-9))
            sys_frac[m].append(t.sys / max(t.cpu, 1e-9))
            faults[m].append(t.minflt / npts[m])
            if m.startswith("losslab") or m == "baseline_dataloader":
                extra.setdefault(m, t.value)  # loss grids (and evaluator info) of the first repeat
    peak_samples["wall"] += peak_wall
    peak_samples["cpu"] += peak_cpu

    pps = {m: C.median(v) for m, v in wall.items()}
    pps_best = {m: max(v) for m, v in wall.items()}
    pps_cpu = {m: C.median(v) for m, v in cpu.items()}
    peak_w, peak_c = max(peak_wall), max(peak_cpu)  # the peak is the best sample of this case's repeats
    gflops = {m: v * flops_per_point / 1e9 for m, v in pps.items()}
    gflops_cpu = {m: v * flops_per_point / 1e9 for m, v in pps_cpu.items()}
    frac = {m: v / peak_w for m, v in gflops.items()}
    frac_cpu = {m: v / peak_c for m, v in gflops_cpu.items()}
    ll_auto_loss, ev_info = extra["losslab_auto"]
    base_loss = extra["baseline_dataloader"]
    diffs = {m: float(np.max(np.abs(extra[m][0] - base_loss)))
             for m in ("losslab_auto", "losslab_loop", "losslab_vmap", "losslab_computed")}
    sel = ev_info.get("timing") or {}
    out = {
        **info,
        "grid": [n, n],
        "points": points,
        "points_per_s": pps,
        "points_per_s_range": {m: C.summarize(v) for m, v in wall.items()},
        "points_per_s_cpu": pps_cpu,
        "points_per_s_best": pps_best,
        "gflops": gflops,
        "fraction_of_matmul_peak": frac,
        "fraction_of_matmul_peak_cpu": frac_cpu,
        "fraction_of_matmul_peak_best": {m: v * flops_per_point / 1e9 / peak_w for m, v in pps_best.items()},
        "matmul_peak_gflops": {"wall": peak_w, "cpu": peak_c, "wall_median": C.median(peak_wall),
                               "cpu_median": C.median(peak_cpu)},
        "system_time_fraction": {m: C.median(v) for m, v in sys_frac.items()},
        "minor_page_faults_per_point": {m: C.median(v) for m, v in faults.items()},
        "ratios": {
            "losslab_over_baseline": C.ratio(pps["losslab_auto"], pps["baseline_dataloader"]),
            "losslab_over_loss_landscapes": C.ratio(pps["losslab_auto"], pps.get("loss_landscapes")),
            "losslab_loop_over_baseline": C.ratio(pps["losslab_loop"], pps["baseline_dataloader"]),
            "losslab_auto_over_loop": C.ratio(pps["losslab_auto"], pps["losslab_loop"]),
            "first_layer_precompute_gain": C.ratio(pps["losslab_auto"], pps["losslab_computed"]),
            "losslab_computed_over_baseline": C.ratio(pps["losslab_computed"], pps["baseline_dataloader"]),
            "losslab_vmap_over_loop": C.ratio(pps["losslab_vmap"], pps["losslab_loop"]),
            "losslab_loop_over_reference_forward": C.ratio(pps["losslab_loop"], pps["reference_forward"]),
            "losslab_over_baseline_cpu": C.ratio(pps_cpu["losslab_auto"], pps_cpu["baseline_dataloader"]),
            "losslab_over_loss_landscapes_cpu": C.ratio(pps_cpu["losslab_auto"], pps_cpu.get("loss_landscapes")),
        },
        # the same ratios repeat by repeat (the two methods ran minutes apart at most): their spread is
        # the machine's noise on the ratio itself
        "paired_ratios": {
            "losslab_over_baseline": C.summarize([a / b for a, b in zip(wall["losslab_auto"],
                                                                       wall["baseline_dataloader"])]),
            "losslab_over_loss_landscapes": C.summarize([a / b for a, b in zip(wall["losslab_auto"],
                                                                              wall["loss_landscapes"])])
            if "loss_landscapes" in wall else None,
            "losslab_loop_over_reference_forward": C.summarize([a / b for a, b in zip(wall["losslab_loop"],
                                                                                     wall["reference_forward"])]),
        },
        "auto": {
            "strategy": ev_info.get("strategy"),
            "batch_size": ev_info.get("batch_size"),
            "points_per_chunk": ev_info.get("points_per_chunk"),
            "selection_points": sel.get("points"),
            "selection_loop_s": sel.get("loop_s"),
            "selection_vmap_s": sel.get("vmap_s"),
            "first_layer": ev_info.get("first_layer"),
        },
        "check": {"max_abs_loss_diff_vs_baseline": diffs},
    }
    C.log(f"case {name}: losslab auto {pps['losslab_auto']:.2f} pts/s ({frac['losslab_auto']:.0%} of peak), "
          f"loop {pps['losslab_loop']:.2f}, vmap {pps['losslab_vmap']:.2f}, baseline {pps['baseline_dataloader']:.2f}, "
          f"loss-landscapes {pps.get('loss_landscapes', float('nan')):.2f}")
    return out


# ---- real networks: losslab vs the plain in-place loop (issue 18) ----------------------------------


def build_arch_case(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Model (torch's default init, seed 0, eval mode) and synthetic data of an ``ARCH_CASES`` case."""
    kind, n_ex, _, desc = ARCH_CASES[name]
    torch.manual_seed(0)  # bench only: the models' default initialisation draws from the global RNG
    g = torch.Generator().manual_seed(0)
    if kind == "tiny_lm":
        model: nn.Module = C.TinyLM()
        x = torch.randint(0, 256, (n_ex, 32), generator=g)
        y = torch.randint(0, 256, (n_ex, 32), generator=g)
    else:
        classes = 10 if kind == "resnet18_cifar" else 1000
        model = C.ResNet18(classes, stem="cifar" if kind == "resnet18_cifar" else "torchvision")
        x = torch.randn(n_ex, 3, 32, 32, generator=g)
        y = torch.randint(0, classes, (n_ex,), generator=g)
        with torch.no_grad():  # non-trivial running statistics, as a trained model has
            model.train()
            model(x)
    model.eval()
    info = {"description": desc, "parameters": int(sum(q.numel() for q in model.parameters())),
            "n_examples": n_ex, "has_batchnorm": any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                     for m in model.modules())}
    return model, x, y, info


def plain_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, dx: dict[str, torch.Tensor],
               dy: dict[str, torch.Tensor], xs: np.ndarray, ys: np.ndarray, bn: str) -> np.ndarray:
    """The plain per-point loop: a model copy; at each point ``base + a dx + b dy`` written into its
    parameters in place under ``no_grad``, then one full-batch forward + cross-entropy. With
    ``bn="recompute"`` each point first resets the BatchNorm statistics and runs one full-batch
    forward with BatchNorm in train mode and ``momentum=None`` (exact full-data statistics)."""
    net = copy.deepcopy(model).eval()
    named = list(net.named_parameters())
    w0 = [q.detach().clone() for _, q in named]
    d1, d2 = [dx[k] for k, _ in named], [dy[k] for k, _ in named]
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    loss = np.full((len(ys), len(xs)), np.nan)
    with torch.no_grad():
        for j, b in enumerate(ys):
            for i, a in enumerate(xs):
                for (_, q), w, u, v in zip(named, w0, d1, d2):
                    torch.add(w, u, alpha=float(a), out=q)
                    q.add_(v, alpha=float(b))
                if bn == "recompute" and bns:
                    for m in bns:
                        m.reset_running_stats()
                        m.momentum = None
                        m.train()
                    net(x)
                    for m in bns:
                        m.eval()
                loss[j, i] = nn.functional.cross_entropy(net(x), y).item()
    return loss


def _arch_method(name: str, method: str, bn: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 dx: Any, dy: Any, xs: np.ndarray, ys: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any] | None]:
    ys = xs if ys is None else ys
    if method == "losslab":
        from losslab.surface import plane

        res = plane(model, (x, y), dx=dx, dy=dy, x=xs, y=ys, progress=False, bn=bn)
        return res.metrics["loss"], res.meta["evaluator"]
    return plain_loop(model, x, y, dx.vector, dy.vector, xs, ys, bn), None


def _status_mb(field: str) -> float | None:
    """A ``VmRSS``/``VmHWM`` line of ``/proc/self/status`` in MiB (None where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def rss_child(name: str, method: str, bn: str, threads: int) -> int:
    """Child process of the peak-RSS measurement: build the case, reset the kernel's peak-RSS mark
    (``5 > /proc/self/clear_refs``, Linux >= 4.0), run ``method`` on a 2 x 1 grid and print
    ``{"setup_mb", "peak_mb"}``: the resident set when the method starts (model, data, directions,
    torch) and its high-water mark during the method (``VmHWM``). Resetting the mark keeps the
    set-up's own peak (building directions, a train-mode forward for the BatchNorm statistics) out
    of the method's figure; no tracing allocator is involved (tracemalloc does not see torch's memory)."""
    import gc
    import json

    from losslab.directions import random_plane

    C.set_threads(threads)
    model, x, y, _ = build_arch_case(name)
    dx, dy = random_plane(model, seed=0)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    setup = _status_mb("VmRSS")
    _arch_method(name, method, bn, model, x, y, dx, dy, np.array([-0.5, 0.5]), np.array([0.5]))
    peak = _status_mb("VmHWM")
    print(json.dumps({"setup_mb": setup, "peak_mb": peak}))
    return 0


def peak_rss(name: str, method: str, bn: str, threads: int) -> dict[str, Any]:
    """Peak RSS (MiB) of ``method`` in a fresh process (see :func:`rss_child`): the high-water mark
    while it runs, and its increase over the resident set it started from."""
    import json
    import os
    import subprocess

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(C.ROOT / "src"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", name, method, bn, "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:] or ["failed"]}
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {"peak_mb": r["peak_mb"], "over_start_mb": r["peak_mb"] - r["setup_mb"], "start_mb": r["setup_mb"]}


def run_arch_case(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """losslab ``plane`` vs :func:`plain_loop` on one real network, BatchNorm in eval mode and (if the
    model has BatchNorm) recomputed; methods interleaved in this process (order rotated per repeat),
    CPU and wall time per point, ratios repeat by repeat, peak RSS from one subprocess per method."""
    from losslab.directions import random_plane

    C.log(f"case {name}: building model and data")
    model, x, y, info = build_arch_case(name)
    fl = C.forward_flops(model, x[:1])
    info["flops_per_point"] = fl["per_example"] * info["n_examples"]
    dx, dy = random_plane(model, seed=0)
    n = args.arch_grid or ARCH_CASES[name][2]
    coords = np.linspace(-1.0, 1.0, n)
    modes = ("eval", "recompute") if info["has_batchnorm"] else ("eval",)
    runs = [(m, bn) for bn in modes for m in ARCH_METHODS]
    key = {r: f"{r[0]}_{r[1]}" for r in runs}
    C.log(f"case {name}: warm-up (2 x 1 grid)")
    for m, bn in runs:
        _arch_method(name, m, bn, model, x, y, dx, dy, np.array([-0.5, 0.5]), np.array([0.5]))
    cpu: dict[str, list[float]] = {key[r]: [] for r in runs}
    wall: dict[str, list[float]] = {key[r]: [] for r in runs}
    grids: dict[str, np.ndarray] = {}
    ev_info: dict[str, Any] = {}
    for rep in range(args.repeats):
        k = rep % len(runs)
        for r in runs[k:] + runs[:k]:
            C.log(f"case {name}: repeat {rep + 1}/{args.repeats}: {key[r]} ({n * n} points)")
            t = C.timed(lambda r=r: _arch_method(name, r[0], r[1], model, x, y, dx, dy, coords))
            cpu[key[r]].append(t.cpu / (n * n))
            wall[key[r]].append(t.wall / (n * n))
            grids.setdefault(key[r], t.value[0])
            if t.value[1] is not None:
                ev_info.setdefault(r[1], t.value[1])
    ratios: dict[str, Any] = {}
    for bn in modes:
        a, b = f"losslab_{bn}", f"plain_loop_{bn}"
        ratios[bn] = {
            "cpu": C.ratio(C.median(cpu[b]), C.median(cpu[a])),
            "wall": C.ratio(C.median(wall[b]), C.median(wall[a])),
            "cpu_paired": C.summarize([lb / la for la, lb in zip(cpu[a], cpu[b])]),
            "max_abs_loss_diff": float(np.max(np.abs(grids[a] - grids[b]))),
        }
    rss = {} if args.no_rss else {key[r]: peak_rss(name, r[0], r[1], args.threads) for r in runs}
    if rss:
        C.log(f"case {name}: peak RSS {({k: v.get('peak_mb') for k, v in rss.items()})}")
    out = {
        **info,
        "grid": [n, n],
        "cpu_s_per_point": {k: C.median(v) for k, v in cpu.items()},
        "wall_s_per_point": {k: C.median(v) for k, v in wall.items()},
        "cpu_s_per_point_range": {k: C.summarize(v) for k, v in cpu.items()},
        "losslab_over_loop": ratios,
        "peak_rss_mb": rss,
        "evaluator": {bn: {k: v.get(k) for k in ("strategy", "batch_size", "loop_batch_size", "points_per_chunk", "memory_format",
                                                 "first_layer", "timing", "chunking") if k in v}
                      for bn, v in ev_info.items()},
    }
    C.log(f"case {name}: losslab / loop CPU-time ratio "
          + ", ".join(f"{bn} {v['cpu']:.2f}x (paired {v['cpu_paired']['min']:.2f}-{v['cpu_paired']['max']:.2f})"
                      for bn, v in ratios.items()))
    return out


def arch_targets(cases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Issue 18's acceptance on the real networks (CPU-time medians): BN in eval mode >= 1.0x the plain
    loop on the ResNets and the transformer, BN recomputed >= 0.6x."""
    t: dict[str, Any] = {}
    for name, c in cases.items():
        r = c["losslab_over_loop"]
        t[f"{name}_eval_ge_1x"] = r["eval"]["cpu"] >= 1.0
        if "recompute" in r:
            t[f"{name}_recompute_ge_0.6x"] = r["recompute"]["cpu"] >= 0.6
    t["all"] = all(t.values())
    return t


def targets(cases: dict[str, dict[str, Any]], cpu: bool = False, method: str = "losslab_auto",
            best: bool = False) -> dict[str, Any]:
    """The three targets for ``method`` (from wall-clock or, with ``cpu``, CPU-time medians; with
    ``best``, from each method's fastest repeat: load on a shared machine only ever slows a repeat)."""
    pps_key = "points_per_s_best" if best else ("points_per_s_cpu" if cpu else "points_per_s")
    frac_key = "fraction_of_matmul_peak_best" if best else (
        "fraction_of_matmul_peak_cpu" if cpu else "fraction_of_matmul_peak")
    t: dict[str, Any] = {}
    over_base = {k: c[pps_key][method] >= 2.0 * c[pps_key]["baseline_dataloader"] for k, c in cases.items()}
    over_ll = {k: c[pps_key][method] >= c[pps_key]["loss_landscapes"] for k, c in cases.items()
               if c[pps_key].get("loss_landscapes") is not None}
    t["losslab_ge_2x_baseline"] = {"all": all(over_base.values()), **over_base}
    t["losslab_ge_loss_landscapes"] = {"all": all(over_ll.values()), **over_ll}
    if PEAK_CASE in cases:
        fr = cases[PEAK_CASE][frac_key][method]
        t["mlp_ge_60pct_matmul_peak"] = fr >= PEAK_TARGET
        t["mlp_fraction_of_matmul_peak"] = fr
    return t


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rss_child:
        return rss_child(*args.rss_child, threads=args.threads)
    C.set_threads(args.threads)
    machine = C.machine_info()
    names = [k for k in CASES if (args.model == "all" or CASES[k][1] == args.model)
             and args.case in ("all", k)]
    arch_kind = {"resnet": ("resnet18_cifar", "resnet18_tv"), "transformer": ("tiny_lm",),
                 "real": ("resnet18_cifar", "resnet18_tv", "tiny_lm"), "all": ("resnet18_cifar", "resnet18_tv", "tiny_lm")}
    arch_names = [k for k in ARCH_CASES if ARCH_CASES[k][0] in arch_kind.get(args.model, ())
                  and args.case in ("all", k)]
    C.log(f"surface bench: cases {names}, grid {args.grid}x{args.grid}, {args.repeats} repeat(s), {args.threads} thread(s)")
    peak_samples: dict[str, list[float]] = {"wall": [], "cpu": []}
    cases = {name: run_case(name, args, peak_samples) for name in names}
    arch = {name: run_arch_case(name, args) for name in arch_names}
    machine["load_average_end"] = C.load_average()
    result = {
        "benchmark": "surface",
        "machine": machine,
        "settings": {
            "grid": args.grid,
            "repeats": args.repeats,
            "threads": args.threads,
            "quick": args.quick,
            "baseline_batch_size": BASELINE_BATCH,
            "timing": "median over repeats of points / wall seconds; *_cpu: points / process CPU seconds",
            "flops": "2 x multiply-adds of Linear/Conv layers per example x examples per point (forward-"
                     "equivalent: with the first layer precomputed losslab runs fewer; losslab_computed does not)",
        },
    }
    if cases:
        result.update({
            "matmul_peak": {
                "n": args.peak_n,
                "gflops_wall": C.summarize(peak_samples["wall"]),
                "gflops_cpu": C.summarize(peak_samples["cpu"]),
            },
            "cases": cases,
            "targets": targets(cases),
            "targets_cpu_time": targets(cases, cpu=True),
            "targets_best_of_repeats": targets(cases, best=True),
            "targets_if_strategy_loop": targets(cases, method="losslab_loop"),
            "targets_without_first_layer_precompute": targets(cases, method="losslab_computed"),
        })
    if arch:
        result["arch_cases"] = arch
        result["arch_targets"] = arch_targets(arch)
    C.emit(C.rounded(result), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
