"""Adaptive precision on paths (issue 19): linear paths, curves along t, ``losslab interpolate``/``connect``.

Every adaptive path is compared with the exact path computed in the same test (float64, tiny MLPs).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from losslab.connect import PathResult, linear_path, train_curve
from losslab.errors import LosslabError
from losslab.precision import Precision


from test_adaptive import dataset, mlp  # the same tiny float64 MLP and data as the surface tests


INIT: dict[str, torch.Tensor] = {}


@pytest.fixture(scope="module")
def pair():
    """Two solutions of the same task (different seeds): a path between them has a barrier. ``INIT``
    keeps the first one's initialisation (the path init -> solution of ``losslab interpolate``)."""
    x, y = dataset(1500)
    out = []
    for seed in (0, 1):
        m = mlp(seed)
        if seed == 0:
            INIT.update({k: v.detach().clone() for k, v in m.state_dict().items()})
        opt = torch.optim.Adam(m.parameters(), lr=0.02)
        for _ in range(120):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
        out.append(m)
    test = (x[:400] + 0.2, y[:400])  # a second split of its own
    return out[0], out[1], (x, y), test


def _path(pair, precision=None, **kw):
    a, b, data, test = pair
    kw.setdefault("num", 41)
    return linear_path(a, data, point_a=a, point_b=b, test_data=test, precision=precision, **kw)


def _same(r: PathResult, s: PathResult) -> bool:
    return (np.array_equal(r.alphas, s.alphas) and r.metrics.keys() == s.metrics.keys()
            and all(np.array_equal(r.metrics[k][m], s.metrics[k][m]) for k in r.metrics for m in r.metrics[k])
            and r.arrays.keys() == s.arrays.keys()
            and all(r.arrays[k].keys() == s.arrays[k].keys() and all(np.array_equal(r.arrays[k][n], s.arrays[k][n])
                                                                    for n in r.arrays[k]) for k in r.arrays))


# ---- the library --------------------------------------------------------------------------------


def test_coverage_of_the_exact_path_and_exact_endpoints(pair):
    """Estimated points (no interpolation) of the path init -> solution: the exact value lies within
    estimate +- 1.96 SE at >= 93% of them over four seeds, on both splits; the endpoints are exact;
    z * SE <= tolerance at every point."""
    a, _, data, test = pair
    kw = dict(point_a=INIT, point_b=a, test_data=test, num=41)
    exact = linear_path(a, data, **kw)
    inside, count = 0, 0
    for seed in range(4):
        res = linear_path(a, data, precision=Precision(rtol=0.01, seed=seed, refine=False, simultaneous=False), **kw)
        p = res.meta["precision"]
        assert p["example_evaluations"] < p["exact_equivalent"] == 41 * (1500 + 400)
        for split in ("train", "test"):
            ex, est, se = exact.metrics[split]["loss"], res.metrics[split]["loss"], res.stderr[split]["loss"]
            done = res.exact[split]
            assert done[0] and done[-1] and not res.interpolated[split].any()
            assert np.abs(est[done] - ex[done]).max() <= 1e-12  # exact points: equal up to summation order
            estimated = ~done
            inside += int((np.abs(est - ex) <= 1.96 * se)[estimated].sum())
            count += int(estimated.sum())
            tol = p["splits"][split]["tolerance"]
            assert (1.96 * se[estimated] <= tol * (1 + 1e-12)).all()
            assert int(res.examples_used[split].sum()) == p["splits"][split]["example_evaluations"]
            # the error is estimated from the same sample, with its own error bars
            assert (res.stderr[split]["error"][estimated] > 0).any()
    print(f"coverage {inside / count:.3f} over {count} estimated points")
    assert count >= 250 and inside / count >= 0.93


