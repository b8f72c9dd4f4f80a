"""The take-all ("certainty") stratum of adaptive precision: examples always evaluated.

:mod:`losslab.precision` estimates a point's mean loss from a sample of the residuals
:math:`r_i = \\ell_i(p) - g_i(p)`. Between independently trained solutions a few examples carry very
large residuals (population skewness :math:`G_1` of the residuals about 3 to 5), a sample of a few
hundred rarely contains them, and then neither the estimate nor its standard error sees them: the
intervals cover less often than asked (Cochran's rule for the normal approximation of a mean,
:math:`n > 25\\, G_1^2`, asks 225 to 700 examples). The survey-sampling remedy (Cochran 1977,
*Sampling Techniques*, 3rd ed., sections 2.15 and 5A.13; Hidiroglou 1986, "The construction of a
self-representing stratum of large units in survey design", *The American Statistician* 40:27-31)
takes the units whose values can be large with certainty and samples only the rest. Here the
covariate is known for every example: its exact values at the reference lattice.

**Spread.** Per example, :math:`s_i = \\max |\\ell_i(c) - \\ell_i(c')|` over pairs of neighbouring
lattice nodes :math:`c, c'` (along either axis) of the governed metric: how much the example's value
changes from one reference to the next, the scale of what its control can miss between them.

**Size.** The take-all set :math:`T` is the :math:`\\min(\\lceil f N \\rceil, n_0)` examples of
largest spread (``f = take_all``, :math:`n_0` = ``initial``; ties broken by example index): a fixed
fraction of the set, never more than the first sample, so that it at most doubles the cost of a
point that stops at the first sample. :math:`T` is a pure function of the references
(reproducible, resumable, the same on every rank). On the tests' path between two independently
trained MLPs, ``f = 0.1`` lowers the largest skewness of the neighbouring-node differences over the
sampled examples from 2.7 (train split) and 4.2 (test split) to about 1.9 and 1.7, within Cochran's
bound :math:`\\sqrt{n_0 / 25} = 2.26` for :math:`n_0 = 128` (:func:`max_skew` computes it).
"""
from __future__ import annotations

import numpy as np

__all__ = ["spread", "take_all_count", "take_all_set", "max_skew"]


def _diffs(ref: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The neighbouring-node differences ``(pairs, N)`` of ``ref`` ``(ny * nx lattice nodes, N)``."""
    ny, nx = shape
    r = ref.reshape(ny, nx, -1)
    parts = [(r[:, 1:] - r[:, :-1]).reshape(-1, r.shape[-1]), (r[1:] - r[:-1]).reshape(-1, r.shape[-1])]
    d = np.concatenate(parts, 0)
    return d if d.shape[0] else np.zeros((1, r.shape[-1]))


def max_skew(d: np.ndarray) -> float:
    """The largest ``|G1|`` (population skewness) over the rows of ``d`` (a row with no spread: 0)."""
    c = d - d.mean(1, keepdims=True)
    m2, m3 = (c ** 2).mean(1), (c ** 3).mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(m2 > 0, np.abs(m3) / np.where(m2 > 0, m2, 1.0) ** 1.5, 0.0)
    return float(g.max()) if g.size else 0.0


def spread(ref: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """:math:`s_i`: the largest absolute neighbouring-node difference per example (non-finite: 0)."""
    d = _diffs(np.asarray(ref, dtype=np.float64), shape)
    return np.abs(np.where(np.isfinite(d), d, 0.0)).max(0)


def take_all_count(n: int, fraction: float, most: int) -> int:
    """:math:`|T| = \\min(\\lceil f N \\rceil, n_0, N - 1)` (0 for ``fraction = 0``): a function of the
    settings and ``N`` alone, so a finished surface states it without its references."""
    if float(fraction) <= 0:
        return 0
    return max(0, min(int(np.ceil(float(fraction) * int(n))), int(most), int(n) - 1))


def take_all_set(ref: np.ndarray, shape: tuple[int, int], fraction: float, most: int) -> np.ndarray:
    """The take-all examples (sorted indices): the ``min(ceil(fraction * N), most)`` of largest spread.

    Args:
        ref: ``(lattice nodes, N)`` values of the governed metric, nodes in row-major order of
            ``shape`` ``(ny, nx)``.
        shape: the lattice's shape.
        fraction: the fraction of the ``N`` examples taken (0: none).
        most: the most examples taken (the first sample size).

    Example:
        >>> ref = np.zeros((3, 100)); ref[1, :5] = 50.0; ref[1, 7] = 9.0  # examples that change a lot
        >>> take_all_set(ref, (1, 3), 0.06, 128).tolist()
        [0, 1, 2, 3, 4, 7]
    """
    n = np.asarray(ref).shape[-1]
    t = take_all_count(n, fraction, most)
    if t <= 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((np.arange(n), -spread(ref, shape)))  # largest spread first, ties by index
    return np.sort(order[:t]).astype(np.int64)
