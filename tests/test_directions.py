"""Tests for losslab.directions: exact float64 checks of the definitions (Li et al. 2018)."""
from __future__ import annotations

import doctest
import importlib
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import losslab.directions as directions_module
from losslab import params
from losslab.directions import (
    Direction,
    PCAResult,
    model_to_model,
    normalize,
    orthogonalize,
    pca_directions,
    plane_through,
    random_direction,
    random_plane,
)
from losslab.errors import LosslabError


class Net(nn.Module):
    """Linear, Conv1d, Conv2d, ConvTranspose2d, BatchNorm, LayerNorm: every tensor kind."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1d = nn.Conv1d(2, 4, 3)
        self.conv2d = nn.Conv2d(3, 5, (2, 3))
        self.bn = nn.BatchNorm2d(5)
        self.deconv = nn.ConvTranspose2d(5, 2, 2)
        self.fc = nn.Linear(7, 6)
        self.ln = nn.LayerNorm(6)
        self.scale = nn.Parameter(torch.tensor(2.5))


def make_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)  # test-only: builds the fixture model
    net = Net().double()
    w = params.get_point(net)
    g = torch.Generator().manual_seed(seed + 100)
    # non-trivial 1-D tensors (BN/LN default to ones/zeros)
    return {k: v + 0.3 * torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in w.items()}


@pytest.fixture
def w() -> dict[str, torch.Tensor]:
    return make_weights()


def filter_norms(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).norm(dim=1)


# ---------------------------------------------------------------- normalization
def test_filter_normalization_exact(w):
    d = random_direction(w, normalization="filter", seed=0)
    assert d.vector.keys() == w.keys()
    for k in ("conv1d.weight", "conv2d.weight", "deconv.weight", "fc.weight"):
        assert d.vector[k].dtype == torch.float64
        torch.testing.assert_close(filter_norms(d.vector[k]), filter_norms(w[k]), atol=1e-12, rtol=0)
        assert not torch.allclose(d.vector[k], w[k])  # random, not a copy
    for k in ("conv1d.bias", "conv2d.bias", "bn.weight", "bn.bias", "fc.bias", "ln.weight", "ln.bias", "scale"):
        assert torch.count_nonzero(d.vector[k]) == 0, k
    assert d.meta["kind"] == "random" and d.meta["normalization"] == "filter" and d.meta["ignore_1d"] is True


def test_filter_normalization_ignore_1d_false_copies_weights(w):
    d = random_direction(w, normalization="filter", ignore_1d=False, seed=0)
    for k in ("conv1d.bias", "bn.weight", "bn.bias", "fc.bias", "ln.weight", "scale"):
        assert torch.equal(d.vector[k], w[k]), k
    # > 1-D tensors are the same as with ignore_1d=True: draws don't depend on the policy
    d_ign = random_direction(w, normalization="filter", ignore_1d=True, seed=0)
    assert torch.equal(d.vector["fc.weight"], d_ign.vector["fc.weight"])


def test_layer_normalization(w):
    d = random_direction(w, normalization="layer", seed=1)
    for k, v in w.items():
        if v.dim() > 1:
            assert abs(float(d.vector[k].norm()) - float(v.norm())) < 1e-12
        else:
            assert torch.count_nonzero(d.vector[k]) == 0
    d2 = random_direction(w, normalization="layer", ignore_1d=False, seed=1)
    for k, v in w.items():
        assert abs(float(d2.vector[k].norm()) - float(v.norm())) < 1e-12, k
    assert not torch.equal(d2.vector["fc.bias"], w["fc.bias"])  # rescaled random, not a copy


def test_model_normalization(w):
    d = random_direction(w, normalization="model", seed=2)
    covered = {k: v for k, v in w.items() if v.dim() > 1}
    assert abs(d.norm() - params.norm(covered)) < 1e-12
    d_all = random_direction(w, normalization="model", ignore_1d=False, seed=2)
    assert abs(d_all.norm() - params.norm(w)) < 1e-12


def test_none_normalization_is_the_raw_gaussian_stream(w):
    d = random_direction(w, normalization="none", ignore_1d=False, seed=3)
    g = torch.Generator().manual_seed(3)
    for k, v in w.items():
        assert torch.equal(d.vector[k], torch.randn(v.shape, generator=g, dtype=torch.float64))


def test_normalize_free_function_edge_cases():
    w = {"a": torch.tensor([[0.0, 0.0], [3.0, 4.0]], dtype=torch.float64), "n": torch.tensor([1, 2])}
    d = {"a": torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64), "n": torch.tensor([5, 5])}
    out = normalize(d, w, "filter")
    assert out["a"].tolist() == [[0.0, 0.0], [0.0, 0.0]]  # zero weights row -> 0; zero direction row stays 0
    assert out["n"].tolist() == [0, 0]  # non-floating -> zero
    assert d["a"][0, 0] == 1.0  # input untouched
    with pytest.raises(LosslabError, match="unknown normalization"):
        normalize(d, w, "unit")
    with pytest.raises(LosslabError, match="keys"):
        normalize({"b": d["a"]}, w)


def test_module_and_point_inputs_agree():
    torch.manual_seed(0)
    net = Net().double()
    a = random_direction(net, seed=5)
    b = random_direction(params.get_point(net), seed=5)
    for k in a.vector:
        assert torch.equal(a.vector[k], b.vector[k])


def test_float32_weights_keep_dtype_and_filter_norms():
    w = {k: v.float() for k, v in make_weights().items()}
    d = random_direction(w, seed=0)
    assert all(v.dtype == torch.float32 for v in d.vector.values())
    torch.testing.assert_close(filter_norms(d.vector["fc.weight"]), filter_norms(w["fc.weight"]), rtol=1e-6, atol=0)


# ---------------------------------------------------------------- randomness
def test_determinism_and_global_rng_untouched(w):
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    a = random_direction(w, seed=7)
    b = random_direction(w, seed=7)
    c = random_direction(w, seed=8)
    fresh = random_direction(w)  # nondeterministic seed, recorded
    dx, dy = random_plane(w, seed=7)
    random_plane(w)
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(np.random.get_state()[1], np_state)
    for k in w:
        assert torch.equal(a.vector[k], b.vector[k])
    assert not torch.equal(a.vector["fc.weight"], c.vector["fc.weight"])
    again = random_direction(w, seed=fresh.meta["seed"])
    assert torch.equal(again.vector["fc.weight"], fresh.vector["fc.weight"])


def test_generator_argument(w):
    a = random_direction(w, generator=torch.Generator().manual_seed(11))
    b = random_direction(w, seed=11)
    assert torch.equal(a.vector["fc.weight"], b.vector["fc.weight"])
    assert a.meta["seed"] is None
    with pytest.raises(LosslabError, match="either seed or generator"):
        random_direction(w, seed=1, generator=torch.Generator())
    with pytest.raises(LosslabError, match="seed"):
        random_direction(w, seed=-1)


def test_random_plane_streams(w):
    dx, dy = random_plane(w, seed=42)
    dx2, dy2 = random_plane(w, seed=42)
    assert torch.equal(dx.vector["fc.weight"], dx2.vector["fc.weight"])
    assert torch.equal(dy.vector["fc.weight"], dy2.vector["fc.weight"])
    assert not torch.equal(dx.vector["fc.weight"], dy.vector["fc.weight"])
    assert dx.meta["seed"] != dy.meta["seed"] and dx.meta["plane_seed"] == dy.meta["plane_seed"] == 42
    # each direction is reproducible on its own from its recorded seed
    assert torch.equal(random_direction(w, seed=dy.meta["seed"]).vector["conv2d.weight"], dy.vector["conv2d.weight"])
    assert abs(dy.meta["cosine"] - params.cosine(dx.vector, dy.vector)) < 1e-15
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(random_plane(w, generator=g1)[1].vector["fc.weight"], random_plane(w, generator=g2)[1].vector["fc.weight"])


# ---------------------------------------------------------------- orthogonalization
def test_orthogonalize_exact_without_renormalization(w):
    dx, dy = random_plane(w, seed=3)
    o = orthogonalize(dy, dx)
    assert abs(params.cosine(o.vector, dx.vector)) < 1e-14
    assert abs(o.meta["cosine"]) < 1e-14 and abs(o.meta["angle_deg"] - 90.0) < 1e-10
    assert o.meta["renormalized"] is None
    assert abs(o.meta["cosine_before"] - params.cosine(dy.vector, dx.vector)) < 1e-15
    # the component removed lies along dx
    resid = params.sub(dy.vector, o.vector)
    assert abs(abs(params.cosine(resid, dx.vector)) - 1.0) < 1e-12


def test_orthogonalize_renormalized_reports_angle(w):
    dx, dy = random_plane(w, seed=4)
    o = orthogonalize(dy, dx, w, renormalize=True)
    assert o.meta["renormalized"] == "filter"
    for k in ("conv2d.weight", "fc.weight"):
        torch.testing.assert_close(filter_norms(o.vector[k]), filter_norms(w[k]), atol=1e-12, rtol=0)
    cos = params.cosine(o.vector, dx.vector)
    assert abs(o.meta["cosine"] - cos) < 1e-15
    assert abs(o.meta["angle_deg"] - math.degrees(math.acos(cos))) < 1e-9
    assert 60 < o.meta["angle_deg"] < 120  # near 90 but, in general, not exactly
    with pytest.raises(LosslabError, match="weights"):
        orthogonalize(dy, dx, renormalize=True)


def test_random_plane_orthogonalize_flag(w):
    dx, dy = random_plane(w, seed=5, orthogonalize=True, renormalize=False)
    assert abs(params.cosine(dx.vector, dy.vector)) < 1e-14
    dx, dy = random_plane(w, seed=5, orthogonalize=True)
    torch.testing.assert_close(filter_norms(dy.vector["fc.weight"]), filter_norms(w["fc.weight"]), atol=1e-12, rtol=0)
    assert abs(dy.meta["cosine"] - params.cosine(dx.vector, dy.vector)) < 1e-15


def test_orthogonalize_parallel_raises():
    d = Direction({"w": torch.tensor([1.0, 2.0], dtype=torch.float64)})
    with pytest.raises(LosslabError, match="parallel"):
        orthogonalize(Direction({"w": 3 * d.vector["w"]}), d)
    with pytest.raises(LosslabError, match="zero"):
        orthogonalize(d, Direction({"w": torch.zeros(2, dtype=torch.float64)}))


# ---------------------------------------------------------------- between models
def test_model_to_model(w):
    b = make_weights(1)
    d = model_to_model(w, b, meta={"source": ["a", "b"]})
    rebuilt = params.axpy(w, 1.0, d.vector)
    for k in w:
        torch.testing.assert_close(rebuilt[k], b[k], atol=1e-14, rtol=0)
    assert abs(d.meta["distance"] - params.distance(w, b)) < 1e-12
    assert d.meta["source"] == ["a", "b"] and d.meta["kind"] == "model_to_model"


@pytest.mark.parametrize("scale", ["unit", "raw"])
def test_plane_through_reproduces_models(w, scale):
    a, b, c = w, make_weights(1), make_weights(2)
    plane = plane_through(a, b, c, scale=scale)
    origin, dx, dy, coords = plane
    assert coords.shape == (3, 2)
    assert abs(params.dot(dx.vector, dy.vector)) < 1e-12 * dx.norm() * dy.norm()
    for model, (x, y) in zip((a, b, c), coords):
        p = params.lincomb(origin, [float(x), float(y)], [dx.vector, dy.vector])
        for k in model:
            torch.testing.assert_close(p[k], model[k], atol=1e-13, rtol=0)
    if scale == "unit":
        assert abs(dx.norm() - 1) < 1e-14 and abs(dy.norm() - 1) < 1e-14
        assert abs(coords[1, 0] - params.distance(a, b)) < 1e-12
        assert abs(math.hypot(*coords[2]) - params.distance(a, c)) < 1e-12
    else:
        assert coords[1].tolist() == [1.0, 0.0] and coords[2, 1] == 1.0
    # origin is a copy, not an alias
    assert origin["fc.weight"].data_ptr() != a["fc.weight"].data_ptr()


def test_plane_through_degenerate(w):
    b = make_weights(1)
    mid = params.lincomb(w, [0.5], [params.sub(b, w)])
    with pytest.raises(LosslabError, match="collinear"):
        plane_through(w, b, mid)
    with pytest.raises(LosslabError, match="identical"):
        plane_through(w, w, b)


# ---------------------------------------------------------------- PCA
def planar_trajectory(n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    like = make_weights()
    e1 = params.randn_like(like, generator=g)
    e2 = params.randn_like(like, generator=g)
    center = params.randn_like(like, generator=g)
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    xy = torch.stack([3 * (1 - t) * torch.cos(4 * t), 2 * (1 - t) * torch.sin(4 * t)], dim=1)
    traj = [params.lincomb(center, [float(x), float(y)], [e1, e2]) for x, y in xy]
    return traj, center, (e1, e2)


@pytest.mark.parametrize("mean_center", [False, True])
def test_pca_planar_trajectory_exact(mean_center):
    traj, center, (e1, e2) = planar_trajectory()
    r = pca_directions(traj, mean_center=mean_center)
    assert isinstance(r, PCAResult)
    assert r.coords.shape == (len(traj), 2) and r.residual.shape == (len(traj),)
    assert abs(float(r.explained_variance_ratio.sum()) - 1.0) < 1e-12
    assert r.explained_variance_ratio[0] >= r.explained_variance_ratio[1] > 0
    assert float(np.abs(r.residual).max()) < 1e-10
    d1, d2 = (d.vector for d in r.directions)
    assert abs(params.norm(d1) - 1) < 1e-12 and abs(params.norm(d2) - 1) < 1e-12
    assert abs(params.dot(d1, d2)) < 1e-12
    for p, (x, y) in zip(traj, r.coords):
        rebuilt = params.lincomb(r.center, [float(x), float(y)], [d1, d2])
        for k in p:
            torch.testing.assert_close(rebuilt[k], p[k], atol=1e-10, rtol=0)
    assert np.allclose(r.coords[-1], 0.0, atol=1e-14)  # the center is the last checkpoint
    # the directions span the plane of e1, e2
    E = torch.stack([params.flatten(e1), params.flatten(e2)], dim=1)
    for d in (d1, d2):
        coef = torch.linalg.lstsq(E, params.flatten(d)[:, None]).solution
        assert float((E @ coef - params.flatten(d)[:, None]).norm()) < 1e-10


def test_pca_with_noise_residual_consistent_and_matches_svd():
    traj, center, _ = planar_trajectory(10, seed=1)
    g = torch.Generator().manual_seed(9)
    traj = [params.axpy(p, 0.05, params.randn_like(p, generator=g)) for p in traj]
    r = pca_directions(traj, n_components=3)
    M = torch.stack([params.flatten(params.sub(p, traj[-1])) for p in traj])
    s = torch.linalg.svdvals(M)
    np.testing.assert_allclose(r.singular_values, s[:3].numpy(), rtol=1e-10)
    total = float((M**2).sum())
    np.testing.assert_allclose((r.residual**2).sum(), (1 - r.explained_variance_ratio.sum()) * total, rtol=1e-8)
    assert r.residual.max() > 0


def test_pca_mean_center_matches_sklearn():
    sklearn_decomposition = pytest.importorskip("sklearn.decomposition")
    traj, center, _ = planar_trajectory(10, seed=2)
    g = torch.Generator().manual_seed(3)
    traj = [params.axpy(p, 0.1, params.randn_like(p, generator=g)) for p in traj]
    M = torch.stack([params.flatten(params.sub(p, traj[-1])) for p in traj]).numpy()
    sk = sklearn_decomposition.PCA(n_components=2, svd_solver="full").fit(M)
    r = pca_directions(traj, mean_center=True)
    comps = np.stack([params.flatten(d.vector).numpy() for d in r.directions])
    np.testing.assert_allclose(np.abs((comps * sk.components_).sum(axis=1)), 1.0, atol=1e-10)
    np.testing.assert_allclose(r.explained_variance_ratio, sk.explained_variance_ratio_, rtol=1e-10)
    np.testing.assert_allclose(r.coords, M @ comps.T, atol=1e-10)


def test_pca_errors_and_explicit_center():
    traj, center, _ = planar_trajectory(6)
    with pytest.raises(LosslabError, match="spans 1"):
        pca_directions(traj[:2])
    with pytest.raises(LosslabError, match="at least 2"):
        pca_directions(traj[:1])
    r = pca_directions(traj, center=center)
    assert r.meta["center"] == "given" and float(r.residual.max()) < 1e-10


# ---------------------------------------------------------------- save / load
def test_direction_save_load_bit_identical(tmp_path, w):
    vec = dict(random_direction(w, seed=0).vector)
    weird = {
        "file": torch.arange(3, dtype=torch.float32) / 3,
        "allow_pickle": torch.tensor([1.5], dtype=torch.bfloat16),
        "path/with%slash": torch.randn(2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float16),
        "ints": torch.tensor([1, -2], dtype=torch.int64),
    }
    vec.update(weird)
    d = Direction(vec, {"kind": "random", "seed": 0, "nested": {"a": [1, 2.5, None]}})
    json_path = d.save(tmp_path / "sub" / "dir.npz")  # suffix dropped
    assert json_path == tmp_path / "sub" / "dir.json"
    e = Direction.load(tmp_path / "sub" / "dir")
    assert list(e.vector) == list(d.vector)
    for k in d.vector:
        assert e.vector[k].dtype == d.vector[k].dtype and torch.equal(e.vector[k], d.vector[k]), k
    assert e.meta == d.meta
    # readable without losslab: plain numpy + json
    header = json.loads(json_path.read_text())
    with np.load(tmp_path / "sub" / "dir.npz") as z:
        assert np.array_equal(z["vector/fc.weight"], vec["fc.weight"].numpy())
        entry = next(e for e in header["tensors"]["vector"] if e["key"] == "path/with%slash")
        assert z[entry["member"]].dtype == np.float16
    assert not list((tmp_path / "sub").glob("*.tmp"))


def test_direction_meta_must_be_json(tmp_path):
    d = Direction({"w": torch.ones(2)}, {"bad": torch.ones(1)})
    with pytest.raises(LosslabError, match="JSON"):
        d.save(tmp_path / "d")
    with pytest.raises(LosslabError, match="no saved"):
        Direction.load(tmp_path / "missing")
    with pytest.raises(LosslabError):
        Direction({}, {})


def test_pca_result_save_load(tmp_path):
    traj, _, _ = planar_trajectory(8)
    r = pca_directions(traj)
    r.save(tmp_path / "pca")
    s = PCAResult.load(tmp_path / "pca")
    for a, b in zip(r.directions, s.directions):
        assert a.meta == b.meta
        for k in a.vector:
            assert torch.equal(a.vector[k], b.vector[k])
    for name in ("explained_variance_ratio", "coords", "residual", "singular_values"):
        assert np.array_equal(getattr(r, name), getattr(s, name))
    for k in r.center:
        assert torch.equal(r.center[k], s.center[k])
    assert s.meta == r.meta and s.n_components == 2
    with pytest.raises(LosslabError, match="not losslab.Direction"):
        Direction.load(tmp_path / "pca")


def test_doctests():
    attempted = 0
    for name in ("", "._core", "._random", "._between", "._pca", "._build"):
        module = importlib.import_module("losslab.directions" + name) if name else directions_module
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, name
        attempted += result.attempted
    assert attempted > 10