def test_take_all_stratum_covers_the_skewed_path(pair):
    """The path between the two independently trained solutions, on the 400-example test split: its
    residuals are very skewed (a few examples carry most of them) and without the take-all stratum
    the intervals cover the exact value at about 91% of the estimated points; with it (the default)
    at >= 93%, at less cost at rtol 0.01."""
    a, b, _, (xt, yt) = pair
    kw = dict(point_a=a, point_b=b, num=41)
    exact = linear_path(a, (xt, yt), **kw).metrics["train"]["loss"]
    for rtol in (0.01, 0.02):
        cov, used = {}, {}
        for take in (0.0, 0.1):
            inside, count, used[take] = 0, 0, 0
            for seed in range(16):
                prec = Precision(rtol=rtol, seed=seed, refine=False, simultaneous=False, take_all=take)
                res = linear_path(a, (xt, yt), precision=prec, **kw)
                p = res.meta["precision"]
                assert p["take_all"] == take and p["splits"]["train"]["take_all_examples"] == (40 if take else 0)
                est, se, estimated = res.metrics["train"]["loss"], res.stderr["train"]["loss"], ~res.exact["train"]
                inside += int((np.abs(est - exact) <= 1.96 * se)[estimated].sum())
                count += int(estimated.sum())
                used[take] += p["example_evaluations"]
                if take:  # the take-all examples are evaluated at every estimated point
                    assert (res.examples_used["train"][estimated] >= 40 + 128).all()
            cov[take] = inside / count
        print(f"rtol {rtol}: coverage {cov[0.0]:.3f} -> {cov[0.1]:.3f}; evaluations {used[0.0]} -> {used[0.1]}")
        assert cov[0.0] < 0.92 and cov[0.1] >= 0.93
        assert used[0.1] < used[0.0]


def test_default_settings_save_work_and_keep_the_tolerance(pair):
    """Coarse to fine (the default): every error within the tolerance of the whole path; barriers close."""
    exact = _path(pair)
    res = _path(pair, Precision(rtol=0.02))
    p = res.meta["precision"]
    assert p["savings"] > 2 and p["example_evaluations"] * p["savings"] == pytest.approx(p["exact_equivalent"])
    for split in ("train", "test"):
        ex = exact.metrics[split]["loss"]
        err = np.abs(res.metrics[split]["loss"] - ex)
        assert err.max() <= 0.02 * (ex.max() - ex.min())
        assert res.exact[split][[0, 8, 16, 24, 32, 40]].all() and res.interpolated[split].any()
        assert (res.examples_used[split][res.interpolated[split]] == 0).all()
    assert abs(res.barrier("loss", split="train") - exact.barrier("loss", split="train")) <= 0.02 * exact.barrier(
        "loss", split="train")
    assert res.summary()["precision"] == p


def test_same_seed_same_path_bit_for_bit(pair):
    prec = Precision(rtol=0.02, seed=3, coarse=4)
    a, b = _path(pair, prec, num=21), _path(pair, prec, num=21)
    c = _path(pair, Precision(rtol=0.02, seed=4, coarse=4), num=21)
    assert _same(a, b) and a.meta["precision"] == b.meta["precision"] and a.barriers == b.barriers
    assert not _same(a, c)


def test_precision_none_is_the_exact_path(pair, tmp_path):
    default, none = _path(pair, num=9, strategy="loop"), _path(pair, None, num=9, strategy="loop")
    assert _same(default, none) and default.barriers == none.barriers
    for r in (default, none):
        assert r.arrays == {} and "precision" not in r.meta and "precision" not in r.summary()
        for split, n in (("train", 1500), ("test", 400)):
            assert r.exact[split].all() and not r.interpolated[split].any()
            assert (r.stderr[split]["loss"] == 0).all() and (r.examples_used[split] == n).all()
    npz = none.save(tmp_path / "p")
    with np.load(npz) as z:
        assert set(z.files) == {"alphas", "train__loss", "train__error", "test__loss", "test__error"}
    assert "adaptive_arrays" not in json.loads((tmp_path / "p.json").read_text())


def test_tiny_tolerance_gives_the_exact_path(pair):
    exact = _path(pair, num=11)
    res = _path(pair, Precision(atol=1e-12), num=11)
    for split, n in (("train", 1500), ("test", 400)):
        assert res.exact[split].all() and (res.examples_used[split] == n).all()
        assert (res.stderr[split]["loss"] == 0).all()
        for m in ("loss", "error"):
            np.testing.assert_allclose(res.metrics[split][m], exact.metrics[split][m], rtol=0, atol=1e-12)
    assert res.meta["precision"]["savings"] == pytest.approx(1.0)


def test_adaptive_path_round_trips(pair, tmp_path):
    res = _path(pair, Precision(rtol=0.05), num=17)
    res.save(tmp_path / "a")
    back = PathResult.load(tmp_path / "a")
    assert _same(res, back) and back.meta["precision"] == json.loads(json.dumps(res.meta["precision"]))
    assert back.arrays["train"]["examples_used"].dtype == np.int64 and back.arrays["test"]["exact"].dtype == bool
    for split in ("train", "test"):
        np.testing.assert_array_equal(back.stderr[split]["loss"], res.stderr[split]["loss"])


