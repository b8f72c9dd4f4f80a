"""Shared helpers for the ``bench/`` scripts: machine description, matmul peak, FLOP counts, timing, JSON.

Every bench script prints **one JSON object on stdout** (progress goes to stderr), so results can be
piped into a file or compared across machines. The conventions used here:

* Time is measured twice: wall clock (``time.perf_counter``, what a user waits for) and process
  CPU time (``time.process_time``). On an idle machine with one torch thread they agree; on a
  shared machine the CPU time is the steadier measure of the work done, and the load average
  recorded in :func:`machine_info` tells which situation a result came from.
* FLOPs are counted analytically for ``nn.Linear`` and ``nn.ConvNd`` layers only, as
  ``2 x multiply-adds`` (bias adds, activations, pooling, normalization and the loss are not counted):

  .. math::

      \\text{Linear}: 2\\,d_\\text{in}\\,d_\\text{out} \\text{ per output row}, \\qquad
      \\text{ConvNd}: 2\\,\\frac{C_\\text{in}}{g}\\,\\prod_i k_i \\text{ per output element}.

* The matmul peak is ``2 n^3 / t`` for ``torch.mm`` of two ``n x n`` float32 matrices, on the
  thread count the benchmark runs with, measured in the same process as the thing it is compared to.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    """Progress line on stderr (stdout is reserved for the JSON result)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def set_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads (and one inter-op thread) for torch."""
    torch.set_num_threads(int(threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (inter-op pool started); harmless
        pass


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git() -> dict[str, Any]:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return {"sha": sha or None, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where unavailable)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, load, torch/python versions and threads, date, git state."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001
        capability = None
    try:
        import losslab

        losslab_version = getattr(losslab, "__version__", None)
    except Exception:  # noqa: BLE001
        losslab_version = None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "cores_available": affinity,
        "load_average_start": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "losslab": losslab_version,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": capability,
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "git": _git(),
    }


class Timing:
    """Wall, CPU and kernel (system) seconds and minor page faults of one timed call (see :func:`timed`)."""

    __slots__ = ("wall", "cpu", "sys", "minflt", "value")

    def __init__(self, wall: float, cpu: float, sys: float, minflt: int, value: Any) -> None:
        self.wall, self.cpu, self.sys, self.minflt, self.value = wall, cpu, sys, minflt, value


def _rusage() -> tuple[float, int]:
    try:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_stime, r.ru_minflt
    except (ImportError, OSError):  # not on POSIX
        return 0.0, 0


def timed(fn: Callable[[], Any]) -> Timing:
    """Run ``fn()`` once; return wall, process-CPU and system seconds, minor page faults and its value.

    System time and page faults show allocator cost: large activations that glibc ``malloc``
    returns to the OS after each use are page-faulted (and zeroed) again at the next use.
    """
    s0, f0 = _rusage()
    c0, w0 = time.process_time(), time.perf_counter()
    value = fn()
    w1, c1 = time.perf_counter(), time.process_time()
    s1, f1 = _rusage()
    return Timing(w1 - w0, c1 - c0, s1 - s0, f1 - f0, value)


def median(xs: Iterable[float]) -> float:
    return float(statistics.median(list(xs)))


def matmul_peak(n: int = 2048, reps: int = 3, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """GFLOP/s of ``torch.mm`` on two ``n x n`` matrices: ``2 n^3 / t`` for each of ``reps`` calls.

    One untimed call comes first. Returns ``{"n", "gflops_wall": [...], "gflops_cpu": [...]}``.
    """
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g, dtype=dtype)
    b = torch.randn(n, n, generator=g, dtype=dtype)
    out = torch.empty(n, n, dtype=dtype)
    flops = 2.0 * n**3
    with torch.inference_mode():
        torch.mm(a, b, out=out)
        walls, cpus = [], []
        for _ in range(reps):
            t = timed(lambda: torch.mm(a, b, out=out))
            walls.append(flops / t.wall / 1e9)
            cpus.append(flops / max(t.cpu, 1e-9) / 1e9)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "gflops_wall": walls, "gflops_cpu": cpus}


def forward_flops(model: nn.Module, example: torch.Tensor) -> dict[str, Any]:
    """Forward FLOPs per example of the ``nn.Linear`` / ``nn.ConvNd`` layers of ``model``.

    ``example`` is a batch of one input (leading dimension 1). Linear: ``2 * in * out`` per
    output row (so a Linear on ``(1, L, in)`` counts ``L`` rows); ConvNd: ``2 * (C_in / groups) *
    prod(kernel)`` per output element. Bias adds, activations, norms and the loss are not counted.

    Returns:
        ``{"per_example": int, "layers": {name: flops}}``.
    """
    if example.shape[0] != 1:
        raise ValueError("forward_flops wants a batch of exactly one example")
    counts: dict[str, int] = {}
    handles = []

    def hook_for(name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, inputs: Any, out: torch.Tensor) -> None:
            if isinstance(mod, nn.Linear):
                rows = out.numel() // mod.out_features
                counts[name] = counts.get(name, 0) + 2 * mod.in_features * mod.out_features * rows
            else:  # conv
                k = 1
                for s in mod.kernel_size:
                    k *= int(s)
                counts[name] = counts.get(name, 0) + 2 * (mod.in_channels // mod.groups) * k * out.numel()

        return hook

    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            handles.append(mod.register_forward_hook(hook_for(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return {"per_example": int(sum(counts.values())), "layers": counts}


def rounded(obj: Any, digits: int = 4) -> Any:
    """``obj`` with floats rounded to ``digits`` significant digits (for readable JSON)."""
    if isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")) or obj == 0.0:
            return obj
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj


def emit(result: dict[str, Any], out: str | os.PathLike | None = None) -> None:
    """Print ``result`` as one JSON object on stdout (and write it atomically to ``out`` if given)."""
    text = json.dumps(result, indent=2, default=str)
    if out is not None:
        from losslab._io import atomic_write_text

        atomic_write_text(out, text + "\n")
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing or ``b`` is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of a list of measurements."""
    return {"median": median(values), "min": float(min(values)), "max": float(max(values))}


