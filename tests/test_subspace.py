"""Random projections, subspace training, the intrinsic-dimension sweep and its CLI."""
import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.linalg import hadamard
from torch import nn

from losslab import data, models
from losslab.cli.main import main
from losslab.errors import LosslabError
from losslab.subspace import (
    AugmentedProjection, DenseProjection, FastfoodProjection, IntrinsicDimDisplay, IntrinsicDimResult, Projection,
    SparseProjection, fwht, intrinsic_dimension, make_projection, radial_profile, threshold_crossing, train_full,
    train_subspace,
)

F64 = torch.float64


@pytest.fixture(scope="module")
def blobs():
    return data.load("blobs", n_train=120, n_test=60, classes=3, dims=4)


def mlp(bundle, seed=0, **kw):
    kw = {"width": 8, "depth": 1, **kw}
    return models.build("mlp", input_shape=bundle.input_shape, num_classes=bundle.num_classes, seed=seed, **kw)


def snapshot(model):
    return ({k: v.detach().clone() for k, v in model.state_dict().items()}, model.training,
            [p.requires_grad for p in model.parameters()])


def assert_unchanged(model, snap):
    sd, training, rg = snap
    now = model.state_dict()
    assert now.keys() == sd.keys()
    for k in sd:
        assert torch.equal(now[k], sd[k]), k
    assert model.training == training
    assert [p.requires_grad for p in model.parameters()] == rg


# ---- projections ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("D, d", [(50, 3), (300, 40), (7, 7)])
def test_dense_columns_unit_norm_and_seeded(D, d):
    P = DenseProjection(D, d, seed=4, dtype=F64)
    M = P.to_dense()
    assert M.shape == (D, d)
    torch.testing.assert_close(M.norm(dim=0), torch.ones(d, dtype=F64), rtol=0, atol=1e-14)
    assert torch.equal(M, DenseProjection(D, d, seed=4, dtype=F64).to_dense())
    assert not torch.allclose(M, DenseProjection(D, d, seed=5, dtype=F64).to_dense())
    # float32 matrix = float64 draw, cast (dtype-independent draws)
    torch.testing.assert_close(DenseProjection(D, d, seed=4).to_dense(), M.float())
    z = torch.randn(2, 3, d, dtype=F64)
    torch.testing.assert_close(P(z), z @ M.t())
    assert isinstance(P, Projection)


def test_dense_rejects_bad_dims():
    with pytest.raises(LosslabError, match="exceeds"):
        DenseProjection(5, 6, seed=0)
    with pytest.raises(LosslabError, match="positive int"):
        DenseProjection(5, 0, seed=0)
    with pytest.raises(LosslabError, match="unknown projection"):
        make_projection("gaussian", 5, 2, seed=0)


def test_sparse_columns_unit_norm_distinct_rows_and_density():
    D, d = 2500, 60
    P = SparseProjection(D, d, seed=1, dtype=F64)
    M = P.to_dense()
    torch.testing.assert_close(M.norm(dim=0), torch.ones(d, dtype=F64), rtol=0, atol=1e-14)
    k = (M != 0).sum(0)
    assert int(k.sum()) == P.nnz  # no two non-zeros of a column on the same row
    assert k.min() >= 1
    # each non-zero is +-1/sqrt(k_j)
    nz = M != 0
    torch.testing.assert_close(M.abs()[nz], (1 / k.double().sqrt()).expand(D, d)[nz])
    # density 1/sqrt(D) = 1/50: about 50 non-zeros per column (Binomial(2500, 0.02): sd 7)
    assert 40 < float(k.double().mean()) < 60
    assert (M[nz] > 0).double().mean().item() == pytest.approx(0.5, abs=0.1)
    z = torch.randn(5, d, dtype=F64)
    torch.testing.assert_close(P(z), z @ M.t())
    assert torch.equal(M, SparseProjection(D, d, seed=1, dtype=F64).to_dense())
    dense = SparseProjection(20, 4, seed=0, density=1.0, dtype=F64).to_dense()
    assert bool((dense != 0).all())


