"""Tests for losslab.models: zoo shapes, deterministic init, registry, user factories, checkpoints."""
from __future__ import annotations

import doctest
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from losslab import models, params
from losslab.errors import LosslabError
from losslab.models import _checkpoint, _init, _registry, _zoo

DIGITS = (1, 8, 8)
MNIST1D = (40,)
SHAPES = [DIGITS, MNIST1D]
SRC = Path(__file__).resolve().parents[1] / "src"

# Small options so the tests stay fast.
SMALL = {
    "mlp": {"width": 16},
    "cnn1d": {"channels": 8},
    "cnn2d": {"channels": 8},
    "resnet": {"width": 8, "depth": 2},
}


def small(name: str, shape: tuple[int, ...], seed: int = 0, **kw) -> nn.Module:
    return models.build(name, input_shape=shape, num_classes=10, seed=seed, **{**SMALL[name], **kw})


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------------------- zoo
def test_builtin_names():
    assert {"mlp", "cnn1d", "cnn2d", "resnet"} <= set(models.available())
    assert models.available() == sorted(models.available())


@pytest.mark.parametrize("shape", SHAPES, ids=["digits", "mnist1d"])
@pytest.mark.parametrize("name", ["mlp", "cnn1d", "cnn2d", "resnet"])
def test_output_shapes_default_and_small(name, shape):
    for kw in ({}, SMALL[name]):
        model = models.build(name, input_shape=shape, num_classes=10, seed=0, **kw)
        out = model(torch.randn(5, *shape))
        assert out.shape == (5, 10)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_default_hyperparameters():
    assert models.defaults("mlp") == {"width": 256, "depth": 2, "activation": "relu", "norm": None}
    assert models.defaults("resnet")["norm"] == "bn" and models.defaults("resnet")["skip"] is True
    # The survey's pilot MLP 40-512-512-10.
    pilot = models.build("mlp", input_shape=MNIST1D, num_classes=10, seed=0, width=512)
    assert models.count_parameters(pilot) == (40 * 512 + 512) + (512 * 512 + 512) + (512 * 10 + 10)
    assert [n for n, _ in pilot.named_children()] == ["flatten", "fc0", "act0", "fc1", "act1", "head"]


def test_other_input_layouts():
    x = torch.randn(3, 2, 40)  # (C, L) for 1-D models
    for name in ("cnn1d", "resnet"):
        assert small(name, (2, 40))(x).shape == (3, 10)
    assert small("cnn2d", (8, 8))(torch.randn(3, 8, 8)).shape == (3, 10)  # (H, W): channel added
    assert small("cnn1d", (3, 4, 5))(torch.randn(2, 3, 4, 5)).shape == (2, 10)
    r = small("resnet", (2, 8, 8), stages=2, pool="flatten")
    assert r(torch.randn(2, 2, 8, 8)).shape == (2, 10)
    assert isinstance(r.block1.shortcut, nn.Sequential)  # projection shortcut at the stage change
    with pytest.raises(LosslabError, match="resnet expects input_shape"):
        small("resnet", (1, 2, 3, 4))


def test_layer_order_is_regular():
    m = small("cnn1d", MNIST1D, norm="bn")
    assert [n for n, _ in m.named_children()] == [
        "reshape", "conv0", "norm0", "act0", "conv1", "norm1", "act1", "conv2", "norm2", "act2", "flatten", "head"
    ]
    assert m.conv0.bias is None and m.head.bias is not None  # no bias right before BatchNorm
    r = small("resnet", MNIST1D, norm=None)
    assert [n for n, _ in r.named_children()] == ["reshape", "conv0", "act0", "block0", "block1", "pool", "flatten", "head"]
    assert [n for n, _ in r.block0.named_children()] == ["conv1", "norm1", "act1", "conv2", "norm2", "shortcut", "act2"]


@pytest.mark.parametrize("norm", [None, "bn", "ln"])
@pytest.mark.parametrize("name", ["mlp", "cnn1d", "cnn2d", "resnet"])
def test_every_norm_forward_backward(name, norm):
    shape = DIGITS if name == "cnn2d" else MNIST1D
    model = small(name, shape, norm=norm)
    loss = nn.functional.cross_entropy(model(torch.randn(6, *shape)), torch.arange(6) % 10)
    loss.backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    model.eval()
    assert torch.isfinite(model(torch.randn(2, *shape))).all()


@pytest.mark.parametrize("activation", list(models.ACTIVATIONS))
def test_activations(activation):
    for name in ("mlp", "cnn1d", "resnet"):
        assert small(name, MNIST1D, activation=activation)(torch.randn(2, 40)).shape == (2, 10)


