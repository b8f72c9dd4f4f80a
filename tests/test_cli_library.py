"""The library functions the CLI calls (directions.build, surface.block_plan/render,
curvature.analysis) against the primitives they replace, and the Display contract of every display."""
from __future__ import annotations

import importlib
import inspect
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from losslab import directions as D  # noqa: E402
from losslab import params as P  # noqa: E402
from losslab.errors import LosslabError  # noqa: E402
from losslab.results import check_seal  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src" / "losslab"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def tiny():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    x = torch.randn(40, 4, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    return model, (x, y)


def same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------- directions.build
def test_build_random_and_to_equal_the_primitives():
    model, _ = tiny()
    w = P.get_point(model)
    b1 = D.build("random", w, dim=1, normalization="layer", ignore_1d=False, seed=3)
    same(b1.directions[0].vector, D.random_direction(w, normalization="layer", ignore_1d=False, seed=3).vector)
    assert b1.span == (-1.0, 1.0, -1.0, 1.0) and b1.pca is None
    b2 = D.build("random", w, dim=2, seed=5, orthogonalize=True)
    ref = D.random_plane(w, seed=5, orthogonalize=True)
    same(b2.directions[0].vector, ref[0].vector)
    same(b2.directions[1].vector, ref[1].vector)
    other = {k: v + 1.0 for k, v in w.items()}
    bt = D.build("to", w, dim=2, other=other, seed=2)
    same(bt.directions[0].vector, D.model_to_model(w, other).vector)
    same(bt.directions[1].vector, D.random_direction(w, seed=2).vector)
    assert bt.span == (-0.5, 1.5, -1.0, 1.0)
    with pytest.raises(LosslabError, match="other"):
        D.build("to", w)
    with pytest.raises(LosslabError, match="unknown direction kind"):
        D.build("sideways", w)
    with pytest.raises(LosslabError, match="dim"):
        D.build("random", w, dim=3)