def test_sparse_gradient_is_transpose():
    P = SparseProjection(200, 7, seed=2, dtype=F64)
    z = torch.randn(7, dtype=F64, requires_grad=True)
    u = torch.randn(200, dtype=F64)
    (P(z) @ u).backward()
    torch.testing.assert_close(z.grad, P.to_dense().t() @ u)


@pytest.mark.parametrize("n", [1, 2, 8, 64])
def test_fwht_is_sylvester_hadamard(n):
    H = torch.tensor(hadamard(n), dtype=F64)
    x = torch.randn(3, 2, n, dtype=F64)
    torch.testing.assert_close(fwht(x), x @ H.t(), rtol=0, atol=1e-12)
    torch.testing.assert_close(fwht(fwht(x)), n * x)
    xr = x.clone().requires_grad_(True)
    u = torch.randn_like(x)
    (fwht(xr) * u).sum().backward()
    torch.testing.assert_close(xr.grad, fwht(u))  # H is symmetric: its adjoint is itself
    with pytest.raises(LosslabError, match="power-of-two"):
        fwht(torch.zeros(6))


def explicit_columns(P, d, dtype=F64):
    """The matrix built by applying P to each basis vector, one at a time."""
    return torch.stack([P(torch.eye(d, dtype=dtype)[j]) for j in range(d)], dim=1)


@pytest.mark.parametrize("D, d, block", [(100, 5, None), (1000, 10, None), (37, 37, None), (256, 16, None),
                                         (300, 6, 512)])
def test_fastfood_equals_its_dense_matrix(D, d, block):
    P = FastfoodProjection(D, d, seed=3, dtype=F64, block_size=block)
    M = explicit_columns(P, d)
    assert M.shape == (D, d)
    torch.testing.assert_close(P.to_dense(), M, rtol=0, atol=1e-12)
    z = torch.randn(4, d, dtype=F64)
    torch.testing.assert_close(P(z), z @ M.t(), rtol=0, atol=1e-12)
    zr = torch.randn(d, dtype=F64, requires_grad=True)
    u = torch.randn(D, dtype=F64)
    (P(zr) @ u).backward()
    torch.testing.assert_close(zr.grad, M.t() @ u)
    if block is not None:
        assert P.m == 1


def test_fastfood_matches_the_formula_and_documented_column_norms():
    D, d = 200, 12  # n = 16, m = 13 blocks, last block truncated to r = 8 rows
    P = FastfoodProjection(D, d, seed=7, dtype=F64)
    n, m = P.n, P.m
    assert (n, m) == (16, 13)
    H = torch.tensor(hadamard(n), dtype=F64)
    blocks = []
    for k in range(m):
        Pi = torch.eye(n, dtype=F64)[P.perm[k]]  # (Pi x)_i = x[perm[i]]
        V = H @ torch.diag(P.G[k]) @ Pi @ H @ torch.diag(P.B[k])
        blocks.append(V / (P.G[k].norm() * math.sqrt(D)))
    full = torch.cat(blocks)[:, :d]
    torch.testing.assert_close(P.to_dense(), full[:D], rtol=0, atol=1e-12)
    # every column of an untruncated block has norm sqrt(n)*||g_k|| before scaling
    norms2 = P.to_dense().norm(dim=0) ** 2
    r = D - (m - 1) * n
    last = blocks[-1][:r, :d] * (P.G[-1].norm() * math.sqrt(D))
    rho = last.norm(dim=0) ** 2 / (n * P.G[-1].norm() ** 2)
    torch.testing.assert_close(norms2, (n / D) * ((m - 1) + rho), rtol=1e-12, atol=0)
    assert bool((norms2 >= (m - 1) * n / D - 1e-12).all() and (norms2 <= m * n / D + 1e-12).all())
    # n divides D: unit columns exactly
    Q = FastfoodProjection(256, 10, seed=1, dtype=F64).to_dense()
    torch.testing.assert_close(Q.norm(dim=0), torch.ones(10, dtype=F64), rtol=0, atol=1e-13)


