"""Function-space diversity of solutions and ensembles (Fort, Hu & Lakshminarayanan 2019, "Deep
ensembles: a loss landscape perspective", arXiv 1912.02757).

Quantities, for predictive distributions :math:`p_a(\\cdot \\mid x_n)` of models :math:`a, b` on test
points :math:`x_1..x_N`:

* weight cosine of displacements: :math:`\\cos(\\theta_a - \\theta_a^0, \\theta_b - \\theta_b^0)`;
* prediction disagreement: :math:`\\frac1N \\sum_n [\\arg\\max_k p_a(k|x_n) \\ne \\arg\\max_k p_b(k|x_n)]`;
* :math:`\\mathrm{KL}(p_a \\Vert p_b) = \\frac1N \\sum_n \\sum_k p_a \\ln(p_a / p_b)` and
  :math:`\\mathrm{JS} = \\tfrac12 \\mathrm{KL}(p_a \\Vert m) + \\tfrac12 \\mathrm{KL}(p_b \\Vert m)`,
  :math:`m = (p_a + p_b)/2` (natural log; probabilities clipped at ``eps`` inside the log);
* ensemble accuracy: accuracy of :math:`\\arg\\max_k \\frac1M \\sum_a p_a(k|x)` (mean of softmaxes).

Samples around one solution :math:`\\theta^*` (:func:`subspace_samples`), from the tail
:math:`\\theta_1..\\theta_T` of its trajectory with mean :math:`\\mu`, per-coordinate variance
:math:`\\sigma^2` and centred iterates :math:`A = [\\theta_t - \\mu]`:

* ``"random"``: :math:`\\theta^* + s\\,\\bar\\sigma\\,\\varepsilon`, :math:`\\bar\\sigma^2 = \\mathrm{mean}(\\sigma^2)`
  (isotropic, same total variance as ``diag``);
* ``"diag"``: :math:`\\theta^* + s\\,\\sigma \\odot \\varepsilon` (diagonal Gaussian, SWAG-diagonal);
* ``"pca"``: :math:`\\theta^* + s \\sum_{i \\le r} \\sqrt{\\lambda_i} z_i v_i`, the top-:math:`r` principal
  directions of :math:`A` (low-rank Gaussian);

with :math:`\\varepsilon \\sim N(0, I)`, :math:`z \\sim N(0, I_r)` and scale :math:`s`.

Example:
    >>> import torch
    >>> from losslab.probes import disagreement, js_divergence
    >>> p = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    >>> q = torch.tensor([[0.6, 0.4], [0.7, 0.3]])
    >>> disagreement(p, q)
    0.5
    >>> js_divergence(p, p)
    0.0
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..results import SummaryArraysFormat
from .._functional import model_then_data, resolve_bn
from .. import params as P
from ..errors import LosslabError
from ._common import Functional, Point, as_xy, check_chunk, iter_chunks, to_numpy

__all__ = [
    "predictions", "weight_cosine", "disagreement", "kl_divergence", "js_divergence", "pairwise",
    "ensemble_accuracy", "embed_predictions", "subspace_samples", "DiversityResult", "diversity",
]

FORMAT = "losslab.diversity"
SampleKind = Literal["random", "diag", "pca"]


@model_then_data
@torch.no_grad()
def predictions(
    model: nn.Module,
    x: Tensor,
    *,
    points: Sequence[Mapping[str, Tensor]],
    softmax: bool = True,
    chunk_size: int | None = 1024,
) -> Tensor:
    """Outputs of the model at each point on ``x``: ``(P, N, K)`` probabilities (or logits).

    A point may also carry buffer entries (e.g. a full state dict with BatchNorm statistics); missing
    entries come from the model. Evaluated in eval mode on a private copy of the model.
    """
    if len(points) == 0:
        raise LosslabError("no points")
    fn = Functional(model)
    n = int(x.shape[0])
    size = check_chunk(chunk_size, n)
    names = set(fn.base) | set(fn.buffers)
    out = []
    for p in points:
        unknown = sorted(set(p) - names)
        if unknown:
            raise LosslabError(f"point has keys the model lacks: {unknown[:5]}")
        parts = [fn(dict(p), x[i:j]) for i, j in iter_chunks(n, size)]
        o = torch.cat(parts)
        o = o.reshape(n, -1)
        out.append(torch.softmax(o.double(), dim=-1) if softmax else o)
    return torch.stack(out)


def weight_cosine(a: Mapping[str, Tensor], b: Mapping[str, Tensor], origin_a: Mapping[str, Tensor] | None = None,
                  origin_b: Mapping[str, Tensor] | None = None) -> float:
    """:math:`\\cos(a - o_a, b - o_b)` (origins default to zero; ``origin_b`` defaults to ``origin_a``)."""
    if origin_b is None:
        origin_b = origin_a
    da = P.sub(a, origin_a) if origin_a is not None else dict(a)
    db = P.sub(b, origin_b) if origin_b is not None else dict(b)
    return P.cosine(da, db)


def _labels(p: Tensor | np.ndarray) -> np.ndarray:
    arr = to_numpy(p)
    return arr.argmax(-1) if arr.ndim >= 2 else arr


def disagreement(p: Tensor | np.ndarray, q: Tensor | np.ndarray) -> float:
    """Fraction of examples whose arg-max prediction differs (``(N, K)`` probabilities/logits or ``(N,)`` labels)."""
    a, b = _labels(p), _labels(q)
    if a.shape != b.shape:
        raise LosslabError(f"predictions differ in shape: {a.shape} vs {b.shape}")
    return float((a != b).mean())


def _probs(p: Tensor | np.ndarray) -> np.ndarray:
    arr = to_numpy(p).astype(np.float64)
    if arr.ndim != 2:
        raise LosslabError(f"expected (N, K) probabilities, got shape {arr.shape}")
    if np.any(arr < -1e-9) or not np.allclose(arr.sum(-1), 1.0, atol=1e-5):
        raise LosslabError("expected probabilities (non-negative rows summing to 1); apply softmax first")
    return arr


def kl_divergence(p: Tensor | np.ndarray, q: Tensor | np.ndarray, *, eps: float = 1e-12) -> float:
    """Mean over examples of :math:`\\sum_k p \\ln(p/q)` (terms with :math:`p = 0` are 0)."""
    a, b = _probs(p), _probs(q)
    if a.shape != b.shape:
        raise LosslabError(f"predictions differ in shape: {a.shape} vs {b.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(a > 0, a * (np.log(np.maximum(a, eps)) - np.log(np.maximum(b, eps))), 0.0)
    return float(max(terms.sum(-1).mean(), 0.0))


def js_divergence(p: Tensor | np.ndarray, q: Tensor | np.ndarray, *, eps: float = 1e-12) -> float:
    """Jensen-Shannon divergence (natural log, in :math:`[0, \\ln 2]`), mean over examples."""
    a, b = _probs(p), _probs(q)
    m = 0.5 * (a + b)
    return 0.5 * kl_divergence(a, m, eps=eps) + 0.5 * kl_divergence(b, m, eps=eps)


def pairwise(probs: Tensor | np.ndarray, metric: str = "disagreement") -> np.ndarray:
    """``(M, M)`` matrix of ``metric`` (``disagreement``, ``kl`` (row ‖ column) or ``js``) between models."""
    fns = {"disagreement": disagreement, "kl": kl_divergence, "js": js_divergence}
    if metric not in fns:
        raise LosslabError(f"metric must be one of {sorted(fns)}, got {metric!r}")
    arr = to_numpy(probs)
    m = len(arr)
    out = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            if i != j:
                out[i, j] = fns[metric](arr[i], arr[j])
    return out


def ensemble_accuracy(probs: Tensor | np.ndarray, y: Tensor | np.ndarray) -> float:
    """Accuracy of the mean of the members' probabilities, ``probs`` ``(M, N, K)``."""
    arr = to_numpy(probs).astype(np.float64)
    if arr.ndim != 3:
        raise LosslabError(f"expected (M, N, K) probabilities, got shape {arr.shape}")
    return float((arr.mean(0).argmax(-1) == to_numpy(y)).mean())


