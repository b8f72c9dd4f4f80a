"""Monotonic linear interpolation (Goodfellow, Vinyals & Saxe 2015; Lucas et al. 2021).

Given the loss along θ(a) = (1 − a)θ0 + aθT on a grid of ``a`` (typically from init to solution),
:func:`monotonicity` counts how often the loss goes *up* as ``a`` grows and how high it climbs.

Definitions (``L_i`` = loss at the i-th grid value inside ``[a_lo, a_hi]``, default [0, 1]):

* a *non-monotone step* is an i with ``L_{i+1} > L_i + atol + rtol·|L_i|`` (:func:`rising_steps`);
* a *bump* is a maximal run of consecutive non-monotone steps (one hill counts once);
* the *bump height* is the largest rise above the running minimum,
  ``max_i (L_i − min_{j ≤ i} L_j)`` (0 for a monotonically decreasing curve; Lucas et al.'s Δ).

Tolerances: ``losslab interpolate`` counts every rise (``atol = rtol = 0``; its ``--tol`` is ``atol``);
survey row A1 ignores float32 evaluation noise with ``atol = 1e-6``, ``rtol = 1e-5``.

Example:
    >>> import numpy as np
    >>> a = np.linspace(0, 1, 6)
    >>> r = monotonicity(a, np.array([5.0, 4.0, 4.5, 3.0, 3.2, 1.0]))
    >>> r["non_monotone_steps"], r["bumps"], r["bump_height"]
    (2, 2, 0.5)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .errors import LosslabError

__all__ = ["monotonicity", "rising_steps"]


def rising_steps(values: Any, *, atol: float = 0.0, rtol: float = 0.0) -> np.ndarray:
    """Which steps ``i -> i+1`` of ``values`` rise: ``L_{i+1} - L_i > atol + rtol * |L_i|`` (bool array).

    A comparison with a NaN is never a rise. With ``atol = rtol = 0`` every increase counts.

    Example:
        >>> rising_steps([3.0, 2.0, 2.0 + 1e-9, 2.5], atol=1e-6, rtol=1e-5).tolist()
        [False, False, True]
    """
    v = np.asarray(values, dtype=float)
    return np.diff(v) > atol + rtol * np.abs(v[:-1])


def monotonicity(alphas: Any, values: Any, *, atol: float = 0.0, rtol: float = 0.0, lo: float = 0.0,
                 hi: float = 1.0, tol: float | None = None) -> dict[str, Any]:
    """Non-monotone steps, bumps and bump height of ``values`` along ``alphas`` within ``[lo, hi]``.

    Args:
        alphas: grid coordinates (sorted ascending).
        values: metric at each coordinate (NaN/inf make the result ``monotone=None``: undecided).
        atol, rtol: a rise from ``L_i`` must exceed ``atol + rtol * |L_i|`` to count
            (:func:`rising_steps`). The defaults (0, 0) are what ``losslab interpolate`` uses: every
            rise counts unless its ``--tol`` (= ``atol``) says otherwise. Survey row A1 uses
            ``atol=1e-6, rtol=1e-5`` (float32 evaluation noise is not a bump).
        lo, hi: the part of the grid that is judged (values outside, e.g. a < 0, are ignored).
        tol: the older name of ``atol`` (absolute, in the metric's units); give one of the two.

    Returns:
        ``{"steps", "non_monotone_steps", "bumps", "bump_height", "monotone", "start", "end"}``.
    """
    if tol is not None:
        if atol:
            raise LosslabError("give the absolute tolerance once: atol or its older name tol")
        atol = tol
    a = np.asarray(alphas, dtype=float)
    v = np.asarray(values, dtype=float)
    if a.shape != v.shape or a.ndim != 1:
        raise LosslabError(f"alphas {a.shape} and values {v.shape} must be 1-D of the same length")
    if np.any(np.diff(a) <= 0):
        raise LosslabError("alphas must be strictly increasing")
    keep = (a >= lo - 1e-12) & (a <= hi + 1e-12)
    v = v[keep]
    if len(v) < 2:
        raise LosslabError(f"need at least 2 grid values in [{lo}, {hi}], got {len(v)}")
    if not np.all(np.isfinite(v)):
        return {"steps": len(v) - 1, "non_monotone_steps": None, "bumps": None, "bump_height": None,
                "monotone": None, "start": float(v[0]), "end": float(v[-1])}
    up = rising_steps(v, atol=atol, rtol=rtol)
    bumps = int(up[0]) + int(np.sum(up[1:] & ~up[:-1])) if len(up) else 0
    height = float(np.max(v - np.minimum.accumulate(v)))
    return {
        "steps": int(len(v) - 1),
        "non_monotone_steps": int(up.sum()),
        "bumps": bumps,
        "bump_height": height,
        "monotone": bool(not up.any()),
        "start": float(v[0]),
        "end": float(v[-1]),
    }