def test_fastfood_block_size_validation_and_cost_is_linear():
    with pytest.raises(LosslabError, match="power of two"):
        FastfoodProjection(100, 10, seed=0, block_size=12)
    P = FastfoodProjection(10**6, 100, seed=0)
    assert P.B.numel() <= 10**6 + 128  # O(D) memory: m*n <= D + n
    assert P(torch.ones(100)).shape == (10**6,)


def test_augmented_projection_contains_origin_and_init():
    u = torch.randn(30, dtype=F64)
    A = AugmentedProjection(u, DenseProjection(30, 4, seed=0, dtype=F64))
    M = A.to_dense()
    assert M.shape == (30, 5)
    torch.testing.assert_close(M[:, 0], u / u.norm())
    torch.testing.assert_close(explicit_columns(A, 5), M)
    z0 = torch.zeros(5, dtype=F64)
    z0[0] = u.norm()
    torch.testing.assert_close(A(z0), u)


# ---- subspace training ----------------------------------------------------------------------------------


def plain_training(model, x, y, *, epochs, batch_size, lr, order_seed, optimizer="adam"):
    """Textbook PyTorch training on a copy, batches as documented in losslab.subspace.training."""
    m = copy.deepcopy(model)
    opt = (torch.optim.Adam(m.parameters(), lr=lr) if optimizer == "adam"
           else torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9))
    g = torch.Generator().manual_seed(order_seed)
    n = len(x)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            loss = F.cross_entropy(m(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {k: v.detach() for k, v in m.named_parameters()}


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_identity_subspace_reproduces_plain_training(blobs, optimizer):
    net = mlp(blobs, width=6, depth=2).double()
    snap = snapshot(net)
    D = sum(p.numel() for p in net.parameters())
    x, y = blobs.train.x.double(), blobs.train.y
    kw = dict(epochs=3, batch_size=32, lr=0.01, optimizer=optimizer)
    eye = DenseProjection.from_matrix(torch.eye(D, dtype=F64))
    # From theta0 = 0, theta = 0 + I z is z bit for bit: the same optimizer steps, exactly.
    zero_net = copy.deepcopy(net)
    with torch.no_grad():
        for p in zero_net.parameters():
            p.zero_()
    ref0 = plain_training(zero_net, x, y, order_seed=5, **kw)
    r0 = train_subspace(net, blobs, d=D, projection=eye, order_seed=5, theta0=zero_net, **kw)
    for k in ref0:
        assert torch.equal(r0.point[k], ref0[k]), k
    assert r0.steps == 3 * math.ceil(120 / 32)
    # From the model's init, theta0 + z rounds differently from in-place updates: equal to round-off.
    ref = plain_training(net, x, y, order_seed=5, **kw)
    r = train_subspace(net, blobs, d=D, projection=eye, order_seed=5, **kw)
    for k in ref:
        torch.testing.assert_close(r.point[k], ref[k], rtol=0, atol=1e-13)
    assert np.abs(r.theta_d).max() > 1e-3  # it did train
    # the full-space baseline is plain training, bit for bit
    full = train_full(net, blobs, order_seed=5, **kw)
    for k in ref:
        assert torch.equal(full.point[k], ref[k]), k
    assert_unchanged(net, snap)


def test_subspace_training_stays_in_the_subspace_and_is_reproducible(blobs):
    net = mlp(blobs)
    snap = snapshot(net)
    theta0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()]).double()
    for kind in ("dense", "sparse", "fastfood"):
        r = train_subspace(net, blobs, d=5, projection=kind, seed=3, epochs=4, lr=0.05)
        again = train_subspace(net, blobs, d=5, projection=kind, seed=3, epochs=4, lr=0.05)
        np.testing.assert_array_equal(r.theta_d, again.theta_d)
        assert r.history == again.history and len(r.history) == 4
        M = make_projection(kind, r.D, 5, seed=3, dtype=F64).to_dense()
        theta = torch.cat([r.point[k].reshape(-1) for k, _ in net.named_parameters()]).double()
        torch.testing.assert_close(theta, theta0 + M @ torch.from_numpy(r.theta_d), rtol=0, atol=1e-5)
        other = train_subspace(net, blobs, d=5, projection=kind, seed=4, epochs=4, lr=0.05)
        assert not np.allclose(other.theta_d, r.theta_d)
        assert r.meta["projection"]["kind"] == kind and 0 <= r.test_accuracy <= 1
    assert_unchanged(net, snap)


