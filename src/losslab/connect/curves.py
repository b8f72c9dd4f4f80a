r"""Trained low-loss curves between two solutions (Garipov et al. 2018, "Loss Surfaces, Mode Connectivity,
and Fast Ensembling of DNNs"; reference code timgaripov/dnn-mode-connectivity).

A curve with control points :math:`\theta_0 = \theta_A, \theta_1, \dots, \theta_{m-1} = \theta_B`
(``num_bends = m - 2`` trainable bends) is

.. math::

    \theta(t) = \sum_{k=0}^{m-1} b_k(t)\,\theta_k, \qquad t \in [0, 1],

with the coefficients

* Bezier (degree :math:`n = m - 1`; one bend = quadratic, two = cubic):
  :math:`b_k(t) = \binom{n}{k} t^k (1-t)^{n-k}`;
* polygonal chain through the control points at :math:`t_k = k/(m-1)`:
  :math:`b_k(t) = \max(0, 1 - |(m-1)t - k|)`.

Both sum to one, and :math:`\theta(0) = \theta_A`, :math:`\theta(1) = \theta_B`; the chain passes
through every control point. Training minimises :math:`\mathbb{E}_{t\sim U(0,1)} [L(\theta(t))]`
over the bends (endpoints fixed) by SGD with one :math:`t` drawn per mini-batch, plus the L2 term
:math:`\tfrac{\lambda}{2}\lVert\theta(t)\rVert^2` on the *interpolated* weights (their
``l2_regularizer``). The model is evaluated functionally at :math:`\theta(t)` — there are no per-layer
"curve module" copies, so any architecture works. BatchNorm layers run in train mode (batch
statistics) during training; for evaluation the statistics are recomputed at each :math:`t`.

Defaults follow the reference code's ``train.py``: SGD, momentum 0.9, weight decay
:math:`\lambda = 10^{-4}` on the curve's weights, and the per-epoch learning rate

.. math::

    \eta_e = \eta \cdot \begin{cases} 1 & e/E \le 0.5 \\ 1 - 0.99\,(e/E - 0.5)/0.4 & 0.5 < e/E \le 0.9 \\
    0.01 & e/E > 0.9 \end{cases}, \qquad e = 1, \dots, E,

bends initialised on the segment :math:`\theta_k = (1 - k/(m-1))\,\theta_A + k/(m-1)\,\theta_B`
(their ``init_linear``), and evaluation at 61 points of :math:`t` with BatchNorm statistics recomputed
(with ``precision=``, adaptive precision along :math:`t`: :mod:`losslab.precision`).

Example:
    >>> import torch
    >>> from losslab.connect.curves import bezier_coefficients, polychain_coefficients
    >>> bezier_coefficients(torch.tensor([0.0, 0.5, 1.0]), 1).tolist()
    [[1.0, 0.0, 0.0], [0.25, 0.5, 0.25], [0.0, 0.0, 1.0]]
    >>> polychain_coefficients(torch.tensor([0.25]), 1).tolist()
    [[0.5, 0.5, 0.0]]
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..results import Result
from .. import params as P
from ..errors import LosslabError
from ..optim import build as build_optimizer
from .._functional import Point, model_then_data, resolve_loss
from .._functional import make_shell as _make_shell
from ..results import jsonable, load_arrays, save_arrays
from .paths import PathResult, _splits, as_point, evaluate_path, interp_keys, xy

if TYPE_CHECKING:  # pragma: no cover
    from ..precision import Precision

__all__ = [
    "CurveResult",
    "bezier_coefficients",
    "polychain_coefficients",
    "curve_coefficients",
    "curve_points",
    "garipov_lr",
    "train_curve",
    "CURVE_KINDS",
]

CURVE_KINDS = ("bezier", "polychain")
FORMAT = "losslab.curve"


# --------------------------------------------------------------------------------- coefficients
def _check_bends(num_bends: int) -> int:
    if not isinstance(num_bends, (int, np.integer)) or isinstance(num_bends, bool) or num_bends < 0:
        raise LosslabError(f"num_bends must be an integer >= 0, got {num_bends!r}")
    return int(num_bends)


def bezier_coefficients(t: Tensor, num_bends: int) -> Tensor:
    r"""Bernstein coefficients :math:`b_k(t) = \binom{n}{k} t^k (1-t)^{n-k}`, :math:`n = \text{num\_bends} + 1`.

    Args:
        t: positions, any shape ``S`` (differentiable).
        num_bends: trainable control points between the endpoints (1 = quadratic, 2 = cubic).

    Returns:
        ``S + (num_bends + 2,)`` coefficients (same dtype as ``t``).
    """
    n = _check_bends(num_bends) + 1
    t = torch.as_tensor(t)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    k = torch.arange(n + 1, dtype=t.dtype, device=t.device)
    binom = torch.tensor([math.comb(n, i) for i in range(n + 1)], dtype=t.dtype, device=t.device)
    tt = t.unsqueeze(-1)
    return binom * tt**k * (1 - tt) ** (n - k)


def polychain_coefficients(t: Tensor, num_bends: int) -> Tensor:
    r"""Polygonal-chain (hat-function) coefficients :math:`b_k(t) = \max(0, 1 - |(m-1)t - k|)`, :math:`m = \text{num\_bends}+2`.

    Returns:
        ``t.shape + (num_bends + 2,)`` coefficients.
    """
    m = _check_bends(num_bends) + 2
    t = torch.as_tensor(t)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    k = torch.arange(m, dtype=t.dtype, device=t.device)
    return torch.clamp(1 - torch.abs(t.unsqueeze(-1) * (m - 1) - k), min=0)


def curve_coefficients(kind: str, t: Tensor, num_bends: int) -> Tensor:
    """:func:`bezier_coefficients` or :func:`polychain_coefficients` by name."""
    if kind == "bezier":
        return bezier_coefficients(t, num_bends)
    if kind == "polychain":
        return polychain_coefficients(t, num_bends)
    raise LosslabError(f"unknown curve kind {kind!r}; choose one of {CURVE_KINDS}")


def curve_points(control: Sequence[Mapping[str, Tensor]], coeffs: Tensor, keys: Sequence[str] | None = None) -> Point:
    r"""Stacked curve points :math:`\theta(t_j) = \sum_k b_k(t_j)\,\theta_k`.

    Args:
        control: the ``m`` control points (same keys and shapes).
        coeffs: ``(K, m)`` (or ``(m,)`` for one point) coefficients.
        keys: which keys to combine (default: all keys of the first control point).

    Returns:
        A point whose tensors have leading dimension K (or none, for ``(m,)`` coefficients).
    """
    keys = list(control[0]) if keys is None else list(keys)
    single = coeffs.dim() == 1
    c = coeffs.unsqueeze(0) if single else coeffs
    if c.shape[-1] != len(control):
        raise LosslabError(f"{c.shape[-1]} coefficients for {len(control)} control points")
    out: Point = {}
    for key in keys:
        ref = control[0][key]
        cc = c.to(dtype=ref.dtype, device=ref.device)
        acc = None
        for j, cp in enumerate(control):
            term = cc[:, j].reshape(-1, *([1] * ref.dim())) * cp[key]
            acc = term if acc is None else acc + term
        out[key] = acc[0] if single else acc
    return out


def garipov_lr(base_lr: float, epoch: int, total_epochs: int) -> float:
    """The reference code's schedule at 1-based ``epoch`` of ``total_epochs`` (see the module docstring)."""
    a = epoch / total_epochs
    if a <= 0.5:
        factor = 1.0
    elif a <= 0.9:
        factor = 1.0 - (a - 0.5) / 0.4 * 0.99
    else:
        factor = 0.01
    return factor * base_lr