def _accuracy(p: np.ndarray, y: np.ndarray) -> float:
    return float((p.argmax(-1) == y).mean())


def embed_predictions(
    probs: Tensor | np.ndarray, method: Literal["tsne", "pca"] = "tsne", *, seed: int = 0,
    perplexity: float | None = None,
) -> np.ndarray:
    """2-D embedding of prediction vectors (each model's ``(N, K)`` probabilities flattened): ``(M, 2)``.

    ``"tsne"``: scikit-learn t-SNE with ``random_state=seed``, PCA init, perplexity
    ``min(30, (M - 1) / 3)`` by default. ``"pca"``: projection on the top two principal axes (signs fixed
    so the largest-magnitude loading of each axis is positive).
    """
    X = to_numpy(probs).astype(np.float64)
    X = X.reshape(len(X), -1)
    m = len(X)
    if m < 3:
        raise LosslabError(f"an embedding needs at least 3 prediction vectors, got {m}")
    if method == "pca":
        C = X - X.mean(0)
        _, s, vt = np.linalg.svd(C, full_matrices=False)
        vt = vt[:2]
        sign = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
        out = C @ (vt * sign[:, None]).T
        if out.shape[1] < 2:
            out = np.concatenate([out, np.zeros((m, 2 - out.shape[1]))], axis=1)
        return out
    if method != "tsne":
        raise LosslabError(f"method must be 'tsne' or 'pca', got {method!r}")
    from sklearn.manifold import TSNE

    perp = perplexity if perplexity is not None else float(min(30.0, max(1.0, (m - 1) / 3)))
    if not 0 < perp < m:
        raise LosslabError(f"perplexity must be in (0, {m}), got {perp}")
    return TSNE(n_components=2, perplexity=perp, init="pca", learning_rate="auto",
                random_state=int(seed)).fit_transform(X)