def test_subspace_through_origin(blobs):
    net = mlp(blobs).double()
    theta0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    r0 = train_subspace(net, blobs, d=4, origin=True, epochs=0)
    theta = torch.cat([r0.point[k].reshape(-1) for k, _ in net.named_parameters()])
    torch.testing.assert_close(theta, theta0)  # starts at the init
    r = train_subspace(net, blobs, d=4, origin=True, seed=1, epochs=3, lr=0.05)
    theta = torch.cat([r.point[k].reshape(-1) for k, _ in net.named_parameters()])
    basis = torch.cat([(theta0 / theta0.norm())[:, None], DenseProjection(r.D, 3, seed=1, dtype=F64).to_dense()], 1)
    torch.testing.assert_close(basis @ torch.from_numpy(r.theta_d), theta)  # theta = P theta_d: a linear subspace
    assert r.meta["origin"] is True and r.theta_d[0] != pytest.approx(float(theta0.norm()))
    with pytest.raises(LosslabError, match="d must be"):
        train_subspace(net, blobs, d=0)


def test_batchnorm_dropout_model_untouched(blobs):
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3))
    net.train()
    snap = snapshot(net)
    r = train_subspace(net, blobs, d=6, projection="fastfood", epochs=2)
    assert np.isfinite(r.test_loss) and r.D == sum(p.numel() for p in net.parameters())
    train_full(net, blobs, epochs=1)
    radial_profile(net, blobs, radii=[0.5, 1.0])
    assert_unchanged(net, snap)


def test_frozen_parameters_stay_fixed(blobs):
    net = mlp(blobs)
    net[1].weight.requires_grad_(False)
    r = train_subspace(net, blobs, d=3, epochs=2)
    assert r.D == sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert "fc0.weight" not in r.point


def test_radial_profile(blobs):
    net = mlp(blobs).double()
    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    nrm = float(theta.norm())
    r = radial_profile(net, blobs, radii=[0.0, nrm, 2 * nrm])
    np.testing.assert_allclose(r.x, [0.0, nrm, 2 * nrm])
    x, y = blobs.train.x.double(), blobs.train.y
    assert r.metrics["loss"][1] == pytest.approx(float(F.cross_entropy(net(x), y).detach()), rel=1e-10)
    assert r.metrics["loss"][0] == pytest.approx(math.log(3), rel=1e-10)  # all-zero net: uniform logits
    doubled = copy.deepcopy(net)
    with torch.no_grad():
        for p in doubled.parameters():
            p.mul_(2)
    assert r.metrics["loss"][2] == pytest.approx(float(F.cross_entropy(doubled(x), y).detach()), rel=1e-10)
    assert r.meta["user"]["point_norm"] == pytest.approx(nrm)


# ---- d_int interpolation --------------------------------------------------------------------------------


