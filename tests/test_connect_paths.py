"""Linear paths, barrier definitions, PathResult I/O, and the `losslab connect` command end to end."""
from __future__ import annotations

import doctest
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from losslab import models, params
from losslab.connect import PathResult, barriers, linear_path
from losslab.connect import paths as paths_module
from losslab.connect.paths import interpolate
from losslab.errors import LosslabError
from losslab.evaluate import Evaluator

from cases import tiny_data, zoo_mlp


def _data(n=48, d=6, c=3, seed=0, dtype=torch.float64):
    return tiny_data(n, d, c, seed, dtype)


def _mlp(seed, norm=None, dtype=torch.float64):
    return zoo_mlp(seed, input_dim=6, num_classes=3, width=8, depth=2, norm=norm, dtype=dtype)


# ------------------------------------------------------------------------------------ barriers
def test_barriers_hand_made_curves():
    a = np.linspace(0, 1, 5)
    # symmetric bump over equal endpoints: both definitions agree
    b = barriers([0.1, 0.3, 0.6, 0.3, 0.1], a)
    assert b["mean"] == pytest.approx(0.5) and b["interp"] == pytest.approx(0.5)
    assert b["alpha_mean"] == 0.5 and b["alpha_interp"] == 0.5
    # a straight ramp: max - mean = half the rise, no height above the chord
    b = barriers([0.0, 0.25, 0.5, 0.75, 1.0], a)
    assert b["mean"] == pytest.approx(0.5) and b["interp"] == pytest.approx(0.0, abs=1e-15)
    assert b["alpha_mean"] == 1.0
    # bump on a ramp: the chord at 0.25 is 0.25, the value 1.0 -> 0.75 above it; max - mean = 1.0 - 0.5
    b = barriers([0.0, 1.0, 0.5, 0.75, 1.0], a)
    assert b["interp"] == pytest.approx(0.75) and b["alpha_interp"] == 0.25
    assert b["mean"] == pytest.approx(0.5)
    # a dip below the endpoints gives 0 (not negative) for interp, and max - mean >= 0
    b = barriers([1.0, 0.2, 1.0], [0, 0.5, 1])
    assert b["interp"] == 0.0 and b["mean"] == 0.0
    # non-uniform positions (arc length) are normalised to [0, 1]
    b = barriers([0.0, 2.0, 1.0], [2.0, 3.0, 6.0])
    assert b["interp"] == pytest.approx(2.0 - 0.25)
    assert b["start"] == 0.0 and b["end"] == 1.0 and b["max"] == 2.0


def test_barriers_nonfinite_and_errors():
    b = barriers([0.0, float("nan"), 1.0], [0, 0.5, 1])
    assert np.isnan(b["mean"]) and np.isnan(b["interp"])
    with pytest.raises(LosslabError, match="increasing"):
        barriers([0, 1, 2], [0, 0.5, 0.5])
    with pytest.raises(LosslabError, match="values"):
        barriers([0, 1], [0, 0.5, 1])
    with pytest.raises(LosslabError, match="endpoints"):
        barriers([0.0], [0.0])


# --------------------------------------------------------------------------------- linear path
def test_interpolate_endpoints_are_bit_identical():
    a = params.get_point(_mlp(0, dtype=torch.float32))
    b = params.get_point(_mlp(1, dtype=torch.float32))
    st = interpolate(a, b, [0.0, 0.3, 1.0])
    for k in a:
        assert torch.equal(st[k][0], a[k]) and torch.equal(st[k][2], b[k])
        assert torch.allclose(st[k][1], 0.7 * a[k] + 0.3 * b[k], atol=1e-7)


def test_linear_path_endpoints_reproduce_models_exactly():
    x, y = _data()
    xt, yt = _data(seed=1)
    ma, mb = _mlp(0), _mlp(1)
    res = linear_path(ma, (x, y), point_a=ma, point_b=mb, test_data=(xt, yt), num=25, strategy="loop")
    assert res.alphas.shape == (25,) and res.alphas[0] == 0.0 and res.alphas[-1] == 1.0
    for split, (xx, yy) in (("train", (x, y)), ("test", (xt, yt))):
        ev = Evaluator(ma, (xx, yy), strategy="loop")
        # exactly the evaluator's value at each endpoint model...
        assert res.metrics[split]["loss"][0] == ev.evaluate(params.get_point(ma))["loss"]
        assert res.metrics[split]["loss"][-1] == ev.evaluate(params.get_point(mb))["loss"]
        # ...which is the endpoint model's own loss/error (float64)
        for m, i in ((ma, 0), (mb, -1)):
            with torch.no_grad():
                out = m(xx)
            assert res.metrics[split]["loss"][i] == pytest.approx(F.cross_entropy(out, yy).item(), rel=1e-12)
            assert res.metrics[split]["error"][i] == pytest.approx((out.argmax(1) != yy).double().mean().item(), abs=1e-15)
    # a middle point equals a direct evaluation of the interpolated weights
    pa, pb = params.get_point(ma), params.get_point(mb)
    mid = {k: 0.5 * pa[k] + 0.5 * pb[k] for k in pa}
    with torch.no_grad():
        out = params.call(ma, mid, x)
    assert res.metrics["train"]["loss"][12] == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-12)
    # barriers are attached for both metrics and splits
    assert set(res.barriers) == {"train", "test"}
    assert set(res.barriers["test"]) == {"loss", "error"}
    assert res.barrier("loss", split="train") == barriers(res.metrics["train"]["loss"], res.alphas)["mean"]
    assert res.meta["kind"] == "linear" and res.meta["distance"] == pytest.approx(params.distance(pa, pb))