def test_extended_line_keeps_both_endpoints_exact(pair):
    a, b, data, _ = pair
    alphas = np.arange(-10, 31) * 0.05  # -0.5 .. 1.5: a = 1 is index 30, not on the every-8th lattice
    res = linear_path(a, data, point_a=a, point_b=b, alphas=alphas, precision=Precision(rtol=0.05))
    exact = linear_path(a, data, point_a=a, point_b=b, alphas=alphas)
    i0, i1 = int(np.flatnonzero(alphas == 0)[0]), int(np.flatnonzero(alphas == 1)[0])
    assert res.exact["train"][[0, i0, i1, -1]].all()
    np.testing.assert_allclose(res.metrics["train"]["loss"][[i0, i1]], exact.metrics["train"]["loss"][[i0, i1]],
                               rtol=0, atol=1e-12)


def test_error_as_the_governed_metric(pair):
    res = _path(pair, Precision(rtol=0.05, metric="error", refine=False), num=17, splits=("train",))
    p = res.meta["precision"]
    assert p["metric"] == "error" and list(res.metrics) == ["train"] and list(p["splits"]) == ["train"]
    est = ~res.exact["train"]
    assert (1.96 * res.stderr["train"]["error"][est] <= p["splits"]["train"]["tolerance"] * (1 + 1e-12)).all()


def test_batchnorm_needs_eval_mode():
    x, y = dataset(120)
    a, b = mlp(0, bn=True), mlp(1, bn=True)
    prec = Precision(rtol=0.1)
    with pytest.raises(LosslabError, match=r"bn='eval' \(on the command line --bn eval\)") as e:
        linear_path(a, (x, y), point_a=a, point_b=b, num=5, precision=prec)
    assert "\n" not in str(e.value)
    with pytest.raises(LosslabError, match="bn='eval'"):  # refused before any training
        train_curve(a, (x, y), point_a=a, point_b=b, epochs=10**6, precision=prec)
    res = linear_path(a, (x, y), point_a=a, point_b=b, num=5, bn="eval", precision=prec)
    assert res.meta["bn"] == "eval" and res.exact["train"][[0, -1]].all()


def test_trained_curve_evaluated_adaptively(pair):
    a, b, data, test = pair
    kw = dict(point_a=a, point_b=b, epochs=1, batch_size=256, num=25, test_data=test, seed=0)
    exact = train_curve(a, data, **kw)
    res = train_curve(a, data, precision=Precision(rtol=0.02), **kw)
    for split in ("train", "test"):
        ex = exact.path.metrics[split]["loss"]
        assert res.path.exact[split][[0, -1]].all()
        assert np.abs(res.path.metrics[split]["loss"] - ex).max() <= 0.02 * (ex.max() - ex.min())
    assert res.path.meta["precision"]["savings"] > 1 and res.path.meta["kind"] == "bezier"


def test_neb_test_split_adaptive_train_exact(pair):
    """AutoNEB: the train split is the last cycle's exact evaluation, the test split is adaptive."""
    from losslab.connect.neb import NEBCycle, neb_path

    a, b, data, test = pair
    kw = dict(point_a=a, point_b=b, test_data=test, batch_size=0, cycles=[NEBCycle(5, 0.01, 2, "equal")])
    exact = neb_path(a, data, **kw).path
    res = neb_path(a, data, precision=Precision(rtol=0.05, coarse=4), **kw).path
    p = res.meta["precision"]
    assert list(res.arrays) == ["test"] and list(p["splits"]) == ["test"] and "last cycle" in p["train"]
    assert p["exact_equivalent"] == res.alphas.size * 400 and p["savings"] > 1
    assert np.array_equal(res.metrics["train"]["loss"], exact.metrics["train"]["loss"]) and res.exact["train"].all()
    ex = exact.metrics["test"]["loss"]
    assert res.exact["test"][[0, -1]].all()
    assert np.abs(res.metrics["test"]["loss"] - ex).max() <= 0.05 * (ex.max() - ex.min())


# ---- the command line ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two zoo-MLP checkpoints (no training: a bare checkpoint with --model, evaluated on digits)."""
    from losslab import models

    d = tmp_path_factory.mktemp("ck")
    for seed in (0, 1):
        torch.manual_seed(seed)
        torch.save(models.build("mlp", input_shape=(64,), num_classes=10, width=8, depth=1).state_dict(), d / f"{seed}.pt")
    return d


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from losslab.cli.main import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


