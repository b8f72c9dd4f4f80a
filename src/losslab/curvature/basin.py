"""Basin width along random directions and a basin-volume estimate (Huang et al. 2020; Keskar et al. 2017).

For a solution :math:`θ^*`, a direction :math:`d` and a loss threshold :math:`L_{thr} > L(θ^*)`, the
*radius* of the basin along the ray :math:`t ↦ θ^* + t\\,d` is

.. math:: r(d) = \\min\\{t > 0 : L(θ^* + t\\,d) > L_{thr}\\},

the first point where the full-data loss exceeds the threshold (a non-finite loss counts as exceeding
it). :func:`basin_width` measures it for ``num_directions`` random Gaussian directions, filter-normalized
(Li et al. 2018; :func:`losslab.directions.random_direction`: biases and other 1-D tensors stay fixed by
default), in both signs :math:`±d`. The 1-D *width* along :math:`d` is :math:`r(d) + r(-d)`.

Each ray is **bracketed** by geometric expansion :math:`t_0, γt_0, γ^2t_0, …` (``initial_radius``,
``growth``) until the loss exceeds the threshold, then **bisected** until the bracket is below
``rtol`` relative; the reported radius is the bracket's midpoint. Rays that stay below the threshold up to
``max_radius`` are *censored* (reported as ``max_radius``, a lower bound). Expansion assumes the loss does
not cross the threshold and come back between two bracketing points; a smaller ``growth`` guards
better against such bumps. All rays are evaluated together, many points per pass (``torch.vmap`` over
stacked points, see :class:`losslab.evaluate.Evaluator`).

Radii are reported in two units: ``radii`` in units of the direction (:math:`t`, the coordinate of Li et
al.'s 1-D plots: at :math:`t = 1` every filter moved by its own norm) and ``euclidean_radii``
:math:`ρ = t\\,\\|d\\|`.

**Volume** (Huang et al. 2020). A region that is star-shaped about :math:`θ^*` in the :math:`D` coordinates
the directions move has volume

.. math:: V = \\frac{π^{D/2}}{Γ(D/2+1)}\\; E_{u ∼ \\mathrm{Unif}(S^{D-1})}\\big[ρ(u)^D\\big],

estimated over the :math:`2K` rays in log space (``logsumexp``) as
:math:`\\log V ≈ \\log V_D(1) + \\log \\frac{1}{2K}\\sum_j ρ_j^D`. It is exact in expectation when the ray
directions are uniform on the sphere (``normalization="none"``); for filter-normalized directions it is
the filter-normalized analogue used for comparisons between solutions of the same network. For large
:math:`D` the mean is dominated by the longest rays. ``effective_radius`` is the radius of the
:math:`D`-ball with the same volume, :math:`(\\frac{1}{2K}\\sum_j ρ_j^D)^{1/D}`.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._functional import model_then_data
from ..results import Result, read_npz, seal
from .._io import atomic_savez, atomic_write_json
from ..errors import LosslabError
from ..params import Point
from ._common import npz_path, read_saved

__all__ = ["BasinResult", "basin_width", "log_ball_volume"]

_FORMAT = "losslab.basin/1"
_KINDS = ("additive", "relative", "absolute")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def log_ball_volume(dim: int, radius: float = 1.0) -> float:
    """:math:`\\log` of the volume of a ``dim``-dimensional Euclidean ball, :math:`π^{D/2} r^D / Γ(D/2+1)`."""
    if dim < 1 or not radius > 0:
        raise LosslabError(f"log_ball_volume needs dim >= 1 and radius > 0, got {dim}, {radius}")
    return 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim + 1) + dim * math.log(radius)


def _logmeanexp(a: np.ndarray) -> float:
    m = float(np.max(a))
    return m + math.log(float(np.mean(np.exp(a - m))))


def _child_seeds(root: int, n: int) -> list[int]:
    children = np.random.SeedSequence(int(root)).spawn(n)
    return [int(c.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)) for c in children]


@dataclass(frozen=True, eq=False)
class BasinResult(Result):
    """Basin radii along random directions (see the module docstring for the definitions).

    Attributes:
        radii: ``(K, 2)`` float64, radius :math:`t` along :math:`+d_j` (column 0) and :math:`-d_j` (column 1),
            in units of the direction.
        euclidean_radii: ``(K, 2)``, :math:`t\\,\\|d_j\\|`.
        censored: ``(K, 2)`` bool, the loss stayed below the threshold up to ``max_radius``.
        direction_norms: ``(K,)`` :math:`\\|d_j\\|`.
        direction_seeds: the seed of each direction (``random_direction(weights, seed=s, ...)`` rebuilds it).
        base_loss: :math:`L(θ^*)`.
        threshold_loss: :math:`L_{thr}`.
        dim: :math:`D`, the number of coordinates the directions move.
        num_evaluations: loss evaluations (points).
        meta: settings (threshold, kind, normalization, seeds, growth, rtol, ...), JSON-serialisable.
    """

    radii: np.ndarray
    euclidean_radii: np.ndarray
    censored: np.ndarray
    direction_norms: np.ndarray
    direction_seeds: list[int]
    base_loss: float
    threshold_loss: float
    dim: int
    num_evaluations: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_directions(self) -> int:
        return int(self.radii.shape[0])

    @property
    def widths(self) -> np.ndarray:
        """1-D basin width :math:`r(d_j) + r(-d_j)` per direction (units of the direction)."""
        return self.radii.sum(axis=1)

    @property
    def log_volume(self) -> float:
        """:math:`\\log V_D(1) + \\log \\operatorname{mean}_j ρ_j^D` over all rays (natural log, Euclidean radii)."""
        return log_ball_volume(self.dim) + _logmeanexp(self.dim * np.log(self.euclidean_radii.ravel()))

    @property
    def effective_radius(self) -> float:
        """:math:`(\\operatorname{mean}_j ρ_j^D)^{1/D}`: the radius of the ball with the estimated volume."""
        return math.exp(_logmeanexp(self.dim * np.log(self.euclidean_radii.ravel())) / self.dim)

    def quantiles(self, qs: tuple[float, ...] = QUANTILES, *, euclidean: bool = False) -> dict[str, float]:
        """Quantiles of the radii over all rays, keyed ``"q05"``, ``"q25"``... ."""
        r = (self.euclidean_radii if euclidean else self.radii).ravel()
        return {f"q{int(round(100 * q)):02d}": float(np.quantile(r, q)) for q in qs}

    def summary(self) -> dict[str, Any]:
        """Scalar summary (JSON-serialisable): mean/std/min/max and quantiles of the radii, width, volume."""
        r, e = self.radii.ravel(), self.euclidean_radii.ravel()
        return {
            "num_directions": self.num_directions, "base_loss": self.base_loss,
            "threshold_loss": self.threshold_loss, "threshold": self.meta.get("threshold"),
            "threshold_kind": self.meta.get("threshold_kind"),
            "radius_mean": float(r.mean()), "radius_std": float(r.std(ddof=1)) if r.size > 1 else 0.0,
            "radius_min": float(r.min()), "radius_max": float(r.max()),
            "radius_quantiles": self.quantiles(),
            "width_mean": float(self.widths.mean()),
            "euclidean_radius_mean": float(e.mean()),
            "euclidean_radius_quantiles": self.quantiles(euclidean=True),
            "dim": self.dim, "log_volume": self.log_volume, "effective_radius": self.effective_radius,
            "censored": int(self.censored.sum()), "volume_is_lower_bound": bool(self.censored.any()),
            "num_evaluations": self.num_evaluations,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (``.npz``: the arrays) and ``path.json`` (scalars and meta), atomically."""
        path = npz_path(path)
        atomic_savez(path, radii=self.radii, euclidean_radii=self.euclidean_radii, censored=self.censored,
                     direction_norms=self.direction_norms)
        atomic_write_json(path.with_suffix(".json"), seal({  # with its content hash, checked by load
            "format": _FORMAT, "direction_seeds": [int(s) for s in self.direction_seeds],
            "base_loss": self.base_loss, "threshold_loss": self.threshold_loss, "dim": self.dim,
            "num_evaluations": self.num_evaluations, "meta": self.meta, "summary": self.summary(),
        }))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BasinResult":
        """Read a result written by :meth:`save`."""
        path, info = read_saved(path, _FORMAT, "a basin result")
        z = read_npz(path)  # read whole: CRC-32s checked
        arrays = {k: z[k] for k in ("radii", "euclidean_radii", "censored", "direction_norms")}
        return cls(**arrays, direction_seeds=[int(s) for s in info["direction_seeds"]],
                   base_loss=float(info["base_loss"]), threshold_loss=float(info["threshold_loss"]),
                   dim=int(info["dim"]), num_evaluations=int(info["num_evaluations"]), meta=dict(info["meta"]))