def test_linear_path_to_itself_is_flat_and_vmap_matches_loop():
    x, y = _data()
    m = _mlp(0)
    res = linear_path(m, (x, y), point_a=m, point_b=m, num=7, strategy="loop")
    assert np.all(res.metrics["train"]["loss"] == res.metrics["train"]["loss"][0])
    assert res.barrier("loss", split="train") == 0.0 and res.barrier("error", split="train", kind="interp") == 0.0
    r1 = linear_path(m, (x, y), point_a=m, point_b=_mlp(1), num=9, strategy="loop")
    r2 = linear_path(m, (x, y), point_a=m, point_b=_mlp(1), num=9, strategy="vmap")
    np.testing.assert_allclose(r1.metrics["train"]["loss"], r2.metrics["train"]["loss"], rtol=1e-12)


def test_linear_path_bn_recomputes_statistics_and_does_not_mutate():
    x, y = _data(n=64)
    xt, yt = _data(n=32, seed=2)
    ma, mb = _mlp(0, norm="bn"), _mlp(1, norm="bn")
    # give the models stale running statistics: a recompute must ignore them
    with torch.no_grad():
        for m in (ma, mb):
            m.norm0.running_mean.fill_(3.0)
    before = {k: v.clone() for k, v in ma.state_dict().items()}
    res = linear_path(ma, (x, y), point_a=ma, point_b=mb, test_data=(xt, yt), num=5)
    assert res.meta["bn"] == "recompute"
    for k, v in ma.state_dict().items():
        assert torch.equal(v, before[k])
    # test split: statistics from the TRAIN data, then eval on test
    ev = Evaluator(ma, (xt, yt), bn="recompute", bn_data=(x, y))
    assert res.metrics["test"]["loss"][0] == pytest.approx(ev.evaluate(params.get_point(ma))["loss"], rel=1e-12)
    ev_stale = Evaluator(ma, (xt, yt), bn="eval")
    assert res.metrics["test"]["loss"][0] != pytest.approx(ev_stale.evaluate(params.get_point(ma))["loss"], rel=1e-6)
    # bn="eval" interpolates the stored (float) statistics like parameters
    r_eval = linear_path(ma, (x, y), point_a=ma, point_b=mb, num=3, bn="eval")
    pa, pb = params.get_point(ma, buffers=True), params.get_point(mb, buffers=True)
    mid = {k: (0.5 * pa[k] + 0.5 * pb[k]) if pa[k].is_floating_point() else pa[k] for k in pa}
    assert r_eval.metrics["train"]["loss"][1] == pytest.approx(Evaluator(ma, (x, y), bn="eval").evaluate(mid)["loss"], rel=1e-12)


def test_linear_path_bundle_splits_and_errors():
    from losslab.data import from_tensors

    x, y = _data(n=40)
    m = _mlp(0)
    bundle = from_tensors(x[:30], y[:30], x_test=x[30:], y_test=y[30:], num_classes=3)
    r = linear_path(m, bundle, point_a=m, point_b=_mlp(1), num=4)
    assert r.splits == ["train", "test"]
    r = linear_path(m, bundle, point_a=m, point_b=_mlp(1), num=4, splits=("test",))
    assert r.splits == ["test"]
    r = linear_path(m, bundle, point_a=m, point_b=_mlp(1), alphas=[-0.5, 0.0, 1.0, 1.5])
    assert r.alphas.tolist() == [-0.5, 0.0, 1.0, 1.5]
    # barriers between the true endpoints (alpha 0 and 1), not the extrapolated ends
    assert r.barriers["train"]["loss"]["start"] == r.metrics["train"]["loss"][1]
    assert r.barriers["train"]["loss"]["end"] == r.metrics["train"]["loss"][2]
    with pytest.raises(LosslabError, match="num must be >= 2"):
        linear_path(m, (x, y), point_a=m, point_b=m, num=1)
    with pytest.raises(LosslabError, match="different keys|lacks"):
        linear_path(m, (x, y), point_a=m, point_b=models.build("mlp", input_shape=(6,), num_classes=3, width=8, depth=1).double())
    with pytest.raises(LosslabError, match="differ in shape"):
        linear_path(m, (x, y), point_a=m, point_b=models.build("mlp", input_shape=(6,), num_classes=3, width=9, depth=2).double())
    with pytest.raises(LosslabError, match="splits"):
        linear_path(m, (x, y), point_a=m, point_b=m, splits=("val",))