# ------------------------------------------------------------------------------------ the result
@dataclass(frozen=True, eq=False)
class CurveResult(Result):
    """A trained curve: its control points, the metrics along it, and the plane of three control points.

    Attributes:
        kind: ``"bezier"`` or ``"polychain"``.
        num_bends: trainable control points between the endpoints.
        control_points: the ``num_bends + 2`` control points (parameters; endpoints first and last),
            detached, on the CPU.
        path: the :class:`~losslab.connect.paths.PathResult` along the curve (``alphas`` = ``t``).
        history: one record per epoch: ``epoch``, ``lr``, ``loss`` (mean mini-batch objective), ``t_mean``.
        plane: :func:`losslab.directions.plane_through` of A, B and the bend (for several bends, the
            bend farthest from the segment AB; ``None`` if they are collinear), for a surface plot.
        plane_coords: ``(len(path.alphas), 2)`` coordinates of the curve's evaluated points in that plane
            (their projection), or ``None``.
        meta: settings, timings, seeds.
    """

    kind: str
    num_bends: int
    control_points: list[Point]
    path: PathResult
    history: list[dict[str, float]]
    plane: Any = None
    plane_coords: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def point(self, t: float) -> Point:
        """The curve's parameters at ``t``."""
        c = curve_coefficients(self.kind, torch.tensor(float(t), dtype=torch.float64), self.num_bends)
        return curve_points(self.control_points, c)

    def save(self, path: str | Path) -> Path:
        """``<path>.npz`` (control points ``cp<k>/<name>``), ``<path>.json`` and ``<path>.path.{npz,json}``."""
        p = Path(path)
        if p.suffix in (".npz", ".json"):
            p = p.with_suffix("")
        arrays = {f"cp{k}/{name}": v.detach().cpu().numpy() for k, cp in enumerate(self.control_points)
                  for name, v in cp.items()}
        if self.plane_coords is not None:
            arrays["plane_coords"] = np.asarray(self.plane_coords)
        self.path.save(p.with_name(p.name + ".path"))
        # the results layer: atomic npz + sealed JSON sidecar (checked, with the npz's CRC-32s, by load)
        return save_arrays(p, FORMAT, arrays, {
            "kind": self.kind, "num_bends": self.num_bends, "keys": list(self.control_points[0]),
            "history": self.history, "meta": jsonable(self.meta, keep_nonfinite=True), "path": p.name + ".path",
        }, keep_nonfinite=True)

    @classmethod
    def load(cls, path: str | Path) -> "CurveResult":
        """Read a curve written by :meth:`save` (the plane is not stored: recompute it if needed)."""
        p = Path(path)
        if p.suffix in (".npz", ".json"):
            p = p.with_suffix("")
        arrays, desc = load_arrays(p, FORMAT, what="curve")
        m = int(desc["num_bends"]) + 2
        cps = [{name: torch.from_numpy(arrays[f"cp{k}/{name}"]) for name in desc["keys"]} for k in range(m)]
        return cls(desc["kind"], int(desc["num_bends"]), cps, PathResult.load(p.with_name(p.name + ".path")),
                   desc["history"], None, arrays.get("plane_coords"), desc.get("meta", {}))