def test_threshold_crossing_cases():
    dims = [10, 100, 1000, 10000]
    c = threshold_crossing(dims, [0.2, 0.5, 0.9, 0.95], 0.7)
    assert c["status"] == "interpolated" and (c["d_lo"], c["d_hi"]) == (100, 1000)
    assert c["d"] == pytest.approx(10 ** 2.5)  # halfway in accuracy = halfway in log d
    c = threshold_crossing(dims, [0.2, 0.5, 0.8, 0.95], 0.65)
    assert c["d"] == pytest.approx(10 ** (2 + 0.15 / 0.3))
    assert threshold_crossing(dims, [0.2, 0.5, 0.9, 0.95], 0.9)["d"] == pytest.approx(1000)  # exactly at a grid value
    c = threshold_crossing(dims, [0.8, 0.9, 0.9, 0.95], 0.7)
    assert c == {"d": 10.0, "d_lo": None, "d_hi": 10.0, "status": "at_first"}
    c = threshold_crossing(dims, [0.2, 0.3, 0.4, 0.5], 0.7)
    assert c == {"d": None, "d_lo": 10000.0, "d_hi": None, "status": "not_reached"}
    # the first crossing counts, even if a later d dips again
    assert threshold_crossing(dims, [0.2, 0.8, 0.6, 0.9], 0.7)["d_hi"] == 100
    # not-computed grid points are skipped: bracket (10, 1000)
    c = threshold_crossing(dims, [0.2, np.nan, 0.8, 0.9], 0.5)
    assert (c["d_lo"], c["d_hi"]) == (10, 1000) and c["d"] == pytest.approx(10 ** (1 + 2 * 0.5))
    assert threshold_crossing(dims, [np.nan] * 4, 0.5)["status"] == "undetermined"
    with pytest.raises(LosslabError, match="increasing"):
        threshold_crossing([10, 5], [0.1, 0.2], 0.1)


def test_result_from_hand_made_table():
    dims = [10, 20, 50, 100, 200]
    acc = [[0.30, 0.34], [0.50, 0.54], [0.70, 0.78], [0.86, 0.90], [0.93, 0.95]]
    r = IntrinsicDimResult.from_table(dims, acc, [0.96, 0.98])
    assert r.baseline == pytest.approx(0.97)
    np.testing.assert_allclose(r.mean(), [0.32, 0.52, 0.74, 0.88, 0.94])
    target = 0.9 * 0.97  # 0.873: first reached at d=100 (mean 0.88), so the bracket is (50, 100)
    c = r.crossing()
    assert (c["d_lo"], c["d_hi"], c["status"]) == (50, 100, "interpolated")
    expected = math.exp(math.log(50) + (target - 0.74) / (0.88 - 0.74) * (math.log(100) - math.log(50)))
    assert r.d_int90 == pytest.approx(expected)
    per = r.per_seed()
    assert per[0]["d_hi"] == 200 and per[1]["d_hi"] == 100
    assert r.with_threshold(0.99).crossing()["status"] == "not_reached"
    assert r.with_threshold(0.3).crossing()["status"] == "at_first"
    s = r.summary()
    assert s["d_int90"] == pytest.approx(expected) and s["d_int90_bracket"] == [50, 100]
    json.dumps(s)
    never = IntrinsicDimResult.from_table(dims, [0.1, 0.2, 0.3, 0.4, 0.5], 1.0)
    assert never.d_int90 is None and never.summary()["d_int90_bracket"] == [200, None]


# ---- the sweep ----------------------------------------------------------------------------------------


def test_intrinsic_dimension_save_resume_and_mismatch(blobs, tmp_path):
    kw = dict(dims=[2, 6], seeds=[0, 1], epochs=2, batch_size=64, progress=False)
    factory = lambda s: mlp(blobs, seed=s)  # noqa: E731
    full = intrinsic_dimension(factory, blobs, **kw)
    assert full.complete and full.done.all() and full.baseline_done.all()
    assert np.isfinite(full.metrics["test_accuracy"]).all()
    path = tmp_path / "id"
    part = intrinsic_dimension(factory, blobs, path=path, max_runs=3, **kw)  # 2 baselines + 1 cell
    assert not part.complete and part.n_done == 1
    loaded = IntrinsicDimResult.load(path)
    np.testing.assert_array_equal(loaded.done, part.done)
    desc = json.loads((tmp_path / "id.json").read_text())
    assert desc["format"] == "losslab.intrinsic_dim" and "summary" in desc
    with np.load(tmp_path / "id.npz", allow_pickle=False) as z:
        assert z["done"].tolist() == part.done.tolist()
    seen = []
    resumed = intrinsic_dimension(factory, blobs, path=path, callback=seen.append, **kw)
    assert len(seen) == 3 and resumed.complete
    for k in ("train_accuracy", "test_accuracy", "train_loss", "test_loss"):
        np.testing.assert_array_equal(resumed.metrics[k], full.metrics[k])
        np.testing.assert_array_equal(resumed.baseline_metrics[k], full.baseline_metrics[k])
    assert resumed.summary()["d_int90"] == full.summary()["d_int90"]
    again = IntrinsicDimResult.load(path)
    assert again.summary() == {**resumed.summary(), "seconds": again.summary()["seconds"]}
    with pytest.raises(LosslabError, match="settings.lr"):
        intrinsic_dimension(factory, blobs, path=path, lr=0.2, **kw)
    # growing the grid keeps the finished cells
    bigger = intrinsic_dimension(factory, blobs, path=path, max_runs=0, **{**kw, "dims": [2, 4, 6]})
    assert bigger.done[[0, 2]].all() and not bigger.done[1].any()