def _loss_arg(loss_fn: Any) -> Any:
    """Map torch's cross-entropy to the evaluator's batched built-in; pass anything else through."""
    if loss_fn is F.cross_entropy:
        return "cross_entropy"
    if isinstance(loss_fn, nn.CrossEntropyLoss) and loss_fn.reduction == "mean" and loss_fn.weight is None \
            and loss_fn.ignore_index == -100 and loss_fn.label_smoothing == 0.0:
        return "cross_entropy"
    return loss_fn


def threshold_loss(base_loss: float, threshold: float, kind: str) -> float:
    """:math:`L_{thr}`: ``base + threshold`` (additive), ``base · threshold`` (relative) or ``threshold`` (absolute)."""
    if kind not in _KINDS:
        raise LosslabError(f"threshold_kind must be one of {_KINDS}, got {kind!r}")
    if kind == "additive":
        if not threshold > 0:
            raise LosslabError(f"an additive threshold must be > 0, got {threshold}")
        return base_loss + threshold
    if kind == "relative":
        if not threshold > 1:
            raise LosslabError(f"a relative threshold must be > 1 (a multiple of the loss), got {threshold}")
        return base_loss * threshold
    return float(threshold)


@model_then_data
def basin_width(
    model: nn.Module,
    data: Any,
    *,
    loss: Callable[[Tensor, Tensor], Tensor] | str,
    num_directions: int = 20,
    threshold: float = 0.1,
    threshold_kind: str = "additive",
    seed: int | None = None,
    normalization: str = "filter",
    ignore_1d: bool = True,
    point: Mapping[str, Tensor] | None = None,
    initial_radius: float = 0.05,
    growth: float = 2.0,
    max_radius: float = 100.0,
    rtol: float = 1e-3,
    max_bisections: int = 60,
    batch_size: int | None = None,
    points_per_chunk: int | None = None,
    strategy: str = "auto",
    bn: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> BasinResult:
    """Basin radii along ``num_directions`` random filter-normalized directions, both signs, and a volume.

    See the module docstring for the definitions (radius, width, volume) and the bracketing-plus-bisection
    search. The loss is evaluated by a :class:`losslab.evaluate.Evaluator` (eval mode; BatchNorm statistics
    recomputed at each point when the model has BatchNorm, ``bn="auto"``), never modifying the model.

    Args:
        model: the network; its parameters (or ``point``) are :math:`θ^*`.
        data: a ``Split`` or an ``(x, y)`` pair of tensors.
        loss: ``loss(output, target) -> scalar`` batch mean, or ``"cross_entropy"`` / ``"mse"``.
        num_directions: random directions :math:`K` (each measured in both signs: :math:`2K` rays).
        threshold, threshold_kind: :math:`L_{thr}` = ``L(θ*) + threshold`` (``"additive"``, default),
            ``L(θ*) · threshold`` (``"relative"``, threshold > 1) or ``threshold`` (``"absolute"``).
        seed: root seed of the directions (keyword-only; child seeds per direction are recorded). ``None``
            draws a fresh one (recorded in ``meta["seed"]``); the global RNG is never used.
        normalization, ignore_1d: as for :func:`losslab.directions.random_direction`.
        point: evaluate around this point instead of the model's parameters (missing keys: the model's).
        initial_radius: first bracketing radius :math:`t_0` (units of the direction).
        growth: bracketing expansion factor :math:`γ > 1`.
        max_radius: censoring radius.
        rtol: relative bracket width at which bisection stops.
        max_bisections: bisection steps at most per ray.
        batch_size, points_per_chunk, strategy, bn: passed to the :class:`~losslab.evaluate.Evaluator`.
        progress: ``progress(done_rays, total_rays)`` called after each group of directions.

    Returns:
        A :class:`BasinResult`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from losslab.curvature import basin_width
        >>> X = torch.eye(4, dtype=torch.float64) * 2.0                # XᵀX/n = I: H = 2I for MSE
        >>> model = nn.Linear(4, 1, bias=False).double()
        >>> y = model(X).detach()                                       # θ is an exact minimum, L = 0
        >>> res = basin_width(model, (X, y), loss=nn.MSELoss(), num_directions=3, threshold=0.5, seed=0, rtol=1e-8)
        >>> [round(float(r), 6) for r in res.euclidean_radii.ravel()]  # sqrt(2Δ/λ) = sqrt(2·0.5/2)
        [0.707107, 0.707107, 0.707107, 0.707107, 0.707107, 0.707107]
    """
    from .. import directions as D
    from ..evaluate import Evaluator

    if num_directions < 1:
        raise LosslabError(f"num_directions must be >= 1, got {num_directions}")
    if not (initial_radius > 0 and max_radius >= initial_radius):
        raise LosslabError(f"need 0 < initial_radius <= max_radius, got {initial_radius}, {max_radius}")
    if not growth > 1:
        raise LosslabError(f"growth must be > 1, got {growth}")
    if not 0 < rtol < 1:
        raise LosslabError(f"rtol must be in (0, 1), got {rtol}")
    if seed is None:
        seed = int(torch.Generator().seed()) >> 1
    t0 = time.perf_counter()

    ev = Evaluator(model, data, loss=_loss_arg(loss), batch_size=batch_size, strategy=strategy,
                   points_per_chunk=points_per_chunk, bn=bn)
    theta: Point = ev.base_point()  # the model's parameters, in model order
    if point is not None:
        given = ev.prepare(point)
        theta = {k: given.get(k, v) for k, v in theta.items()}
    base = float(ev.evaluate(theta)["loss"])
    if not math.isfinite(base):
        raise LosslabError(f"the loss at the solution is {base}")
    thr = threshold_loss(base, float(threshold), threshold_kind)
    if not thr > base:
        raise LosslabError(f"threshold loss {thr:.6g} is not above the loss at the solution {base:.6g}")

    seeds = _child_seeds(seed, num_directions)
    K = num_directions
    radii = np.zeros((K, 2))
    censored = np.zeros((K, 2), dtype=bool)
    norms = np.zeros(K)
    dim = 0
    evals = 0
    keys = list(theta)
    group = max(1, ev.points_per_chunk // 2)
    for g0 in range(0, K, group):
        js = list(range(g0, min(K, g0 + group)))
        dirs = [D.random_direction(theta, normalization=normalization, ignore_1d=ignore_1d, seed=seeds[j])
                for j in js]
        if g0 == 0:
            dim = sum(v.numel() for v in dirs[0].vector.values() if bool((v != 0).any()))
            if dim == 0:
                raise LosslabError("the directions are zero (all tensors ignored?); use ignore_1d=False")
        for i, j in enumerate(js):
            norms[j] = dirs[i].norm()
        stackd = {k: torch.stack([d.vector[k] for d in dirs]) for k in keys}
        R = 2 * len(js)
        ray_dir = np.repeat(np.arange(len(js)), 2)          # ray r uses direction ray_dir[r]
        ray_sign = np.tile(np.array([1.0, -1.0]), len(js))  # and sign ray_sign[r]

        def losses(rays: np.ndarray, ts: np.ndarray) -> np.ndarray:
            coef_all = ray_sign[rays] * ts

            def make(idx: np.ndarray) -> Point:
                sel = torch.as_tensor(ray_dir[rays[idx]], dtype=torch.long)
                out: Point = {}
                for k in keys:
                    c = torch.as_tensor(coef_all[idx], dtype=theta[k].dtype, device=theta[k].device)
                    c = c.reshape((-1,) + (1,) * theta[k].dim())
                    out[k] = theta[k].unsqueeze(0) + c * stackd[k][sel.to(stackd[k].device)]
                return out

            return ev.evaluate_many(make, n=len(rays))["loss"]

        lo = np.zeros(R)
        hi = np.full(R, np.nan)
        t = np.full(R, float(initial_radius))
        open_ = np.arange(R)
        while open_.size:  # bracketing
            vals = losses(open_, t[open_])
            evals += open_.size
            above = ~(vals <= thr)  # NaN/inf count as above
            hi[open_[above]] = t[open_[above]]
            below = open_[~above]
            lo[below] = t[below]
            nxt = t[below] * growth
            over = nxt > max_radius
            cens = below[over]
            t[cens] = max_radius
            if cens.size:
                # last chance at exactly max_radius (if not already evaluated there)
                need = cens[lo[cens] < max_radius]
                if need.size:
                    v2 = losses(need, np.full(need.size, float(max_radius)))
                    evals += need.size
                    up = ~(v2 <= thr)
                    hi[need[up]] = max_radius
                    lo[need[~up]] = max_radius
            t[below[~over]] = nxt[~over]
            open_ = below[~over]
        for _ in range(max_bisections):
            act = np.flatnonzero(np.isfinite(hi) & (hi - lo > rtol * hi))
            if not act.size:
                break
            mid = 0.5 * (lo[act] + hi[act])
            vals = losses(act, mid)
            evals += act.size
            above = ~(vals <= thr)
            hi[act[above]] = mid[above]
            lo[act[~above]] = mid[~above]
        rad = np.where(np.isfinite(hi), 0.5 * (lo + hi), max_radius)
        for i, j in enumerate(js):
            radii[j] = rad[2 * i : 2 * i + 2]
            censored[j] = ~np.isfinite(hi[2 * i : 2 * i + 2])
        if progress is not None:
            progress(2 * js[-1] + 2, 2 * K)
    meta = {
        "threshold": float(threshold), "threshold_kind": threshold_kind, "seed": int(seed),
        "normalization": normalization, "ignore_1d": bool(ignore_1d), "initial_radius": float(initial_radius),
        "growth": float(growth), "max_radius": float(max_radius), "rtol": float(rtol),
        "seconds": round(time.perf_counter() - t0, 4), "evaluator": dict(ev.info),
    }
    return BasinResult(
        radii=radii, euclidean_radii=radii * norms[:, None], censored=censored, direction_norms=norms,
        direction_seeds=seeds, base_loss=base, threshold_loss=float(thr), dim=int(dim), num_evaluations=int(evals),
        meta=meta,
    )
