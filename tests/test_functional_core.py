"""The functional core (losslab._functional): one shell, one data normalizer, one default loss, one
definition of Point/LossFn, and the modules that use them giving the same numbers as before."""
from __future__ import annotations

import doctest
import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import losslab._functional as FC
from losslab.errors import LosslabError


def tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Dropout(0.5), nn.Linear(5, 2)).double()
    with torch.no_grad():  # non-trivial running statistics
        model[1].running_mean.copy_(torch.randn(5, generator=g, dtype=torch.float64))
        model[1].running_var.copy_(torch.rand(5, generator=g, dtype=torch.float64) + 0.5)
    x = torch.randn(12, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (12,), generator=g)
    return model, x, y


def test_shell_is_meta_eval_and_matches_a_plain_forward_bit_for_bit():
    model, x, y = tiny()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    shell = FC.make_shell(model)
    assert all(t.device.type == "meta" for t in shell.parameters()) and not shell.training
    fn = FC.Functional(model)
    out = fn(fn.point(None), x)
    model.eval()
    assert torch.equal(out, model(x))  # eval mode: dropout off, stored BatchNorm statistics
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # untouched
    kept = FC.make_shell(model.train(), keep_mode=True)
    assert kept.training and kept[1].training


def test_functional_point_checks_keys_and_shapes():
    model, _, _ = tiny()
    fn = FC.Functional(model)
    w = {"0.weight": torch.zeros(5, 3, dtype=torch.float64)}
    p = fn.point(w)
    assert torch.equal(p["0.weight"], w["0.weight"]) and torch.equal(p["4.bias"], model[4].bias.detach())
    with pytest.raises(LosslabError, match="lacks"):
        fn.point({"nope": torch.zeros(1)})
    with pytest.raises(LosslabError, match="differs in shape"):
        fn.point({"0.weight": torch.zeros(3, 5)})


def test_default_loss_and_resolver_match_the_old_definitions():
    g = torch.Generator().manual_seed(1)
    out = torch.randn(7, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (7,), generator=g)
    targets = torch.randn(7, 4, generator=g, dtype=torch.float64)
    assert FC.default_loss(labels) is F.cross_entropy
    assert FC.default_loss(num_classes=10) is F.cross_entropy
    assert torch.equal(FC.default_loss(targets)(out, targets), F.mse_loss(out, targets))
    assert torch.equal(FC.default_loss(num_classes=0)(out.reshape(-1), targets), F.mse_loss(out, targets))
    assert FC.resolve_loss("cross_entropy") is F.cross_entropy
    assert torch.equal(FC.resolve_loss("mse")(out, targets), ((out - targets) ** 2).mean())
    assert FC.resolve_loss(None, labels) is F.cross_entropy
    my = lambda o, t: o.sum()  # noqa: E731
    assert FC.resolve_loss(my) is my
    with pytest.raises(LosslabError, match="unknown loss"):
        FC.resolve_loss("hinge")
    # the old entry points are the core's
    from losslab.probes._common import default_loss
    from losslab.train import loss_fn_for

    assert default_loss is FC.default_loss
    assert loss_fn_for(3) is F.cross_entropy
    assert torch.equal(loss_fn_for(0)(out, targets), F.mse_loss(out, targets))


def test_as_xy_normalizes_every_kind_of_data():
    from losslab.data._base import Bundle, Split

    _, x, y = tiny()
    s = Split(x, y)
    for data in ((x, y), [x, y], s):
        got = FC.as_xy(data)
        assert got[0] is x and got[1] is y
    bundle = Bundle(train=s, test=Split(x[:4], y[:4]), num_classes=2, input_shape=(3,), name="t")
    assert FC.as_xy(bundle, "test")[0].shape[0] == 4
    with pytest.raises(LosslabError, match="split must be"):
        FC.as_xy(bundle, "val")
    with pytest.raises(LosslabError, match="Split or an"):
        FC.as_xy(bundle, None)  # Bundles refused where a split must be explicit
    with pytest.raises(LosslabError, match="x has 12 examples but y has 11"):
        FC.as_xy((x, y[:11]))
    with pytest.raises(LosslabError, match="empty"):
        FC.as_xy((x[:0], y[:0]))
    assert FC.as_xy((x[:0], y[:0]), allow_empty=True)[0].shape[0] == 0
    bad = x.clone()
    bad[4, 1] = float("nan")
    with pytest.raises(LosslabError, match="x holds 1 non-finite value.*example 4"):
        FC.as_xy((bad, y), check_finite=True)


def test_evaluator_problem_and_probes_equal_a_plain_forward():
    """The evaluator's loss, the curvature Problem's loss and a probe-shell forward equal the plain
    float64 forward of the model in eval mode (the old paths' values)."""
    from losslab.curvature._problem import Problem, as_batches
    from losslab.evaluate import Evaluator

    model, x, y = tiny()
    model.eval()
    with torch.no_grad():
        ref = float(F.cross_entropy(model(x), y))
    ev = Evaluator(model, (x, y), bn="eval", strategy="loop", cache_mb=None)
    assert ev.evaluate({})["loss"] == pytest.approx(ref, rel=1e-14, abs=0)
    prob = Problem(model, F.cross_entropy, (x, y))
    assert prob.loss() == pytest.approx(ref, rel=1e-14, abs=0)
    assert [b[0].shape[0] for b in as_batches((x, y), 5)] == [5, 5, 2]
    # Problem follows the model's modes at construction, as the old forward on the model itself did
    model.train()
    torch.manual_seed(3)
    with torch.no_grad():
        want = float(F.cross_entropy(torch.func.functional_call(model, dict(model.named_parameters()), (x,)), y))
    torch.manual_seed(3)
    assert Problem(model, F.cross_entropy, (x, y)).loss() == pytest.approx(want, rel=1e-14, abs=0)


def test_one_definition_of_point_lossfn_shell_and_forward_ad():
    import losslab.connect.curves as curves
    import losslab.connect.paths as paths
    import losslab.curvature._common as cc
    import losslab.curvature._problem as cp
    import losslab.evaluate as ev
    import losslab.params as params
    import losslab.probes._common as pc
    import losslab.surface as surface

    for mod in (params, curves, paths, surface, ev, pc):
        assert mod.Point is FC.Point, mod.__name__
    for mod in (ev, pc, cp):
        assert mod.LossFn is FC.LossFn, mod.__name__
    assert cc.ensure_forward_ad is FC.ensure_forward_ad is pc.ensure_forward_ad
    assert ev._make_shell is FC.make_shell and pc.Functional is FC.Functional


def test_no_runs_train_import_circle():
    import ast
    from pathlib import Path

    import losslab.runs as runs
    import losslab.train as train

    tree = ast.parse(Path(runs.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "train" not in imported and not any(m and m.endswith(".train") for m in imported)
    assert train.build_bundle is runs.build_bundle and train.build_model is runs.build_model


@pytest.mark.parametrize("name", ["_evaluator", "_memory", "_first_layer", "_sources", "_metrics"])
def test_evaluate_package_docstrings_run(name):
    """The doctests of the evaluate package's modules (``losslab.evaluate``'s own are run by test_evaluate)."""
    mod = importlib.import_module(f"losslab.evaluate.{name}")
    res = doctest.testmod(mod, raise_on_error=False)
    assert res.failed == 0
    if name == "_evaluator":
        assert res.attempted > 0


def test_evaluate_package_files_are_small():
    from pathlib import Path

    import losslab.evaluate as ev

    for f in Path(ev.__file__).parent.glob("*.py"):
        assert len(f.read_text().splitlines()) < 800, f.name