def test_intrinsic_dimension_given_baseline_and_validation(blobs):
    factory = lambda s: mlp(blobs, seed=s)  # noqa: E731
    r = intrinsic_dimension(factory, blobs, dims=[3], seeds=[0], epochs=1, baseline=0.5, progress=False,
                            metric="train_accuracy", projection="fastfood")
    assert r.baseline == 0.5 and not r.baseline_done.any() and r.complete
    with pytest.raises(LosslabError, match="only D="):
        intrinsic_dimension(factory, blobs, dims=[10**6], seeds=[0])
    with pytest.raises(LosslabError, match="duplicates"):
        intrinsic_dimension(factory, blobs, dims=[3, 3], seeds=[0])
    with pytest.raises(LosslabError, match="metric"):
        intrinsic_dimension(factory, blobs, dims=[3], metric="loss")


def test_display_plots(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    r = IntrinsicDimResult.from_table([10, 100, 1000], [[0.3], [0.8], [0.95]], 1.0)
    disp = IntrinsicDimDisplay.from_result(r).plot()
    assert disp.ax_.get_xscale() == "log"
    labels = [t.get_text() for t in disp.ax_.get_legend().get_texts()]
    assert any("90% of full" in t for t in labels) and any("d_{int90}" in t for t in labels)
    out = disp.savefig(tmp_path / "id.png")
    assert out.read_bytes()[:4] == b"\x89PNG"


# ---- CLI -----------------------------------------------------------------------------------------------


def test_cli_intrinsic_dim_json_and_plot(tmp_path, capsys):
    plot = tmp_path / "id.png"
    code = main(["intrinsic-dim", "--dataset", "blobs", "--dataset-kwargs", "n_train=90", "n_test=30",
                 "--model", "mlp", "--model-kwargs", "width=8", "depth=1", "--dims", "2", "5", "--seeds", "0",
                 "--epochs", "2", "--no-progress", "--json", "--plot", str(plot), "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert code == 0
    s = json.loads(out)
    assert {"d_int90", "d_int90_bracket", "baseline", "mean", "dims", "projection"} <= set(s)
    assert s["dims"] == [2, 5] and len(s["mean"]) == 2 and s["projection"] == "dense"
    assert s["metric"] == "test_accuracy" and 0 < s["baseline"] <= 1
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert IntrinsicDimResult.load(tmp_path / "r").complete
    code = main(["intrinsic-dim", "--dataset", "blobs", "--dataset-kwargs", "n_train=90", "n_test=30",
                 "--model-kwargs", "width=8", "depth=1", "--dims", "2", "--seeds", "0", "--epochs", "1",
                 "--label-noise", "1.0", "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0 and "train_accuracy" in text and "d_int90" in text


def test_cli_intrinsic_dim_bad_input(capsys):
    code = main(["intrinsic-dim", "--dataset", "blobs", "--model-kwargs", "width=4", "depth=1", "--dims", "99999"])
    err = capsys.readouterr().err
    assert code == 2 and "only D=" in err and err.count("\n") == 1