def test_float64():
    model = small("resnet", DIGITS).double()
    assert model(torch.randn(2, *DIGITS, dtype=torch.float64)).dtype == torch.float64


# ---------------------------------------------------------------------------------------- skip
@pytest.mark.parametrize("shape", SHAPES, ids=["digits", "mnist1d"])
@pytest.mark.parametrize("stages", [1, 2])
def test_skip_changes_only_the_forward(shape, stages):
    a = small("resnet", shape, seed=3, stages=stages, skip=True).eval()
    b = small("resnet", shape, seed=3, stages=stages, skip=False).eval()
    assert [(n, p.shape) for n, p in a.named_parameters()] == [(n, p.shape) for n, p in b.named_parameters()]
    assert same_state(a, b)  # same seed -> same weights: the two variants are directly comparable
    x = torch.randn(4, *shape)
    assert not torch.allclose(a(x), b(x))
    # Switching the flag on the same weights reproduces the other variant.
    for m in a.modules():
        if isinstance(m, models.ResidualBlock):
            m.skip = False
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------- init
@pytest.mark.parametrize("name", ["mlp", "cnn1d", "cnn2d", "resnet"])
def test_seed_determinism(name):
    shape = DIGITS if name == "cnn2d" else MNIST1D
    a, b, c = small(name, shape, seed=5), small(name, shape, seed=5), small(name, shape, seed=6)
    assert same_state(a, b)
    assert not same_state(a, c)
    g = models.build(name, input_shape=shape, num_classes=10, generator=torch.Generator().manual_seed(5), **SMALL[name])
    assert same_state(a, g)


def test_build_leaves_global_rng_alone():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    for name in ("mlp", "cnn1d", "resnet"):
        small(name, MNIST1D, seed=1, norm="bn")
    assert torch.equal(torch.random.get_rng_state(), state)


def test_unseeded_build_follows_torch_manual_seed():
    torch.manual_seed(7)
    a = models.build("mlp", input_shape=MNIST1D, num_classes=3, width=4)
    torch.manual_seed(7)
    b = models.build("mlp", input_shape=MNIST1D, num_classes=3, width=4)
    c = models.build("mlp", input_shape=MNIST1D, num_classes=3, width=4)
    assert same_state(a, b) and not same_state(b, c)


