"""The Goldilocks zone (Fort & Scherlis 2019): curvature in random subspaces vs initialisation radius.

For a standard initialisation :math:`\\theta_{init}` rescaled to norm :math:`r`,
:math:`\\theta_r = r\\,\\theta_{init}/\\lVert\\theta_{init}\\rVert`, and a random ``(D, d)`` projection
:math:`P` (unit-norm columns), the Hessian of the training loss restricted to the subspace is

.. math::

    H_{sub} = P^\\top H(\\theta_r) P = \\nabla_z^2\\, L(\\theta_r + P z)\\big|_{z=0} \\in \\mathbb{R}^{d\\times d},

computed exactly with ``d`` Hessian-vector products in ``z`` (forward-over-reverse,
``torch.func.jvp`` of ``torch.func.grad``, vmapped over chunks of basis vectors); no
:math:`D \\times D` matrix is formed. Reported per radius and seed:

* :math:`\\mathrm{Tr}(H_{sub}) / \\lVert H_{sub}\\rVert_F` — about 0 for a random symmetric matrix,
  :math:`\\sqrt{d}` at most (all eigenvalues equal and positive); the Goldilocks zone is the band of
  :math:`r` where it is clearly positive;
* the fraction of positive eigenvalues of :math:`H_{sub}` (:math:`\\lambda > 0`);
* optionally, whether training in the same random subspace started at :math:`\\theta_r` succeeds
  (final accuracy :math:`\\ge` ``success_accuracy``), giving a success rate per radius.

Seeds: seed ``s`` gives the init (``model_factory(s)``), the projection (seed derived from ``s``,
the same for every radius so curves over ``r`` share one subspace), and the data order of training.

Example:
    >>> import torch
    >>> from losslab import data, models
    >>> b = data.load("blobs")
    >>> make = lambda s: models.build("mlp", input_shape=b.input_shape, num_classes=b.num_classes, seed=s, width=8)
    >>> r = goldilocks(make, b, radii=[0.5, 1.0, 4.0], d=4, seeds=[0], relative=True, train_epochs=0, progress=False)
    >>> r.metrics["trace_over_frobenius"].shape, bool(abs(r.metrics["trace_over_frobenius"]).max() <= 2.0 + 1e-9)
    ((3, 1), True)
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..results import Result, load_arrays, seal
from .._io import atomic_savez, atomic_write_json
from .._functional import ensure_forward_ad, model_then_data
from ..errors import LosslabError
from ._grid import derive_seed, jsonable, paths, progress_bar, tensor_digest, versions
from .display import _ResultDisplay
from .projections import PROJECTIONS, Projection, make_projection
from .training import LossLike, _Functional, _loss_fn, _splits, _xy, train_subspace

__all__ = ["restricted_hessian", "subspace_curvature", "goldilocks", "GoldilocksResult", "GoldilocksDisplay"]

FORMAT = "losslab.goldilocks"
FORMAT_VERSION = 1
CELL_METRICS = ("radius", "trace", "frobenius", "trace_over_frobenius", "positive_fraction", "lambda_min",
                "lambda_max", "loss", "accuracy", "train_accuracy", "test_accuracy", "success", "seconds")


@model_then_data
def restricted_hessian(
    model: nn.Module,
    data: Any,
    *,
    projection: Projection | Tensor,
    point: Mapping[str, Tensor] | nn.Module | Tensor | None = None,
    loss: LossLike = "cross_entropy",
    chunk: int | None = 32,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """:math:`P^\\top H P`, the Hessian of the full-batch loss restricted to the columns of ``P``.

    Computed as the Hessian of :math:`z \\mapsto L(\\theta + P z)` at :math:`z = 0` by ``d``
    Hessian-vector products (``jvp`` of ``grad``), in chunks of ``chunk`` basis vectors under
    ``torch.vmap`` (``chunk=None`` or ``1``: one at a time); if forward mode fails on an op, by double
    backward instead. The model runs in eval mode (BatchNorm
    uses its buffers) on a structural copy; the user's module is not touched. The result is
    symmetrised, :math:`(A + A^\\top)/2`, to remove round-off asymmetry.

    Args:
        model: the network (template).
        data: a Split, ``(x, y)`` or Bundle (its train split); the loss is the mean over all of it.
        projection: a :class:`~losslab.subspace.Projection` or an explicit ``(D, d)`` matrix.
        point: where (default: the model's parameters); a point, module or flat tensor.
        loss: ``"cross_entropy"``, ``"mse"`` or a callable (batch mean).
        chunk: basis vectors per vmapped batch of HVPs.
        device, dtype: default the model's.

    Returns:
        The ``(d, d)`` symmetric matrix.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(3, 2).double()
        >>> xy = (torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 2, (10,)))
        >>> restricted_hessian(net, xy, projection=torch.eye(8, dtype=torch.float64)[:, :2]).shape
        torch.Size([2, 2])
    """
    fn = _Functional(model, device, dtype)
    theta = fn.theta0 if point is None else fn.flat(point, "point")
    if isinstance(projection, Tensor):
        mat = projection.to(device=fn.device, dtype=fn.dtype)
        if mat.dim() != 2 or mat.shape[0] != fn.D:
            raise LosslabError(f"projection matrix must be (D={fn.D}, d), got {tuple(mat.shape)}")
        d = int(mat.shape[1])
        apply: Callable[[Tensor], Tensor] = lambda z: mat @ z  # noqa: E731
    else:
        if projection.D != fn.D:
            raise LosslabError(f"projection maps to {projection.D} parameters, the model has {fn.D}")
        proj = projection.to(fn.device, fn.dtype)
        d = proj.d
        apply = proj
    split = data.train if hasattr(data, "train") and hasattr(data, "test") else data
    x, y = _xy(split)
    x, y = fn._cast(x.detach()), fn._cast(y.detach())
    lf = _loss_fn(loss)
    buffers = fn.buffers

    def f(z: Tensor) -> Tensor:
        return lf(fn.forward(theta + apply(z), x, buffers), y)

    ensure_forward_ad()
    grad_f = torch.func.grad(f)
    z0 = torch.zeros(d, device=fn.device, dtype=fn.dtype)

    def hvp(v: Tensor) -> Tensor:
        return torch.func.jvp(grad_f, (z0,), (v,))[1]

    eye = torch.eye(d, device=fn.device, dtype=fn.dtype)
    step = 1 if not chunk else max(1, int(chunk))
    rows: list[Tensor] = []
    fn.shell.eval()
    try:
        for i in range(0, d, step):
            block = eye[i : i + step]
            if block.shape[0] == 1:
                rows.append(hvp(block[0])[None])
            else:
                rows.append(torch.vmap(hvp)(block))
    except RuntimeError:
        # Some ops lack forward-mode AD (or fail under it, e.g. F.mse_loss in torch 2.13): fall back to
        # reverse-over-reverse (double backward), one basis vector at a time.
        z = z0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(z), z, create_graph=True)
        rows = [torch.autograd.grad(g, z, grad_outputs=eye[i], retain_graph=i < d - 1)[0][None] for i in range(d)]
    h = torch.cat(rows).detach()
    return (h + h.t()) / 2


def subspace_curvature(h_sub: Tensor) -> dict[str, Any]:
    """Tr, Frobenius norm, their ratio, fraction of positive eigenvalues and the spectrum of ``h_sub``.

    Example:
        >>> r = subspace_curvature(torch.diag(torch.tensor([1.0, 1.0, -1.0, 3.0])))
        >>> r["trace_over_frobenius"], r["positive_fraction"]
        (1.1547005383792517, 0.75)
    """
    h = h_sub.detach().double().cpu()
    ev = torch.linalg.eigvalsh((h + h.t()) / 2)
    tr = float(torch.trace(h))
    fro = float(torch.linalg.matrix_norm(h))
    return {
        "trace": tr, "frobenius": fro, "trace_over_frobenius": tr / fro if fro > 0 else float("nan"),
        "positive_fraction": float((ev > 0).double().mean()), "lambda_min": float(ev[0]),
        "lambda_max": float(ev[-1]), "eigenvalues": ev.numpy(),
    }


@dataclass(frozen=True, eq=False)
class GoldilocksResult(Result):
    """Curvature and trainability in random subspaces vs initialisation radius.

    Attributes:
        radii: ``(nr,)`` the radii as given (absolute norms, or multiples of each seed's init norm
            when ``relative``).
        seeds: ``(ns,)`` seeds.
        d: subspace dimension.
        relative: whether ``radii`` are multiples of the init norm.
        init_norms: ``(ns,)`` norm of each seed's standard init (trainable parameters).
        metrics: ``{name: (nr, ns)}``: ``radius`` (absolute norm), ``trace``, ``frobenius``,
            ``trace_over_frobenius``, ``positive_fraction``, ``lambda_min``, ``lambda_max``, ``loss`` and
            ``accuracy`` at :math:`\\theta_r`; with training ``train_accuracy``, ``test_accuracy`` and
            ``success`` (0/1), else NaN; ``seconds``.
        eigenvalues: ``(nr, ns, d)`` spectra of :math:`H_{sub}` (ascending).
        done: ``(nr, ns)`` bool.
        meta: settings, fingerprint, timing, versions.
    """

    radii: np.ndarray
    seeds: np.ndarray
    d: int
    relative: bool
    init_norms: np.ndarray
    metrics: dict[str, np.ndarray]
    eigenvalues: np.ndarray
    done: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return bool(self.done.all())

    def mean(self, name: str) -> np.ndarray:
        """``(nr,)`` mean over done seeds (NaN where none, or where the metric was not measured)."""
        v = self.metrics[name]
        return np.array([float(np.mean(v[i, self.done[i]])) if self.done[i].any() else np.nan
                         for i in range(len(self.radii))])

    @property
    def success_rate(self) -> np.ndarray:
        """``(nr,)`` fraction of seeds whose subspace training succeeded (NaN without training)."""
        return self.mean("success")

    def summary(self) -> dict[str, Any]:
        return jsonable({
            "d": self.d, "relative": self.relative, "radii": self.radii.tolist(), "seeds": self.seeds.tolist(),
            "init_norm_mean": float(np.mean(self.init_norms)) if self.init_norms.size else None,
            "trace_over_frobenius": self.mean("trace_over_frobenius").tolist(),
            "positive_fraction": self.mean("positive_fraction").tolist(),
            "loss": self.mean("loss").tolist(),
            "success_rate": self.success_rate.tolist(),
            "test_accuracy": self.mean("test_accuracy").tolist(),
            "complete": self.complete, "seconds": self.meta.get("timing", {}).get("seconds"),
        })

    def save(self, path: str | Path) -> Path:
        """``<path>.npz`` (radii, seeds, init_norms, eigenvalues, done, ``metric__<name>``) + ``<path>.json``."""
        npz, js = paths(path)
        arrays = {"radii": self.radii, "seeds": self.seeds, "init_norms": self.init_norms,
                  "eigenvalues": self.eigenvalues, "done": self.done}
        arrays.update({f"metric__{k}": v for k, v in self.metrics.items()})
        atomic_savez(npz, **arrays)
        atomic_write_json(js, seal({"format": FORMAT, "format_version": FORMAT_VERSION, "d": self.d,  # checked by load
                                    "relative": self.relative, "metrics": list(self.metrics),
                                    "summary": self.summary(), "meta": jsonable(self.meta)}))
        return npz

    @classmethod
    def load(cls, path: str | Path) -> "GoldilocksResult":
        a, desc = load_arrays(path, FORMAT, what="Goldilocks result")
        return cls(a["radii"].astype(np.float64), a["seeds"].astype(np.int64), int(desc["d"]), bool(desc["relative"]),
                   a["init_norms"].astype(np.float64), {m: a[f"metric__{m}"].astype(np.float64) for m in desc["metrics"]},
                   a["eigenvalues"].astype(np.float64), a["done"].astype(bool), desc.get("meta", {}))


@model_then_data
def goldilocks(
    model_factory: Callable[[int], nn.Module],
    data: Any,
    *,
    radii: Sequence[float],
    d: int,
    seeds: Sequence[int] = (0, 1, 2),
    projection: str = "dense",
    relative: bool = False,
    loss: LossLike = "cross_entropy",
    hessian_examples: int | None = None,
    chunk: int | None = 32,
    train_epochs: int = 10,
    lr: float = 0.05,
    batch_size: int | None = 128,
    success_accuracy: float = 0.5,
    success_metric: str = "test_accuracy",
    path: str | Path | None = None,
    progress: bool | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> GoldilocksResult:
    """Measure the Goldilocks zone: subspace curvature (and trainability) vs init radius.

    Args:
        model_factory: ``seed -> fresh nn.Module`` with a standard initialisation.
        data: a Bundle (Hessian and training on ``train``; test accuracy on ``test``) or a split.
        radii: init radii: absolute norms :math:`r`, or with ``relative=True`` multiples of each
            seed's init norm (1.0 = the standard init itself).
        d: subspace dimension.
        seeds: seeds (init, projection and data order).
        projection: ``"dense"``, ``"sparse"`` or ``"fastfood"``.
        loss: training loss.
        hessian_examples: use the first this many training examples for the Hessian (default all).
        chunk: HVPs per vmapped batch.
        train_epochs: epochs of subspace training from each :math:`\\theta_r` (0: no training).
        lr, batch_size: subspace training (Adam on :math:`\\theta_d`).
        success_accuracy: a run succeeds when its final ``success_metric`` reaches this.
        success_metric: ``"test_accuracy"`` or ``"train_accuracy"``.
        path: save after every cell and resume from it when it exists (settings must match).
        progress: progress bar (``None``: when stderr is a terminal).
        device, dtype: default the model's.

    Returns:
        A :class:`GoldilocksResult`.
    """
    if projection not in PROJECTIONS:
        raise LosslabError(f"unknown projection {projection!r}; choose one of {', '.join(PROJECTIONS)}")
    if success_metric not in ("test_accuracy", "train_accuracy"):
        raise LosslabError(f"success_metric must be 'test_accuracy' or 'train_accuracy', got {success_metric!r}")
    rad = np.asarray([float(r) for r in radii], dtype=np.float64)
    if rad.ndim != 1 or rad.size == 0 or not np.all(np.isfinite(rad)) or np.any(rad <= 0):
        raise LosslabError(f"radii must be a non-empty list of positive numbers, got {list(radii)}")
    seeds_l = [int(s) for s in seeds]
    if not seeds_l or len(set(seeds_l)) != len(seeds_l):
        raise LosslabError(f"seeds must be non-empty and distinct, got {list(seeds)}")
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise LosslabError(f"d must be a positive int, got {d!r}")
    if isinstance(train_epochs, bool) or not isinstance(train_epochs, int) or train_epochs < 0:
        raise LosslabError(f"train_epochs must be an int >= 0, got {train_epochs!r}")
    train, test = _splits(data)
    hx, hy = _xy(train)
    if hessian_examples is not None:
        if int(hessian_examples) < 1:
            raise LosslabError(f"hessian_examples must be >= 1, got {hessian_examples}")
        hx, hy = hx[: int(hessian_examples)], hy[: int(hessian_examples)]

    loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)
    settings = {"d": d, "projection": projection, "relative": bool(relative), "loss": loss_name,
                "hessian_examples": hessian_examples, "train_epochs": train_epochs, "lr": float(lr),
                "batch_size": batch_size, "success_accuracy": float(success_accuracy),
                "success_metric": success_metric, "dtype": str(dtype) if dtype is not None else None}
    fp = {"settings": settings, "radii": rad.tolist(), "seeds": seeds_l, "data": tensor_digest(hx, hy)}
    nr, ns = rad.size, len(seeds_l)
    metrics = {m: np.full((nr, ns), np.nan) for m in CELL_METRICS}
    eig = np.full((nr, ns, d), np.nan)
    done = np.zeros((nr, ns), bool)
    init_norms = np.full(ns, np.nan)
    meta: dict[str, Any] = {"format": FORMAT, "settings": settings, "fingerprint": fp, "versions": versions(),
                            "seed_rule": "seed s: init model_factory(s), projection derive_seed(s, 'goldilocks', d)"}
    prior = 0.0
    if path is not None and all(p.exists() for p in paths(path)):
        prev = GoldilocksResult.load(path)
        if jsonable(prev.meta.get("fingerprint")) != jsonable(fp):
            raise LosslabError("cannot resume from the saved Goldilocks result: settings, grid or data differ")
        metrics = {k: prev.metrics[k].copy() for k in CELL_METRICS}
        eig, done, init_norms = prev.eigenvalues.copy(), prev.done.copy(), prev.init_norms.copy()
        prior = float(prev.meta.get("timing", {}).get("seconds") or 0.0)
    t0 = time.perf_counter()

    def snapshot() -> GoldilocksResult:
        m = {**meta, "timing": {"seconds": prior + time.perf_counter() - t0}}
        return GoldilocksResult(rad.copy(), np.asarray(seeds_l, dtype=np.int64), d, bool(relative),
                                init_norms.copy(), {k: v.copy() for k, v in metrics.items()}, eig.copy(),
                                done.copy(), m)

    bar = progress_bar(done.size, int(done.sum()), progress, "goldilocks")
    try:
        for j, s in enumerate(seeds_l):
            if done[:, j].all():
                continue
            model = model_factory(s)
            fn = _Functional(model, device, dtype)
            if d > fn.D:
                raise LosslabError(f"d={d} exceeds the model's D={fn.D} trainable parameters")
            theta_init = fn.theta0
            rho = float(theta_init.norm())
            if rho == 0.0:
                raise LosslabError(f"model_factory({s}) returned an all-zero init; it cannot be rescaled")
            init_norms[j] = rho
            pseed = derive_seed(s, "goldilocks", d)
            proj = make_projection(projection, fn.D, d, seed=pseed, dtype=fn.dtype, device=fn.device)
            for i, r in enumerate(rad):
                if done[i, j]:
                    continue
                tc = time.perf_counter()
                radius = float(r) * rho if relative else float(r)
                theta_r = theta_init * (radius / rho)
                h = restricted_hessian(model, (hx, hy), projection=proj, point=theta_r, loss=loss, chunk=chunk,
                                       device=fn.device, dtype=fn.dtype)
                c = subspace_curvature(h)
                with torch.no_grad():
                    out = fn.forward(theta_r, fn._cast(hx), fn.buffers)
                    lval = float(_loss_fn(loss)(out, fn._cast(hy)))
                    acc = float((out.argmax(1) == fn._cast(hy)).double().mean()) if not hy.is_floating_point() else float("nan")
                vals = {k: c[k] for k in ("trace", "frobenius", "trace_over_frobenius", "positive_fraction",
                                          "lambda_min", "lambda_max")}
                vals.update(radius=radius, loss=lval, accuracy=acc)
                if train_epochs > 0:
                    tr = train_subspace(model, data, d=d, projection=proj, epochs=train_epochs, lr=lr,
                                        batch_size=batch_size, theta0=theta_r, order_seed=s, loss=loss,
                                        device=fn.device, dtype=fn.dtype)
                    vals.update(train_accuracy=tr.train_accuracy, test_accuracy=tr.test_accuracy)
                    got = tr.test_accuracy if success_metric == "test_accuracy" else tr.train_accuracy
                    vals["success"] = float(math.isfinite(got) and got >= success_accuracy)
                vals["seconds"] = time.perf_counter() - tc
                for k, v in vals.items():
                    metrics[k][i, j] = v
                eig[i, j] = c["eigenvalues"]
                done[i, j] = True
                if path is not None:
                    snapshot().save(path)
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return snapshot()


class GoldilocksDisplay(_ResultDisplay):
    """Tr(H)/‖H‖, the positive-eigenvalue fraction and the success rate vs radius (log x).

    Example:
        >>> import matplotlib
        >>> matplotlib.use("Agg")
        >>> import numpy as np
        >>> m = {k: np.ones((2, 1)) for k in CELL_METRICS}
        >>> r = GoldilocksResult(np.array([1.0, 2.0]), np.array([0]), 2, True, np.ones(1), m,
        ...                      np.zeros((2, 1, 2)), np.ones((2, 1), bool))
        >>> GoldilocksDisplay.from_result(r).ax_.get_xscale()
        'log'
    """

    result: GoldilocksResult

    def plot(self, ax: Any = None) -> "GoldilocksDisplay":
        """Draw on ``ax`` (a new figure when None); sets ``figure_`` and ``ax_``; returns self."""
        r = self.result
        ax = self._axes(ax)
        x = r.radii
        ax.plot(x, r.mean("trace_over_frobenius") / math.sqrt(r.d), "o-", label=r"Tr$(H)/\|H\|_F/\sqrt{d}$")
        ax.plot(x, r.mean("positive_fraction"), "s-", label="fraction λ > 0")
        sr = r.success_rate
        if np.isfinite(sr).any():
            ax.plot(x, sr, "^-", label="training success rate")
        ax.axhline(0.0, color="k", lw=0.8)
        ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
        if r.relative:
            ax.axvline(1.0, color="0.4", lw=0.8, ls="--", label="standard init")
        ax.set_xscale("log")
        ax.set_xlabel("radius / init norm" if r.relative else "radius ‖θ‖")
        ax.set_title(self.title or f"Goldilocks zone (d={r.d})", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
        return self
