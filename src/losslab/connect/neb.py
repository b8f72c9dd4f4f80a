r"""AutoNEB: minimum-energy paths between minima by nudged elastic bands (Draxler et al. 2018,
"Essentially No Barriers in Neural Network Energy Landscape"; reference code fdraxler/PyTorch-AutoNEB).

A band is a chain of *pivots* :math:`x_0, \dots, x_{N-1}` in a flat parameter space, the endpoints
fixed at two minima. Each interior pivot moves along the *nudged* gradient

.. math::

    g_i = \nabla E(x_i) - (\nabla E(x_i)\cdot\tau_i)\,\tau_i \;-\; k\,(\lVert x_{i+1} - x_i\rVert -
    \lVert x_i - x_{i-1}\rVert)\,\tau_i ,

the true gradient with its component along the path removed plus a spring along it. The tangent
:math:`\tau_i` is the *improved tangent* of Henkelman & Jónsson (2000): the direction to the higher
neighbour when the energy is monotone at :math:`i` (:math:`\tau^+ = x_{i+1}-x_i` if
:math:`E_{i+1} > E_i > E_{i-1}`, :math:`\tau^- = x_i - x_{i-1}` if :math:`E_{i+1} < E_i < E_{i-1}`),
otherwise the mix

.. math::

    \tau = \begin{cases}\tau^+ \Delta_{\max} + \tau^- \Delta_{\min} & E_{i+1} > E_{i-1}\\
    \tau^+ \Delta_{\min} + \tau^- \Delta_{\max} & \text{else}\end{cases},\quad
    \Delta_{\max} = \max(|E_{i+1}-E_i|, |E_{i-1}-E_i|),\ \Delta_{\min} = \min(\cdot),

normalised. With ``spring=inf`` (the reference configs' ``spring-constant: inf``, the default) there
is no spring force: before every step the pivots are redistributed along the polyline so that
their spacings keep fixed relative weights (equal, except where pivots were inserted).

AutoNEB runs *cycles* of SGD-with-momentum on the band, each starting by inserting pivots: ``"equal"``
puts ``count`` new pivots evenly into every gap; ``"highest"`` evaluates the energy at
``sub_pivots`` points inside each gap, scores gap :math:`j` by
:math:`\max_s [E(s) - ((1-s)E_j + sE_{j+1})] / (E_{\max} - E_{\min})` and inserts one pivot at the
arg-max of each of the ``count`` best-scoring gaps whose score exceeds ``insert_threshold`` (0.1).
After each cycle the *dense path* — every pivot plus ``sub_pivots`` evenly spaced points inside
each gap — is evaluated; its maximum is the saddle estimate (the maximum of the continuous band is an
upper bound on the true minimax energy between the endpoints; the sampled maximum approximates it). The default schedule is the reference ResNet config scaled
by ``steps``/``lr``: insert 3 equally, then 3 more cycles inserting 2 at the highest gaps
(all ``steps`` steps at ``lr``), 2 cycles of ``2·steps`` at ``lr``, 4 at ``lr/10``, 4 at ``lr/100``.
A cycle with ``climb=True`` (``default_cycles(climb=True)``: the four ``lr/100`` cycles) makes the
highest interior pivot a *climbing image* (Henkelman, Uberuaga & Jónsson 2000): it follows
:math:`\nabla E - 2(\nabla E\cdot\tau)\tau`, up along the path and down across it, so it converges
onto the saddle point itself (zero gradient) rather than bracketing it; the other pivots are
redistributed on each side of it.

:func:`connect_minima` connects several minima: it estimates all pairwise saddles by linear
interpolation, then repeatedly computes the minimum spanning tree over the current saddle estimates
(Kruskal) and runs AutoNEB on every tree edge not yet refined, until every tree edge is refined
(Draxler's "mst" suggestion). The tree then gives the minimax saddle between any two minima.

Energies: :class:`FunctionEnergy` wraps any ``f(x) -> scalar`` on flat tensors (a 2-D toy works);
:class:`ModelEnergy` is the model + data front end (mini-batch loss for the updates, full-data
loss with BatchNorm statistics recomputed for the dense evaluation). :func:`neb_path` connects two
model points and returns the train/test metrics along the final path as a
:class:`~losslab.connect.paths.PathResult` (``alphas`` = normalised arc length).

Example:
    >>> import torch
    >>> from losslab.connect.neb import FunctionEnergy, NEBCycle, auto_neb
    >>> f = lambda p: (p[0] ** 2 - 1) ** 2 + 2 * (p[1] - (1 - p[0] ** 2)) ** 2   # saddle E = 1 at (0, 1)
    >>> res = auto_neb(FunctionEnergy(f), torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.0]),
    ...                cycles=[NEBCycle(40, 0.05, 3, "equal"), NEBCycle(40, 0.05, 2), NEBCycle(40, 0.01, 2)])
    >>> abs(res.saddle_value - 1.0) < 0.02
    True
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..results import Result
from ..errors import LosslabError
from .paths import PathResult, _splits, as_point, evaluate_path, interp_keys
from ._energy import Energy, FunctionEnergy, ModelEnergy, _unflatten_stacked
from .._functional import model_then_data

if TYPE_CHECKING:  # pragma: no cover
    from ..precision import Precision

__all__ = [
    "Energy",
    "FunctionEnergy",
    "ModelEnergy",
    "NEBCycle",
    "NEBResult",
    "ConnectionGraph",
    "default_cycles",
    "improved_tangent",
    "tangents",
    "neb_gradient",
    "redistribute",
    "dense_path",
    "auto_neb",
    "neb_path",
    "connect_minima",
    "minimum_spanning_tree",
]


# ----------------------------------------------------------------------------------- the pieces
def improved_tangent(prev: Tensor, cur: Tensor, nxt: Tensor, e_prev: float, e: float, e_next: float) -> Tensor:
    """The unit tangent of Henkelman & Jónsson (2000) at ``cur`` (see the module docstring)."""
    tp, tm = nxt - cur, cur - prev
    if e_next > e > e_prev:
        tau = tp
    elif e_next < e < e_prev:
        tau = tm
    else:
        dmax = max(abs(e_next - e), abs(e_prev - e))
        dmin = min(abs(e_next - e), abs(e_prev - e))
        if dmax == 0.0:
            tau = tp / tp.norm().clamp_min(1e-300) + tm / tm.norm().clamp_min(1e-300)
        elif e_next > e_prev:
            tau = tp * dmax + tm * dmin
        else:
            tau = tp * dmin + tm * dmax
    nrm = tau.norm()
    if not nrm > 0:  # degenerate: the chord (zero if all three pivots coincide)
        chord = nxt - prev
        cn = chord.norm()
        return chord / cn if cn > 0 else chord
    return tau / nrm


def tangents(path: Tensor, values: Sequence[float] | Tensor) -> Tensor:
    """Unit improved tangents ``(N-2, D)`` at all interior pivots at once (as :func:`improved_tangent`).

    Where the improved tangent is undefined (a pivot on its neighbour, or a fold where the weighted
    mix cancels) the chord :math:`x_{i+1} - x_{i-1}` is used; if that is zero too, the tangent is 0
    (no projection).
    """
    e = torch.as_tensor(values, dtype=torch.float64).reshape(-1).to(path.device)
    tp, tm = path[2:] - path[1:-1], path[1:-1] - path[:-2]
    ep, ec, en = e[:-2], e[1:-1], e[2:]
    up = (en > ec) & (ec > ep)
    down = (en < ec) & (ec < ep)
    dn, dp = (en - ec).abs(), (ep - ec).abs()
    dmax, dmin = torch.maximum(dn, dp), torch.minimum(dn, dp)
    rising = en > ep
    wp = torch.where(up, 1.0, torch.where(down, 0.0, torch.where(rising, dmax, dmin)))
    wm = torch.where(up, 0.0, torch.where(down, 1.0, torch.where(rising, dmin, dmax)))
    flat = ~up & ~down & (dmax == 0)
    ntp = tp.double().norm(dim=1).clamp_min(1e-300)
    ntm = tm.double().norm(dim=1).clamp_min(1e-300)
    wp = torch.where(flat, 1.0 / ntp, wp).to(path.dtype).unsqueeze(1)
    wm = torch.where(flat, 1.0 / ntm, wm).to(path.dtype).unsqueeze(1)
    tau = wp * tp + wm * tm
    nrm = tau.norm(dim=1, keepdim=True)
    # degenerate (a pivot on its neighbour, or a fold where the mix cancels): use the chord x_{i+1} - x_{i-1}
    chord = path[2:] - path[:-2]
    cn = chord.norm(dim=1, keepdim=True)
    good = nrm > 0
    safe = torch.where(good, tau / torch.where(good, nrm, 1.0), chord / torch.where(cn > 0, cn, 1.0))
    return safe


def neb_gradient(path: Tensor, values: Sequence[float] | Tensor, grads: Tensor, *, spring: float = math.inf) -> Tensor:
    """Nudged gradients ``(N-2, D)`` of the interior pivots (tangential part removed, spring added).

    Args:
        path: ``(N, D)`` pivots, endpoints included.
        values: ``(N,)`` energies at the pivots.
        grads: ``(N-2, D)`` energy gradients at the interior pivots.
        spring: spring constant ``k`` (``inf``: no spring force, the caller redistributes instead).
    """
    tau = tangents(path, values)
    g = grads - (grads * tau).sum(1, keepdim=True) * tau
    if math.isfinite(spring) and spring != 0:
        d = (path[1:] - path[:-1]).norm(dim=1)
        g = g - spring * (d[1:] - d[:-1]).unsqueeze(1) * tau
    return g


def redistribute(path: Tensor, weights: Tensor | None = None) -> Tensor:
    """Move the interior pivots along the polyline so that gap ``j`` has length ∝ ``weights[j]``.

    The polyline (and its endpoints) is unchanged up to the new pivot positions; ``weights`` default
    to equal spacing.
    """
    n = path.shape[0]
    if n <= 2:
        return path.clone()
    w = torch.ones(n - 1, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != (n - 1,) or not bool((w > 0).all()):
        raise LosslabError(f"redistribute: need {n - 1} positive weights")
    seg = (path[1:] - path[:-1]).double().norm(dim=1).cpu()
    cum = torch.cat([torch.zeros(1, dtype=torch.float64), seg.cumsum(0)])
    total = float(cum[-1])
    out = path.clone()
    if total == 0:
        return out
    targets = (w / w.sum()).cumsum(0)[:-1] * total
    j = torch.searchsorted(cum[1:-1], targets, right=True)  # segment index of each target
    t = ((targets - cum[j]) / seg[j].clamp_min(1e-300)).clamp(0.0, 1.0)
    t = t.to(path.dtype).to(path.device).unsqueeze(1)
    jd = j.to(path.device)
    out[1:-1] = (1 - t) * path[jd] + t * path[jd + 1]
    return out


def _redistribute_around(path: Tensor, weights: Tensor, fixed: int | None) -> Tensor:
    """:func:`redistribute`, keeping pivot ``fixed`` (a climbing image) in place: each side of it
    is redistributed along its own polyline with its share of the weights."""
    if fixed is None or not 0 < fixed < path.shape[0] - 1:
        return redistribute(path, weights)
    out = path.clone()
    out[: fixed + 1] = redistribute(path[: fixed + 1], weights[:fixed])
    out[fixed:] = redistribute(path[fixed:], weights[fixed:])
    return out


def dense_path(path: Tensor, sub_pivots: int) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """The pivots plus ``sub_pivots`` evenly spaced points inside each gap.

    Returns:
        ``(points (M, D), positions (M,), pivot_index (N,))`` with ``M = (N-1)(sub_pivots+1)+1``;
        ``positions`` is the normalised arc length in [0, 1]; ``pivot_index[i]`` is the row of pivot i.
    """
    n = path.shape[0]
    s = int(sub_pivots)
    fr = torch.linspace(0, 1, s + 2, dtype=path.dtype, device=path.device)[:-1]
    rows = [(1 - f) * path[j] + f * path[j + 1] for j in range(n - 1) for f in fr]
    rows.append(path[-1])
    pts = torch.stack(rows)
    seg = (pts[1:] - pts[:-1]).double().norm(dim=1).cpu().numpy()
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    pos = cum / cum[-1] if cum[-1] > 0 else np.linspace(0, 1, len(cum))
    return pts, pos, np.arange(n) * (s + 1)


# -------------------------------------------------------------------------------------- AutoNEB
@dataclass(frozen=True)
class NEBCycle:
    """One AutoNEB cycle: insert pivots, then ``steps`` SGD-momentum steps at ``lr``.

    Attributes:
        steps: optimisation steps of the band.
        lr: learning rate.
        insert: pivots to insert at the start of the cycle (``"equal"``: into *every* gap;
            ``"highest"``: one into each of the ``insert`` highest-scoring gaps).
        insert_method: ``"highest"`` or ``"equal"``.
        climb: climbing image (Henkelman, Uberuaga & Jónsson 2000): the highest interior pivot
            moves along :math:`\\nabla E - 2 (\\nabla E \\cdot \\tau)\\tau` (up the path, down across
            it) instead of the nudged gradient, so it converges to the saddle itself; the other
            pivots are redistributed on either side of it.
    """

    steps: int = 100
    lr: float = 0.1
    insert: int = 2
    insert_method: Literal["highest", "equal"] = "highest"
    climb: bool = False


def default_cycles(steps: int = 1000, lr: float = 0.1, *, climb: bool = False) -> list[NEBCycle]:
    """The reference ResNet-20 schedule, scaled: 14 cycles (see the module docstring); with ``climb``
    the last four (``lr / 100``) cycles use a climbing image."""
    out = [NEBCycle(steps, lr, 3, "equal")] + [NEBCycle(steps, lr, 2) for _ in range(3)]
    out += [NEBCycle(2 * steps, lr, 2) for _ in range(2)]
    out += [NEBCycle(steps, lr / 10, 2) for _ in range(4)]
    out += [NEBCycle(steps, lr / 100, 2, climb=climb) for _ in range(4)]
    return out


@dataclass(frozen=True, eq=False)
class NEBResult(Result):
    """A band after AutoNEB.

    Attributes:
        pivots: ``(N, D)`` final pivots (endpoints first and last).
        pivot_values: ``(N,)`` exact energies at the pivots.
        positions: ``(M,)`` normalised arc length of the dense path's points.
        dense_values: ``(M,)`` exact energies along the dense path.
        saddle_value: ``max(dense_values)``, the saddle estimate.
        saddle_position: its arc-length position in [0, 1].
        saddle_point: ``(D,)`` the dense point at the saddle.
        linear_saddle: the maximum along the straight segment (``2 (sub_pivots + 1) + 1`` points), for reference.
        history: one record per cycle (pivots, lr, steps, inserted, saddle, seconds).
        path: train/test metrics along the dense path (:func:`neb_path` only), else ``None``.
        meta: settings.
    """

    pivots: Tensor
    pivot_values: np.ndarray
    positions: np.ndarray
    dense_values: np.ndarray
    saddle_value: float
    saddle_position: float
    saddle_point: Tensor
    linear_saddle: float
    history: list[dict[str, Any]]
    path: PathResult | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def barrier(self) -> float:
        """``saddle_value − mean(endpoint energies)``."""
        return float(self.saddle_value - 0.5 * (self.dense_values[0] + self.dense_values[-1]))


def _insert(path: Tensor, weights: Tensor, gaps: Sequence[Sequence[float]]) -> tuple[Tensor, Tensor]:
    """Insert pivots at fractions ``gaps[j]`` (sorted, in (0, 1)) of gap j; split the weights alike."""
    rows, ws = [path[0]], []
    for j in range(path.shape[0] - 1):
        last = 0.0
        for a in [*gaps[j], 1.0]:
            rows.append((1 - a) * path[j] + a * path[j + 1] if a < 1.0 else path[j + 1])
            ws.append(float(weights[j]) * (a - last))
            last = a
    w = torch.tensor(ws, dtype=torch.float64)
    return torch.stack(rows), w / w.sum()


def _highest_gaps(values: np.ndarray, sub: int, n: int, count: int, threshold: float) -> list[list[float]]:
    """Fractions at which to insert, per gap, from dense values (Draxler's ``highest`` fill)."""
    fr = np.linspace(0, 1, sub + 2)[1:-1]
    piv = values[:: sub + 1]
    span = float(piv.max() - piv.min()) + 1e-12
    best, where = np.full(n - 1, -np.inf), np.zeros(n - 1)
    for j in range(n - 1):
        inner = values[j * (sub + 1) + 1 : (j + 1) * (sub + 1)]
        score = (inner - ((1 - fr) * piv[j] + fr * piv[j + 1])) / span
        k = int(np.argmax(score))
        best[j], where[j] = score[k], fr[k]
    gaps: list[list[float]] = [[] for _ in range(n - 1)]
    for j in np.argsort(-best)[: min(count, n - 1)]:
        if best[j] > threshold:
            gaps[int(j)] = [float(where[j])]
    return gaps


def auto_neb(
    energy: Energy,
    x_a: Tensor,
    x_b: Tensor,
    *,
    cycles: Sequence[NEBCycle] | None = None,
    momentum: float = 0.9,
    spring: float = math.inf,
    sub_pivots: int = 9,
    insert_threshold: float = 0.1,
    max_pivots: int = 64,
    initial: Tensor | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> NEBResult:
    """Run AutoNEB between two points of a flat space (see the module docstring).

    Args:
        energy: an :class:`Energy` (:class:`FunctionEnergy`, :class:`ModelEnergy` or your own).
        x_a, x_b: the endpoints ``(D,)`` (kept fixed).
        cycles: the schedule (default :func:`default_cycles` ``()``).
        momentum: SGD momentum (reset at every cycle, as a fresh optimiser per cycle).
        spring: spring constant; ``inf`` (default) = no spring, redistribute before every step.
        sub_pivots: points evaluated inside each gap for insertion and the dense path (9).
        insert_threshold: minimum normalised score for a ``"highest"`` insertion (0.1).
        max_pivots: never grow the band beyond this many pivots.
        initial: an initial chain ``(N, D)`` (default: the two endpoints).
        callback: called after each cycle with its history record.

    Returns:
        An :class:`NEBResult` (its ``path`` is ``None``; see :func:`neb_path` for models).
    """
    cycles = list(default_cycles() if cycles is None else cycles)
    if not cycles:
        raise LosslabError("auto_neb needs at least one cycle")
    for c in cycles:
        if c.steps < 0 or not c.lr > 0 or c.insert < 0 or c.insert_method not in ("highest", "equal"):
            raise LosslabError(f"bad NEB cycle {c}")
    if not (spring >= 0):
        raise LosslabError(f"spring must be >= 0 (or inf), got {spring}")
    xa, xb = x_a.detach().reshape(-1), x_b.detach().reshape(-1).to(x_a.device, x_a.dtype)
    if xa.shape != xb.shape:
        raise LosslabError(f"endpoints have different sizes {tuple(xa.shape)} vs {tuple(xb.shape)}")
    if torch.equal(xa, xb):
        raise LosslabError("the two endpoints are identical")
    path = torch.stack([xa, xb]) if initial is None else initial.detach().clone().to(xa.device, xa.dtype)
    if path.dim() != 2 or path.shape[1] != xa.numel() or path.shape[0] < 2:
        raise LosslabError(f"initial chain must be (N >= 2, {xa.numel()}), got {tuple(path.shape)}")
    path[0], path[-1] = xa, xb
    weights = torch.ones(path.shape[0] - 1, dtype=torch.float64) / (path.shape[0] - 1)
    sub = int(sub_pivots)
    if sub < 1:
        raise LosslabError("sub_pivots must be >= 1")

    lin_pts, _, _ = dense_path(torch.stack([xa, xb]), 2 * (sub + 1) - 1)  # two gaps' worth of points
    linear_vals = energy.values(lin_pts).double().cpu().numpy()
    dense_vals: np.ndarray | None = None
    history: list[dict[str, Any]] = []
    step_counter = 0
    for ci, cyc in enumerate(cycles):
        t0 = time.perf_counter()
        n = path.shape[0]
        room = max_pivots - n
        inserted = 0
        if cyc.insert > 0 and room > 0:
            if cyc.insert_method == "equal":
                k = min(cyc.insert, room // (n - 1))
                gaps = [[(i + 1) / (k + 1) for i in range(k)] for _ in range(n - 1)]
            else:
                if dense_vals is None:
                    dense_vals = energy.values(dense_path(path, sub)[0]).double().cpu().numpy()
                gaps = _highest_gaps(dense_vals, sub, n, min(cyc.insert, room), insert_threshold)
            inserted = sum(len(g) for g in gaps)
            if inserted:
                path, weights = _insert(path, weights, gaps)
        vel = torch.zeros_like(path[1:-1])
        climber: int | None = None
        if cyc.climb and path.shape[0] > 2 and cyc.steps > 0:
            climber = 1 + int(torch.argmax(energy.values(path[1:-1]).double()))
        for _ in range(cyc.steps):
            if path.shape[0] <= 2:
                break
            if math.isinf(spring):
                path = _redistribute_around(path, weights, climber)
            vals, grads = energy.value_and_grad(path, step_counter)
            step_counter += 1
            if not bool(torch.isfinite(vals).all()):
                raise LosslabError(f"NEB diverged (non-finite energy) in cycle {ci}; lower the learning rate")
            g = neb_gradient(path, vals, grads[1:-1], spring=spring)
            if climber is not None:  # the highest pivot climbs: invert its tangential component
                climber = 1 + int(torch.argmax(vals[1:-1].double()))
                tau = tangents(path, vals)[climber - 1]
                gc = grads[climber]
                g[climber - 1] = gc - 2 * (gc * tau).sum() * tau
            vel = momentum * vel + g
            path = path.clone()
            path[1:-1] = path[1:-1] - cyc.lr * vel
        if math.isinf(spring):
            path = _redistribute_around(path, weights, climber)
        pts, pos, piv_idx = dense_path(path, sub)
        dense_vals = energy.values(pts).double().cpu().numpy()
        rec = {"cycle": ci, "pivots": int(path.shape[0]), "inserted": inserted, "steps": cyc.steps, "lr": cyc.lr,
               "climbing_pivot": climber,
               "saddle": float(np.max(dense_vals)), "seconds": round(time.perf_counter() - t0, 4)}
        history.append(rec)
        if callback is not None:
            callback(rec)

    pts, pos, piv_idx = dense_path(path, sub)
    assert dense_vals is not None
    k = int(np.argmax(dense_vals))
    return NEBResult(
        pivots=path.detach().clone(), pivot_values=dense_vals[piv_idx].copy(), positions=pos,
        dense_values=dense_vals, saddle_value=float(dense_vals[k]), saddle_position=float(pos[k]),
        saddle_point=pts[k].detach().clone(), linear_saddle=float(np.max(linear_vals)), history=history,
        meta={"cycles": [vars(c).copy() for c in cycles], "momentum": momentum, "spring": spring,
              "sub_pivots": sub, "insert_threshold": insert_threshold, "max_pivots": max_pivots},
    )


# ---------------------------------------------------------------------------------- model front end
@model_then_data
def neb_path(
    model: nn.Module,
    data: Any,
    *,
    point_a: Mapping[str, Tensor] | nn.Module,
    point_b: Mapping[str, Tensor] | nn.Module,
    cycles: Sequence[NEBCycle] | None = None,
    batch_size: int = 128,
    seed: int = 0,
    momentum: float = 0.9,
    spring: float = math.inf,
    sub_pivots: int = 9,
    test_data: Any = None,
    bn: Literal["auto", "recompute", "eval"] = "auto",
    loss: Literal["cross_entropy", "mse"] = "cross_entropy",
    device: torch.device | str | None = None,
    precision: "Precision | None" = None,
) -> NEBResult:
    """AutoNEB between two model points on the training loss; metrics along the final dense path.

    The energy is the training split's loss (:class:`ModelEnergy`); the dense path after the last
    cycle (pivots plus ``sub_pivots`` points per gap; ``alphas`` = normalised arc length) is
    evaluated on train (reusing the last cycle's evaluation: loss and error) and test (with
    :func:`~losslab.connect.paths.evaluate_path`), so the result's ``path`` carries both barrier
    definitions for loss and error, like a linear path.

    Args:
        model, data, point_a, point_b, test_data, bn, loss, device: as :func:`~losslab.connect.linear_path`.
        cycles: AutoNEB schedule (default ``default_cycles(steps=100, lr=0.05)``, sized for small models).
        batch_size: mini-batch size of the band updates (0: full batch).
        seed: seed of the mini-batch draws.
        momentum, spring, sub_pivots: see :func:`auto_neb`.
        precision: ``None`` (exact, default) or a :class:`~losslab.precision.Precision`: the test
            split is evaluated along the final path with adaptive precision
            (:func:`~losslab.connect.paths.evaluate_path`); the train split stays the last cycle's
            exact evaluation (it costs nothing more). Needs ``bn="eval"`` with BatchNorm.
    """
    if precision is not None:  # fail before the band is optimised, not after
        from ..precision import require_fixed_bn

        require_fixed_bn(model, bn)
    pa, pb = as_point(point_a, "point_a"), as_point(point_b, "point_b")
    interp_keys(model, pa, pb, "recompute")
    energy = ModelEnergy(model, data, batch_size=batch_size, seed=seed, loss=loss, bn=bn, device=device)
    cyc = default_cycles(steps=100, lr=0.05) if cycles is None else cycles
    res = auto_neb(energy, energy.to_flat(pa), energy.to_flat(pb), cycles=cyc, momentum=momentum, spring=spring,
                   sub_pivots=sub_pivots)
    pts, pos, _ = dense_path(res.pivots, sub_pivots)
    meta = {"kind": "neb", "pivots": int(res.pivots.shape[0]), "sub_pivots": sub_pivots,
            "alphas": "normalised arc length"}
    last = energy.last
    _, test = _splits(data, test_data)
    if last is not None and last[0].shape == pts.shape and torch.equal(last[0], pts):
        # the last cycle already evaluated the final dense path on the training data: reuse it
        train_m = {"loss": last[1]["loss"]}
        if "accuracy" in last[1]:
            train_m["error"] = 1.0 - last[1]["accuracy"]
        metrics = {"train": train_m}
        if test is not None:
            tp = evaluate_path(model, data, make=_maker(pts, pos, energy.like), alphas=pos, test_data=test_data, bn=bn, loss=loss,
                               device=energy.device, splits=("test",), precision=precision)
            metrics["test"] = tp.metrics["test"]
            if precision is not None:
                meta["precision"] = {**tp.meta["precision"], "train": "exact: the last cycle's evaluation"}
        path = PathResult.from_metrics(pos, metrics, {**meta, "bn": energy._evaluator.bn},
                                       tp.arrays if test is not None else None)
    else:  # pragma: no cover - auto_neb always ends with the final dense evaluation
        path = evaluate_path(model, data, make=_maker(pts, pos, energy.like), alphas=pos, test_data=test_data, bn=bn, loss=loss,
                             device=energy.device, meta=meta, precision=precision)
    return replace(res, path=path, meta={**res.meta, "batch_size": batch_size, "seed": seed})


def _maker(pts: Tensor, pos: np.ndarray, like: Mapping[str, Tensor]) -> Callable[[np.ndarray], dict[str, Tensor]]:
    """``make(alphas) -> stacked point`` for the dense path's rows (found by their positions)."""

    def make(sub: np.ndarray) -> dict[str, Tensor]:
        rows = pts[torch.as_tensor(np.searchsorted(pos, sub))]
        return dict(zip(like, _unflatten_stacked(rows, like)))

    return make


# ----------------------------------------------------------------------------- several minima
def minimum_spanning_tree(weights: np.ndarray) -> list[tuple[int, int, float]]:
    """Kruskal's minimum spanning tree of a symmetric ``(n, n)`` weight matrix (NaN/inf = no edge).

    Returns:
        Edges ``(i, j, w)`` with ``i < j``, in the order added (increasing weight). A disconnected
        graph gives a spanning forest.
    """
    w = np.asarray(weights, dtype=np.float64)
    n = w.shape[0]
    edges = sorted((w[i, j], i, j) for i in range(n) for j in range(i + 1, n) if np.isfinite(w[i, j]))
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    out = []
    for wij, i, j in edges:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[ri] = rj
            out.append((i, j, float(wij)))
    return out


@dataclass(frozen=True, eq=False)
class ConnectionGraph(Result):
    """Minima connected by AutoNEB along a minimum spanning tree of saddle energies.

    Attributes:
        minima_values: ``(n,)`` energies of the minima.
        linear_saddles: ``(n, n)`` maxima along straight segments (NaN on the diagonal).
        saddles: ``(n, n)`` best known saddle per pair: min(linear, AutoNEB) where AutoNEB ran, else
            the linear value.
        refined: ``(n, n)`` bool, where AutoNEB ran.
        mst: the tree's edges ``(i, j, saddle)``.
        minimax: ``(n, n)`` the highest saddle on the tree path between i and j (the minimax energy).
        results: ``{(i, j): NEBResult}`` of every AutoNEB run.
        rounds: number of tree recomputations.
    """

    minima_values: np.ndarray
    linear_saddles: np.ndarray
    saddles: np.ndarray
    refined: np.ndarray
    mst: list[tuple[int, int, float]]
    minimax: np.ndarray
    results: dict[tuple[int, int], NEBResult]
    rounds: int


def connect_minima(
    points: Sequence[Tensor | Mapping[str, Tensor] | nn.Module],
    energy: Energy,
    *,
    cycles: Sequence[NEBCycle] | None = None,
    sub_pivots: int = 9,
    max_rounds: int | None = None,
    **neb_kwargs: Any,
) -> ConnectionGraph:
    """Connect several minima by AutoNEB along a minimum spanning tree over saddle energies.

    Args:
        points: the minima: flat tensors, or points/models when ``energy`` is a :class:`ModelEnergy`.
        energy: the energy (:class:`FunctionEnergy`, :class:`ModelEnergy`, ...).
        cycles: AutoNEB schedule for each edge.
        sub_pivots: dense points per straight segment for the linear estimates (``10 * (sub+1)`` points).
        max_rounds: stop after this many tree recomputations (default: ``n^2``, never reached in practice).
        neb_kwargs: passed to :func:`auto_neb`.
    """
    if len(points) < 2:
        raise LosslabError("connect_minima needs at least two minima")
    flat = []
    for p in points:
        if isinstance(p, Tensor):
            flat.append(p.detach().reshape(-1))
        elif isinstance(energy, ModelEnergy):
            flat.append(energy.to_flat(p))
        else:
            raise LosslabError("non-tensor minima need a ModelEnergy (which knows how to flatten them)")
    n = len(flat)
    mins = energy.values(torch.stack(flat)).double().cpu().numpy()
    lin = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(i + 1, n):
            pts, _, _ = dense_path(torch.stack([flat[i], flat[j]]), 10 * (sub_pivots + 1) - 1)
            lin[i, j] = lin[j, i] = float(energy.values(pts).max())
    best = lin.copy()
    refined = np.zeros((n, n), dtype=bool)
    results: dict[tuple[int, int], NEBResult] = {}
    rounds = 0
    limit = n * n if max_rounds is None else int(max_rounds)
    while rounds < limit:
        rounds += 1
        tree = minimum_spanning_tree(best)
        todo = [(i, j) for i, j, _ in tree if not refined[i, j]]
        if not todo:
            break
        for i, j in todo:
            r = auto_neb(energy, flat[i], flat[j], cycles=cycles, sub_pivots=sub_pivots, **neb_kwargs)
            results[(i, j)] = r
            best[i, j] = best[j, i] = min(lin[i, j], r.saddle_value)
            refined[i, j] = refined[j, i] = True
    tree = minimum_spanning_tree(best)
    minimax = _minimax(n, tree)
    return ConnectionGraph(mins, lin, best, refined, tree, minimax, results, rounds)


def _minimax(n: int, tree: list[tuple[int, int, float]]) -> np.ndarray:
    adj: dict[int, list[tuple[int, float]]] = {i: [] for i in range(n)}
    for i, j, w in tree:
        adj[i].append((j, w))
        adj[j].append((i, w))
    out = np.full((n, n), np.nan)
    for s in range(n):
        out[s, s] = -np.inf
        stack = [s]
        while stack:
            u = stack.pop()
            for v, w in adj[u]:
                if np.isnan(out[s, v]):
                    out[s, v] = max(out[s, u], w)
                    stack.append(v)
        out[s, s] = np.nan
    return out
