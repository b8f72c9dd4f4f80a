"""Adaptive-precision surfaces (losslab.precision): the estimator against exact references.

The estimator's mean and standard error are checked by enumerating every sample of a tiny set; the
surfaces are compared with the exact surface computed in the same test (coverage, maximum error).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from losslab import params
from losslab.errors import LosslabError
from losslab.evaluate import Evaluator, evaluate_examples
from losslab._certainty import take_all_count, take_all_set
from losslab.precision import Precision, Strata, stratified_mean
from losslab.surface import SurfaceResult, line, plane


def mlp(seed: int = 0, bn: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(6, 16)] + ([nn.BatchNorm1d(16)] if bn else []) + [nn.Tanh(), nn.Linear(16, 3)]
    return nn.Sequential(*layers).double()


def dataset(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    w = torch.randn(6, 3, generator=g, dtype=torch.float64)
    y = (x @ w + 0.5 * torch.randn(n, 3, generator=g, dtype=torch.float64)).argmax(1)
    return x, y


def trained(n: int = 1200, steps: int = 150) -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    model = mlp()
    x, y = dataset(n)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, (x, y)


def directions(model: nn.Module, seed: int = 5) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    base = params.get_point(model)
    d = [params.randn_like(base, generator=g) for _ in range(2)]
    # scaled to each tensor's norm (filter-normalisation in spirit) so the plane spans a real bowl
    return tuple({k: v * (base[k].norm() / v.norm()) for k, v in di.items()} for di in d)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def setup():
    model, data = trained()
    dx, dy = directions(model)
    return model, data, dx, dy


# ---- per-example values ------------------------------------------------------------------------


def test_per_example_values_average_to_the_evaluator():
    model, (x, y) = trained(n=300, steps=5)
    ev = Evaluator(model, (x, y), batch_size=64, metrics={"sq": lambda out, t: (out ** 2).mean()})
    pt = {k: v + 0.1 for k, v in params.get_point(model).items()}
    full = evaluate_examples(ev, pt)
    ref = ev.evaluate(pt)
    assert full.shape == (300, 3) and ev.metric_names == ["loss", "accuracy", "sq"]
    for m, name in enumerate(ev.metric_names):
        assert abs(full[:, m].mean() - ref[name]) < 1e-12, name
    # the per-example loss is the closed-form cross-entropy of each example
    with torch.no_grad():
        out = torch.func.functional_call(model, pt, (x,))
    np.testing.assert_allclose(full[:, 0], nn.functional.cross_entropy(out, y, reduction="none").numpy(), rtol=0, atol=1e-12)
    idx = np.array([5, 0, 299, 5])
    np.testing.assert_array_equal(evaluate_examples(ev, pt, idx), full[idx])


def test_per_example_values_refuse_bn_recompute_and_bad_indices():
    x, y = dataset(40)
    with pytest.raises(LosslabError, match="bn='eval'"):
        evaluate_examples(Evaluator(mlp(bn=True), (x, y)), {})
    ev = Evaluator(mlp(bn=True), (x, y), bn="eval")
    assert evaluate_examples(ev, {}, np.array([1, 2])).shape == (2, 2)
    with pytest.raises(LosslabError, match="indices"):
        evaluate_examples(ev, {}, np.array([40]))


# ---- the estimator ------------------------------------------------------------------------------


def test_stratified_se_against_enumeration_of_every_sample():
    """E[estimate] = population mean and E[SE^2] = Var[estimate], exactly, over all stratified samples."""
    g = np.random.default_rng(3)
    pops = [g.normal(size=5), g.normal(2.0, 3.0, size=4), g.normal(-1.0, 0.5, size=3)]
    sizes = [p.size for p in pops]
    truth = np.concatenate(pops).mean()
    for n_h in [(2, 2, 2), (3, 2, 3), (4, 3, 2)]:
        means, variances = [], []
        for picks in itertools.product(*[itertools.combinations(range(s), k) for s, k in zip(sizes, n_h)]):
            m, se = stratified_mean([p[list(c)] for p, c in zip(pops, picks)], sizes)
            means.append(float(m))
            variances.append(float(se) ** 2)
        means_a = np.array(means)
        assert abs(means_a.mean() - truth) < 1e-12
        assert abs(np.mean(variances) - means_a.var()) < 1e-12 * max(1.0, means_a.var())
    # every example drawn: the mean is exact and the standard error zero
    m, se = stratified_mean(pops, sizes)
    assert abs(float(m) - truth) < 1e-12 and float(se) == 0.0


def test_take_all_stratum_against_enumeration_of_every_sample():
    """With a take-all stratum T (its exact sum added, weights W_h = N_h / N over all N examples, the
    class strata holding the others): E[estimate] = population mean and E[SE^2] = Var[estimate]."""
    g = np.random.default_rng(4)
    labels = np.array([0] * 6 + [1] * 5 + [2] * 4)
    y = g.standard_exponential(labels.size) ** 3  # skewed
    take = np.array([1, 7, 12])
    st = Strata(labels, labels.size, exclude=take)
    assert st.total == 12 and st.sizes.tolist() == [5, 4, 3] and np.allclose(st.weights, st.sizes / 15)
    assert not np.isin(np.concatenate(st.groups), take).any()
    pops = [y[grp] for grp in st.groups]
    for n_h in [(2, 2, 2), (3, 2, 3), (4, 3, 2)]:
        means, variances = [], []
        for picks in itertools.product(*[itertools.combinations(range(s), k) for s, k in zip(st.sizes, n_h)]):
            m, se = stratified_mean([p[list(c)] for p, c in zip(pops, picks)], st.sizes, labels.size)
            means.append(float(m) + y[take].sum() / labels.size)
            variances.append(float(se) ** 2)
        means_a = np.array(means)
        assert abs(means_a.mean() - y.mean()) < 1e-12
        assert abs(np.mean(variances) - means_a.var()) < 1e-12 * max(1.0, means_a.var())
    # a class wholly in T leaves no stratum behind
    assert Strata(labels, labels.size, exclude=np.arange(11, 15)).sizes.tolist() == [6, 5]


def test_take_all_set_is_the_largest_spread():
    g = np.random.default_rng(0)
    ref = g.normal(size=(3 * 4, 200)) * 0.01  # a 3 x 4 lattice
    ref[5, [17, 3]] += [5.0, 2.0]  # large node-to-node changes: along both axes
    ref[:, 40] += np.arange(12)  # a steady change between every pair of neighbours (spread 1 or 4)
    t = take_all_set(ref, (3, 4), 0.015, 128)
    assert t.tolist() == [3, 17, 40] and take_all_count(200, 0.015, 128) == 3
    assert take_all_set(ref, (3, 4), 0.015, 2).tolist() == [17, 40]  # at most ``initial``: spreads 5 and 4, not 2
    assert take_all_set(ref, (3, 4), 0.0, 128).size == 0 and take_all_count(200, 0.0, 128) == 0
    assert take_all_count(5, 0.5, 128) == 3 and take_all_count(1, 0.5, 128) == 0
    flat = np.zeros((3, 10))  # ties: the lowest indices
    assert take_all_set(flat, (1, 3), 0.2, 128).tolist() == [0, 1]
    assert np.array_equal(take_all_set(ref, (3, 4), 0.1, 128), take_all_set(ref.copy(), (3, 4), 0.1, 128))


def test_strata_allocation_is_nested_and_draws_are_seeded():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 3)
    st = Strata(labels, labels.size)
    prev = np.zeros(3, np.int64)
    for n in [4, 8, 16, 32, 64, 128]:
        a = st.allocation(n)
        assert (a >= prev).all() and (a <= st.sizes).all() and a.sum() >= min(n, labels.size)
        prev = a
    assert (st.allocation(10**6) == st.sizes).all()
    d1, d2, d3 = st.draw(7, 11), st.draw(7, 11), st.draw(7, 12)
    assert all(np.array_equal(a, b) for a, b in zip(d1, d2))
    assert not all(np.array_equal(a, b) for a, b in zip(d1, d3))
    assert all(np.array_equal(np.sort(d), np.flatnonzero(labels == c)) for c, d in enumerate(d1))


def test_precision_settings_are_checked():
    with pytest.raises(LosslabError, match="rtol > 0 or atol > 0"):
        Precision()
    with pytest.raises(LosslabError, match="confidence"):
        Precision(rtol=0.1, confidence=1.0)
    with pytest.raises(LosslabError, match="rtol"):
        Precision(rtol=-0.1)
    p = Precision(rtol=0.1)
    assert abs(p.z - 1.959964) < 1e-6 and abs(p.z_stop(1) - p.z) < 1e-12 and p.z_stop(1000) > p.z_stop(10) > p.z
    assert Precision(rtol=0.1, simultaneous=False).z_stop(1000) == p.z
    for bad in (-0.1, 1.0, "a"):
        with pytest.raises(LosslabError, match="take_all"):
            Precision(rtol=0.1, take_all=bad)
    assert p.take_all == 0.1 and p.describe()["take_all"] == 0.1


# ---- surfaces ------------------------------------------------------------------------------------


def coverage(res: SurfaceResult, exact: np.ndarray, where: np.ndarray | None = None) -> float:
    est, se = res.metrics["loss"], res.stderr["loss"]
    slack = 1e-9 * (exact.max() - exact.min())  # exact points: equal up to summation order
    inside = np.abs(est - exact) <= 1.96 * se + slack
    return float(inside[where].mean() if where is not None else inside.mean())


def test_default_path_unchanged(setup):
    model, data, dx, dy = setup
    ev = Evaluator(model, data, strategy="loop")
    res = plane(model, data, dx=dx, dy=dy, nx=4, ny=3, progress=False, strategy="loop")
    res_none = plane(model, data, dx=dx, dy=dy, nx=4, ny=3, progress=False, strategy="loop", precision=None)
    xs, ys = np.linspace(-1, 1, 4), np.linspace(-1, 1, 3)
    jj, ii = np.divmod(np.arange(12), 4)
    direct = ev.evaluate_combinations(np.stack([xs[ii], ys[jj]], 1), [dx, dy], params.get_point(model))
    for r in (res, res_none):
        assert np.array_equal(r.metrics["loss"].reshape(-1), direct["loss"])  # bit for bit
        assert r.arrays == {} and "precision" not in r.meta
        assert (r.stderr["loss"] == 0).all() and r.exact.all() and not r.interpolated.any()
        assert (r.examples_used == data[0].shape[0]).all()


def test_adaptive_plane_covers_the_exact_surface(setup):
    """Estimates of every point (no interpolation): coverage of the exact value by estimate +- 1.96 SE."""
    model, data, dx, dy = setup
    n = data[0].shape[0]
    exact = plane(model, data, dx=dx, dy=dy, nx=21, ny=21, progress=False).metrics["loss"]
    rng = exact.max() - exact.min()
    res = plane(model, data, dx=dx, dy=dy, nx=21, ny=21, progress=False,
                precision=Precision(rtol=0.01, seed=0, refine=False, simultaneous=False, initial=32))
    p = res.meta["precision"]
    estimated = ~res.exact
    assert estimated.sum() >= 300 and not res.interpolated.any() and res.done.all()
    cov = coverage(res, exact, estimated)
    err = np.abs(res.metrics["loss"] - exact)
    print(f"coverage {cov:.3f} over {estimated.sum()} estimated points; max |error| / range {err.max() / rng:.4f}")
    assert cov >= 0.93
    # per point the stopping rule holds: z * SE <= tolerance, unless every example was used
    assert (1.96 * res.stderr["loss"][estimated] <= p["tolerance"] * (1 + 1e-12)).all()
    assert np.isclose(p["tolerance"], 0.01 * p["scale"])
    assert p["example_evaluations"] == int(res.examples_used.sum()) < p["exact_equivalent"] == 441 * n
    assert np.allclose(res.metrics["loss"][res.exact], exact[res.exact], rtol=0, atol=1e-12)
    # accuracy is estimated from the same sample, with its own error bars
    assert (res.stderr["accuracy"][estimated] > 0).any()


def test_coarse_to_fine_interpolates_and_flags(setup):
    model, data, dx, dy = setup
    exact = plane(model, data, dx=dx, dy=dy, nx=17, ny=17, progress=False).metrics["loss"]
    rng = exact.max() - exact.min()
    res = plane(model, data, dx=dx, dy=dy, nx=17, ny=17, progress=False, precision=Precision(rtol=0.02, seed=1))
    p = res.meta["precision"]
    interp = res.interpolated
    assert interp.any() and res.done.all() and np.isfinite(res.metrics["loss"]).all()
    assert (res.examples_used[interp] == 0).all() and not (res.exact & interp).any()
    assert p["points_interpolated"] == int(interp.sum()) and p["savings"] > 1
    assert p["points_evaluated"] + p["points_interpolated"] == 17 * 17
    err = np.abs(res.metrics["loss"] - exact) / rng
    print(f"max |error| / range {err.max():.4f}; coverage {coverage(res, exact):.3f}; "
          f"{interp.sum()} interpolated; savings {p['savings']:.2f}")
    assert err.max() <= 0.02  # the tolerance holds for the whole grid (simultaneous), interpolated included
    assert coverage(res, exact) >= 0.93
    # the lattice (every 8th index) is exact
    assert res.exact[::8, ::8].all()


def test_same_seed_same_surface_and_resume(setup, tmp_path):
    model, data, dx, dy = setup
    kw = dict(dx=dx, dy=dy, nx=9, ny=9, progress=False)
    prec = Precision(rtol=0.02, seed=3, coarse=4)
    a = plane(model, data, precision=prec, **kw)
    b = plane(model, data, precision=prec, **kw)
    c = plane(model, data, precision=Precision(rtol=0.02, seed=4, coarse=4), **kw)

    def same(r, s):
        return all(np.array_equal(r.metrics[m], s.metrics[m], equal_nan=True) for m in r.metrics) and all(
            np.array_equal(r.arrays[k], s.arrays[k]) for k in r.arrays) and r.arrays.keys() == s.arrays.keys()

    assert same(a, b) and not same(a, c)
    assert a.meta["precision"]["take_all_examples"] == 120  # 10% of the 1200 examples, evaluated at every estimate
    assert (a.examples_used[~a.exact & ~a.interpolated] >= 120 + 128).all()
    assert "reference" not in a.arrays  # a finished surface drops the lattice's per-example values
    # interrupted after 30 points (saved), then resumed from the file: the same surface, bit for bit
    path = tmp_path / "s"
    part = plane(model, data, precision=prec, checkpoint_path=path, max_points=30, **kw)
    assert not part.complete and "reference" in part.arrays
    loaded = SurfaceResult.load(path)
    assert loaded.n_done == 30 and "reference" in loaded.arrays
    done = plane(model, data, precision=prec, checkpoint_path=path, resume_from=path, **kw)
    assert same(done, a) and done.meta["timing"]["points_evaluated"] == a.meta["precision"]["points_evaluated"]
    # other settings never resume it
    with pytest.raises(LosslabError, match="fingerprint"):
        plane(model, data, precision=Precision(rtol=0.05, seed=3, coarse=4), resume_from=path, **kw)
    with pytest.raises(LosslabError, match="fingerprint"):
        plane(model, data, resume_from=path, **kw)
    with pytest.raises(LosslabError, match="fingerprint"):  # nor without the take-all stratum
        plane(model, data, precision=Precision(rtol=0.02, seed=3, coarse=4, take_all=0), resume_from=path, **kw)
    # without it: another estimator (no example taken with certainty), as reproducible
    d = plane(model, data, precision=Precision(rtol=0.02, seed=3, coarse=4, take_all=0), **kw)
    assert not same(a, d) and d.meta["precision"]["take_all_examples"] == 0 and "take_all_rule" not in d.meta["precision"]
    assert same(d, plane(model, data, precision=Precision(rtol=0.02, seed=3, coarse=4, take_all=0), **kw))


def test_adaptive_line_both_modes(setup):
    model, data, dx, _ = setup
    other = {k: v + dx[k] for k, v in params.get_point(model).items()}
    for kw in (dict(direction=dx, num=33), dict(end=other, num=33)):
        ex = line(model, data, progress=False, **kw).metrics["loss"]
        res = line(model, data, progress=False, precision=Precision(rtol=0.01, coarse=8), **kw)
        assert res.kind == "line" and res.done.all() and res.exact[[0, 8, 16, 24, 32]].all()
        assert res.meta["precision"]["savings"] > 1
        assert np.abs(res.metrics["loss"] - ex).max() <= 0.01 * (ex.max() - ex.min())


def test_adaptive_refuses_bn_recompute_and_unknown_metric():
    x, y = dataset(60)
    m = mlp(bn=True)
    d = params.randn_like(params.get_point(m), generator=torch.Generator().manual_seed(0))
    with pytest.raises(LosslabError, match="bn='eval'"):
        line(m, (x, y), direction=d, num=5, progress=False, precision=Precision(rtol=0.1))
    r = line(m, (x, y), direction=d, num=5, progress=False, bn="eval", precision=Precision(rtol=0.1))
    assert r.complete
    with pytest.raises(LosslabError, match="precision metric"):
        line(m, (x, y), direction=d, num=5, progress=False, bn="eval", precision=Precision(rtol=0.1, metric="nope"))


# ---- command line --------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_rtol_atol(tmp_path, capsys):
    import json

    from losslab.cli.main import main
    from losslab.config import CheckpointConfig, ModelConfig, OptimConfig, TrainConfig
    from losslab.train import train

    run = train(TrainConfig(model=ModelConfig(model_kwargs={"width": 32, "depth": 1}), optim=OptimConfig(epochs=3),
                            ckpt=CheckpointConfig("none")), out=tmp_path / "runs", progress=False)

    def surface(*extra: str) -> dict:
        assert main(["surface", str(run.path), "--grid", "9", "--no-progress", "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out)

    exact = surface()
    assert "precision" not in exact and "adaptive" not in exact["out"]
    s = surface("--rtol", "0.05", "--plot")
    p = s["precision"]
    assert s["out"] != exact["out"] and s["done"] == 81 and p["rtol"] == 0.05 and p["seed"] == 0
    assert p["exact_equivalent"] == 81 * run.bundle().train.x.shape[0] and p["savings"] > 1
    assert p["example_evaluations"] * p["savings"] == pytest.approx(p["exact_equivalent"])
    assert (tmp_path / s["out"] / "uncertainty.png").stat().st_size > 0 and "png_uncertainty" in s["files"]
    res = SurfaceResult.load(s["files"]["result"])
    assert abs(s["loss_at_origin"] - exact["loss_at_origin"]) < 1e-9  # the centre is on the exact lattice
    assert res.exact[4, 4] and "stderr__loss" in res.arrays
    assert surface("--rtol", "0.05")["precision"] == p  # rerun: the finished surface is reused
    assert main(["surface", str(run.path), "--grid", "9", "--rtol", "-1", "--json"]) == 2
    assert "losslab: error: precision rtol" in capsys.readouterr().err


def test_distributed_surface_passes_precision_on():
    """One process: distributed_plane is plane (adaptive too); shared over ranks precision goes to plane
    (the 2-rank runs are tests/test_distributed_adaptive.py)."""
    from losslab.distributed import distributed_plane
    from losslab.distributed._surface import _split

    x, y = dataset(200)
    m = mlp()
    d = params.randn_like(params.get_point(m), generator=torch.Generator().manual_seed(0))
    kw = dict(dx=d, dy=d, nx=5, ny=5, progress=False, precision=Precision(rtol=0.1, coarse=2))
    a, b = distributed_plane(m, (x, y), **kw), plane(m, (x, y), **kw)
    assert np.array_equal(a.metrics["loss"], b.metrics["loss"]) and a.meta["precision"] == b.meta["precision"]
    geom, _, _ = _split("plane", m, (x, y), kw)
    assert geom["precision"] == kw["precision"]
