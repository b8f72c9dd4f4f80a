r"""Permutation symmetry and weight matching (Ainsworth, Hayase & Srinivasa 2023, "Git Re-Basin").

Hidden units of a network can be reordered without changing the function it computes: permuting the
output axis of a layer (its weight rows, bias, the per-channel parameters and running statistics of
the norm layer after it) and the input axis of the next layer by the same permutation :math:`P`
leaves every output unchanged, because elementwise activations commute with permutations:
:math:`W_{l+1} P^\top \sigma(P W_l x + P b_l) = W_{l+1} \sigma(W_l x + b_l)`.

A :class:`PermutationSpec` lists the *permutation groups* of a model: one hidden axis each (e.g.
``"P_fc0"``, the outputs of ``fc0``), with every ``(tensor name, axis)`` it acts on.
:func:`weight_matching` finds, for two points A and B of the same architecture, the permutation
:math:`\pi` that maximises :math:`\langle \theta_A, \pi(\theta_B) \rangle`, i.e. minimises
:math:`\lVert \theta_A - \pi(\theta_B) \rVert^2`, by coordinate descent over groups, each step a
linear assignment problem. :func:`align` does this for a model and *verifies* that the permuted B
computes the same function as B before returning it.

Spec format (what users pass for their own architectures)::

    {group_name: [(tensor_name, axis), ...]}            # or (tensor_name, axis, block)

``tensor_name`` is a key of the point (``model.named_parameters()`` / ``named_buffers()``);
``axis >= 0`` is the axis the group permutes. With ``block = b > 1`` (default 1) the axis has size
``n * b`` and group unit ``i`` owns the contiguous slice ``[i*b, (i+1)*b)``: this is the head's input
axis after ``nn.Flatten`` of a ``(C, *spatial)`` activation, feature ``c * prod(spatial) + position``.
Every ``(tensor_name, axis)`` may appear in at most one group; all entries of a group must give the
same group size ``n``. Tensors the spec does not name are left untouched (input axis of the first
layer, output axis of the last).

A permutation is ``{group_name: LongTensor of shape (n,)}`` with the convention
``new[..., i, ...] = old[..., perm[i], ...]`` on every axis of the group: unit ``i`` of the permuted
point is unit ``perm[i]`` of the original.

Example:
    >>> import torch
    >>> from losslab import models, params
    >>> from losslab.connect import align, apply_permutation, random_permutation, spec_for
    >>> net = models.build("mlp", input_shape=(8,), num_classes=3, seed=0, width=16)
    >>> spec = spec_for(net)
    >>> sorted(spec.groups)
    ['P_fc0', 'P_fc1']
    >>> a = params.get_point(net, buffers=True)
    >>> b = apply_permutation(spec, random_permutation(spec, a, seed=1), a)
    >>> res = align(net, torch.randn(5, 8), point_a=a, point_b=b)
    >>> res.verified, params.distance(res.point_b_aligned, a) < 1e-6
    (True, True)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from ..results import Result
from .. import params
from .._functional import model_then_data
from ..errors import LosslabError
from ..params import Point
from ._spec import (
    Entry, Permutation, PermutationSpec, SpecLike, _as_spec, cnn_spec, mlp_spec, resnet_spec, spec_for,
)

__all__ = [
    "PermutationSpec",
    "Permutation",
    "SpecLike",
    "WeightMatchingInfo",
    "AlignResult",
    "mlp_spec",
    "cnn_spec",
    "resnet_spec",
    "spec_for",
    "apply_permutation",
    "random_permutation",
    "invert_permutation",
    "weight_matching",
    "align",
]


# ------------------------------------------------------------------------------- permutations
def _check_perm(spec: PermutationSpec, perm: Mapping[str, Tensor], sizes: Mapping[str, int]) -> dict[str, Tensor]:
    missing = sorted(set(spec.groups) - set(perm))
    unknown = sorted(set(perm) - set(spec.groups))
    if missing or unknown:
        raise LosslabError(f"permutation does not match the spec: missing groups {missing}, unknown groups {unknown}")
    out: dict[str, Tensor] = {}
    for g, p in perm.items():
        p = torch.as_tensor(p)
        n = sizes[g]
        if p.dim() != 1 or p.numel() != n or p.dtype.is_floating_point or p.dtype == torch.bool:
            raise LosslabError(f"permutation of group {g!r} must be an integer tensor of shape ({n},), got "
                               f"{p.dtype} {tuple(p.shape)}")
        p = p.long().cpu()
        if not torch.equal(torch.sort(p).values, torch.arange(n)):
            raise LosslabError(f"permutation of group {g!r} is not a permutation of 0..{n - 1}")
        out[g] = p
    return out


def _index(p: Tensor, block: int) -> Tensor:
    """Indices along an axis of size ``n * block`` moving block ``p[i]`` to position ``i``."""
    if block == 1:
        return p
    return (p[:, None] * block + torch.arange(block)).reshape(-1)


def _permute_tensor(t: Tensor, axes: Mapping[int, tuple[str, int]], perm: Mapping[str, Tensor],
                    skip_axis: int | None = None) -> Tensor:
    for axis, (g, block) in axes.items():
        if axis == skip_axis:
            continue
        t = torch.index_select(t, axis, _index(perm[g], block).to(t.device))
    return t


def apply_permutation(spec: SpecLike, perm: Mapping[str, Tensor], point: Mapping[str, Tensor]) -> Point:
    r"""Permute the hidden units of ``point``: ``new[..., i, ...] = old[..., perm[g][i], ...]``.

    Every axis listed in ``spec`` is permuted (parameters and buffers alike, e.g. BatchNorm running
    statistics); with a block ``b`` the whole slice ``[perm[g][i]*b, (perm[g][i]+1)*b)`` moves to block
    ``i``. Tensors of ``point`` not named by ``spec`` are copied unchanged; tensors named by ``spec`` but
    absent from ``point`` are skipped (so a point without buffers is fine). For a correct spec the result
    computes the same function as ``point``.

    Args:
        spec: a :class:`PermutationSpec` or ``{group: [(tensor_name, axis[, block]), ...]}``.
        perm: ``{group: LongTensor (n,)}``, one permutation of ``0..n-1`` per group.
        point: the point to permute (not modified).

    Returns:
        A new point with the same keys, shapes and dtypes (all tensors freshly allocated).

    Raises:
        LosslabError: ``perm`` misses a group, has an unknown group, or an entry that is not a
            permutation of the group's size; or the spec does not fit ``point``'s shapes.
    """
    spec = _as_spec(spec)
    checked = _check_perm(spec, perm, spec.group_sizes(point))
    tensors = spec.tensors
    out: Point = {}
    for k, v in point.items():
        if k in tensors:
            out[k] = _permute_tensor(v.detach(), tensors[k], checked)
        else:
            out[k] = v.detach().clone()
    return out


def random_permutation(spec: SpecLike, point: Mapping[str, Tensor], *, seed: int) -> Permutation:
    """A uniformly random permutation of every group of ``spec`` (sizes read from ``point``).

    Args:
        spec: the spec.
        point: a point the spec applies to (only shapes are read).
        seed: seeds a private ``torch.Generator`` (the global RNG is untouched); groups are drawn in
            sorted name order, so the result depends only on ``seed`` and the spec.

    Returns:
        ``{group: LongTensor (n,)}`` on the CPU.
    """
    spec = _as_spec(spec)
    sizes = spec.group_sizes(point)
    gen = torch.Generator().manual_seed(int(seed))
    return {g: torch.randperm(sizes[g], generator=gen) for g in sorted(sizes)}


def invert_permutation(perm: Mapping[str, Tensor]) -> Permutation:
    """The inverse permutation: ``apply_permutation(spec, invert_permutation(p), apply_permutation(spec, p, x)) == x``."""
    return {g: torch.argsort(torch.as_tensor(p).long()) for g, p in perm.items()}


# ------------------------------------------------------------------------------- weight matching
@dataclass(frozen=True)
class WeightMatchingInfo(Result):
    r"""Diagnostics of :func:`weight_matching`.

    Attributes:
        iterations: full sweeps over the groups performed (the last one changed nothing if converged).
        objective: :math:`\langle \theta_A, \pi(\theta_B) \rangle` at the start (index 0) and after
            every sweep; non-decreasing.
        identity_objective: the objective without permutation, :math:`\langle \theta_A, \theta_B \rangle`.
        converged: a sweep improved no group (else ``max_iter`` was reached).
        keys: the tensors that enter the objective.
    """

    iterations: int
    objective: list[float]
    identity_objective: float
    converged: bool
    keys: tuple[str, ...]


def _objective(a: Mapping[str, Tensor], b: Mapping[str, Tensor], keys: Iterable[str],
               tensors: Mapping[str, Mapping[int, tuple[str, int]]], perm: Mapping[str, Tensor]) -> float:
    total = 0.0
    for k in keys:
        bk = _permute_tensor(b[k], tensors[k], perm) if k in tensors else b[k]
        total += float(torch.sum(a[k] * bk))
    return total


def weight_matching(
    spec: SpecLike,
    point_a: Mapping[str, Tensor],
    point_b: Mapping[str, Tensor],
    *,
    max_iter: int = 100,
    seed: int | None = None,
    init: Literal["identity", "random"] = "identity",
    exclude: Iterable[str] | None = None,
) -> tuple[Permutation, WeightMatchingInfo]:
    r"""Permutation of B's hidden units that best matches A's weights (Git Re-Basin weight matching).

    Maximises the inner product of the two weight vectors over the permutations :math:`\pi` of the
    spec's groups,

    .. math::
        \max_\pi \; \langle \theta_A, \pi(\theta_B) \rangle
        = \sum_k \langle W^A_k, \pi(W^B_k) \rangle,
        \qquad \text{i.e.} \quad \min_\pi \lVert \theta_A - \pi(\theta_B) \rVert^2 .

    The problem is NP-hard jointly; it is solved by coordinate descent: sweep over the groups in a
    random order; for group :math:`g` (size :math:`n`), with all other groups' permutations applied to
    B on their axes, the objective is linear in :math:`P_g`:
    :math:`\sum_i C_{i, \pi_g(i)}` with

    .. math::
        C_{ij} = \sum_{(k,\,\text{axis}) \in g}
            \big\langle W^A_k[\text{unit } i \text{ on axis}],\;
                        \tilde W^B_k[\text{unit } j \text{ on axis}] \big\rangle ,

    a linear assignment problem solved exactly by :func:`scipy.optimize.linear_sum_assignment`. The new
    :math:`\pi_g` is accepted only if it strictly improves the objective (relative tolerance 1e-12), so
    the objective never decreases and the search stops after the first sweep that changes nothing.
    A group that holds one tensor on two axes (a layer from a residual stream back into it, permuted
    as :math:`P W P^\top`) is linear in :math:`P_g` only with the other axis held at the current
    permutation; plain steps can then cycle. For such a group the step is iterated up to
    ``_COUPLED_STEPS`` times and the candidate with the best *true* objective is kept if it improves.
    Cost matrices are accumulated in float64.

    Args:
        spec: a :class:`PermutationSpec` or ``{group: [(tensor_name, axis[, block]), ...]}``.
        point_a: the reference point A (not modified).
        point_b: the point B to align to A (not modified); same keys/shapes as A on the used tensors.
        max_iter: maximum number of sweeps.
        seed: seeds the order of groups in each sweep (and ``init="random"``); ``None`` = fresh entropy.
        init: start from the identity (default; then the result is never worse than no permutation) or
            from a random permutation.
        exclude: tensor names kept out of the objective (they are still permuted by
            :func:`apply_permutation`); default ``spec.buffers`` (BatchNorm running statistics).
            Non-floating tensors (``num_batches_tracked``) are always left out.

    Returns:
        ``(perm, info)``: ``perm`` maps B toward A — ``apply_permutation(spec, perm, point_b)`` is the
        aligned B; ``info`` is a :class:`WeightMatchingInfo`.

    Raises:
        LosslabError: a bad spec, ``max_iter < 1``, an unknown ``init``, or points that disagree in
            shape on the spec's tensors.

    Example:
        >>> import torch
        >>> spec = {"P": [("w1", 0), ("w2", 1)]}
        >>> a = {"w1": torch.eye(3), "w2": torch.arange(6.).reshape(2, 3)}
        >>> p = {"P": torch.tensor([2, 0, 1])}
        >>> b = apply_permutation(spec, p, a)
        >>> perm, info = weight_matching(spec, a, b, seed=0)
        >>> torch.equal(apply_permutation(spec, perm, b)["w2"], a["w2"]), info.converged
        (True, True)
    """
    spec = _as_spec(spec)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise LosslabError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    if init not in ("identity", "random"):
        raise LosslabError(f"init must be 'identity' or 'random', got {init!r}")
    excluded = set(spec.buffers if exclude is None else exclude)
    tensors = spec.tensors
    sizes = spec.group_sizes(point_a)
    for k in tensors:
        if (k in point_a) != (k in point_b):
            raise LosslabError(f"tensor {k!r} is in only one of the two points")
        if k in point_a and point_a[k].shape != point_b[k].shape:
            raise LosslabError(f"points differ in shape at {k!r}: {tuple(point_a[k].shape)} vs {tuple(point_b[k].shape)}")
    keys = tuple(k for k in point_a if k in point_b and k not in excluded and point_a[k].is_floating_point()
                 and point_a[k].shape == point_b[k].shape)
    a = {k: point_a[k].detach().double() for k in keys}
    b = {k: point_b[k].detach().double().to(point_a[k].device) for k in keys}

    rng = np.random.default_rng(seed)
    names = sorted(spec.groups)
    if init == "identity":
        perm = {g: torch.arange(sizes[g]) for g in names}
    else:
        perm = {g: torch.from_numpy(rng.permutation(sizes[g])).long() for g in names}
    by_group: dict[str, list[Entry]] = {g: [e for e in spec.groups[g] if e[0] in a] for g in names}
    # a tensor on two axes of one group (a stream-to-stream layer in a residual network): the cost below
    # is then linearised at the current permutation, so a step is kept only if the true objective rises
    coupled = {g: len({e[0] for e in by_group[g]}) < len(by_group[g]) for g in names}

    identity = {g: torch.arange(sizes[g]) for g in names}
    identity_obj = _objective(a, b, keys, tensors, identity)
    history = [identity_obj if init == "identity" else _objective(a, b, keys, tensors, perm)]
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        changed = False
        for gi in rng.permutation(len(names)):
            g = names[int(gi)]
            cols, gain = _assignment(a, b, tensors, perm, g, sizes[g], by_group[g])
            if not gain:
                continue
            cand = torch.from_numpy(cols).long()
            if coupled[g]:
                # the linearised step can cycle: follow it a few steps, keep the best true objective
                now = _objective(a, b, keys, tensors, perm)
                best, best_obj, trial = None, now + 1e-12 * max(1.0, abs(now)), dict(perm)
                for _ in range(_COUPLED_STEPS):
                    trial[g] = cand
                    obj = _objective(a, b, keys, tensors, trial)
                    if obj > best_obj:
                        best, best_obj = cand, obj
                    cols, gain = _assignment(a, b, tensors, trial, g, sizes[g], by_group[g])
                    if not gain:
                        break
                    cand = torch.from_numpy(cols).long()
                if best is None:
                    continue
                cand = best
            perm[g] = cand
            changed = True
        history.append(_objective(a, b, keys, tensors, perm))
        if not changed:
            converged = True
            break
    info = WeightMatchingInfo(iterations=it, objective=history, identity_objective=identity_obj,
                              converged=converged, keys=keys)
    return perm, info


_COUPLED_STEPS = 8
"""Linearised assignment steps tried per update of a group that holds a tensor on two axes."""


def _assignment(a: Mapping[str, Tensor], b: Mapping[str, Tensor],
                tensors: Mapping[str, Mapping[int, tuple[str, int]]], perm: Mapping[str, Tensor], g: str, n: int,
                entries: Sequence[Entry]) -> tuple[np.ndarray, bool]:
    """The assignment maximising group ``g``'s term of the objective with the other axes at ``perm``,
    and whether it beats ``perm[g]`` on that (linearised) term."""
    cost = torch.zeros(n, n, dtype=torch.float64, device=next(iter(a.values())).device if a else None)
    for name, axis, _block in entries:
        wa = torch.movedim(a[name], axis, 0).reshape(n, -1)
        wb = _permute_tensor(b[name], tensors[name], perm, skip_axis=axis)
        wb = torch.movedim(wb, axis, 0).reshape(n, -1)
        cost += wa @ wb.T
    c = cost.cpu().numpy()
    _, cols = linear_sum_assignment(c, maximize=True)
    old = float(c[np.arange(n), perm[g].numpy()].sum())
    new = float(c[np.arange(n), cols].sum())
    return cols, new > old + 1e-12 * max(1.0, abs(old))


# ------------------------------------------------------------------------------- align + verify
@dataclass(frozen=True)
class AlignResult(Result):
    """Result of :func:`align`.

    Attributes:
        point_b_aligned: ``apply_permutation(spec, perm, point_b)``, functionally identical to B.
        perm: the permutation found by :func:`weight_matching` (maps B toward A).
        verified: always ``True`` on return (a failed verification raises).
        max_abs_output_diff: ``max |f(B)(x) - f(B_aligned)(x)|`` over the inputs ``x``.
        info: the :class:`WeightMatchingInfo`.
        spec: the spec used.
        float64_output_diff: the same difference recomputed in float64, when the first evaluation's
            rounding exceeded the tolerance (``None`` when it did not).
    """

    point_b_aligned: Point
    perm: Permutation
    verified: bool
    max_abs_output_diff: float
    info: WeightMatchingInfo
    spec: PermutationSpec
    float64_output_diff: float | None = None


def _eval_outputs(model: nn.Module, point: Mapping[str, Tensor], x: Tensor) -> Tensor:
    out = params.call(model, point, x)
    if not isinstance(out, Tensor):
        raise LosslabError(f"align: the model must return a tensor, got {type(out).__name__}")
    return out


def _float64_diff(model: nn.Module, point_b: Mapping[str, Tensor], aligned: Mapping[str, Tensor],
                  x: Tensor) -> float | None:
    """max |f_B - f_pi(B)| with every floating tensor in float64, or None when the model cannot run so."""
    def up(point: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {k: v.double() if v.is_floating_point() else v for k, v in point.items()}

    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            xd = x.double() if x.is_floating_point() else x
            a, b = _eval_outputs(model, up(point_b), xd), _eval_outputs(model, up(aligned), xd)
        return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    except Exception:  # noqa: BLE001 - a model that only runs in its own dtype: no recheck, the float32 verdict stands
        return None
    finally:
        model.train(was_training)


@model_then_data
def align(
    model: nn.Module,
    x: Tensor,
    *,
    point_a: Mapping[str, Tensor],
    point_b: Mapping[str, Tensor],
    spec: SpecLike | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    max_iter: int = 100,
    seed: int | None = 0,
    init: Literal["identity", "random"] = "identity",
) -> AlignResult:
    r"""Align B to A by weight matching and verify that the aligned B computes the same function as B.

    Runs :func:`weight_matching` and applies the permutation to B (parameters and buffers). Before
    returning it evaluates ``model`` at B and at the aligned B on ``x`` with
    :func:`losslab.params.call` in eval mode (buffers taken from the points; the model's ``training``
    flag is restored afterwards) and requires :math:`\max |f_B(x) - f_{\pi(B)}(x)| \le` ``atol + rtol *
    max|f_B(x)|`` (a correct permutation changes only the summation order, so the rounding error grows
    with the outputs' magnitude). When that fails in a lower precision, both are evaluated again in
    float64, where a correct permutation agrees to ~1e-12 of the outputs' scale; only a difference that
    survives float64 blames the spec. A wrong spec (a layer forgotten, a wrong axis or block) breaks the
    identity in every precision and raises.

    BatchNorm: permuting the running mean/variance with their channels keeps the function exactly
    identical, which is what is verified here. But the running statistics of an *interpolation*
    :math:`(1-\alpha)\theta_A + \alpha\,\pi(\theta_B)` are not the interpolated statistics (the
    activations' variance collapses between aligned models), so after interpolating aligned models the
    BN statistics must be recomputed on data at each point (the evaluator's ``bn="recompute"`` does
    this; Jordan et al. 2022 "REPAIR" discuss the effect).

    Args:
        model: the architecture (its own tensors are never used for the evaluation and never modified).
        x: a batch of inputs for the verification (a few examples from the data).
        point_a: reference point A (include buffers, ``params.get_point(model, buffers=True)``, when the
            model has BatchNorm).
        point_b: the point to align; must contain every tensor of the spec that the model has (buffers
            included).
        spec: a :class:`PermutationSpec` or ``{group: [(tensor_name, axis[, block]), ...]}``; default
            :func:`spec_for` ``(model)``.
        atol: absolute part of the accepted output difference.
        rtol: relative part, times the largest |output| of B (1e-5 suits float32 logits of any size).
        max_iter: see :func:`weight_matching`.
        seed: see :func:`weight_matching` (default 0: deterministic).
        init: see :func:`weight_matching`.

    Returns:
        An :class:`AlignResult` with ``verified=True``.

    Raises:
        LosslabError: the spec cannot be derived or does not fit, a spec tensor is missing from
            ``point_b``, the outputs are not finite, or the verification fails.
    """
    if not isinstance(x, Tensor) or x.numel() == 0:
        raise LosslabError("align needs x, a non-empty tensor of inputs, to verify the permutation")
    for name, tol in (("atol", atol), ("rtol", rtol)):
        if not (isinstance(tol, (int, float)) and tol >= 0 and math.isfinite(tol)):
            raise LosslabError(f"{name} must be a finite number >= 0, got {tol!r}")
    spec = spec_for(model) if spec is None else _as_spec(spec)
    state = dict(model.named_parameters())
    state.update(dict(model.named_buffers()))
    missing = sorted(k for k in spec.tensors if k in state and k not in point_b)
    if missing:
        raise LosslabError(f"align: point_b lacks spec tensors {missing} (pass params.get_point(model, buffers=True))")
    unknown = sorted(k for k in spec.tensors if k not in state)
    if unknown:
        raise LosslabError(f"align: spec names tensors the model does not have: {unknown}")
    perm, info = weight_matching(spec, point_a, point_b, max_iter=max_iter, seed=seed, init=init)
    aligned = apply_permutation(spec, perm, point_b)

    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            out_b = _eval_outputs(model, point_b, x)
            out_p = _eval_outputs(model, aligned, x)
    finally:
        model.train(was_training)
    if out_b.shape != out_p.shape:
        raise LosslabError(f"align: output shapes differ: {tuple(out_b.shape)} vs {tuple(out_p.shape)}")
    if not (torch.isfinite(out_b).all() and torch.isfinite(out_p).all()):
        raise LosslabError("align: model outputs are not finite; cannot verify the permutation")
    diff = float((out_b - out_p).abs().max()) if out_b.numel() else 0.0
    scale = float(out_b.abs().max()) if out_b.numel() else 0.0
    tol = atol + rtol * scale
    if diff > tol:
        diff64 = _float64_diff(model, point_b, aligned, x) if out_b.dtype != torch.float64 else None
        if diff64 is None or diff64 > 1e-9 * (1.0 + scale):
            again = "" if diff64 is None else f", and {diff64:.3g} in float64"
            raise LosslabError(
                f"align: the permuted B is not functionally identical to B (max |output diff| = {diff:.3g} > "
                f"{tol:.3g} = atol {atol:g} + rtol {rtol:g} x max|output| {scale:.3g}{again}); the permutation "
                "spec is wrong for this model")
    else:
        diff64 = None
    return AlignResult(point_b_aligned=aligned, perm=perm, verified=True, max_abs_output_diff=diff,
                       info=info, spec=spec, float64_output_diff=diff64)