def test_build_pca_span_and_save(tmp_path):
    model, _ = tiny()
    w = P.get_point(model)
    g = torch.Generator().manual_seed(1)
    traj = [{k: v + 0.1 * i * torch.randn(v.shape, generator=g) for k, v in w.items()} for i in range(6)]
    b = D.build("pca", w, dim=2, trajectory=traj)
    ref = D.pca_directions(traj, center=w, n_components=2)
    same(b.directions[1].vector, ref.directions[1].vector)
    c = np.asarray(ref.coords)
    lo, hi = c.min(axis=0), c.max(axis=0)
    pad = 0.25 * np.maximum(hi - lo, 1e-3)
    assert b.span == pytest.approx((lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1]))
    b.save(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert any(n.startswith("pca") for n in names)
    assert any(n.startswith("direction0") for n in names) and any(n.startswith("direction1") for n in names)


def test_build_hessian_directions_are_the_top_eigenvectors():
    from losslab.curvature import HessianOperator, lanczos_eigs
    from losslab.train import loss_fn_for

    model, data = tiny()
    w = P.get_point(model)
    b = D.build("hessian", w, dim=2, model=model, loss=loss_fn_for(3), data=data, seed=0)
    op = HessianOperator(model, data, loss=loss_fn_for(3), batch_size=4096)
    ref = lanczos_eigs(op, k=2, which="LA", seed=0, tol=1e-4)
    for i, d in enumerate(b.directions):
        assert d.meta["eigenvalue"] == float(ref.eigenvalues[i]) and d.meta["kind"] == "hessian"
        assert math.isclose(P.norm(d.vector), 1.0, rel_tol=1e-5)
    r = 0.1 * P.norm(w)
    assert b.span == (-r, r, -r, r)


# ---------------------------------------------------------------- surface.block_plan / render
def reference_blocks(flat_done, block, max_points):
    """The loop surface._run had before the block plan was shared (verbatim)."""
    n = flat_done.size
    budget = math.inf if max_points is None else int(max_points)
    out, evaluated = [], 0
    for s in range(0, n, block):
        if evaluated >= budget:
            break
        idx = np.arange(s, min(n, s + block), dtype=np.int64)
        idx = idx[~flat_done[idx]]
        if idx.size == 0:
            continue
        if evaluated + idx.size > budget:
            idx = idx[: int(budget - evaluated)]
        out.append(idx)
        evaluated += int(idx.size)
    return out


def test_block_plan_equals_the_old_loop():
    from losslab.surface import block_plan

    rng = np.random.default_rng(0)
    for _ in range(200):
        shape = tuple(rng.integers(1, 9, size=rng.integers(1, 3)))
        done = rng.random(shape) < rng.random()
        block = int(rng.integers(1, 12))
        mp = None if rng.random() < 0.3 else int(rng.integers(0, 40))
        got = block_plan(done, block, mp)
        ref = reference_blocks(done.reshape(-1), block, mp)
        assert len(got) == len(ref) and all(np.array_equal(a, b) for a, b in zip(got, ref))
    with pytest.raises(LosslabError, match="block"):
        block_plan(np.zeros(3, bool), 0)


def test_render_writes_the_files_the_cli_lists(tmp_path):
    from losslab.surface import line, plane, render

    model, data = tiny()
    w = P.get_point(model)
    dx, dy = D.random_plane(w, seed=0)
    res = plane(model, data, dx=dx, dy=dy, nx=4, ny=3, progress=False)
    files = render(res, tmp_path, png=True, html=True, vtp=True, log=True)
    assert sorted(files) == ["html", "png", "png_3d", "vtp"]
    assert files["png"] == str(tmp_path / "contour.png") and files["png_3d"] == str(tmp_path / "surface3d.png")
    for f in files.values():
        assert Path(f).stat().st_size > 0
    assert render(res, tmp_path / "none") == {}
    lres = line(model, data, direction=dx, num=5, progress=False)
    assert render(lres, tmp_path, png=True) == {"png": str(tmp_path / "surface.png")}
    with pytest.raises(LosslabError, match="2-D"):
        render(lres, tmp_path, html=True)
    assert plt.get_fignums() == []  # render closes what it draws


# ---------------------------------------------------------------- curvature.analysis
def test_hessian_analysis_values_and_cache(tmp_path):
    from losslab.curvature import HessianOperator, hutchinson_trace, lanczos_eigs
    from losslab.curvature.analysis import data_subset, hessian_analysis
    from losslab.train import loss_fn_for

    model, data = tiny()
    x, y = data_subset(data, 30, seed=1)
    idx = torch.sort(torch.randperm(40, generator=torch.Generator().manual_seed(1))[:30]).values
    assert torch.equal(x, data[0][idx]) and torch.equal(y, data[1][idx])
    kw = dict(out=tmp_path, point={"id": "tiny"}, seed=1, subset=30, top_k=2, probes=4,
              skip=("epsilon", "adaptive", "basin", "negative"), density=True, density_probes=2, density_steps=8,
              header={"model": "tiny"})
    s = hessian_analysis(model, (x, y), loss=loss_fn_for(3), **kw)
    op = HessianOperator(model, (x, y), loss=loss_fn_for(3))
    ref = lanczos_eigs(op, k=2, which="LA", tol=1e-4, seed=1)
    assert s["eigenvalues"] == ref.eigenvalues.tolist() and s["lambda_max"] == s["eigenvalues"][0]
    assert s["trace"] == hutchinson_trace(op, num_probes=4, seed=1).trace
    assert list(s)[:3] == ["model", "split", "examples"] and s["examples"] == 30
    assert s["cached"] == {"loss": False, "topk": False, "trace": False, "slq": False} and not s["all_cached"]
    assert Path(s["density"]["png"]).is_file() and Path(s["files"]["eigenvectors"]).is_file()
    saved = json.loads((tmp_path / "hessian.json").read_text())  # the summary, sealed with its content hash
    check_seal(saved, "hessian.json")
    assert {k: v for k, v in saved.items() if k != "sha256"} == json.loads(json.dumps(s))
    again = hessian_analysis(model, (x, y), loss=loss_fn_for(3), **kw)
    assert again["all_cached"] and again["eigenvalues"] == s["eigenvalues"] and again["trace"] == s["trace"]
    other = hessian_analysis(model, (x, y), loss=loss_fn_for(3), **{**kw, "point": {"id": "other"}})
    assert not any(other["cached"].values())  # the point is part of every key
    with pytest.raises(LosslabError, match="unknown parts"):
        hessian_analysis(model, (x, y), loss=loss_fn_for(3), **{**kw, "skip": ("everything",)})


# ---------------------------------------------------------------- the Display contract
def _display_classes():
    """Every class named *Display defined in src/losslab (found by grepping the sources)."""
    found = {}
    for path in SRC.rglob("*.py"):
        for name in re.findall(r"^class ([A-Za-z]\w*Display)\b", path.read_text(encoding="utf-8"), flags=re.M):
            mod = ".".join(("losslab",) + path.relative_to(SRC).with_suffix("").parts)
            found[name] = getattr(importlib.import_module(mod), name)
    return found


def _line():
    x = np.linspace(-1, 1, 9)
    return SimpleNamespace(kind="line", x=x, y=None, metrics={"loss": x ** 2 + 0.1, "accuracy": 1 - x ** 2 / 2},
                           done=np.ones(9, bool), meta={})


def _plane():
    x, y = np.linspace(-1, 1, 7), np.linspace(-1, 1, 5)
    z = 0.1 + x[None, :] ** 2 + y[:, None] ** 2
    return SimpleNamespace(kind="plane", x=x, y=y, metrics={"loss": z}, done=np.ones(z.shape, bool), meta={})


class _Instability:
    spawn_steps = [0, 2, 8]
    threshold = 0.02

    def summary(self):
        return {"split": "test"}

    def barriers(self, metric, split, kind="max"):
        return np.array([0.3, 0.1, 0.01]) * (0.5 if kind == "interp" else 1.0)


def _samples():
    from losslab.subspace.goldilocks import CELL_METRICS, GoldilocksResult
    from losslab.subspace.intrinsic import IntrinsicDimResult

    g = torch.Generator().manual_seed(0)
    traj = [{"w": torch.randn(20, generator=g, dtype=torch.float64) * (1 - i / 8)} for i in range(8)]
    pca = D.pca_directions(traj)
    from losslab.curvature import HessianOperator, slq_density
    from losslab.train import loss_fn_for

    model, data = tiny()
    slq = slq_density(HessianOperator(model, data, loss=loss_fn_for(3)), num_probes=2, lanczos_steps=6, seed=0)
    steps = np.array([0, 1, 3, 7])
    records = [{"step": int(s), "lambda_max": 1.0 + s, "two_over_lr": 20.0, "grad_cov_top": 0.5 + s,
                "b_simple": 10.0 + s, "b_simple_unbiased": 9.0 + s, "trace_cov": 2.0 + s, "grad_norm_sq": 0.3,
                "top_eigenvalues": [3.0, 1.0, 0.2], "n": 40} for s in steps]
    classes = np.arange(3)
    stiff = SimpleNamespace(class_cos=np.eye(3), class_sign=np.eye(3), classes=classes,
                            distance_edges=np.linspace(0, 1, 5), distance_count=np.array([1, 2, 0, 3]),
                            distance_cos=np.array([0.5, 0.2, np.nan, 0.0]), distance_sign=np.array([0.4, 0.1, np.nan, 0.0]),
                            meta={"step": 5})
    vel = SimpleNamespace(steps=steps, distance_from_init=np.array([0, .2, .4, .5]),
                          distance_to_final=np.array([.5, .3, .1, 0]), velocity_step=np.array([.2, .1, .05]),
                          velocity_logstep=np.array([.3, .2, .1]))
    div = SimpleNamespace(disagreement=np.array([[0, .1], [.1, 0]]), tsne=np.random.default_rng(0).random((6, 2)),
                          pca=np.random.default_rng(1).random((6, 2)), traj_run=np.array([0, 0, 0, 1, 1, 1]),
                          traj_step=np.array([0, 1, 2, 0, 1, 2]),
                          summary={"ensemble_accuracy": {"single_mean": 0.8, "independent": 0.85}})
    fac = SimpleNamespace(steps=steps, loss=np.array([1, .5, .1, .01]), unobserved=np.array([1, .8, .6, .5]),
                          nuclear=np.array([2, 1.5, 1.2, 1.1]), effective_rank=np.array([2, 1.8, 1.3, 1.1]),
                          meta={"depth": 2})
    m = {k: np.ones((2, 1)) for k in CELL_METRICS}
    gold = GoldilocksResult(np.array([1.0, 2.0]), np.array([0]), 2, True, np.ones(1), m, np.zeros((2, 1, 2)),
                            np.ones((2, 1), bool))
    path = SimpleNamespace(alphas=np.linspace(0, 1, 5), metrics={"train": {"loss": np.ones(5), "error": np.zeros(5)},
                                                                  "test": {"loss": np.ones(5)}})
    return {
        "LineDisplay": ((_line(),), {}),
        "ContourDisplay": ((_plane(),), {}),
        "UncertaintyDisplay": ((SimpleNamespace(**vars(_plane()), arrays={
            "stderr__loss": np.full((5, 7), 0.01), "exact": np.eye(5, 7, dtype=bool),
            "interpolated": ~np.eye(5, 7, dtype=bool)}),), {}),
        "SurfaceDisplay": ((_plane(),), {}),
        "TrajectoryDisplay": ((pca, _plane()), {}),
        "SpectralDensityDisplay": ((slq,), {"top": [1.0]}),
        "PathsDisplay": (({"curve": path},), {}),
        "InterpolationDisplay": (({"train": _line()},), {"label": "a to b"}),
        "InstabilityDisplay": ((_Instability(),), {}),
        "NoiseScaleDisplay": ((records,), {}),
        "SharpnessTrajectoryDisplay": ((records,), {"grad_cov": True}),
        "StiffnessDisplay": ((stiff,), {}),
        "NTKDisplay": ((vel,), {}),
        "DiversityDisplay": ((div,), {}),
        "FactorizationDisplay": ((fac,), {}),
        "IntrinsicDimDisplay": ((IntrinsicDimResult.from_table([10, 100, 1000], [[0.3], [0.8], [0.95]], 1.0),), {}),
        "GoldilocksDisplay": ((gold,), {}),
    }


def test_every_display_follows_the_contract(tmp_path):
    classes = _display_classes()
    samples = _samples()
    assert sorted(classes) == sorted(samples), "a Display class without a contract sample (or a stale one)"
    for name, cls in sorted(classes.items()):
        args, kw = samples[name]
        assert "ax" in inspect.signature(cls.from_result).parameters, name
        assert "ax" in inspect.signature(cls.plot).parameters, name
        disp = cls.from_result(*args, **kw)
        assert isinstance(disp, cls), name
        assert disp.figure_ is not None and disp.ax_ is not None, name
        axes = list(np.ravel(np.asarray(disp.ax_, dtype=object)))
        assert all(a.figure is disp.figure_ for a in axes), name
        # plot(ax=...) draws on the axes given (as many as the display has panels) and returns self
        fig = plt.figure()
        mine = [fig.add_subplot(1, len(axes), i + 1, projection=a.name if a.name != "rectilinear" else None)
                for i, a in enumerate(axes)]
        target = mine[0] if len(mine) == 1 else np.array(mine, dtype=object)
        assert disp.plot(ax=target) is disp, name
        assert disp.figure_ is fig, name
        assert list(np.ravel(np.asarray(disp.ax_, dtype=object))) == mine, name
        assert disp.plot() is disp and disp.figure_ is not fig, name  # no ax: a new figure
        assert disp.savefig(tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
        plt.close("all")


def test_result_plot_methods_go_through_their_displays():
    from losslab.curvature import CurvatureTracker
    from losslab.plot import SharpnessTrajectoryDisplay
    from losslab.probes.display import NTKDisplay, StiffnessDisplay
    from losslab.probes.ntk import KernelVelocityResult
    from losslab.probes.stiffness import StiffnessResult

    assert StiffnessResult.plot.__doc__ and "StiffnessDisplay" in inspect.getsource(StiffnessResult.plot)
    assert "NTKDisplay" in inspect.getsource(KernelVelocityResult.plot)
    assert StiffnessDisplay and NTKDisplay
    tracker = CurvatureTracker(every=1, seed=0)
    tracker.records = [{"step": 0, "lambda_max": 2.0, "two_over_lr": 10.0}, {"step": 1, "lambda_max": 4.0,
                                                                              "two_over_lr": 10.0}]
    ax = tracker.plot()
    ref = SharpnessTrajectoryDisplay.from_result(tracker.records)
    assert [tuple(l.get_xydata().ravel()) for l in ax.lines] == [tuple(l.get_xydata().ravel()) for l in ref.ax_.lines]
    assert ax.get_yscale() == "log"


def test_bundle_settings_pick_the_loss_and_bn_data():
    from losslab.surface import bundle_settings

    cls = SimpleNamespace(num_classes=10, train="TRAIN", test="TEST")
    reg = SimpleNamespace(num_classes=0, train="TRAIN", test="TEST")
    assert bundle_settings(cls) == {"loss": "cross_entropy"}
    assert bundle_settings(cls, "test") == {"loss": "cross_entropy", "bn_data": "TRAIN"}
    assert bundle_settings(reg, "test") == {"loss": "mse"}
