"""House check (issue 17): one positional convention across the public API.

Every public function or class of the analysis packages that takes a model and data has the signature
``(model, data, *, loss=..., point=..., ...)``: the model first (``model``, or ``model_factory`` for
functions that build one model per seed), the data second (``data``: a Split, a Bundle, an ``(x, y)``
pair; ``x`` where only inputs are read), everything else keyword-only; two endpoints are
``point_a=``/``point_b=``. The API is walked with :mod:`inspect`, so a new function is checked
without being listed here. A call in the old orders raises a one-line ``LosslabError`` naming the new
one (``losslab._functional.model_then_data``), checked on a tiny float64 model.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
import torch
from torch import nn

from losslab.errors import LosslabError

PACKAGES = ["losslab.curvature", "losslab.probes", "losslab.connect", "losslab.subspace", "losslab.interpolation",
            "losslab.surface", "losslab.evaluate", "losslab.directions",
            "losslab.distributed"]
MODEL_NAMES = {"model", "model_a", "model_factory"}
# names under which data reached these functions before issue 17 (so that the old API is in scope too)
DATA_NAMES = {"data", "x", "x1", "train_data", "check_inputs"}
KEYWORD_ONLY = {"loss", "point", "point_a", "point_b", "a", "b"}


def _public_api() -> dict[str, object]:
    """``module.name -> object`` for the packages' ``__all__`` and their public submodules' names."""
    found: dict[str, object] = {}
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        modules = [pkg]
        if hasattr(pkg, "__path__"):
            modules += [importlib.import_module(m.name) for m in pkgutil.iter_modules(pkg.__path__, pkg_name + ".")
                        if not m.name.rsplit(".", 1)[-1].startswith("_")]
        for mod in modules:
            names = set(getattr(mod, "__all__", ())) | {
                n for n, v in vars(mod).items()
                if not n.startswith("_") and getattr(v, "__module__", None) == mod.__name__}
            for n in sorted(names):
                obj = getattr(mod, n)
                if inspect.isfunction(obj) or inspect.isclass(obj):
                    found.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    return found


def _params(obj: object) -> list[inspect.Parameter]:
    return list(inspect.signature(obj).parameters.values())


def _takes_model_and_data(obj: object) -> bool:
    """A model parameter that can be given by position, and data. (A model that is only an optional
    keyword input, as in ``directions.build(kind, weights, *, model=None, ...)``, which dispatches over
    direction kinds, does not make a function one that measures a model on data.)"""
    try:
        ps = _params(obj)
    except (TypeError, ValueError):
        return False
    models = [p for p in ps if p.name in MODEL_NAMES and p.kind != p.KEYWORD_ONLY]
    return bool(models) and any(p.name in DATA_NAMES for p in ps)


IN_SCOPE = {k: v for k, v in _public_api().items() if _takes_model_and_data(v)}


def test_the_walk_finds_the_families():
    short = {k.rsplit(".", 1)[-1] for k in IN_SCOPE}
    expected = {"HessianOperator", "GGNOperator", "GradientCovarianceOperator", "gradient", "epsilon_sharpness",
                "adaptive_sharpness", "basin_width", "hessian_analysis", "per_example_grads", "stiffness",
                "gradient_noise", "jacobian", "empirical_ntk", "ntk_matvec", "kernel_velocity", "train_linearized",
                "predictions", "align", "linear_path", "evaluate_path", "train_curve", "neb_path", "ModelEnergy",
                "train_subspace", "train_full", "radial_profile", "intrinsic_dimension", "restricted_hessian",
                "goldilocks", "line", "plane", "Evaluator", "hessian_directions", "distributed_plane",
                "distributed_line"}
    assert expected <= short, f"not found by the walk: {sorted(expected - short)}"


@pytest.mark.parametrize("name", sorted(IN_SCOPE))
def test_model_then_data_then_keywords(name):
    obj = IN_SCOPE[name]
    ps = _params(obj)
    positional = [p.name for p in ps if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert positional[:1] and positional[0] in MODEL_NAMES, f"{name}{inspect.signature(obj)}: model first"
    assert positional[1:2] in (["data"], ["x"]), f"{name}{inspect.signature(obj)}: data second"
    assert len(positional) == 2, f"{name}: only model and data are positional, not {positional[2:]}"
    assert not any(p.kind == p.VAR_POSITIONAL for p in ps), f"{name}: no *args"
    for p in ps:
        if p.name in KEYWORD_ONLY:
            assert p.kind == p.KEYWORD_ONLY, f"{name}: {p.name} must be keyword-only"
    assert "loss_fn" not in {p.name for p in ps}, f"{name}: the loss is loss=, not loss_fn="
    assert not ({"a", "b"} & {p.name for p in ps}), f"{name}: endpoints are point_a=/point_b="
    target = obj.__init__ if inspect.isclass(obj) else obj
    order = getattr(target, "argument_order", None)
    assert order is not None, f"{name} is not checked by model_then_data"
    assert order.startswith(f"{obj.__qualname__}({positional[0]}, {positional[1]}, *, ")


@pytest.fixture
def tiny():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x = torch.randn(12, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (12,), generator=g)
    return model, (x, y)


def _raises_order(call, *fragments):
    with pytest.raises(LosslabError) as e:
        call()
    msg = str(e.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, msg
    return msg


def test_old_orders_name_the_new_one(tiny):
    from losslab import connect, curvature, probes, subspace
    from losslab import params as P

    model, data = tiny
    loss = nn.CrossEntropyLoss()
    point = P.get_point(model)
    # the curvature family's old (model, loss_fn, data)
    _raises_order(lambda: curvature.HessianOperator(model, loss, data),
                  "HessianOperator(model, data, *, loss=..., point=..., ...)", "3 positional arguments")
    _raises_order(lambda: curvature.gradient(model, loss, data=data), "data is a loss (CrossEntropyLoss)")
    _raises_order(lambda: curvature.basin_width(model, "cross_entropy", data=data), "data is a loss")
    _raises_order(lambda: curvature.HessianOperator(model, data, loss=data), "loss is data (tuple)")
    # probes' old (model, point, data)
    _raises_order(lambda: probes.stiffness(model, None, data), "stiffness(model, data, *, point=..., loss=..., ...)")
    _raises_order(lambda: probes.jacobian(model, point), "jacobian(model, x, *, point=..., ...)",
                  "x is a point")
    _raises_order(lambda: probes.per_example_grads(model, point, *data), "per_example_grads(model, data, *")
    # connect's old (model, point_a, point_b, data)
    _raises_order(lambda: connect.linear_path(model, point, point, data),
                  "linear_path(model, data, *, point_a=..., point_b=..., loss=..., ...)")
    _raises_order(lambda: connect.align(model, point, point, check_inputs=data[0]), "align(model, x, *")
    # subspace's old third positional
    _raises_order(lambda: subspace.train_subspace(model, data, 2), "train_subspace(model, data, *")


def test_new_order_computes_what_the_old_one_did(tiny):
    """The order changed, the numbers did not: exact references on the tiny float64 model."""
    from losslab import connect, curvature, probes
    from losslab import params as P

    model, (x, y) = tiny
    loss = nn.CrossEntropyLoss()
    theta = P.get_point(model)

    def risk(flat):
        return loss(torch.func.functional_call(model, P.unflatten(flat, theta), (x,)), y)

    dense = torch.func.jacrev(torch.func.jacrev(risk))(P.flatten(theta))  # reverse-over-reverse
    torch.testing.assert_close(curvature.HessianOperator(model, (x, y), loss=loss).to_dense(), dense,
                               rtol=1e-12, atol=1e-12)
    rows = [torch.func.grad(lambda f, i=i: loss(torch.func.functional_call(
        model, P.unflatten(f, theta), (x[i:i + 1],)), y[i:i + 1]))(P.flatten(theta)) for i in range(len(x))]
    torch.testing.assert_close(probes.per_example_grads(model, (x, y), loss=loss), torch.stack(rows),
                               rtol=1e-12, atol=1e-12)
    shifted = {k: v + 0.1 for k, v in theta.items()}
    path = connect.linear_path(model, (x, y), point_a=theta, point_b=shifted, alphas=[0.0, 0.5, 1.0])
    mid = {k: 0.5 * (theta[k] + shifted[k]) for k in theta}
    expect = float(loss(torch.func.functional_call(model, mid, (x,)), y))
    assert path.metrics["train"]["loss"][1] == pytest.approx(expect, rel=1e-12)