# ------------------------------------------------------------------------------------- training
def _loss_fn(loss: str | Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    return resolve_loss(loss)  # the library's one resolver: names, pkg.module:function, callables


@model_then_data
def train_curve(
    model: nn.Module,
    data: Any,
    *,
    point_a: Mapping[str, Tensor] | nn.Module,
    point_b: Mapping[str, Tensor] | nn.Module,
    kind: Literal["bezier", "polychain"] = "bezier",
    num_bends: int = 1,
    epochs: int = 20,
    lr: float = 0.05,
    batch_size: int = 128,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    schedule: Literal["garipov", "constant"] = "garipov",
    seed: int = 0,
    test_data: Any = None,
    num: int = 61,
    bn: Literal["auto", "recompute", "eval"] = "auto",
    loss: str | Callable[[Tensor, Tensor], Tensor] = "cross_entropy",
    device: torch.device | str | None = None,
    progress: bool | None = False,
    precision: "Precision | None" = None,
) -> CurveResult:
    r"""Train a Bezier curve or polygonal chain between two solutions and evaluate it.

    Args:
        model: the architecture (never modified; evaluated with ``functional_call``).
        data: a ``Bundle`` (trains on ``train``, evaluates train and test), a ``Split`` or ``(x, y)``.
        point_a, point_b: the fixed endpoints (dicts of tensors or models). Only parameters are
            curved; buffers (BatchNorm statistics) are recomputed for evaluation.
        kind: ``"bezier"`` or ``"polychain"``.
        num_bends: trainable control points (1: quadratic Bezier / two-segment chain; 2: cubic...).
        epochs: passes over the training data.
        lr: base learning rate.
        batch_size: mini-batch size (one :math:`t \sim U(0, 1)` per mini-batch).
        momentum: SGD momentum.
        weight_decay: :math:`\lambda` of the L2 term :math:`\tfrac{\lambda}{2}\lVert\theta(t)\rVert^2`.
        schedule: ``"garipov"`` (the reference code's per-epoch schedule) or ``"constant"``.
        seed: seeds the data order and the draws of ``t`` (two separate generators).
        test_data: a test split (overrides the bundle's).
        num: points of ``t`` at which the trained curve is evaluated (default 61, as their
            ``eval_curve.py``).
        bn: BatchNorm handling for the evaluation (``"auto"``: recompute at every ``t``).
        loss: ``"cross_entropy"``, ``"mse"`` or ``loss(output, target) -> mean``.
        device: where to train (default: the endpoints' device).
        progress: show a progress bar.
        precision: ``None`` (exact, default) or a :class:`~losslab.precision.Precision`: the
            trained curve is evaluated along ``t`` with adaptive precision
            (:func:`~losslab.connect.paths.evaluate_path`: the endpoints and every ``coarse``-th
            ``t`` exact, the others estimated with error bars). Training is unchanged. Needs
            ``bn="eval"`` for a model with BatchNorm (checked before training).

    Returns:
        A :class:`CurveResult`.

    Raises:
        LosslabError: bad settings, incompatible endpoints, or a diverging (non-finite) loss.
    """
    if kind not in CURVE_KINDS:
        raise LosslabError(f"unknown curve kind {kind!r}; choose one of {CURVE_KINDS}")
    nb = _check_bends(num_bends)
    if nb < 1:
        raise LosslabError("a trained curve needs num_bends >= 1 (num_bends=0 is the linear path)")
    if int(epochs) < 0 or not lr > 0 or int(batch_size) < 1 or int(num) < 2:
        raise LosslabError(f"need epochs >= 0, lr > 0, batch_size >= 1, num >= 2 (got {epochs}, {lr}, {batch_size}, {num})")
    if schedule not in ("garipov", "constant"):
        raise LosslabError(f"schedule must be 'garipov' or 'constant', got {schedule!r}")
    if precision is not None:  # fail before training, not after
        from ..precision import require_fixed_bn

        require_fixed_bn(model, bn)
    pa, pb = as_point(point_a, "point_a"), as_point(point_b, "point_b")
    keys, _ = interp_keys(model, pa, pb, "recompute")
    ref = pa[keys[0]]
    dev = torch.device(device) if device is not None else ref.device
    pa = {k: pa[k].detach().to(dev) for k in keys}
    pb = {k: pb[k].detach().to(dev, dtype=pa[k].dtype) for k in keys}
    train, _ = _splits(data, test_data)
    x_all, y_all = xy(train, "data")
    x_all, y_all = x_all.to(dev), y_all.to(dev)
    if x_all.is_floating_point():
        x_all = x_all.to(ref.dtype)
    n = int(x_all.shape[0])
    if n == 0:
        raise LosslabError("training data is empty")
    bs = min(int(batch_size), n)
    loss_fn = _loss_fn(loss)

    m = nb + 2
    bends = []
    for j in range(1, m - 1):
        s = j / (m - 1)
        bends.append({k: ((1 - s) * pa[k] + s * pb[k]).clone().requires_grad_(True) for k in keys})
    trainable = [v for b in bends for v in b.values()]
    opt = build_optimizer("sgd", trainable, lr=lr, momentum=momentum)  # losslab.optim's on CPU: no torch._dynamo

    shell = _make_shell(model)
    shell.train()
    buffers = {k: v.detach().clone().to(dev) for k, v in model.named_buffers()}
    if any(v.is_floating_point() for v in buffers.values()):
        buffers = {k: (v.to(ref.dtype) if v.is_floating_point() else v) for k, v in buffers.items()}
    g_order = torch.Generator().manual_seed(int(seed))
    g_t = torch.Generator().manual_seed(int(seed) + 7919)

    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    bar = None
    show = sys.stderr.isatty() if progress is None else progress
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(epochs), desc=f"curve {kind}", leave=False, file=sys.stderr)
    for epoch in range(1, int(epochs) + 1):
        cur = garipov_lr(lr, epoch, int(epochs)) if schedule == "garipov" else lr
        for gr in opt.param_groups:
            gr["lr"] = cur
        perm = torch.randperm(n, generator=g_order).to(dev)
        total, count, tsum = 0.0, 0, 0.0
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            t = torch.rand((), generator=g_t, dtype=torch.float64)
            coeffs = curve_coefficients(kind, t, nb)
            control = [pa, *bends, pb]
            theta = curve_points(control, coeffs, keys)
            out = torch.func.functional_call(shell, {**theta, **buffers}, (x_all[idx],), strict=False)
            obj = loss_fn(out, y_all[idx])
            if weight_decay:
                obj = obj + 0.5 * weight_decay * sum((v**2).sum() for v in theta.values())
            if not torch.isfinite(obj):
                raise LosslabError(f"curve training diverged (loss {float(obj.detach())} at epoch {epoch}); lower lr")
            opt.zero_grad(set_to_none=True)
            obj.backward()
            opt.step()
            total += float(obj.detach()) * len(idx)
            count += len(idx)
            tsum += float(t)
        history.append({"epoch": epoch, "lr": cur, "loss": total / count, "t_mean": tsum / math.ceil(n / bs)})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    train_s = time.perf_counter() - t0

    control = [{k: v.detach().clone() for k, v in cp.items()} for cp in [pa, *bends, pb]]
    ts = np.linspace(0.0, 1.0, int(num))

    def make(sub: np.ndarray) -> Point:
        c = curve_coefficients(kind, torch.as_tensor(sub, dtype=torch.float64), nb)
        return curve_points(control, c, keys)

    path = evaluate_path(model, data, make=make, alphas=ts, test_data=test_data, bn=bn, loss=loss, device=dev,
                         meta={"kind": kind, "num_bends": nb}, precision=precision)
    control_cpu = [{k: v.detach().cpu() for k, v in cp.items()} for cp in control]
    plane, coords = _plane(control_cpu, make, ts)
    meta = {
        "kind": kind, "num_bends": nb, "epochs": int(epochs), "lr": lr, "batch_size": bs, "momentum": momentum,
        "weight_decay": weight_decay, "schedule": schedule, "seed": int(seed), "num": int(num),
        "train_seconds": round(train_s, 4), "steps": int(epochs) * math.ceil(n / bs),
        "t_per": "mini-batch",
    }
    return CurveResult(kind, nb, control_cpu, path, history, plane, coords, meta)


def _plane(control: list[Point], make: Callable[[np.ndarray], Point], ts: np.ndarray) -> tuple[Any, np.ndarray | None]:
    """Plane through A, B and the bend farthest from segment AB; projected curve coordinates."""
    from ..directions import plane_through

    a, b = control[0], control[-1]
    u = P.sub(b, a)
    uu = P.dot(u, u)
    best, far = None, -1.0
    for cp in control[1:-1]:
        v = P.sub(cp, a)
        d2 = P.dot(v, v) - (P.dot(v, u) ** 2 / uu if uu > 0 else 0.0)
        if d2 > far:
            best, far = cp, d2
    try:
        plane = plane_through(a, b, best)
    except LosslabError:
        return None, None
    dx, dy = plane.dx.vector, plane.dy.vector
    pts = P.unstack({k: v.cpu() for k, v in make(ts).items()})
    coords = np.array([[P.dot(P.sub(p, plane.origin), dx) / P.dot(dx, dx),
                        P.dot(P.sub(p, plane.origin), dy) / P.dot(dy, dy)] for p in pts])
    return plane, coords