MODEL = ("--model", "mlp", "--model-kwargs", "width=8", "depth=1")


def test_cli_interpolate_rtol(checkpoints, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a bare checkpoint's default output directory is ./interpolations/<name>
    a, b = str(checkpoints / "0.pt"), str(checkpoints / "1.pt")
    base = ["interpolate", a, b, *MODEL, "--num", "33", "--no-progress", "--json"]
    code, out, err = _cli(capsys, *base, "--out", str(tmp_path / "exact"))
    assert code == 0, err
    exact = json.loads(out)
    code, out, err = _cli(capsys, *base, "--rtol", "0.05", "--out", str(tmp_path / "adaptive"))
    assert code == 0, err
    s = json.loads(out)
    p = s["precision"]
    assert "precision" not in exact and p["rtol"] == 0.05 and p["savings"] > 1
    assert p["exact_equivalent"] == 33 * (p["splits"]["train"]["n_examples"] + p["splits"]["test"]["n_examples"])
    assert p["example_evaluations"] == sum(s["train_examples_used"]) + sum(s["test_examples_used"])
    for split in ("train", "test"):
        ex, est = np.array(exact[f"{split}_loss"]), np.array(s[f"{split}_loss"])
        assert est[0] == pytest.approx(ex[0], abs=1e-12) and est[-1] == pytest.approx(ex[-1], abs=1e-12)
        assert np.abs(est - ex).max() <= 0.05 * (ex.max() - ex.min())
        assert len(s[f"{split}_loss_stderr"]) == 33 and s[f"{split}_loss_stderr"][0] == 0
    # by default the adaptive result has a directory of its own
    code, out, _ = _cli(capsys, *base[:-1], "--rtol", "0.05", "--json")
    assert code == 0 and "-adaptive-" in json.loads(out)["out"]


def test_cli_connect_rtol(checkpoints, tmp_path, capsys):
    a, b = str(checkpoints / "0.pt"), str(checkpoints / "1.pt")
    code, out, err = _cli(capsys, "connect", a, b, *MODEL, "--method", "linear", "bezier", "neb", "--num", "17",
                          "--curve-epochs", "1", "--curve-points", "17", "--neb-steps", "3", "--neb-cycles", "1",
                          "--rtol", "0.05", "--save", str(tmp_path / "res"), "--json")
    assert code == 0, err
    s = json.loads(out)
    p = s["precision"]
    assert p["paths"] == 3 and p["rtol"] == 0.05 and p["seed"] == 0
    per = [s["methods"][m]["precision"] for m in ("linear", "bezier", "neb")]
    assert p["example_evaluations"] == sum(q["example_evaluations"] for q in per) < p["exact_equivalent"]
    assert p["exact_equivalent"] == sum(q["exact_equivalent"] for q in per)
    saved = PathResult.load(tmp_path / "res" / "linear")
    assert saved.meta["precision"] == per[0] and "stderr__loss" in saved.arrays["train"]
    assert saved.exact["test"][[0, -1]].all()


@pytest.mark.parametrize("command", ["interpolate", "connect"])
@pytest.mark.parametrize("value", ["-1", "nan"])
def test_cli_bad_rtol_is_one_line(command, value, capsys, tmp_path):
    code, _, err = _cli(capsys, command, str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--rtol", value)
    assert code == 2 and err.startswith("losslab: error: precision rtol") and err.count("\n") == 1


def test_cli_batchnorm_needs_bn_eval(tmp_path, capsys):
    from losslab import models

    for seed in (0, 1):
        torch.manual_seed(seed)
        m = models.build("mlp", input_shape=(64,), num_classes=10, width=8, depth=1, norm="bn")
        torch.save(m.state_dict(), tmp_path / f"{seed}.pt")
    argv = [str(tmp_path / "0.pt"), str(tmp_path / "1.pt"), "--model", "mlp", "--model-kwargs", "width=8", "depth=1",
            "norm=bn", "--rtol", "0.05"]
    for command in ("interpolate", "connect"):
        code, _, err = _cli(capsys, command, *argv, "--out" if command == "interpolate" else "--num",
                            str(tmp_path / "o") if command == "interpolate" else "5")
        assert code == 2 and "--bn eval" in err and err.count("\n") == 1, err
    code, out, err = _cli(capsys, "interpolate", *argv, "--bn", "eval", "--num", "9", "--out", str(tmp_path / "o"),
                          "--no-progress", "--json")
    assert code == 0, err
    assert json.loads(out)["precision"]["example_evaluations"] > 0
