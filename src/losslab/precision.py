"""Adaptive precision: surfaces whose cost follows the precision asked for, with an error bar per point.

A surface value is a mean over the :math:`N` examples, :math:`L(p) = \\frac1N \\sum_i \\ell_i(p)`.
Instead of evaluating all :math:`N` examples at every grid point, :class:`AdaptiveGrid` estimates
it from a subsample with a **control variate**.

**Reference points.** A coarse lattice of grid points (along each axis every ``coarse``-th index
counted from the point nearest the centre, coordinate 0, plus both ends) is evaluated exactly, keeping every per-example value
:math:`\\ell_i(c_k)`; these are computed once. For a point :math:`p` the control interpolates them:
:math:`g_i(p) = \\sum_k w_k(p)\\, \\ell_i(c_k)` with :math:`w_k` the tensor-product Lagrange weights
(in the grid's coordinates) of the 3 lattice nodes nearest to :math:`p` along each axis (fewer
where the lattice has fewer), so :math:`g_i` follows each example's loss quadratically between
the references; its full mean :math:`\\bar g(p) = \\sum_k w_k L(c_k)` is known exactly.

**Estimator.** With a sample :math:`S` drawn without replacement, stratified by class where the
targets are class labels (strata :math:`h` of :math:`N_h` examples, weights
:math:`W_h = N_h / N`, :math:`n_h` drawn from each) and residuals
:math:`r_i = \\ell_i(p) - g_i(p)`:

.. math::

    \\hat L(p) = \\bar g(p) + \\sum_h W_h \\bar r_h, \\qquad
    \\widehat{\\mathrm{SE}}^2 = \\sum_h W_h^2 \\Big(1 - \\frac{n_h}{N_h}\\Big) \\frac{s_h^2}{n_h},

with :math:`s_h^2` the sample variance (divisor :math:`n_h - 1`) of the stratum's residuals and
:math:`1 - n_h/N_h` the finite-population correction. :math:`\\hat L` is unbiased for any
control, and :math:`\\widehat{\\mathrm{SE}}^2` is unbiased for its variance (both checked by
enumeration in the tests). Near the references the residuals are small and the sample stays small.
The sample starts at ``initial`` examples (:math:`n_h = \\min(N_h, \\max(\\min(2, N_h),
\\lceil n N_h / N \\rceil))`, monotone in :math:`n`, so samples are nested) and doubles, reusing
the examples already evaluated, until :math:`z\\,\\widehat{\\mathrm{SE}} \\le \\tau` for the governed
metric, :math:`z` the two-sided normal quantile of ``confidence``, or until every example is used:
the value is then exact (:math:`\\widehat{\\mathrm{SE}} = 0`). Every other metric (accuracy, user
metrics: any mean over examples) is estimated from the same sample with its own error bar.

**Take-all stratum** (``take_all``, default 0.1). Residual populations can be very skewed (between
independently trained solutions a few examples carry most of the residual), and a small sample
then misses them: estimate and error bar alike. As in survey sampling (Cochran 1977, *Sampling
Techniques*, sections 2.15 and 5A.13; Hidiroglou 1986, *The American Statistician* 40:27-31),
those examples are taken with certainty: once the lattice is complete, the
:math:`|T| = \\min(\\lceil \\text{take\\_all} \\cdot N \\rceil, \\text{initial})` examples whose
reference values of the governed metric change most between neighbouring lattice nodes
(:math:`s_i = \\max |\\ell_i(c) - \\ell_i(c')|`, ties by index; :mod:`losslab._certainty`) form a
stratum :math:`T` evaluated at every estimated point, and the class strata above hold the other
examples (:math:`N_h` counts only those, weights :math:`W_h = N_h / N` still over all :math:`N`):

.. math::

    \\hat L(p) = \\bar g(p) + \\frac{1}{N} \\sum_{i \\in T} r_i + \\sum_h W_h \\bar r_h,

with the same :math:`\\widehat{\\mathrm{SE}}` (:math:`T` adds no variance). :math:`T` is a function of
the references alone, so draws stay reproducible and resumable and every rank of the distributed
driver builds the same one; ``examples_used`` counts it, ``summary()`` records :math:`|T|` and the rule.

**Tolerance.** :math:`\\tau = \\max(\\text{atol}, \\text{rtol} \\cdot s)` with :math:`s` the
governed metric's range (max - min) over the exact coarse lattice, or, for a flat lattice, its
largest absolute value there: ``rtol=0.01`` asks for 1% of the surface's range.

**Draws.** Point ``k`` (flat, row-major index) draws its per-stratum permutations from
``numpy.random.default_rng([seed, k])``: an estimate depends only on the seed, the point and the
references, so a surface is reproducible bit for bit and resumes exactly; ``examples_used`` and the
seed record each draw.

**Tolerance over the grid** (``simultaneous=True``, the default). The stopping rule uses the
Bonferroni quantile :math:`z_m = \\Phi^{-1}(1 - (1 - \\text{confidence}) / 2m)` over the grid's
:math:`m` points instead of :math:`z`, so that every estimate is within :math:`\\tau` at once with
probability ``confidence``: the tolerance bounds the picture's largest error, not each point's.

**Coarse to fine** (``refine=True``). Every cell of the lattice has its children (edge midpoints
and centre) estimated. Then, recursively, a cell's sub-cell is split in turn (its own children
estimated) when the surface bends there: when at one of its corners the *surplus* exceeds
:math:`2\\tau` in absolute value (or is not finite). The surplus is the estimate minus the
interpolation that would otherwise stand in for it: the biquadratic (3 x 3 Lagrange)
interpolation over the parent cell's evaluated points, or for the children of a lattice cell the
bilinear one over its corners. Points never evaluated are filled by the biquadratic interpolation
over the 3 x 3 evaluated points of the smallest split cell around them and flagged
``interpolated``; their ``stderr`` combines the nodes' standard errors with an allowance
:math:`a` for the interpolation error, half the largest surplus at the unsplit cell's corners (the
error of the finer interpolation is a fraction of it on a smooth surface):
:math:`\\mathrm{SE}^2 = \\sum_k w_k^2 \\mathrm{SE}_k^2 + (a / z)^2`. With ``refine=False`` every
point is estimated.

**Lines and paths.** A line (:func:`losslab.surface.line`), a linear path or a curve along
:math:`t` (:func:`losslab.connect.evaluate_path`: ``linear_path``, ``train_curve``, ``neb_path``;
``losslab interpolate``/``connect --rtol``) is the grid with one row (:func:`adaptive_path`). Its
exact references are the lattice points, which always include both ends of the path and, where the
positions extend beyond them, ``a = 0`` and ``a = 1`` (the endpoints :math:`\\theta_A`,
:math:`\\theta_B`); each other point's control interpolates the per-example values of the 3 nearest
of them, and a point whose error bar stays too large gets more examples, up to all of them (exact).
The error bars assume the estimate is close to normal. Between two independently trained solutions
the per-example residuals can be very skewed (skewness 3 to 5 in the tests' MLPs); the take-all
stratum removes most of the tail near the references, but mid-way between them the tail is broad
and not predicted by the references, and there the intervals still cover the exact value somewhat
less often than ``confidence`` says (in the tests about 93-94% overall, for 95% asked, against
91-93% without the take-all stratum).

BatchNorm statistics recomputed at each point couple every example of the set: adaptive precision
needs ``bn="eval"`` (or a model without BatchNorm; :func:`require_fixed_bn` says so in one line).

Example:
    >>> import torch
    >>> from losslab.directions import random_plane
    >>> from losslab.surface import plane
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    >>> data = (torch.randn(500, 4), torch.randint(0, 3, (500,)))
    >>> dx, dy = random_plane(net, normalization="filter", seed=0)
    >>> res = plane(net, data, dx=dx, dy=dy, nx=9, ny=9, precision=Precision(rtol=0.05), progress=False)
    >>> p = res.meta["precision"]
    >>> p["example_evaluations"] < p["exact_equivalent"] == 81 * 500, bool(res.exact[4, 4])
    (True, True)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Callable, Sequence

import numpy as np

from ._certainty import take_all_count, take_all_set
from .errors import LosslabError

__all__ = ["Precision", "Strata", "stratified_mean", "AdaptiveGrid", "ARRAY_NAMES", "adaptive_path",
           "require_fixed_bn"]

ARRAY_NAMES = ("examples_used", "exact", "interpolated")
"""Per-point arrays of an adaptive surface besides ``stderr__<metric>`` (and ``reference`` while unfinished)."""


@dataclass(frozen=True)
class Precision:
    """How precise an adaptive surface must be (see the module docstring for the method).

    Attributes:
        rtol: tolerance relative to the governed metric's range over the exact coarse lattice.
        atol: absolute tolerance (in the metric's units); the tolerance is ``max(atol, rtol * range)``.
        confidence: two-sided confidence of the stopping rule ``z * SE <= tolerance``.
        seed: seed of the subsample draws.
        initial: first subsample size (it doubles from there).
        coarse: spacing, in grid steps, of the exactly evaluated reference lattice.
        refine: coarse to fine (interpolate where the surface is flat); ``False`` estimates every point.
        metric: the metric the tolerance governs (others get error bars from the same sample).
        simultaneous: the tolerance holds for every point of the grid at once with probability
            ``confidence`` (Bonferroni: the stopping rule uses :meth:`z_stop` over the grid's
            points), so it bounds the largest error of the picture; ``False``: each point's own.
        take_all: the fraction of the examples (at most ``initial`` of them) in the take-all
            stratum: those whose reference values change most from node to node, evaluated at
            every estimated point (:mod:`losslab._certainty`); ``0``: none, every example sampled.

    Example:
        >>> p = Precision(rtol=0.01)
        >>> round(p.z, 3), p.tolerance(2.0)
        (1.96, 0.02)
    """

    rtol: float = 0.0
    atol: float = 0.0
    confidence: float = 0.95
    seed: int = 0
    initial: int = 128
    coarse: int = 8
    refine: bool = True
    metric: str = "loss"
    simultaneous: bool = True
    take_all: float = 0.1

    def __post_init__(self) -> None:
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise LosslabError(f"precision {name} must be a finite number >= 0, got {v!r}")
        if self.rtol == 0 and self.atol == 0:
            raise LosslabError("precision needs rtol > 0 or atol > 0 (for an exact surface pass precision=None)")
        if not 0 < float(self.confidence) < 1:
            raise LosslabError(f"precision confidence must lie in (0, 1), got {self.confidence!r}")
        if int(self.seed) < 0:
            raise LosslabError(f"precision seed must be >= 0, got {self.seed}")
        if int(self.initial) < 2:
            raise LosslabError(f"precision initial must be >= 2, got {self.initial}")
        if int(self.coarse) < 1:
            raise LosslabError(f"precision coarse must be >= 1, got {self.coarse}")
        if not (isinstance(self.take_all, (int, float)) and 0 <= float(self.take_all) < 1):
            raise LosslabError(f"precision take_all must be a fraction in [0, 1), got {self.take_all!r}")

    @property
    def z(self) -> float:
        """The two-sided normal quantile of ``confidence`` (1.96 for 0.95)."""
        return NormalDist().inv_cdf(0.5 + float(self.confidence) / 2)

    def z_stop(self, points: int) -> float:
        """The quantile of the stopping rule ``z * SE <= tolerance`` on a grid of ``points`` points:
        :attr:`z`, or with ``simultaneous`` the Bonferroni quantile
        :math:`\\Phi^{-1}(1 - (1 - \\text{confidence}) / (2 \\cdot \\text{points}))`."""
        if not self.simultaneous:
            return self.z
        return NormalDist().inv_cdf(1 - (1 - float(self.confidence)) / (2 * max(1, int(points))))

    def tolerance(self, scale: float) -> float:
        """``max(atol, rtol * scale)``."""
        return max(float(self.atol), float(self.rtol) * float(scale))

    def describe(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dict (stored in a result's ``meta["precision"]``)."""
        return asdict(self)


# ---- strata and the estimator ----------------------------------------------------------------------


class Strata:
    """The examples split into strata (classes), with nested, seeded draws.

    Args:
        labels: class label per example (integers) or ``None`` for one stratum (regression,
            token targets).
        n: number of examples.
        exclude: examples left out of every stratum (the take-all set); the weights
            :math:`W_h = N_h / N` stay relative to all ``n`` examples.
    """

    def __init__(self, labels: np.ndarray | None, n: int, exclude: np.ndarray | None = None) -> None:
        self.n = int(n)
        if labels is None:
            self.groups = [np.arange(self.n, dtype=np.int64)]
        else:
            lab = np.asarray(labels).reshape(-1)
            if lab.size != self.n:
                raise LosslabError(f"{lab.size} labels for {self.n} examples")
            self.groups = [np.flatnonzero(lab == c).astype(np.int64) for c in np.unique(lab)]
        if exclude is not None and len(exclude):
            out = np.zeros(self.n, bool)
            out[np.asarray(exclude, dtype=np.int64)] = True
            self.groups = [g for g in (g[~out[g]] for g in self.groups) if g.size]
        self.sizes = np.array([g.size for g in self.groups], dtype=np.int64)
        self.total = int(self.sizes.sum())
        self.weights = self.sizes / self.n

    def allocation(self, n: int) -> np.ndarray:
        """Examples drawn per stratum for a total of about ``n``: monotone in ``n``, at most ``N_h``."""
        want = np.ceil(int(n) * self.sizes / max(1, self.total)).astype(np.int64)
        return np.minimum(self.sizes, np.maximum(np.minimum(2, self.sizes), want))

    def draw(self, seed: int, key: int) -> list[np.ndarray]:
        """Each stratum's examples in the random order of ``default_rng([seed, key])``."""
        rng = np.random.default_rng([int(seed), int(key)])
        return [g[rng.permutation(g.size)] for g in self.groups]


def stratified_mean(samples: Sequence[np.ndarray], sizes: Sequence[int], total: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The stratified mean and its standard error (with the finite-population correction).

    Args:
        samples: per stratum ``h``, the ``n_h`` sampled values (shape ``(n_h,)`` or ``(n_h, M)``),
            drawn without replacement; ``n_h >= 2`` unless ``n_h == N_h``.
        sizes: the stratum sizes ``N_h``.
        total: :math:`N` of the weights :math:`W_h = N_h / N` (default the sum of ``sizes``; larger
            where a take-all stratum, added by the caller, holds the other examples).

    Returns:
        ``(mean, se)``: :math:`\\sum_h W_h \\bar y_h` and
        :math:`\\sqrt{\\sum_h W_h^2 (1 - n_h/N_h) s_h^2 / n_h}` (zero when every example is drawn).

    Example:
        >>> m, se = stratified_mean([np.array([1.0, 3.0]), np.array([2.0])], [4, 1])
        >>> float(m), round(float(se), 4)
        (2.0, 0.5657)
    """
    total = float(sum(int(s) for s in sizes) if total is None else total)
    mean: Any = 0.0
    var: Any = 0.0
    for v, big_n in zip(samples, sizes):
        v = np.asarray(v, dtype=np.float64)
        n_h, w = v.shape[0], int(big_n) / total
        if n_h == 0 or n_h > int(big_n):
            raise LosslabError(f"a stratum of {big_n} examples has {n_h} sampled")
        mean = mean + w * v.mean(0)
        if n_h < int(big_n):
            if n_h < 2:
                raise LosslabError("a partly sampled stratum needs at least 2 values for its variance")
            var = var + w * w * (1.0 - n_h / int(big_n)) * v.var(0, ddof=1) / n_h
    return np.asarray(mean, dtype=np.float64), np.sqrt(np.asarray(var, dtype=np.float64))


# ---- the grid --------------------------------------------------------------------------------------

Cell = tuple[int, int, int, int]
"""``(i0, i1, j0, j1)``: grid indices of a cell's corners (x from i0 to i1, y from j0 to j1)."""

_RULE = ("the min(ceil(take_all * N), initial) examples of largest spread max |l_i(c) - l_i(c')| over "
         "neighbouring lattice nodes c, c' (governed metric; ties by index)")
"""The take-all rule, as recorded in :meth:`AdaptiveGrid.summary` (see :mod:`losslab._certainty`)."""
_BIG = 1 << 62
_ORDER = 2
"""Degree of the control's interpolation of the lattice's per-example values (2: 3 x 3 nearest nodes)."""
_SPLIT = 2.0
"""A cell is split when a surplus at its corners exceeds this many tolerances."""
_ALLOW = 0.5
"""The interpolation allowance of an unsplit cell: this fraction of the largest surplus at its corners."""


def _lattice(v: np.ndarray, step: int) -> np.ndarray:
    """Every ``step``-th index from the one nearest coordinate 0 (the centre), plus both ends."""
    n, step = v.size, max(1, int(step))
    anchor = int(np.argmin(np.abs(v)))
    return np.asarray(sorted({0, n - 1, *range(anchor % step, n, step)}), dtype=np.int64)


def _pairs(lat: np.ndarray) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in zip(lat[:-1], lat[1:])] or [(int(lat[0]), int(lat[0]))]


def _mid(a: int, b: int) -> int | None:
    return (a + b) // 2 if b - a >= 2 else None


def _children(c: Cell) -> list[tuple[int, int]]:
    """The ``(i, j)`` points splitting cell ``c``: edge midpoints and centre (none for a leaf)."""
    i0, i1, j0, j1 = c
    im, jm = _mid(i0, i1), _mid(j0, j1)
    pts: list[tuple[int, int]] = []
    if im is not None:
        pts += [(im, j0), (im, j1)]
    if jm is not None:
        pts += [(i0, jm), (i1, jm)]
    if im is not None and jm is not None:
        pts.append((im, jm))
    return list(dict.fromkeys(pts))


def _subcells(c: Cell) -> list[Cell]:
    i0, i1, j0, j1 = c
    im, jm = _mid(i0, i1), _mid(j0, j1)
    xs = [(i0, im), (im, i1)] if im is not None else [(i0, i1)]
    ys = [(j0, jm), (jm, j1)] if jm is not None else [(j0, j1)]
    return [(a, b, e, f) for (e, f) in ys for (a, b) in xs]


def _corners(c: Cell) -> list[tuple[int, int]]:
    i0, i1, j0, j1 = c
    return list(dict.fromkeys([(i0, j0), (i1, j0), (i0, j1), (i1, j1)]))


class AdaptiveGrid:
    """The state of an adaptive surface on an ``(ny, nx)`` grid (a line: ``ny = 1``, ``ys=None``).

    Holds, per point, the estimate of each metric, its standard error, the examples used and the
    exact/interpolated flags, plus the per-example reference values of the coarse lattice. The
    next points to evaluate are a pure function of this state (:meth:`plan`), so a run interrupted
    and resumed from saved arrays continues exactly.

    Args:
        precision: the settings.
        xs, ys: grid coordinates (``ys=None`` for a line).
        metric_names: the evaluator's metrics, in order.
        labels: per-example class labels (strata) or ``None``.
        n_examples: ``N``.
        metrics, done, arrays: a saved partial state (``SurfaceResult.metrics``/``done``/``arrays``)
            or ``None`` to start afresh.
        anchors: indices along x added to the exact lattice (a path's endpoints ``a = 0`` and
            ``a = 1`` when its alphas extend beyond them).
    """

    def __init__(self, precision: Precision, xs: np.ndarray, ys: np.ndarray | None, metric_names: Sequence[str],
                 labels: np.ndarray | None, n_examples: int, *, metrics: dict[str, np.ndarray] | None = None,
                 done: np.ndarray | None = None, arrays: dict[str, np.ndarray] | None = None,
                 anchors: Sequence[int] = ()) -> None:
        self.p = precision
        self.xs = np.asarray(xs, dtype=np.float64)
        self.ys = np.zeros(1) if ys is None else np.asarray(ys, dtype=np.float64)
        self.names = list(metric_names)
        if precision.metric not in self.names:
            raise LosslabError(f"precision metric {precision.metric!r} is not evaluated; have {self.names}")
        self.g = self.names.index(precision.metric)
        self.nx, self.ny, self.n = self.xs.size, self.ys.size, int(n_examples)
        self.labels = labels
        self.strata = Strata(labels, self.n)
        self.z = precision.z
        self.z_stop = precision.z_stop(self.xs.size * self.ys.size)
        m, size = len(self.names), self.nx * self.ny
        arrays = dict(arrays or {})
        self.value = np.full((size, m), np.nan)
        self.se = np.full((size, m), np.nan)
        if metrics is not None:
            for k, name in enumerate(self.names):
                self.value[:, k] = np.asarray(metrics[name], dtype=np.float64).reshape(-1)
                self.se[:, k] = arrays.get(f"stderr__{name}", np.full(size, np.nan)).reshape(-1)
        self.used = np.asarray(arrays.get("examples_used", np.zeros(size, np.int64))).reshape(-1).astype(np.int64)
        self.exact = np.asarray(arrays.get("exact", np.zeros(size, bool))).reshape(-1).astype(bool)
        self.interpolated = np.asarray(arrays.get("interpolated", np.zeros(size, bool))).reshape(-1).astype(bool)
        d = np.zeros(size, bool) if done is None else np.asarray(done, bool).reshape(-1)
        self.evaluated = d & ~self.interpolated
        self.lat_x, self.lat_y = _lattice(self.xs, precision.coarse), _lattice(self.ys, precision.coarse)
        if len(anchors):
            extra = np.asarray(anchors, dtype=np.int64).reshape(-1)
            if extra.min() < 0 or extra.max() >= self.nx:
                raise LosslabError(f"lattice anchors must lie in [0, {self.nx}), got {extra.tolist()}")
            self.lat_x = np.union1d(self.lat_x, extra)
        self.lattice = np.array([j * self.nx + i for j in self.lat_y for i in self.lat_x], dtype=np.int64)
        self.ref = arrays.get("reference")
        if self.ref is not None and self.ref.shape != (self.lattice.size, self.n, m):
            raise LosslabError("the saved reference values do not fit this grid and data; start over")
        self.ref_mean = None if self.ref is None else self.ref.mean(1)
        self.tol = self._tolerance() if self.evaluated[self.lattice].all() else None
        self._certain()

    # ---- planning ------------------------------------------------------------------------------

    def flat(self, i: int, j: int) -> int:
        return j * self.nx + i

    def _roots(self) -> list[Cell]:
        return [(a, b, e, f) for (e, f) in _pairs(self.lat_y) for (a, b) in _pairs(self.lat_x)]

    def plan(self) -> list[int]:
        """The next wave of points to evaluate (flat indices, ascending); empty when finished."""
        lat = [int(k) for k in self.lattice if not self.evaluated[k]]
        if lat:
            return lat
        if not self.p.refine:
            return [k for k in range(self.nx * self.ny) if not self.evaluated[k]]
        wave, _ = self._walk()
        return wave

    def _walk(self) -> tuple[list[int], list[tuple[Cell, Cell, np.ndarray]]]:
        """``(next wave, terminal cells)``: descend from the roots, splitting cells where the surface
        bends, until a wave has unevaluated points. A terminal cell comes as ``(cell, parent,
        allowance)``: its interior is interpolated from the parent's 3 x 3 evaluated points."""
        assert self.tol is not None
        none = np.zeros(len(self.names))
        frontier: list[tuple[Cell, Cell | None, bool, np.ndarray]] = [(c, None, True, none) for c in self._roots()]
        terminal: list[tuple[Cell, Cell, np.ndarray]] = []
        while frontier:
            need = sorted({self.flat(i, j) for c, _, split, _ in frontier if split for (i, j) in _children(c)})
            wave = [k for k in need if not self.evaluated[k]]
            if wave:
                return wave, terminal
            nxt: list[tuple[Cell, Cell | None, bool, np.ndarray]] = []
            for c, parent, split, allow in frontier:
                if not split or not _children(c):
                    if parent is not None:
                        terminal.append((c, parent, allow))
                    continue
                # the surplus: estimate minus the interpolation that would stand in for it (the parent's
                # 3 x 3 quadratic; bilinear on a root cell, which has no evaluated parent)
                surplus = {pt: self.value[self.flat(*pt)] - (self._interp(c, *pt)[0] if parent is None else
                                                            self._combine(self._quadratic(parent, *pt))[0])
                           for pt in _children(c)}
                for sub in _subcells(c):
                    s = np.array([surplus[pt] for pt in _corners(sub) if pt in surplus] or [none])
                    worst = np.abs(s).max(0)
                    bend = not bool(worst[self.g] <= _SPLIT * self.tol)
                    allow = _ALLOW * np.where(np.isfinite(worst), worst, np.inf)
                    nxt.append((sub, c, bend and bool(_children(sub)), allow))
            frontier = nxt
        return [], terminal

    def _weights(self, c: Cell, i: int, j: int) -> list[tuple[int, int, float]]:
        """Bilinear weights ``(i, j, w)`` of point ``(i, j)`` on the corners of cell ``c`` (coordinates)."""
        i0, i1, j0, j1 = c
        tx = 0.0 if i1 == i0 else (self.xs[i] - self.xs[i0]) / (self.xs[i1] - self.xs[i0])
        ty = 0.0 if j1 == j0 else (self.ys[j] - self.ys[j0]) / (self.ys[j1] - self.ys[j0])
        out: dict[tuple[int, int], float] = {}
        for (a, b), w in (((i0, j0), (1 - tx) * (1 - ty)), ((i1, j0), tx * (1 - ty)),
                          ((i0, j1), (1 - tx) * ty), ((i1, j1), tx * ty)):
            if w != 0.0:
                out[(a, b)] = out.get((a, b), 0.0) + float(w)
        return [(a, b, w) for (a, b), w in out.items()]

    def _quadratic(self, c: Cell, i: int, j: int) -> list[tuple[int, int, float]]:
        """Tensor Lagrange weights ``(i, j, w)`` of point ``(i, j)`` on cell ``c``'s evaluated 3 x 3
        points (corners, edge midpoints, centre; 2 or 1 nodes along an axis the cell does not split)."""
        def axis(v: np.ndarray, a: int, b: int, t: int) -> list[tuple[int, float]]:
            m = _mid(a, b)
            nodes = [a] if a == b else ([a, b] if m is None else [a, m, b])
            out = []
            for q in nodes:
                w = 1.0
                for r in nodes:
                    if r != q:
                        w *= (v[t] - v[r]) / (v[q] - v[r])
                out.append((q, float(w)))
            return out

        return [(a, b, wx * wy) for b, wy in axis(self.ys, c[2], c[3], j) for a, wx in axis(self.xs, c[0], c[1], i)
                if wx * wy != 0.0]

    def _interp(self, c: Cell, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Bilinear interpolation of the estimates (and the propagated variance) at ``(i, j)``."""
        return self._combine(self._weights(c, i, j))

    def _combine(self, weights: list[tuple[int, int, float]]) -> tuple[np.ndarray, np.ndarray]:
        v, var = np.zeros(len(self.names)), np.zeros(len(self.names))
        for a, b, w in weights:
            k = self.flat(a, b)
            v = v + w * self.value[k]
            var = var + (w * self.se[k]) ** 2
        return v, var

    # ---- evaluation ----------------------------------------------------------------------------

    def _tolerance(self) -> float:
        vals = self.value[self.lattice, self.g]
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            raise LosslabError(f"the {self.p.metric} is not finite at any point of the coarse lattice")
        scale = float(vals.max() - vals.min()) or float(np.abs(vals).max())
        tol = self.p.tolerance(scale)
        if not tol > 0:
            raise LosslabError(f"the tolerance is 0 (the {self.p.metric} is 0 on the coarse lattice); give atol > 0")
        self.scale = scale
        return tol

    def evaluate(self, points: Sequence[int], values: Callable[[int, np.ndarray | None], np.ndarray]) -> None:
        """Evaluate ``points`` (flat indices): lattice points exactly (keeping their per-example values),
        others by the control-variate estimator. ``values(k, index)`` gives the per-example metric
        values ``(len(index), M)`` at point ``k`` (``index=None``: all examples, in order).
        The same as :meth:`apply` of :meth:`compute`."""
        self.apply(self.compute(points, values))

    def compute(self, points: Sequence[int], values: Callable[[int, np.ndarray | None], np.ndarray]
                ) -> dict[str, np.ndarray]:
        """The rows of ``points`` (one wave's points, or some of them), leaving the state as it is.

        Points of one wave of :meth:`plan` are independent (an estimate reads only the lattice's
        per-example values, the tolerance, the seed and its own index), so any split of a wave into
        parts computed anywhere, applied in any order, gives the same state as :meth:`evaluate`.

        Returns:
            ``points`` (P,), ``value``/``se`` (P, M), ``used`` (P,), ``exact`` (P,) and, for the
            lattice points among them, ``ref_rows`` (their lattice rows) and ``ref`` (their
            per-example values, ``(len(ref_rows), N, M)`` float64).
        """
        lat_pos = {int(k): r for r, k in enumerate(self.lattice)}
        pts = np.asarray(points, dtype=np.int64).reshape(-1)
        m = len(self.names)
        out = {"points": pts, "value": np.full((pts.size, m), np.nan), "se": np.full((pts.size, m), np.nan),
               "used": np.zeros(pts.size, np.int64), "exact": np.zeros(pts.size, bool)}
        rows, refs = [], []
        for r, k in enumerate(pts.tolist()):
            if k in lat_pos:
                v = values(k, None)
                rows.append(lat_pos[k])
                refs.append(np.array(v, dtype=np.float64))
                out["value"][r], out["se"][r], out["used"][r], out["exact"][r] = v.mean(0), 0.0, self.n, True
            else:
                out["value"][r], out["se"][r], out["used"][r], out["exact"][r] = self._estimate(k, values)
        out["ref_rows"] = np.asarray(rows, dtype=np.int64)
        out["ref"] = np.stack(refs) if refs else np.zeros((0, self.n, m))
        return out

    def apply(self, rows: dict[str, np.ndarray]) -> None:
        """Write rows of :meth:`compute` into the state (points evaluated; the tolerance once the
        lattice is complete)."""
        pts = rows["points"]
        if len(rows["ref_rows"]):
            if self.ref is None:
                self.ref = np.full((self.lattice.size, self.n, len(self.names)), np.nan)
            self.ref[rows["ref_rows"]] = rows["ref"]
        self.value[pts], self.se[pts] = rows["value"], rows["se"]
        self.used[pts], self.exact[pts] = rows["used"], rows["exact"]
        self.evaluated[pts] = True
        if self.tol is None and self.evaluated[self.lattice].all():
            assert self.ref is not None
            self.ref_mean = self.ref.mean(1)
            self.tol = self._tolerance()
            self._certain()

    def _certain(self) -> None:
        """The take-all set ``take`` (from the references, once the lattice is complete) and the
        strata ``rest`` of the other examples, which are sampled."""
        self.take = np.zeros(0, np.int64)
        if self.tol is not None and self.ref is not None and float(self.p.take_all) > 0:
            shape = (self.lat_y.size, self.lat_x.size)
            self.take = take_all_set(self.ref[:, :, self.g], shape, float(self.p.take_all), int(self.p.initial))
        self.rest = Strata(self.labels, self.n, exclude=self.take) if self.take.size else self.strata

    def _estimate(self, k: int, values: Callable[[int, np.ndarray | None], np.ndarray]
                  ) -> tuple[np.ndarray, Any, int, bool]:
        """``(value, se, used, exact)`` of point ``k`` by the control-variate estimator."""
        assert self.ref is not None and self.ref_mean is not None and self.tol is not None
        j, i = divmod(k, self.nx)
        wts = self._control(i, j)
        ctrl_mean = sum(w * self.ref_mean[r] for r, w in wts)
        st, take = self.rest, self.take
        perms = st.draw(self.p.seed, k)
        taken = np.zeros(len(perms), dtype=np.int64)
        vals: list[list[np.ndarray]] = [[] for _ in perms]
        ctrl: list[list[np.ndarray]] = [[] for _ in perms]
        n = int(self.p.initial)
        take_sum: Any = 0.0
        take_resid: Any = 0.0
        while True:
            alloc = st.allocation(n)
            parts = [perm[t:a] for perm, t, a in zip(perms, taken, alloc)]
            first = bool(take.size) and not taken.any()  # the take-all examples come with the first draw
            idx = np.concatenate(([take] if first else []) + parts)
            if idx.size:
                v = values(k, idx)
                g = sum(w * self.ref[r][idx] for r, w in wts)
                off = 0
                if first:
                    take_sum, take_resid = v[: take.size].sum(0), (v[: take.size] - g[: take.size]).sum(0)
                    off = take.size
                for h, part in enumerate(parts):
                    vals[h].append(v[off : off + part.size])
                    ctrl[h].append(g[off : off + part.size])
                    off += part.size
            taken = alloc
            used = int(taken.sum()) + take.size
            if (alloc == st.sizes).all():  # every example: exact
                value = stratified_mean([np.concatenate(a) for a in vals], st.sizes, self.n)[0] if vals else 0.0
                return (value + take_sum / self.n if take.size else value), 0.0, used, True
            resid = [np.concatenate(a) - np.concatenate(b) for a, b in zip(vals, ctrl)]
            mean, se = stratified_mean(resid, st.sizes, self.n)
            if take.size:
                mean = mean + take_resid / self.n
            if self.z_stop * se[self.g] <= self.tol:
                return ctrl_mean + mean, se, used, False
            n *= 2

    def _control(self, i: int, j: int) -> list[tuple[int, float]]:
        """``(lattice row, weight)`` of the control at ``(i, j)``: tensor Lagrange interpolation over
        the ``_ORDER + 1`` lattice nodes nearest along each axis (fewer where the lattice has fewer)."""
        def axis(lat: np.ndarray, v: np.ndarray, t: int) -> list[tuple[int, float]]:
            m = min(_ORDER + 1, lat.size)
            c = int(np.searchsorted(lat, t, side="right")) - 1  # the node at or below t
            if m % 2 == 0:  # even count: centre the window on t's cell
                lo = int(np.clip(c - m // 2 + 1, 0, lat.size - m))
            else:  # odd count: centre it on the node nearest t
                near = c + 1 if c + 1 < lat.size and abs(v[lat[c + 1]] - v[t]) < abs(v[t] - v[lat[c]]) else c
                lo = int(np.clip(near - m // 2, 0, lat.size - m))
            nodes = [int(q) for q in range(lo, lo + m)]
            out = []
            for q in nodes:
                w = 1.0
                for r in nodes:
                    if r != q:
                        w *= (v[t] - v[lat[r]]) / (v[lat[q]] - v[lat[r]])
                out.append((q, float(w)))
            return out

        ax_x, ax_y = axis(self.lat_x, self.xs, i), axis(self.lat_y, self.ys, j)
        return [(qy * self.lat_x.size + qx, wx * wy) for qy, wy in ax_y for qx, wx in ax_x if wx * wy != 0.0]

    def _root_of(self, i: int, j: int) -> Cell:
        a = min(int(np.searchsorted(self.lat_x, i, side="right")) - 1, max(0, self.lat_x.size - 2))
        e = min(int(np.searchsorted(self.lat_y, j, side="right")) - 1, max(0, self.lat_y.size - 2))
        i1 = int(self.lat_x[min(a + 1, self.lat_x.size - 1)])
        j1 = int(self.lat_y[min(e + 1, self.lat_y.size - 1)])
        return (int(self.lat_x[a]), i1, int(self.lat_y[e]), j1)

    # ---- finishing -----------------------------------------------------------------------------

    def finish(self) -> None:
        """Fill every point never evaluated by interpolation (flagged), once :meth:`plan` is empty."""
        if self.p.refine:
            _, terminal = self._walk()
            # larger cells first, so that the smallest cell around a point has the last word
            for c, parent, allow in sorted(terminal, key=lambda t: -((t[0][1] - t[0][0]) * _BIG + (t[0][3] - t[0][2]))):
                for j in range(c[2], c[3] + 1):
                    for i in range(c[0], c[1] + 1):
                        k = self.flat(i, j)
                        if self.evaluated[k]:
                            continue
                        v, var = self._combine(self._quadratic(parent, i, j))
                        self.value[k] = v
                        self.se[k] = np.sqrt(var + (allow / self.z) ** 2)
                        self.used[k], self.exact[k], self.interpolated[k] = 0, False, True

    @property
    def complete(self) -> bool:
        return bool((self.evaluated | self.interpolated).all())

    def arrays(self, shape: tuple[int, ...], keep_reference: bool) -> dict[str, np.ndarray]:
        """The per-point arrays shaped ``shape`` (``stderr__<metric>``, ``examples_used``, ``exact``,
        ``interpolated``) and, if ``keep_reference``, the lattice's per-example ``reference`` values."""
        out = {f"stderr__{name}": self.se[:, m].reshape(shape).copy() for m, name in enumerate(self.names)}
        out.update(examples_used=self.used.reshape(shape).copy(), exact=self.exact.reshape(shape).copy(),
                   interpolated=self.interpolated.reshape(shape).copy())
        if keep_reference and self.ref is not None:
            out["reference"] = self.ref
        return out

    def metrics(self, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        return {name: self.value[:, m].reshape(shape).copy() for m, name in enumerate(self.names)}

    def done(self, shape: tuple[int, ...]) -> np.ndarray:
        return (self.evaluated | self.interpolated).reshape(shape).copy()

    def summary(self) -> dict[str, Any]:
        """Totals: example evaluations, the exact equivalent (points x N), the savings factor, counts."""
        used = int(self.used.sum())
        equiv = self.nx * self.ny * self.n
        return {**self.p.describe(), "z": self.z, "z_stop": self.z_stop, "tolerance": self.tol, "scale": getattr(self, "scale", None),
                "n_examples": self.n, "example_evaluations": used, "exact_equivalent": equiv,
                "savings": (equiv / used) if used else None, "points_evaluated": int(self.evaluated.sum()),
                "points_exact": int(self.exact.sum()), "points_interpolated": int(self.interpolated.sum()),
                "lattice": [int(self.lat_x.size), int(self.lat_y.size)], **self._take_summary()}

    def _take_summary(self) -> dict[str, Any]:
        """The take-all stratum's size (a function of the settings and ``N``) and rule."""
        count = take_all_count(self.n, float(self.p.take_all), int(self.p.initial))
        return {"take_all_examples": count, **({"take_all_rule": _RULE} if count else {})}


# ---- shared by the drivers -------------------------------------------------------------------------


def _labels(ev: Any) -> np.ndarray | None:
    """The strata of an evaluator's data: its class labels, or ``None`` (one stratum) for other targets."""
    return ev.y.cpu().numpy() if (ev.y.dim() == 1 and not ev.y.is_floating_point()) else None


def _point_values(ev: Any, point_at: Callable[[int], Any]) -> Callable[[int, np.ndarray | None], np.ndarray]:
    """``values(k, index)`` for :meth:`AdaptiveGrid.evaluate`: the per-example metrics at point ``k``,
    built by ``point_at(k)`` once for all the calls on that point (they come in a row)."""
    from .evaluate import evaluate_examples

    cache: dict[str, Any] = {}

    def values(k: int, index: np.ndarray | None) -> np.ndarray:
        if cache.get("k") != k:
            cache.update(k=k, point=point_at(k))
        return evaluate_examples(ev, cache["point"], index)

    return values


def require_fixed_bn(model: Any, bn: str) -> None:
    """Refuse adaptive precision where BatchNorm statistics are recomputed at each point.

    Recomputed statistics depend on the whole set (they couple every example), so a subsample's
    per-example values would not be those of the full evaluation: adaptive precision needs
    ``bn="eval"`` (the model's running statistics) or a model without BatchNorm.

    Raises:
        LosslabError: ``bn`` is ``"recompute"``, or ``"auto"`` on a model with BatchNorm.
    """
    from .evaluate import has_batchnorm

    if bn != "eval" and has_batchnorm(model):
        raise LosslabError("adaptive precision needs fixed BatchNorm statistics: use bn='eval' (on the command line "
                           "--bn eval); statistics recomputed at every point couple all the examples")


def adaptive_path(precision: Precision, ev: Any, alphas: np.ndarray, point_at: Callable[[int], Any], *,
                  anchors: Sequence[int] = ()) -> AdaptiveGrid:
    """Every point of a 1-D path with adaptive precision, to completion: what
    :func:`losslab.connect.evaluate_path` does with ``precision`` (the same :class:`AdaptiveGrid`
    as an adaptive :func:`losslab.surface.line`, with ``alphas`` as its x coordinates).

    The lattice (every ``coarse``-th point from the one nearest ``a = 0``, both ends and
    ``anchors``) is evaluated exactly; its per-example values are the control variate of every
    other point, which is estimated from a seeded, stratified, doubling subsample until its error
    bar is within the tolerance, or evaluated on every example.

    Args:
        precision: the settings.
        ev: the :class:`~losslab.evaluate.Evaluator` (its data, loss and metrics).
        alphas: the path's positions (the grid's x coordinates).
        point_at: ``point_at(k)``: the point at ``alphas[k]`` (a dict of tensors).
        anchors: indices added to the exact lattice.

    Returns:
        The finished :class:`AdaptiveGrid` (``value``, ``se``, ``used``, ``exact``,
        ``interpolated`` per point; :meth:`AdaptiveGrid.summary` for the totals).
    """
    grid = AdaptiveGrid(precision, np.asarray(alphas, dtype=np.float64), None, ev.metric_names, _labels(ev), ev.n,
                        anchors=anchors)
    values = _point_values(ev, point_at)
    while True:
        wave = grid.plan()
        if not wave:
            break
        grid.evaluate(wave, values)
    grid.finish()
    return grid