def test_same_weights_in_a_fresh_process():
    code = textwrap.dedent(
        """
        import torch
        torch.manual_seed(999)
        from losslab import models
        m = models.build("resnet", input_shape=(40,), num_classes=10, seed=11, width=8, depth=2)
        print(repr(sum(float(v.double().sum()) for v in m.state_dict().values())))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    here = small("resnet", MNIST1D, seed=11)
    assert float(out.stdout.strip()) == sum(float(v.double().sum()) for v in here.state_dict().values())


def test_init_follows_pytorch_default_distribution():
    model = models.build("mlp", input_shape=(300,), num_classes=10, seed=0, width=200, norm="ln")
    bound = 1 / math.sqrt(300)
    w, b = model.fc0.weight, model.fc0.bias
    assert w.abs().max() <= bound and b.abs().max() <= bound
    assert abs(w.std().item() - bound / math.sqrt(3)) < 0.02 * bound  # U(-bound, bound)
    assert torch.equal(model.norm0.weight, torch.ones(200)) and torch.equal(model.norm0.bias, torch.zeros(200))
    conv = models.build("cnn1d", input_shape=MNIST1D, num_classes=10, seed=0).conv1  # fan_in = 32 * 5
    assert conv.weight.abs().max() <= 1 / math.sqrt(160)


def test_init_parameters_norm_stats_and_fallback():
    class Scale(nn.Module):  # parameters without reset_parameters: left as they are
        def __init__(self) -> None:
            super().__init__()
            self.s = nn.Parameter(torch.full((3,), 2.0))

    def make() -> nn.Module:
        return nn.Sequential(nn.Embedding(5, 3), nn.BatchNorm1d(3), Scale())

    a, b = make(), make()
    a[1].running_mean.fill_(4.0)
    with torch.no_grad():
        a[2].s.mul_(3)
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    models.init_parameters(a, generator=torch.Generator().manual_seed(1))
    models.init_parameters(b, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a[0].weight, b[0].weight)  # Embedding.reset_parameters under a seeded fork
    assert torch.equal(a[1].running_mean, torch.zeros(3))
    assert torch.equal(a[2].s, torch.full((3,), 6.0))
    with pytest.raises(LosslabError, match="CPU torch.Generator"):
        models.init_parameters(a, generator=1)  # type: ignore[arg-type]


def test_init_rejects_lazy_modules():
    with pytest.raises(LosslabError, match="lazy"):
        models.init_parameters(nn.LazyLinear(3), generator=torch.Generator())


# ---------------------------------------------------------------------------------------- functional use
@pytest.mark.parametrize("name", ["mlp", "cnn1d", "cnn2d", "resnet"])
def test_functional_call_and_vmap_match_module(name):
    shape = DIGITS if name == "cnn2d" else MNIST1D
    model = small(name, shape, norm="bn" if name == "resnet" else None).eval()
    x = torch.randn(4, *shape)
    p = params.get_point(model)
    torch.testing.assert_close(params.call(model, p, x), model(x), rtol=0, atol=0)
    other = params.get_point(small(name, shape, seed=9, norm="bn" if name == "resnet" else None))
    stacked = params.stack([p, other])
    with torch.inference_mode():
        batched = torch.vmap(lambda q: params.call(model, q, x))(stacked)
        torch.testing.assert_close(batched[0], model(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(batched[1], params.call(model, other, x), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------- registry
def test_registry_errors():
    with pytest.raises(LosslabError, match=r"unknown model 'vgg'.*cnn1d, cnn2d, mlp, resnet"):
        models.build("vgg", input_shape=MNIST1D, num_classes=10)
    with pytest.raises(LosslabError, match=r"unknown option\(s\) hidden, widht for model 'mlp'; allowed: width, depth"):
        models.build("mlp", input_shape=MNIST1D, num_classes=10, widht=3, hidden=2)
    with pytest.raises(LosslabError, match="either seed or generator"):
        models.build("mlp", input_shape=MNIST1D, num_classes=10, seed=0, generator=torch.Generator())
    bad = [
        ("mlp", {"norm": "batch"}, "norm must be one of"),
        ("mlp", {"activation": "swish"}, "activation must be one of"),
        ("mlp", {"width": 0}, "width must be an integer >= 1"),
        ("cnn1d", {"depth": 0}, "depth must be an integer >= 1"),
        ("cnn1d", {"pool": "max"}, "pool must be one of"),
        ("resnet", {"kernel_size": 4}, "odd kernel_size"),
        ("resnet", {"stages": 3, "depth": 2}, "stages"),
        ("resnet", {"skip": "no"}, "skip must be"),
    ]
    for name, kw, msg in bad:
        with pytest.raises(LosslabError, match=msg):
            models.build(name, input_shape=MNIST1D, num_classes=10, seed=0, **kw)
    for shape in [(), (0,), (4.0,), "40"]:
        with pytest.raises(LosslabError, match="input_shape"):
            models.build("mlp", input_shape=shape, num_classes=10, seed=0)  # type: ignore[arg-type]
    with pytest.raises(LosslabError, match="num_classes"):
        models.build("mlp", input_shape=MNIST1D, num_classes=0, seed=0)
    with pytest.raises(LosslabError, match="cnn2d expects"):
        models.build("cnn2d", input_shape=(2, 3, 4, 5), num_classes=10, seed=0)


def test_register(monkeypatch):
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))

    @models.register("tiny")
    def tiny(*, input_shape, num_classes, hidden: int = 3):
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), hidden), nn.Linear(hidden, num_classes))

    assert "tiny" in models.available()
    assert models.defaults("tiny") == {"hidden": 3}
    m = models.build("tiny", input_shape=(2, 3), num_classes=4, seed=0, hidden=5)
    assert m(torch.zeros(1, 2, 3)).shape == (1, 4)
    with pytest.raises(LosslabError, match="already registered"):
        models.register("tiny")(lambda **kw: nn.Linear(1, 1))
    with pytest.raises(LosslabError, match="without ':'"):
        models.register("a:b")
    models.register("notmodule")(lambda **kw: 3)
    with pytest.raises(LosslabError, match="returned int, not an nn.Module"):
        models.build("notmodule", input_shape=(1,), num_classes=1, seed=0)


def test_load_factory(tmp_path, monkeypatch):
    (tmp_path / "my_nets.py").write_text(textwrap.dedent(
        """
        import torch
        from torch import nn

        def net(*, input_shape, num_classes, hidden=4):
            return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], hidden), nn.Tanh(), nn.Linear(hidden, num_classes))

        def bare(width=2):
            return nn.Linear(width, 1)

        class Zoo:
            @staticmethod
            def make(*, input_shape, num_classes):
                return nn.Linear(input_shape[0], num_classes)

        NOT_CALLABLE = 3
        """
    ))
    (tmp_path / "broken_nets.py").write_text("import not_a_real_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    factory = models.load_factory("my_nets:net")
    assert factory(input_shape=(6,), num_classes=2)(torch.zeros(1, 6)).shape == (1, 2)
    assert models.load_factory("my_nets:Zoo.make")(input_shape=(3,), num_classes=2).out_features == 2
    # build() accepts specs: same seeding and option checking as built-ins.
    a = models.build("my_nets:net", input_shape=(6,), num_classes=2, seed=1, hidden=7)
    b = models.build("my_nets:net", input_shape=(6,), num_classes=2, seed=1, hidden=7)
    assert same_state(a, b) and a[1].out_features == 7
    assert models.build("my_nets:bare", input_shape=(9,), num_classes=9, seed=0, width=3).in_features == 3
    with pytest.raises(LosslabError, match="unknown option"):
        models.build("my_nets:net", input_shape=(6,), num_classes=2, seed=1, depth=2)
    errors = [
        ("no_such_module_qq:net", "cannot import 'no_such_module_qq' for model factory 'no_such_module_qq:net'"),
        ("broken_nets:net", "broken_nets:net.*ModuleNotFoundError"),
        ("my_nets:missing", "has no attribute 'missing'"),
        ("my_nets:NOT_CALLABLE", "not callable"),
        ("my_nets.net", "must look like"),
        ("a:b:c", "must look like"),
    ]
    for spec, msg in errors:
        with pytest.raises(LosslabError, match=msg):
            models.load_factory(spec)


# ---------------------------------------------------------------------------------------- checkpoints
def test_load_state_dict_checked():
    model = small("mlp", MNIST1D)
    sd = small("mlp", MNIST1D, seed=4).state_dict()
    assert models.load_state_dict_checked(model, sd) is model
    assert same_state(model, small("mlp", MNIST1D, seed=4))
    bad = dict(sd)
    del bad["head.bias"]
    bad["extra.weight"] = torch.zeros(1)
    bad["fc0.weight"] = torch.zeros(3, 3)
    with pytest.raises(LosslabError) as info:
        models.load_state_dict_checked(model, bad)
    msg = str(info.value)
    assert "\n" not in msg
    assert "missing keys [head.bias]" in msg and "unexpected keys [extra.weight]" in msg
    assert "fc0.weight (3, 3) vs model (16, 40)" in msg
    ddp = {f"module.{k}": v for k, v in sd.items()}
    with pytest.raises(LosslabError, match="DataParallel"):
        models.load_state_dict_checked(model, ddp)


def test_long_key_lists_are_truncated():
    with pytest.raises(LosslabError, match=r"\.\.\. \(\d+ more\)"):
        models.load_state_dict_checked(small("resnet", MNIST1D), {})


def test_load_checkpoint(tmp_path):
    model = small("cnn1d", MNIST1D)
    sd = model.state_dict()
    for i, obj in enumerate([sd, {"model": sd, "step": 3}, {"state_dict": sd, "optimizer": {}}]):
        path = tmp_path / f"ck{i}.pt"
        torch.save(obj, path)
        loaded = models.load_checkpoint(path)
        assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint")
    with pytest.raises(LosslabError, match="cannot read checkpoint .*corrupt.pt"):
        models.load_checkpoint(corrupt)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((tmp_path / "ck0.pt").read_bytes()[:200])
    with pytest.raises(LosslabError, match="truncated.pt"):
        models.load_checkpoint(truncated)
    with pytest.raises(LosslabError, match="checkpoint not found: .*missing.pt"):
        models.load_checkpoint(tmp_path / "missing.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(LosslabError, match="list.pt holds no state dict"):
        models.load_checkpoint(tmp_path / "list.pt")
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")  # a pickled module needs unsafe loading
    with pytest.raises(LosslabError, match="cannot read checkpoint .*module.pt"):
        models.load_checkpoint(tmp_path / "module.pt")


def test_count_parameters():
    m = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    assert models.count_parameters(m) == 8 + 6
    m[0].weight.requires_grad_(False)
    assert models.count_parameters(m, trainable_only=True) == 2 + 6
    shared = nn.Linear(2, 2)
    assert models.count_parameters(nn.Sequential(shared, shared)) == 6


def test_public_api_and_docstrings(monkeypatch):
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))  # the register() example adds one
    for name in models.__all__:
        assert hasattr(models, name), name
    for mod in (models, _init, _registry, _zoo, _checkpoint):
        result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, mod.__name__