def subspace_samples(
    center: Mapping[str, Tensor],
    iterates: Sequence[Mapping[str, Tensor]],
    kind: SampleKind,
    n: int,
    *,
    scale: float = 1.0,
    rank: int | None = None,
    seed: int = 0,
) -> list[Point]:
    """``n`` points sampled around ``center`` from the statistics of trajectory ``iterates`` (module docstring).

    Args:
        center: the solution :math:`\\theta^*`.
        iterates: two or more points (e.g. the last checkpoints of the run).
        kind: ``"random"``, ``"diag"`` or ``"pca"``.
        n: number of samples.
        scale: multiplies the standard deviations.
        rank: PCA rank (default ``len(iterates) - 1``).
        seed: seed of the Gaussian draws.
    """
    if len(iterates) < 2:
        raise LosslabError("subspace samples need at least 2 trajectory iterates")
    if n < 1:
        raise LosslabError(f"n must be >= 1, got {n}")
    like = {k: v for k, v in center.items()}
    A = torch.stack([P.flatten({k: it[k] for k in like}).double() for it in iterates])
    mu = A.mean(0)
    C = A - mu
    var = (C**2).sum(0) / (len(A) - 1)
    c = P.flatten(like).double()
    g = torch.Generator().manual_seed(int(seed))
    dim = c.numel()
    out = []
    if kind == "pca":
        _, s, vt = torch.linalg.svd(C, full_matrices=False)
        r = len(A) - 1 if rank is None else int(rank)
        r = max(1, min(r, len(s)))
        std = s[:r] / np.sqrt(len(A) - 1)
        basis = vt[:r]
    elif kind not in ("random", "diag"):
        raise LosslabError(f"kind must be 'random', 'diag' or 'pca', got {kind!r}")
    for _ in range(n):
        if kind == "random":
            d = torch.sqrt(var.mean()) * torch.randn(dim, generator=g, dtype=torch.float64)
        elif kind == "diag":
            d = torch.sqrt(var) * torch.randn(dim, generator=g, dtype=torch.float64)
        else:
            z = torch.randn(len(std), generator=g, dtype=torch.float64)
            d = (z * std) @ basis
        vec = c + scale * d.to(c.device)
        out.append({k: v.to(like[k].dtype) for k, v in P.unflatten(vec, {k: t.double() for k, t in like.items()}).items()})
    return out