def test_path_result_save_load_roundtrip_readable_without_losslab(tmp_path):
    x, y = _data()
    res = linear_path(_mlp(0), (x, y), point_a=_mlp(0), point_b=_mlp(1), test_data=_data(seed=3), num=6)
    npz = res.save(tmp_path / "lin")
    back = PathResult.load(tmp_path / "lin.json")
    np.testing.assert_array_equal(back.alphas, res.alphas)
    for s in res.metrics:
        for m in res.metrics[s]:
            np.testing.assert_array_equal(back.metrics[s][m], res.metrics[s][m])
    assert back.barriers == json.loads(json.dumps(res.barriers))
    assert back.meta["kind"] == "linear"
    with np.load(npz, allow_pickle=False) as z:
        assert set(z.files) == {"alphas", "train__loss", "train__error", "test__loss", "test__error"}
    with open(tmp_path / "lin.json") as fh:
        desc = json.load(fh)
    assert desc["format"] == "losslab.path" and "mean" in desc["barrier_definitions"]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    with pytest.raises(LosslabError, match="no saved path"):
        PathResult.load(tmp_path / "missing")


def test_doctests():
    assert doctest.testmod(paths_module, raise_on_error=False).failed == 0


# ------------------------------------------------------------------------------------- the CLI
@pytest.mark.slow
def test_cli_connect_end_to_end(tmp_path, capsys):
    from losslab.cli.main import main
    from losslab.config import DataConfig, ModelConfig, OptimConfig, SeedConfig, TrainConfig
    from losslab.train import train

    runs = []
    for seed in (0, 1):
        cfg = TrainConfig(data=DataConfig("digits", subsample=300), model=ModelConfig("mlp", {"width": 24, "depth": 1}),
                          optim=OptimConfig(epochs=4, batch_size=64), seeds=SeedConfig(seed=seed))
        runs.append(train(cfg, out=tmp_path / "runs", progress=False))
    plot = tmp_path / "conn.png"
    code = main(["connect", str(runs[0].path), str(runs[1].path), "--method", "linear", "bezier", "polychain", "neb",
                 "--align", "--num", "9", "--curve-epochs", "2", "--curve-points", "9", "--neb-steps", "5",
                 "--neb-cycles", "2", "--save", str(tmp_path / "res"), "--plot", str(plot), "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    s = json.loads(out.out)
    assert set(s["methods"]) == {"linear", "bezier", "polychain", "neb"}
    al = s["align"]
    assert al["verified"] is True and al["max_abs_output_diff"] <= 1e-5
    assert al["linear_error_barrier_before"] >= 0 and al["linear_error_barrier_after"] >= 0
    assert al["distance_after"] < s["distance"]
    lin = s["methods"]["linear"]
    assert lin["test_error_barrier"] == pytest.approx(al["linear_error_barrier_after"])
    assert lin["points"] == 9 and s["methods"]["bezier"]["points"] == 9
    # every method connects the same two models (B aligned): identical endpoint values
    for m in ("bezier", "polychain", "neb"):
        assert s["methods"][m]["test_error_endpoints"] == pytest.approx(lin["test_error_endpoints"], abs=1e-12)
        assert s["methods"][m]["train_loss_endpoints"] == pytest.approx(lin["train_loss_endpoints"], rel=1e-6)
    assert plot.is_file() and plot.stat().st_size > 1000
    saved = PathResult.load(tmp_path / "res" / "linear")
    assert saved.barrier("error") == pytest.approx(lin["test_error_barrier"])
    assert (tmp_path / "res" / "bezier.json").is_file() and (tmp_path / "res" / "neb.json").is_file()
    from losslab.connect.neb import NEBResult
    from losslab.connect.permute import AlignResult

    aligned = AlignResult.load(tmp_path / "res" / "align")
    assert aligned.verified is True and aligned.max_abs_output_diff == al["max_abs_output_diff"]
    neb_run = NEBResult.load(tmp_path / "res" / "neb_run")
    assert int(neb_run.pivots.shape[0]) == s["methods"]["neb"]["pivots"]
    assert neb_run.path is not None and neb_run.path.barrier("error") == pytest.approx(s["methods"]["neb"]["test_error_barrier"])
    # text mode, and a one-line error for a bad target
    assert main(["connect", str(runs[0].path), str(runs[1].path), "--num", "5"]) == 0
    text = capsys.readouterr().out
    assert "linear" in text and "barrier" in text
    assert main(["connect", str(runs[0].path), str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("losslab: error:") and err.count("\n") == 1 and "does not exist" in err