# ---- architectures for the real-network surface cases (written here: torchvision is not installed) ----


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convolutions with BatchNorm, identity or 1x1-projection shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016) with torchvision's module layout and initialisation.

    ``stem="torchvision"``: 7x7 stride-2 convolution + 3x3 stride-2 max-pool (ImageNet's stem, as
    ``torchvision.models.resnet18``); ``stem="cifar"``: one 3x3 stride-1 convolution, no max-pool
    (the usual CIFAR variant). Then 4 stages of 2 basic blocks (64, 128, 256, 512 channels),
    global average pooling and a linear head.
    """

    def __init__(self, num_classes: int = 10, stem: str = "torchvision") -> None:
        super().__init__()
        if stem == "torchvision":
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
        elif stem == "cifar":
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"stem must be 'torchvision' or 'cifar', got {stem!r}")
        self.bn1 = nn.BatchNorm2d(64)
        stages, cin = [], 64
        for i, cout in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class _Block(nn.Module):
    """Pre-LayerNorm transformer block: causal multi-head self-attention and a 4x GELU MLP."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(a.transpose(1, 2).reshape(n, t, d))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))


class TinyLM(nn.Module):
    """A small GPT-style language model: token + position embeddings, ``layers`` pre-LN blocks,
    final LayerNorm, linear head. Returns logits ``(N, vocab, T)``: the layout ``F.cross_entropy``
    takes for token targets ``(N, T)``."""

    def __init__(self, vocab: int = 256, d: int = 128, heads: int = 4, layers: int = 2, context: int = 32) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.blocks = nn.Sequential(*[_Block(d, heads) for _ in range(layers)])
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        h = self.ln(self.blocks(self.tok(idx) + self.pos(pos)))
        return self.head(h).transpose(1, 2)