# ---- diversity of runs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiversityResult(SummaryArraysFormat):
    """Function-space comparison of several runs, their trajectories and ensembles.

    Attributes:
        final_accuracy: ``(R,)`` test accuracy of each run's final checkpoint.
        disagreement, kl, js, weight_cosine: ``(R, R)`` between final solutions (KL row ‖ column;
            weight cosine of displacements from each run's own init).
        traj_run, traj_step: ``(P,)`` run index and step of every evaluated checkpoint.
        traj_accuracy, traj_disagreement, traj_js, traj_weight_cosine: ``(P,)`` each checkpoint's
            accuracy, and its disagreement / JS / displacement cosine with its own run's final solution.
        tsne, pca: ``(P, 2)`` embeddings of the checkpoints' prediction vectors (NaN when skipped).
        summary: across-run vs matched-accuracy within-trajectory disagreement, ensemble accuracies
            (independent, same trajectory, subspace samples) and the checks.
        meta: runs, data subset, settings, timing.
    """

    final_accuracy: np.ndarray
    disagreement: np.ndarray
    kl: np.ndarray
    js: np.ndarray
    weight_cosine: np.ndarray
    traj_run: np.ndarray
    traj_step: np.ndarray
    traj_accuracy: np.ndarray
    traj_disagreement: np.ndarray
    traj_js: np.ndarray
    traj_weight_cosine: np.ndarray
    tsne: np.ndarray
    pca: np.ndarray

    _FORMAT = FORMAT
    _SUMMARY_NAN = False

    def plot(self, **kwargs: Any) -> Any:
        """A :class:`~losslab.probes.display.DiversityDisplay` of this result."""
        from .display import DiversityDisplay

        return DiversityDisplay.from_result(self, **kwargs)


def _mean_offdiag(M: np.ndarray) -> float:
    m = len(M)
    if m < 2:
        return float("nan")
    return float(M[~np.eye(m, dtype=bool)].mean())


def _bn_points(model: nn.Module, bn: str, bundle: Any) -> Callable[[Sequence[Point]], list[Point]]:
    """``points -> points`` carrying the BatchNorm statistics ``bn`` measures with: under ``"recompute"``,
    each point gains the statistics of the training data at its parameters; otherwise unchanged."""
    from .._functional import batchnorm_layers, with_recomputed_batchnorm

    if resolve_bn(model, bn) != "recompute" or not batchnorm_layers(model):
        return list
    train_x = as_xy(bundle, "train")[0]

    def measured(points: Sequence[Point]) -> list[Point]:
        out = []
        for p in points:
            twin = copy.deepcopy(model)
            twin.load_state_dict({**twin.state_dict(), **dict(p)})
            out.append(with_recomputed_batchnorm(twin, train_x).state_dict())
        return out

    return measured


