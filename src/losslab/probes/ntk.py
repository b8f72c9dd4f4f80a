"""The empirical neural tangent kernel, its motion during training, and training the linearized model
(Fort, Dziugaite, Paul, Kharaghani, Roy & Ganguli 2020, "Deep learning versus kernel learning",
arXiv 2010.15110).

For a network :math:`f_\\theta : x \\mapsto \\mathbb{R}^K` with Jacobian
:math:`J_\\theta(x) = \\partial f_\\theta(x) / \\partial \\theta \\in \\mathbb{R}^{K \\times D}`:

.. math::

    \\Theta_\\theta(x, x')_{kl} = J_\\theta(x)_{k\\cdot} \\, J_\\theta(x')_{l\\cdot}^\\top .

Modes of :func:`empirical_ntk` for inputs :math:`x_1..x_N` and :math:`x'_1..x'_M`:

* ``"full"``: the :math:`NK \\times MK` matrix, row ``n*K + k``, column ``m*K + l`` (example-major);
* ``"trace"``: :math:`N \\times M`, :math:`\\sum_k \\Theta(x_n, x'_m)_{kk}` (trace over outputs);
* ``"diagonal"``: :math:`N \\times M \\times K`, the diagonal :math:`\\Theta(x_n, x'_m)_{kk}`.

Methods: ``"jacobian"`` builds :math:`J` with ``vmap(jacrev)`` per chunk of examples and contracts
(memory :math:`(N + M) K D`); ``"ntvp"`` never holds more than a chunk of Jacobian rows: for each chunk of
:math:`x'` it pulls the :math:`c K` output basis vectors back with ``vjp`` and pushes each through ``jvp``
on chunks of :math:`x` (the NTK-vector-product method of the ``torch.func`` tutorial).
:func:`ntk_matvec` computes :math:`\\Theta v = J (J'^\\top v)` with one ``vjp`` and one ``jvp``, never forming
:math:`J` or :math:`\\Theta` (for Lanczos on large kernels).

Kernel distance (Fort et al. 2020, eq. 3): :math:`d(K_1, K_2) = 1 - \\langle K_1, K_2 \\rangle_F /
(\\lVert K_1 \\rVert_F \\lVert K_2 \\rVert_F)`. Kernel velocity between consecutive checkpoints
:math:`t_i < t_{i+1}`: :math:`v_i = d(K_{t_i}, K_{t_{i+1}}) / (t_{i+1} - t_i)` per optimizer step, and
per unit of log-time :math:`d / (\\ln(1 + t_{i+1}) - \\ln(1 + t_i))`.

Linearized model at :math:`\\theta_t`: :math:`f^{\\mathrm{lin}}_\\theta(x) = f_{\\theta_t}(x) +
J_{\\theta_t}(x)(\\theta - \\theta_t)`, evaluated with ``torch.func.jvp`` (no explicit Jacobian) and trained
with SGD (:func:`train_linearized`); :func:`linearized_vs_full` compares it with the full network trained
by the same loop from the same start.

All evaluations use a meta-device copy of the model in eval mode (BatchNorm running statistics fixed);
the user's module is never modified.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from losslab.probes import empirical_ntk, kernel_distance
    >>> model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    >>> x = torch.randn(4, 3)
    >>> empirical_ntk(model, x, mode="full").shape
    torch.Size([8, 8])
    >>> K = empirical_ntk(model, x, mode="trace")
    >>> abs(kernel_distance(K, 2.0 * K)) < 1e-6
    True
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..results import Result, SummaryArraysFormat
from .._functional import model_then_data
from ..errors import LosslabError
from .._functional import resolve_loss
from ._common import (
    Functional, LossFn, Point, as_xy, check_chunk, default_loss, ensure_forward_ad, iter_chunks, to_numpy,
)

__all__ = [
    "NTKMode", "jacobian", "empirical_ntk", "ntk_matvec", "kernel_distance", "KernelVelocityResult",
    "kernel_velocity", "run_kernel_velocity", "linearize", "LinearTrainResult", "train_linearized",
    "LinearizationResult", "linearized_vs_full",
]

NTKMode = Literal["full", "trace", "diagonal"]
_MODES = ("full", "trace", "diagonal")
VELOCITY_FORMAT = "losslab.kernel_velocity"
LINEARIZATION_FORMAT = "losslab.linearization"


def _outputs(fn: Functional, fixed: Point) -> Callable[[Point, Tensor], Tensor]:
    """``f(p, x) -> (n, K)`` outputs (flattened past the batch dimension)."""

    def f(p: Point, x: Tensor) -> Tensor:
        out = fn({**fixed, **p}, x)
        return out.reshape(out.shape[0], -1)

    return f


@model_then_data
def jacobian(
    model: nn.Module, x: Tensor, *, point: Mapping[str, Tensor] | None = None, chunk_size: int | None = 64,
    params: Sequence[str] | None = None,
) -> Tensor:
    """Per-example Jacobians of the outputs, ``(N, K, D)`` (parameter order as ``named_parameters``)."""
    fn = Functional(model)
    wrt, fixed = fn.split(fn.point(point), params)
    f = _outputs(fn, fixed)
    n = int(x.shape[0])
    size = check_chunk(chunk_size, n)

    def single(p: Point, xi: Tensor) -> Tensor:
        return f(p, xi.unsqueeze(0))[0]

    jac = torch.func.vmap(torch.func.jacrev(single), in_dims=(None, 0))
    parts = []
    for i, j in iter_chunks(n, size):
        J = jac(wrt, x[i:j])
        c, k = j - i, next(iter(J.values())).shape[1]
        parts.append(torch.cat([v.reshape(c, k, -1) for v in J.values()], dim=2).detach())
    return torch.cat(parts)


def _contract(J1: Tensor, J2: Tensor, mode: str) -> Tensor:
    """Kernel from per-example Jacobians ``(N, K, D)`` and ``(M, K, D)`` as plain matmuls (einsum is ~5x slower)."""
    n, k, d = J1.shape
    m = J2.shape[0]
    if mode == "full":
        return J1.reshape(n * k, d) @ J2.reshape(m * k, d).T
    if mode == "trace":
        return J1.reshape(n, k * d) @ J2.reshape(m, k * d).T
    return torch.bmm(J1.transpose(0, 1), J2.permute(1, 2, 0)).permute(1, 2, 0).contiguous()


def _check_mode(mode: str, method: str) -> None:
    if mode not in _MODES:
        raise LosslabError(f"mode must be one of {_MODES}, got {mode!r}")
    if method not in ("jacobian", "ntvp"):
        raise LosslabError(f"method must be 'jacobian' or 'ntvp', got {method!r}")


@model_then_data
def empirical_ntk(
    model: nn.Module,
    x: Tensor,
    *,
    x2: Tensor | None = None,
    point: Mapping[str, Tensor] | None = None,
    mode: NTKMode = "trace",
    method: Literal["jacobian", "ntvp"] = "jacobian",
    chunk_size: int | None = 64,
    params: Sequence[str] | None = None,
) -> Tensor:
    """Empirical NTK between ``x`` (N examples) and ``x2`` (M examples; default ``x``).

    Args:
        model: the network (never modified).
        x, x2: inputs.
        point: parameters (``None``: the model's own).
        mode: ``"full"`` ``(N K, M K)``, ``"trace"`` ``(N, M)`` or ``"diagonal"`` ``(N, M, K)``.
        method: ``"jacobian"`` (materialize per-example Jacobians) or ``"ntvp"`` (vjp/jvp products,
            one chunk of Jacobian rows at a time).
        chunk_size: examples per vectorized call.
        params: parameter names (default all); the kernel is over these parameters only.

    Returns:
        The kernel in the parameters' dtype.
    """
    _check_mode(mode, method)
    same = x2 is None
    x2 = x if x2 is None else x2
    if method == "jacobian":
        J1 = jacobian(model, x, point=point, chunk_size=chunk_size, params=params)
        J2 = J1 if same else jacobian(model, x2, point=point, chunk_size=chunk_size, params=params)
        return _contract(J1, J2, mode)

    ensure_forward_ad()
    fn = Functional(model)
    wrt, fixed = fn.split(fn.point(point), params)
    f = _outputs(fn, fixed)
    n, m = int(x.shape[0]), int(x2.shape[0])
    c1, c2 = check_chunk(chunk_size, n), check_chunk(chunk_size, m)
    k = int(f(wrt, x[:1]).shape[1])
    full = torch.empty(n, k, m, k, dtype=next(iter(wrt.values())).dtype, device=x.device)
    for a, b in iter_chunks(m, c2):
        cb = b - a
        _, vjp_fn = torch.func.vjp(lambda p: f(p, x2[a:b]), wrt)
        basis = torch.eye(cb * k, dtype=full.dtype, device=x.device).reshape(cb * k, cb, k)
        (tangents,) = torch.func.vmap(vjp_fn)(basis)  # J2 rows, leading dim cb*k
        for i, j in iter_chunks(n, c1):
            xs = x[i:j]

            def push(t: Point, xs: Tensor = xs) -> Tensor:
                return torch.func.jvp(lambda p: f(p, xs), (wrt,), (t,))[1]

            block = torch.func.vmap(push)(tangents).detach()  # (cb*k, j-i, k): [(m,l), n, kk]
            full[i:j, :, a:b, :] = block.reshape(cb, k, j - i, k).permute(2, 3, 0, 1)
    if mode == "full":
        return full.reshape(n * k, m * k)
    diag = torch.diagonal(full, dim1=1, dim2=3)  # (n, m, k)
    return diag.sum(-1) if mode == "trace" else diag.contiguous()


@model_then_data
def ntk_matvec(
    model: nn.Module,
    x: Tensor,
    *,
    v: Tensor,
    x2: Tensor | None = None,
    point: Mapping[str, Tensor] | None = None,
    chunk_size: int | None = 256,
    params: Sequence[str] | None = None,
) -> Tensor:
    """:math:`\\Theta(x, x_2) v` for ``v`` of shape ``(M, K)`` without forming :math:`J` or :math:`\\Theta`.

    One ``vjp`` per chunk of ``x2`` gives :math:`u = J(x_2)^\\top v` (a parameter-space vector), then one
    ``jvp`` per chunk of ``x`` gives :math:`J(x) u`. Returns ``(N, K)``.
    """
    ensure_forward_ad()
    fn = Functional(model)
    wrt, fixed = fn.split(fn.point(point), params)
    f = _outputs(fn, fixed)
    x2 = x if x2 is None else x2
    m = int(x2.shape[0])
    if v.shape[0] != m:
        raise LosslabError(f"v has {v.shape[0]} rows but x2 has {m} examples")
    size = check_chunk(chunk_size, max(m, int(x.shape[0])))
    u = {k: torch.zeros_like(t) for k, t in wrt.items()}
    for a, b in iter_chunks(m, size):
        out, vjp_fn = torch.func.vjp(lambda p: f(p, x2[a:b]), wrt)
        (g,) = vjp_fn(v[a:b].reshape(out.shape).to(out.dtype))
        for k in u:
            u[k] = u[k] + g[k].detach()
    parts = []
    for i, j in iter_chunks(int(x.shape[0]), size):
        parts.append(torch.func.jvp(lambda p: f(p, x[i:j]), (wrt,), (u,))[1].detach())
    return torch.cat(parts)


def kernel_distance(K1: Tensor | np.ndarray, K2: Tensor | np.ndarray) -> float:
    """:math:`1 - \\langle K_1, K_2 \\rangle_F / (\\lVert K_1 \\rVert_F \\lVert K_2 \\rVert_F)` (0 for parallel kernels)."""
    a = to_numpy(K1).astype(np.float64).ravel()
    b = to_numpy(K2).astype(np.float64).ravel()
    if a.shape != b.shape:
        raise LosslabError(f"kernels differ in size: {a.size} vs {b.size}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise LosslabError("kernel distance of a zero kernel is undefined")
    return float(1.0 - (a @ b) / (na * nb))


# ---- kernel velocity ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelVelocityResult(SummaryArraysFormat):
    """Empirical NTKs along a trajectory and how fast they move.

    Attributes:
        steps: checkpoint steps ``(P,)``.
        kernels: the kernels ``(P, ...)`` (shape per ``meta["mode"]``).
        kernel_norm: Frobenius norms ``(P,)``.
        distance: ``(P - 1,)`` kernel distance between consecutive checkpoints.
        velocity_step: ``distance / Δstep``; ``velocity_logstep``: ``distance / Δ ln(1 + step)``.
        distance_from_init, distance_to_final: ``(P,)`` distance to the first / last kernel.
        summary: early vs late velocity (means over the first and second half of the transitions).
        meta: data subset, mode, method, timing.
    """

    steps: np.ndarray
    kernels: np.ndarray
    kernel_norm: np.ndarray
    distance: np.ndarray
    velocity_step: np.ndarray
    velocity_logstep: np.ndarray
    distance_from_init: np.ndarray
    distance_to_final: np.ndarray

    _FORMAT = VELOCITY_FORMAT

    def plot(self, linearization: Any = None, *, ax: Any = None) -> Any:
        """Plot this result: ``NTKDisplay.from_result(self, linearization, ax=ax)``, returning the
        :class:`~losslab.probes.display.NTKDisplay`."""
        from .display import NTKDisplay

        return NTKDisplay.from_result(self, linearization, ax=ax)


def _halves(v: np.ndarray) -> tuple[float, float]:
    if len(v) == 0:
        return float("nan"), float("nan")
    h = max(1, len(v) // 2)
    late = v[h:] if len(v) > 1 else v
    return float(np.mean(v[:h])), float(np.mean(late))


@model_then_data
def kernel_velocity(
    model: nn.Module,
    x: Tensor,
    *,
    trajectory: Sequence[tuple[int, Mapping[str, Tensor]]],
    mode: NTKMode = "trace",
    method: Literal["jacobian", "ntvp"] = "jacobian",
    chunk_size: int | None = 64,
    params: Sequence[str] | None = None,
    meta: Mapping[str, Any] | None = None,
    models: Sequence[nn.Module] | None = None,
) -> KernelVelocityResult:
    """NTK on ``x`` at each ``(step, point)`` of a trajectory, with distances and velocities.

    Args:
        model: the network template.
        x: the data subset the kernel is evaluated on.
        trajectory: ``[(step, point), ...]`` in increasing step order (e.g. ``run.trajectory()``).
        mode, method, chunk_size, params: as :func:`empirical_ntk`.
        meta: extra description stored with the result.
        models: one template per trajectory entry, used instead of ``model`` for that entry: its buffers
            (BatchNorm statistics) are those of that checkpoint.
    """
    if models is not None and len(models) != len(trajectory):
        raise LosslabError(f"models has {len(models)} entries for a trajectory of {len(trajectory)}")
    if len(trajectory) < 2:
        raise LosslabError("kernel velocity needs a trajectory of at least 2 checkpoints")
    steps = np.asarray([int(s) for s, _ in trajectory], dtype=np.int64)
    if np.any(np.diff(steps) <= 0):
        raise LosslabError(f"trajectory steps must increase strictly, got {steps.tolist()}")
    t0 = time.perf_counter()
    templates = list(models) if models is not None else [model] * len(trajectory)
    kernels = [to_numpy(empirical_ntk(m, x, point=p, mode=mode, method=method, chunk_size=chunk_size,
                                      params=params)).astype(np.float64) for m, (_, p) in zip(templates, trajectory)]
    K = np.stack(kernels)
    d = np.array([kernel_distance(K[i], K[i + 1]) for i in range(len(K) - 1)])
    dt = np.diff(steps).astype(np.float64)
    dlog = np.diff(np.log1p(steps.astype(np.float64)))
    vs, vl = d / dt, d / dlog
    e_s, l_s = _halves(vs)
    e_l, l_l = _halves(vl)
    summary = {
        "velocity_step_early": e_s, "velocity_step_late": l_s, "velocity_logstep_early": e_l,
        "velocity_logstep_late": l_l, "velocity_falls": bool(l_s < e_s),
        "distance_init_to_final": kernel_distance(K[0], K[-1]), "n_checkpoints": int(len(steps)),
    }
    info = {"mode": mode, "method": method, "n_examples": int(x.shape[0]),
            "seconds": round(time.perf_counter() - t0, 3), "time_units": "optimizer steps; log-time ln(1 + step)"}
    info.update(meta or {})
    return KernelVelocityResult(
        steps=steps, kernels=K, kernel_norm=np.linalg.norm(K.reshape(len(K), -1), axis=1), distance=d,
        velocity_step=vs, velocity_logstep=vl,
        distance_from_init=np.array([kernel_distance(K[0], k) for k in K]),
        distance_to_final=np.array([kernel_distance(k, K[-1]) for k in K]), summary=summary, meta=info,
    )


def _subset(x: Tensor, y: Tensor, n: int | None, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    total = int(x.shape[0])
    if n is None or n >= total:
        idx = torch.arange(total)
    else:
        if n < 1:
            raise LosslabError(f"number of examples must be >= 1, got {n}")
        idx = torch.sort(torch.randperm(total, generator=torch.Generator().manual_seed(int(seed)))[:n]).values
    return x[idx.to(x.device)], y[idx.to(y.device)], idx


def run_kernel_velocity(
    run: Any,
    *,
    n_examples: int = 100,
    split: str = "test",
    seed: int = 0,
    max_checkpoints: int | None = None,
    mode: NTKMode = "trace",
    method: Literal["jacobian", "ntvp"] = "jacobian",
    chunk_size: int | None = 64,
    bn: Literal["auto", "recompute", "eval"] = "auto",
) -> KernelVelocityResult:
    """:func:`kernel_velocity` along a :class:`losslab.runs.Run`'s saved checkpoints.

    Args:
        run: a finished or partial run (``run.trajectory()`` supplies the checkpoints).
        n_examples: random examples of ``split`` the kernel is computed on.
        max_checkpoints: keep at most this many checkpoints, evenly spaced in index (first and last kept).
        bn: the BatchNorm statistics each checkpoint's kernel is taken with (the policy of every
            measurement): ``"recompute"`` (``"auto"`` on a BatchNorm model): those of the training data
            at that checkpoint's parameters, as :func:`~losslab._functional.with_recomputed_batchnorm`;
            ``"eval"``: the checkpoint's own running statistics. Either way they are held fixed while
            differentiating. Models without BatchNorm are unaffected.
    """
    from .._functional import batchnorm_layers, resolve_bn, with_recomputed_batchnorm

    traj = run.trajectory()
    if max_checkpoints is not None and len(traj) > max_checkpoints:
        if max_checkpoints < 2:
            raise LosslabError("max_checkpoints must be >= 2")
        keep = sorted(set(np.round(np.linspace(0, len(traj) - 1, max_checkpoints)).astype(int).tolist()))
        traj = [traj[i] for i in keep]
    x, y = as_xy(run.bundle(), split)
    xs, _, idx = _subset(x, y, n_examples, seed)
    model = run.build_model()
    mode_bn = resolve_bn(model, bn)
    models = None
    if batchnorm_layers(model):  # each checkpoint with its own BatchNorm statistics, not the final model's
        train_x = as_xy(run.bundle(), "train")[0] if mode_bn == "recompute" else None
        models = []
        for step, _ in traj:
            twin = run.build_model()
            twin.load_state_dict(run.state_dict(step))
            models.append(with_recomputed_batchnorm(twin, train_x) if train_x is not None else twin.eval())
    return kernel_velocity(model, xs, trajectory=traj, mode=mode, method=method, chunk_size=chunk_size, models=models,
                           meta={"run_dir": str(run.path), "split": split, "seed": seed,
                                 "indices": idx.tolist(), "bn": mode_bn})


# ---- linearized training ---------------------------------------------------------------------------


def linearize(
    model: nn.Module, point0: Mapping[str, Tensor] | None, *, params: Sequence[str] | None = None
) -> Callable[[Mapping[str, Tensor], Tensor], Tensor]:
    """The first-order Taylor model :math:`f^{\\mathrm{lin}}_\\theta(x) = f_{\\theta_0}(x) + J_{\\theta_0}(x)(\\theta - \\theta_0)`.

    Returns ``f_lin(point, x)`` (outputs shaped as the model's); one ``torch.func.jvp`` per call, no
    explicit Jacobian. ``point`` must hold the differentiated parameters (other keys are ignored); it
    is differentiable, so ``torch.func.grad`` of a loss of ``f_lin`` trains the linear model.
    """
    ensure_forward_ad()
    fn = Functional(model)
    wrt0, fixed = fn.split(fn.point(point0), params)

    def f_lin(point: Mapping[str, Tensor], x: Tensor) -> Tensor:
        missing = [k for k in wrt0 if k not in point]
        if missing:
            raise LosslabError(f"point lacks linearized parameters {missing[:5]}")
        delta = {k: point[k] - wrt0[k] for k in wrt0}
        out, dout = torch.func.jvp(lambda q: fn({**fixed, **q}, x), (wrt0,), (delta,))
        return out + dout

    return f_lin


@dataclass(frozen=True)
class LinearTrainResult(Result):
    """Outcome of :func:`train_linearized`: final point and metrics, and per-epoch history."""

    point: Point
    train_loss: float
    train_error: float
    test_loss: float
    test_error: float
    history: list[dict[str, float]]
    seconds: float


def _evaluate(f: Callable[[Point, Tensor], Tensor], p: Point, x: Tensor, y: Tensor, loss: LossFn,
              chunk: int) -> tuple[float, float]:
    if len(x) == 0:
        return float("nan"), float("nan")
    total, wrong = 0.0, 0
    for i, j in iter_chunks(int(x.shape[0]), chunk):
        out = f(p, x[i:j]).detach()
        total += float(loss(out, y[i:j])) * (j - i)
        if not y.is_floating_point():
            wrong += int((out.argmax(-1) != y[i:j]).sum())
    n = int(x.shape[0])
    return total / n, (wrong / n if not y.is_floating_point() else float("nan"))


@model_then_data
def train_linearized(
    model: nn.Module,
    data: Any,
    *,
    point: Mapping[str, Tensor] | None = None,
    test_data: Any = None,
    linear: bool = True,
    lr: float = 0.05,
    epochs: int = 10,
    batch_size: int = 128,
    momentum: float = 0.0,
    seed: int = 0,
    loss: LossFn | None = None,
    params: Sequence[str] | None = None,
    eval_chunk: int = 1024,
) -> LinearTrainResult:
    """Train the model linearized at ``point`` (or, with ``linear=False``, the network itself) with SGD.

    The loop is the same for both, so the two are compared with identical data order, step size and
    length: per epoch a permutation from ``torch.Generator().manual_seed(seed)``; PyTorch SGD semantics
    (``buf = momentum * buf + g``; ``θ -= lr * buf``).

    Args:
        model: the network template (never modified).
        data, test_data: ``Split``/``(x, y)`` (a ``Bundle`` gives both when ``test_data`` is None).
        point: the point :math:`\\theta_t` the model is linearized at and training starts from
            (``None``: the model's own parameters).
        linear: train :math:`f^{\\mathrm{lin}}` (True) or :math:`f` (False).
        lr, epochs, batch_size, momentum, seed: SGD settings (``batch_size=0``: full batch).
        loss: default cross-entropy / MSE.
        params: parameter names trained (default all).
    """
    if hasattr(data, "train") and hasattr(data, "test") and test_data is None:
        test_data = data.test
        data = data.train
    xtr, ytr = as_xy(data)
    if test_data is None or len(test_data.x if hasattr(test_data, "x") else test_data[0]) == 0:
        xte, yte = xtr[:0], ytr[:0]
    else:
        xte, yte = as_xy(test_data)
    if not lr > 0 or epochs < 1 or batch_size < 0 or not 0 <= momentum < 1:
        raise LosslabError(f"bad SGD settings: lr={lr}, epochs={epochs}, batch_size={batch_size}, momentum={momentum}")
    loss = loss if loss is not None else default_loss(ytr)
    fn = Functional(model)
    p0, fixed = fn.split(fn.point(point), params)
    if linear:
        f = linearize(model, {**p0, **fixed}, params=list(p0))
    else:
        def f(p: Point, x: Tensor) -> Tensor:
            return fn({**fixed, **p}, x)

    def objective(p: Point, xb: Tensor, yb: Tensor) -> Tensor:
        return loss(f(p, xb), yb)

    grad = torch.func.grad(objective)
    p = {k: v.detach().clone() for k, v in p0.items()}
    buf: Point | None = None
    n = int(xtr.shape[0])
    bs = n if batch_size == 0 or batch_size >= n else batch_size
    gen = torch.Generator().manual_seed(int(seed))
    history = []
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n, generator=gen).to(xtr.device) if bs < n else torch.arange(n, device=xtr.device)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            g = grad(p, xtr[idx], ytr[idx])
            if momentum > 0:
                buf = {k: v.detach().clone() for k, v in g.items()} if buf is None else {
                    k: momentum * buf[k] + g[k].detach() for k in g}
                step = buf
            else:
                step = g
            p = {k: (p[k] - lr * step[k]).detach() for k in p}
        tl, te = _evaluate(f, p, xtr, ytr, loss, eval_chunk)
        if not math.isfinite(tl):
            raise LosslabError(f"{'linearized ' if linear else ''}training diverged at epoch {epoch}; lower the LR")
        vl, ve = _evaluate(f, p, xte, yte, loss, eval_chunk)
        history.append({"epoch": epoch, "train_loss": tl, "train_error": te, "test_loss": vl, "test_error": ve})
    last = history[-1]
    return LinearTrainResult({**p}, last["train_loss"], last["train_error"], last["test_loss"], last["test_error"],
                             history, round(time.perf_counter() - t0, 3))


@dataclass(frozen=True)
class LinearizationResult(SummaryArraysFormat):
    """Linearized vs full training started at several checkpoints of a run.

    Attributes:
        steps: checkpoint steps the model was linearized at ``(S,)``.
        linear_test_error, full_test_error, linear_train_error, full_train_error, linear_test_loss,
        full_test_loss: ``(S,)`` after training from that checkpoint with the same SGD loop.
        start_test_error: ``(S,)`` test error of the checkpoint itself.
        summary: run's own final test error, whether linearizing later helps (``later_is_better``).
        meta: SGD settings, run, timing.
    """

    steps: np.ndarray
    linear_test_error: np.ndarray
    full_test_error: np.ndarray
    linear_train_error: np.ndarray
    full_train_error: np.ndarray
    linear_test_loss: np.ndarray
    full_test_loss: np.ndarray
    start_test_error: np.ndarray

    _FORMAT = LINEARIZATION_FORMAT


def linearized_vs_full(
    run: Any,
    steps: Sequence[int] | None = None,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    momentum: float | None = None,
    seed: int = 0,
    n_train: int | None = None,
    loss_fn: LossFn | None = None,
) -> LinearizationResult:
    """Train the network linearized at each checkpoint ``step`` and the full network from the same point.

    Defaults come from the run's config (epochs, lr, batch size, momentum, and the loss it was trained with
    unless ``loss_fn`` is given); the loop is always SGD
    (an Adam/RMSprop run is continued with SGD at its LR: pass ``lr`` for a sensible one). ``steps`` default: the first checkpoint and the one
    nearest a quarter of training. ``n_train`` trains on a random subset (test error always on the full
    test split).
    """
    cfg = run.config
    ckpts = [s for s, _ in run.checkpoints()]
    if not ckpts:
        raise LosslabError(f"run {run.path} has no checkpoints")
    if steps is None:
        quarter = ckpts[-1] / 4
        steps = sorted({ckpts[0], min(ckpts, key=lambda s: abs(s - quarter))})
    unknown = [s for s in steps if s not in ckpts]
    if unknown:
        raise LosslabError(f"run has no checkpoint at steps {unknown}; steps: {ckpts}")
    o = cfg.optim
    settings = {
        "epochs": int(epochs if epochs is not None else o.epochs),
        "lr": float(lr if lr is not None else o.lr),
        "batch_size": int(batch_size if batch_size is not None else o.batch_size),
        "momentum": float(momentum if momentum is not None else o.momentum),
        "seed": int(seed),
    }
    bundle = run.bundle()
    xtr, ytr = bundle.train.x, bundle.train.y
    if n_train is not None and n_train < len(xtr):
        xtr, ytr, _ = _subset(xtr, ytr, n_train, seed)
    model = run.build_model()
    traj = dict(run.trajectory())
    rows = []
    t0 = time.perf_counter()
    net = Functional(model)
    if loss_fn is None:
        o = run.config.optim
        loss_fn = resolve_loss(o.loss or None, num_classes=bundle.num_classes, output_key=o.output_key or None)
    for s in steps:
        start = traj[s]
        _, start_err = _evaluate(net, start, bundle.test.x, bundle.test.y, loss_fn, 1024)
        lin = train_linearized(model, (xtr, ytr), point=start, test_data=bundle.test, linear=True, loss=loss_fn,
                               **settings)
        full = train_linearized(model, (xtr, ytr), point=start, test_data=bundle.test, linear=False, loss=loss_fn,
                                **settings)
        rows.append((s, lin, full, start_err))
    arr = lambda f: np.array([f(r) for r in rows], dtype=np.float64)  # noqa: E731
    lin_err = arr(lambda r: r[1].test_error)
    summary = {
        "run_test_error": run.summary.get("test_error"),
        "linear_test_error_first": float(lin_err[0]), "linear_test_error_last": float(lin_err[-1]),
        "later_is_better": bool(lin_err[-1] < lin_err[0]) if len(rows) > 1 else None,
        "steps": [int(s) for s in steps],
    }
    return LinearizationResult(
        steps=np.asarray(steps, dtype=np.int64), linear_test_error=lin_err,
        full_test_error=arr(lambda r: r[2].test_error), linear_train_error=arr(lambda r: r[1].train_error),
        full_train_error=arr(lambda r: r[2].train_error), linear_test_loss=arr(lambda r: r[1].test_loss),
        full_test_loss=arr(lambda r: r[2].test_loss), start_test_error=arr(lambda r: r[3]), summary=summary,
        meta={"run_dir": str(run.path), **settings, "n_train": int(len(xtr)),
              "seconds": round(time.perf_counter() - t0, 3)},
    )
