"""The Hessian analysis of one solution, cached per computation (what ``losslab hessian`` runs).

:func:`hessian_analysis` measures, at a model's parameters and on given data: the top-k Hessian
eigenvalues (Lanczos, with residuals and convergence flags), the trace (Hutchinson, ± its standard
error) and :math:`\\operatorname{Tr}H/\\|H\\|_F`, the negative-curvature ratio
:math:`|λ_{min}|/λ_{max}`, Keskar et al.'s ε-sharpness, ASAM's adaptive sharpness, the basin width
along random filter-normalized directions and, optionally, the spectral density (SLQ, drawn by
:class:`~losslab.plot.SpectralDensityDisplay` as a PNG).

Every expensive computation is cached on its own in the output folder by :class:`ResultCache` as
``<name>-<hash>.json`` (+ ``.npz`` for arrays), the hash covering the measured point (e.g. the
checkpoint's path, size and mtime), the data (split, subset, seed) and that computation's settings;
a rerun with the same settings loads them (``sigma`` changes the density's smoothing without
recomputing). ``force=True`` recomputes.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .._functional import model_then_data
from ..errors import DamagedFile, LosslabError

__all__ = ["ANALYSIS_PARTS", "ResultCache", "data_subset", "hessian_analysis"]

#: The parts of :func:`hessian_analysis` that ``skip`` can leave out.
ANALYSIS_PARTS = ("topk", "trace", "negative", "epsilon", "adaptive", "basin")


class ResultCache:
    """Results keyed by a hash of (point, data, settings), one file group per computation.

    Args:
        out: the folder of the cached files.
        base: what every computation shares (the point, the data); part of every hash.
        force: recompute (and overwrite) even when a cached result exists.

    Attributes:
        hits: ``{name: loaded from the cache}`` of every computation asked for.
        files: ``{name: path}`` of their files.
        seconds: ``{name: compute seconds}`` of those computed now.
    """

    def __init__(self, out: Path, base: dict[str, Any], force: bool) -> None:
        self.out, self.base, self.force = Path(out), base, force
        self.hits: dict[str, bool] = {}
        self.files: dict[str, str] = {}
        self.seconds: dict[str, float] = {}

    def stem(self, name: str, params: dict[str, Any]) -> Path:
        """``out/<name>-<12 hex digits of the hash of (base, name, params)>`` (no suffix)."""
        from ..results import digest

        spec = {"base": self.base, "name": name, "params": params}
        return self.out / f"{name}-{digest(spec, 12, compact=False, default=str)}"

    def json(self, name: str, params: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """A JSON-able result: loaded from ``<stem>.json`` when its params match, else computed and saved."""
        from .._io import atomic_write_json
        from ..results import read_sealed_json, seal

        path = self.stem(name, params).with_suffix(".json")
        self.files[name] = str(path)
        if path.is_file() and not self.force:
            try:
                stored = read_sealed_json(path)  # a truncated or changed file is recomputed, with one line
                if stored.get("params") == json.loads(json.dumps(params, default=str)):
                    self.hits[name] = True
                    return stored["result"]
            except DamagedFile as exc:
                print(exc.recomputing(), file=sys.stderr, flush=True)
            except (OSError, ValueError, KeyError):
                pass
        t0 = time.perf_counter()
        result = compute()
        self.seconds[name] = round(time.perf_counter() - t0, 4)
        atomic_write_json(path, seal({"name": name, "base": self.base, "params": params, "result": result}))
        self.hits[name] = False
        return result

    def obj(self, name: str, params: dict[str, Any], compute: Callable[[], Any], load: Callable[[Path], Any]) -> Any:
        """A result object with ``save(path)``: ``load(<stem>.npz)`` when cached, else computed and saved."""
        from ..results import read_npz, read_sealed_json

        stem = self.stem(name, params)
        npz, js = stem.with_suffix(".npz"), stem.with_suffix(".json")
        self.files[name] = str(npz)
        if npz.is_file() and js.is_file() and not self.force:
            try:
                read_sealed_json(js)
                read_npz(npz)  # every member's CRC-32
                res = load(npz)
                self.hits[name] = True
                return res
            except DamagedFile as exc:
                print(exc.recomputing(), file=sys.stderr, flush=True)
            except (OSError, ValueError, KeyError, LosslabError):
                pass
        t0 = time.perf_counter()
        res = compute()
        self.seconds[name] = round(time.perf_counter() - t0, 4)
        res.save(npz)  # every cached result type seals its own sidecar
        self.hits[name] = False
        return res


def data_subset(split: Any, n: int | None, seed: int) -> tuple[Any, Any]:
    """``(x, y)`` of ``split`` (a Split or an ``(x, y)`` pair), or ``n`` examples drawn with ``seed``.

    The drawn indices are sorted (the examples keep their order); ``n`` None or >= the size: all.
    """
    import torch

    x, y = (split.x, split.y) if hasattr(split, "x") else split
    if n is None or n >= len(x):
        return x, y
    if n < 1:
        raise LosslabError(f"subset must be >= 1, got {n}")
    idx = torch.sort(torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]).values
    return x[idx], y[idx]


@model_then_data
def hessian_analysis(
    model: Any,
    data: tuple[Any, Any],
    *,
    loss: Callable[..., Any],
    out: str | Path,
    point: Mapping[str, Any] | None = None,
    split: str = "train",
    subset: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    dtype: str | None = None,
    top_k: int = 5,
    tol: float = 1e-4,
    max_iter: int | None = None,
    repeats: bool = False,
    probes: int = 50,
    density: bool = False,
    density_probes: int = 10,
    density_steps: int = 80,
    sigma: float | None = None,
    epsilon: float = 1e-3,
    rho: float = 0.5,
    ascent_steps: int = 20,
    basin_directions: int = 10,
    basin_threshold: float = 0.1,
    basin_kind: str = "additive",
    skip: Iterable[str] = (),
    force: bool = False,
    header: Mapping[str, Any] | None = None,
    t_start: float | None = None,
    bn: str | None = None,
) -> dict[str, Any]:
    """Curvature and sharpness of ``model`` on ``data``, each computation cached in ``out``.

    Args:
        model: the model (at the measured parameters).
        data: ``(x, y)``, already subset (see :func:`data_subset`).
        loss: its loss ``loss(output, y)``.
        out: the cache folder (created); ``hessian.json`` (the returned summary) is written there.
        point: what identifies the measured parameters (e.g. checkpoint path, size, mtime) in the
            cache keys; with None, a cached result of other parameters could be reused.
        split, subset, seed: recorded in the cache keys; ``seed`` seeds every probe and direction.
        batch_size, dtype: of the curvature operators ("float32"/"float64"/None: the model's).
        top_k, tol, max_iter, repeats: the Lanczos top-k (eigenvectors saved to the topk .npz); ``tol`` and
            ``max_iter`` govern every eigen computation, λmin (the negative-curvature ratio) included.
        probes: Hutchinson probes of the trace.
        density, density_probes, density_steps, sigma: the SLQ density and its PNG smoothing.
        epsilon, rho, ascent_steps: ε-sharpness and adaptive sharpness.
        basin_directions, basin_threshold, basin_kind: the basin width.
        skip: parts of :data:`ANALYSIS_PARTS` not to compute.
        force: recompute even when cached.
        header: entries put first in the summary (e.g. what was measured).
        t_start: a ``time.perf_counter()`` value the summary's ``seconds`` count from (default: now).
        bn: the BatchNorm policy of every computation (``"recompute"``, ``"eval"``, ``"auto"``; see
            :data:`losslab._functional.BN_MODES`); ``None`` keeps the model's module modes (and the basin's
            evaluator ``"auto"``).

    Returns:
        The summary: loss, eigenvalues/residuals/eigen_converged/lambda_max, trace and Tr/||H||_F,
        lambda_min and the negative-curvature ratio, the sharpness measures, the basin summary, the
        density entry, and ``cached``/``all_cached``/``files``/``compute_seconds``/``seconds``.
    """
    import torch

    from .._io import atomic_savez, atomic_write_json
    from ..plot import SpectralDensityDisplay
    from . import (
        HessianOperator,
        SLQResult,
        adaptive_sharpness,
        basin_width,
        epsilon_sharpness,
        hutchinson_trace,
        lanczos_eigs,
        negative_curvature_ratio,
        slq_density,
    )
    from .basin import BasinResult

    t_start = time.perf_counter() if t_start is None else t_start
    unknown = sorted(set(skip) - set(ANALYSIS_PARTS))
    if unknown:
        raise LosslabError(f"unknown parts to skip: {unknown}; allowed: {', '.join(ANALYSIS_PARTS)}")
    x, y = data
    torch_dtype = {"float32": torch.float32, "float64": torch.float64, None: None}[dtype]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = {"point": dict(point) if point is not None else None, "split": split, "subset": subset, "seed": seed,
            "examples": int(len(x)), "batch_size": batch_size, "dtype": dtype}
    if bn is not None:
        base["bn"] = bn
    cache = ResultCache(out, base, force)
    skip = set(skip)
    num_params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    op_holder: dict[str, Any] = {}

    def op() -> Any:
        if "H" not in op_holder:
            op_holder["H"] = HessianOperator(model, (x, y), loss=loss, batch_size=batch_size, dtype=torch_dtype, bn=bn)
        return op_holder["H"]

    summary: dict[str, Any] = {**dict(header or {}), "split": split, "examples": int(len(x)),
                               "parameters": int(num_params), "out": str(out)}
    summary["loss"] = cache.json("loss", {}, lambda: {"loss": op().loss()})["loss"]

    if "topk" not in skip:
        tk_params: dict[str, Any] = {"k": top_k, "tol": tol, "max_iter": max_iter}
        if repeats:
            tk_params["repeats"] = True

        def topk_json() -> dict[str, Any]:
            r = lanczos_eigs(op(), k=top_k, which="LA", tol=tol, max_iter=max_iter, seed=seed, repeats=repeats)
            vecs = r.eigenvectors.detach().to("cpu", torch.float32).numpy()
            atomic_savez(cache.stem("topk", tk_params).with_suffix(".npz"), eigenvectors=vecs,
                         eigenvalues=r.eigenvalues.numpy())
            return {"eigenvalues": r.eigenvalues.tolist(), "residuals": r.residuals.tolist(),
                    "pair_converged": [bool(b) for b in r.pair_converged.tolist()], "converged": bool(r.converged),
                    "num_matvecs": int(r.num_matvecs), "iterations": int(r.iterations)}

        tk = cache.json("topk", tk_params, topk_json)
        summary.update(eigenvalues=tk["eigenvalues"], residuals=tk["residuals"],
                       eigen_converged=tk["pair_converged"], lanczos_matvecs=tk["num_matvecs"],
                       lambda_max=tk["eigenvalues"][0])
        cache.files["eigenvectors"] = str(cache.stem("topk", tk_params).with_suffix(".npz"))

    if "trace" not in skip:
        def trace() -> dict[str, Any]:
            r = hutchinson_trace(op(), num_probes=probes, seed=seed)
            return {"trace": r.trace, "stderr": r.stderr, "frobenius_sq": r.frobenius_sq,
                    "frobenius_sq_stderr": r.frobenius_sq_stderr, "num_probes": r.num_probes}

        tr = cache.json("trace", {"probes": probes}, trace)
        fro = math.sqrt(max(tr["frobenius_sq"], 0.0))
        summary.update(trace=tr["trace"], trace_stderr=tr["stderr"], frobenius=fro,
                       trace_over_frobenius=tr["trace"] / fro if fro > 0 else None, trace_probes=tr["num_probes"])

    if "negative" not in skip:
        def negative() -> dict[str, Any]:
            r = negative_curvature_ratio(op(), tol=tol, max_iter=max_iter, seed=seed)
            return {"lambda_min": r.lambda_min, "lambda_max": r.lambda_max, "ratio": r.ratio,
                    "converged": r.converged, "num_matvecs": r.num_matvecs}

        nc = cache.json("negative", {"tol": tol, "max_iter": max_iter}, negative)
        summary.update(lambda_min=nc["lambda_min"], negative_curvature_ratio=nc["ratio"],
                       negative_converged=nc["converged"])

    if "epsilon" not in skip:
        def eps() -> dict[str, Any]:
            r = epsilon_sharpness(model, (x, y), loss=loss, epsilon=epsilon, steps=ascent_steps,
                                  batch_size=batch_size, dtype=torch_dtype, bn=bn)
            return {"sharpness": r.sharpness, "max_loss": r.max_loss, "base_loss": r.base_loss,
                    "num_gradients": r.num_gradients}

        es = cache.json("epsilon", {"epsilon": epsilon, "steps": ascent_steps}, eps)
        summary.update(epsilon_sharpness=es["sharpness"], epsilon=epsilon)

    if "adaptive" not in skip:
        def adaptive() -> dict[str, Any]:
            r = adaptive_sharpness(model, (x, y), loss=loss, rho=rho, steps=ascent_steps,
                                   batch_size=batch_size, dtype=torch_dtype, seed=seed, bn=bn)
            return {"sharpness": r.sharpness, "first_step": r.first_step, "max_loss": r.max_loss,
                    "base_loss": r.base_loss, "num_gradients": r.num_gradients}

        ad = cache.json("adaptive", {"rho": rho, "steps": ascent_steps, "p": 2, "eta": 0.0}, adaptive)
        summary.update(adaptive_sharpness=ad["sharpness"], rho=rho)

    if "basin" not in skip:
        b_params = {"directions": basin_directions, "threshold": basin_threshold, "kind": basin_kind}
        bres = cache.obj(
            "basin", b_params,
            lambda: basin_width(model, (x, y), loss=loss, num_directions=basin_directions,
                                threshold=basin_threshold, threshold_kind=basin_kind, seed=seed,
                                batch_size=batch_size, bn=bn or "auto"),
            BasinResult.load)
        summary["basin"] = bres.summary()

    if density:
        d_params = {"probes": density_probes, "steps": density_steps}
        slq = cache.obj("slq", d_params,
                        lambda: slq_density(op(), num_probes=density_probes, lanczos_steps=density_steps, seed=seed),
                        SLQResult.load)
        stem = cache.stem("slq", d_params)
        png = stem.with_name(stem.name.replace("slq-", "density-")).with_suffix(".png")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        disp = SpectralDensityDisplay.from_result(slq, sigma=sigma, top=summary.get("eigenvalues"))
        disp.savefig(png, dpi=120, bbox_inches="tight")
        plt.close(disp.figure_)
        m = slq.moments([1, 2])
        summary["density"] = {"png": str(png), "num_probes": slq.num_probes, "lanczos_steps": slq.lanczos_steps,
                              "trace_slq": float(m[0] * slq.dim), "frobenius_sq_slq": float(m[1] * slq.dim),
                              "num_matvecs": slq.num_matvecs}
        cache.files["density_png"] = str(png)

    summary["cached"] = dict(cache.hits)
    summary["all_cached"] = bool(cache.hits) and all(cache.hits.values())
    summary["files"] = dict(cache.files)
    summary["compute_seconds"] = dict(cache.seconds)
    summary["seconds"] = round(time.perf_counter() - t_start, 3)
    from ..results import seal

    atomic_write_json(out / "hessian.json", seal(summary))  # with its content hash, like every result file
    return summary