def diversity(
    runs: Sequence[Any],
    *,
    split: str = "test",
    n_examples: int | None = None,
    max_checkpoints: int | None = None,
    ensemble_size: int | None = None,
    tail: int = 5,
    sample_scale: float = 1.0,
    sample_kinds: Sequence[SampleKind] = ("random", "diag", "pca"),
    accuracy_tolerance: float = 0.01,
    embed: Sequence[str] = ("tsne", "pca"),
    seed: int = 0,
    bn: Literal["auto", "recompute", "eval"] = "auto",
) -> DiversityResult:
    """Compare independent runs with points of one trajectory and with samples around one solution.

    Args:
        runs: :class:`losslab.runs.Run` handles trained on the same data (different seeds).
        split: evaluation split (``"test"``).
        n_examples: random subset of the split (default all).
        max_checkpoints: per run, at most this many checkpoints (evenly spaced in index; first and last kept).
        ensemble_size: members of the trajectory and subspace ensembles (default ``max(2, len(runs))``);
            the independent ensemble uses all runs.
        tail: last checkpoints of run 0 used for the subspace statistics (and the trajectory ensemble
            uses the last ``ensemble_size`` checkpoints of run 0).
        sample_scale: scale :math:`s` of the subspace samples.
        sample_kinds: which subspace samples to ensemble.
        accuracy_tolerance: a checkpoint is "at similar accuracy" when its accuracy is within this of its
            run's final accuracy (used for the within-trajectory disagreement).
        embed: embeddings to compute (``"tsne"``, ``"pca"``).
        seed: seed of the subset, the samples and t-SNE.
        bn: the BatchNorm statistics every prediction is made with (the policy of every measurement):
            ``"recompute"`` (``"auto"`` on a BatchNorm model): those of the training data at that point's
            parameters; ``"eval"``: the checkpoint's running statistics (samples: the final model's).

    Returns:
        A :class:`DiversityResult`; ``summary["checks"]`` holds Fort et al.'s two comparisons.
    """
    if not runs:
        raise LosslabError("diversity needs at least one run")
    t0 = time.perf_counter()
    data_cfgs = [r.config.data for r in runs]
    if any(d != data_cfgs[0] for d in data_cfgs[1:]):
        raise LosslabError("runs were trained on different data; diversity compares runs on the same data")
    if any(r.config.model != runs[0].config.model for r in runs[1:]):
        raise LosslabError("runs have different architectures; diversity compares runs of the same model")
    bundle = runs[0].bundle()
    if bundle.num_classes < 1:
        raise LosslabError("diversity needs a classification dataset")
    x, y = as_xy(bundle, split)
    if n_examples is not None and n_examples < len(x):
        idx = torch.sort(torch.randperm(len(x), generator=torch.Generator().manual_seed(int(seed)))[:n_examples]).values
        x, y = x[idx], y[idx]
    yn = to_numpy(y)

    model = runs[0].build_model()
    measured = _bn_points(model, bn, bundle)
    finals, inits, probs_final = [], [], []
    traj_rows: list[tuple[int, int]] = []
    traj_probs: list[np.ndarray] = []
    traj_pts: dict[int, list[tuple[int, Point]]] = {}
    for r, run in enumerate(runs):
        traj = run.trajectory()
        if len(traj) < 1:
            raise LosslabError(f"run {run.path} has no checkpoints")
        traj_pts[r] = traj
        keep = list(range(len(traj)))
        if max_checkpoints is not None and len(traj) > max_checkpoints:
            keep = sorted(set(np.round(np.linspace(0, len(traj) - 1, max(2, max_checkpoints))).astype(int).tolist()))
        states = [run.state_dict(traj[i][0]) for i in keep]
        pr = to_numpy(predictions(model, x, points=measured(states))).astype(np.float64)
        traj_probs.extend(list(pr))
        traj_rows.extend((r, int(traj[i][0])) for i in keep)
        finals.append(traj[-1][1])
        inits.append(traj[0][1])
        probs_final.append(pr[-1])
    R = len(runs)
    PF = np.stack(probs_final)
    acc_final = np.array([_accuracy(p, yn) for p in PF])
    W = np.full((R, R), np.nan)
    for a in range(R):
        for b in range(R):
            W[a, b] = weight_cosine(finals[a], finals[b], inits[a], inits[b])
    dis, kl, js = pairwise(PF, "disagreement"), pairwise(PF, "kl"), pairwise(PF, "js")

    TP = np.stack(traj_probs)
    tr_run = np.array([r for r, _ in traj_rows], dtype=np.int64)
    tr_step = np.array([s for _, s in traj_rows], dtype=np.int64)
    tr_acc = np.array([_accuracy(p, yn) for p in TP])
    tr_dis = np.array([disagreement(p, PF[r]) for p, r in zip(TP, tr_run)])
    tr_js = np.array([js_divergence(p, PF[r]) for p, r in zip(TP, tr_run)])
    tr_cos = np.full(len(TP), np.nan)
    for i, (r, s) in enumerate(traj_rows):
        pt = dict(traj_pts[r])[s]
        if s != traj_pts[r][0][0]:
            tr_cos[i] = weight_cosine(pt, finals[r], inits[r])

    # within-trajectory disagreement at accuracy similar to the run's final one
    within, matched = [], 0
    for r in range(R):
        rows = np.nonzero((tr_run == r) & (tr_step != traj_pts[r][-1][0]))[0]
        if len(rows) == 0:
            continue
        close = rows[tr_acc[rows] >= acc_final[r] - accuracy_tolerance]
        if len(close):
            matched += len(close)
            within.extend(tr_dis[close].tolist())
        else:
            within.append(float(tr_dis[rows[-1]]))
    within_dis = float(np.mean(within)) if within else float("nan")
    across_dis = _mean_offdiag(dis)

    # ensembles
    m = ensemble_size if ensemble_size is not None else max(2, R)
    ens: dict[str, Any] = {"single_mean": float(acc_final.mean()), "size": int(m)}
    ens["independent"] = ensemble_accuracy(PF, yn) if R > 1 else float("nan")
    ens["independent_size"] = R
    t0_states = [runs[0].state_dict(s) for s, _ in traj_pts[0][-m:]]
    traj_ens = to_numpy(predictions(model, x, points=measured(t0_states))).astype(np.float64)
    ens["trajectory"] = ensemble_accuracy(traj_ens, yn)
    ens["trajectory_size"] = len(t0_states)
    tail_pts = [p for _, p in traj_pts[0][-max(2, tail):]]
    samples: dict[str, Any] = {}
    if len(tail_pts) >= 2:
        for i, kind in enumerate(sample_kinds):
            pts = subspace_samples(finals[0], tail_pts, kind, m, scale=sample_scale, seed=seed + 1000 * (i + 1))
            sp = to_numpy(predictions(model, x, points=measured(pts))).astype(np.float64)
            ens[kind] = ensemble_accuracy(sp, yn)
            samples[kind] = {
                "member_accuracy_mean": float(np.mean([_accuracy(p, yn) for p in sp])),
                "disagreement_with_center": float(np.mean([disagreement(p, PF[0]) for p in sp])),
            }

    tsne = np.full((len(TP), 2), np.nan)
    pca = np.full((len(TP), 2), np.nan)
    if len(TP) >= 3:
        if "tsne" in embed:
            tsne = embed_predictions(TP, "tsne", seed=seed)
        if "pca" in embed:
            pca = embed_predictions(TP, "pca")

    checks = {
        "across_run_gt_within_trajectory": bool(across_dis > within_dis) if R > 1 and within else None,
        "independent_ensemble_beats_trajectory": bool(ens["independent"] > ens["trajectory"]) if R > 1 else None,
    }
    summary = {
        "n_runs": R, "final_accuracy_mean": float(acc_final.mean()),
        "across_run_disagreement": across_dis, "within_trajectory_disagreement": within_dis,
        "within_trajectory_matched_checkpoints": matched,
        "across_run_js": _mean_offdiag(js), "across_run_weight_cosine": _mean_offdiag(W),
        "ensemble_accuracy": ens, "subspace_samples": samples, "checks": checks,
    }
    meta = {"runs": [str(r.path) for r in runs], "split": split, "n_examples": int(len(x)), "seed": seed,
            "tail": tail, "sample_scale": sample_scale, "accuracy_tolerance": accuracy_tolerance,
            "bn": resolve_bn(model, bn), "seconds": round(time.perf_counter() - t0, 3)}
    return DiversityResult(acc_final, dis, kl, js, W, tr_run, tr_step, tr_acc, tr_dis, tr_js, tr_cos, tsne, pca,
                           summary=summary, meta=meta)
