"""Shared helpers for the plot package: reading duck-typed surface results, masking, saving."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .._io import atomic_write
from ..errors import LosslabError


def require_kind(result: Any, kind: str, who: str) -> None:
    got = getattr(result, "kind", None)
    if got != kind:
        raise LosslabError(f"{who} needs a {kind!r} result, got kind={got!r}")


def metric_names(result: Any) -> list[str]:
    metrics = getattr(result, "metrics", None)
    if not isinstance(metrics, Mapping) or not metrics:
        raise LosslabError("result has no metrics")
    return list(metrics)


def metric_values(result: Any, metric: str) -> np.ndarray:
    """``result.metrics[metric]`` as a float array, NaN where not done or not finite.

    Shapes are checked against ``result.x``/``result.y``: ``(nx,)`` for lines, ``(ny, nx)`` for
    planes (rows = y, columns = x).
    """
    metrics = getattr(result, "metrics", None)
    if not isinstance(metrics, Mapping) or metric not in metrics:
        have = sorted(metrics) if isinstance(metrics, Mapping) else []
        raise LosslabError(f"result has no metric {metric!r}; available: {', '.join(have) or 'none'}")
    z = np.array(metrics[metric], dtype=float, copy=True)
    x = np.asarray(result.x, dtype=float)
    y = getattr(result, "y", None)
    expected = (x.shape[0],) if y is None else (np.asarray(y).shape[0], x.shape[0])
    if z.shape != expected:
        raise LosslabError(f"metric {metric!r} has shape {z.shape}, expected {expected} from x/y")
    done = getattr(result, "done", None)
    if done is not None:
        done = np.asarray(done, dtype=bool)
        if done.shape != z.shape:
            raise LosslabError(f"done mask has shape {done.shape}, expected {z.shape}")
        z[~done] = np.nan
    z[~np.isfinite(z)] = np.nan
    return z


def finite(z: Any) -> np.ndarray:
    """A float copy of ``z`` with non-finite values (and masked entries) as NaN."""
    if isinstance(z, np.ma.MaskedArray):
        z = z.astype(float).filled(np.nan)
    out = np.array(z, dtype=float, copy=True)
    out[~np.isfinite(out)] = np.nan
    return out


def transform(z: Any, log: bool) -> np.ndarray:
    """NaN-masked values, ``log10`` of them when ``log`` (non-positive values become NaN)."""
    out = finite(z)
    if log:
        bad = ~(out > 0)
        out[bad] = 1.0
        out = np.log10(out)
        out[bad] = np.nan
    return out


def label(metric: str, log: bool) -> str:
    return f"log10({metric})" if log else metric


def require_some(z: np.ndarray, what: str) -> None:
    if not np.isfinite(z).any():
        raise LosslabError(f"nothing to plot: every value of {what} is missing or non-finite")


def meta_str(result: Any, key: str) -> str | None:
    meta = getattr(result, "meta", None)
    if isinstance(meta, Mapping):
        v = meta.get(key)
        return str(v) if v is not None else None
    return None


class DisplayMixin:
    """``savefig`` for displays: an atomic write (temp file + rename) of the plotted figure."""

    figure_: Any

    def savefig(self, path: str | os.PathLike, **kwargs: Any) -> Path:
        """Save ``figure_`` to ``path`` atomically; the format comes from the suffix (png, pdf, svg...).

        Args:
            path: destination file.
            **kwargs: passed to ``Figure.savefig`` (``dpi``, ``bbox_inches``...).
        """
        fig = getattr(self, "figure_", None)
        if fig is None:
            raise LosslabError("call .plot() before .savefig()")
        fmt = kwargs.pop("format", None) or Path(path).suffix.lstrip(".") or "png"
        return atomic_write(path, lambda fh: fig.savefig(fh, format=fmt, **kwargs))
