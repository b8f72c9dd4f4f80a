"""Tests for losslab.connect.permute: permutation specs, function identity, weight matching, align."""
from __future__ import annotations

import copy
import doctest

import pytest
import torch
from torch import nn

from losslab import models, params
from losslab.connect import (
    AlignResult,
    PermutationSpec,
    align,
    apply_permutation,
    cnn_spec,
    invert_permutation,
    mlp_spec,
    random_permutation,
    resnet_spec,
    spec_for,
    weight_matching,
)
from losslab.connect import permute as permute_module
from losslab.errors import LosslabError

# (name, input_shape, kwargs): every family, norm and pooling option at least once; kept tiny.
CASES = {
    "mlp": ("mlp", (12,), dict(width=10, depth=2)),
    "mlp-bn": ("mlp", (12,), dict(width=10, depth=2, norm="bn")),
    "mlp-ln": ("mlp", (3, 4), dict(width=10, depth=3, norm="ln", activation="tanh")),
    "cnn1d-flatten-bn": ("cnn1d", (16,), dict(channels=6, depth=2, norm="bn")),
    "cnn1d-avg-ln": ("cnn1d", (2, 16), dict(channels=6, depth=2, norm="ln", pool="avg")),
    "cnn2d-flatten": ("cnn2d", (1, 6, 6), dict(channels=5, depth=2)),
    "cnn2d-avg-bn": ("cnn2d", (6, 6), dict(channels=5, depth=2, norm="bn", pool="avg")),
    "resnet-skip-bn": ("resnet", (1, 6, 6), dict(width=6, depth=2, norm="bn", skip=True)),
    "resnet-noskip-bn": ("resnet", (16,), dict(width=6, depth=2, norm="bn", skip=False)),
    "resnet-skip-ln": ("resnet", (2, 16), dict(width=6, depth=2, norm="ln", skip=True)),
    "resnet-noskip-ln": ("resnet", (1, 6, 6), dict(width=6, depth=2, norm="ln", skip=False)),
    "resnet-proj-bn": ("resnet", (1, 8, 8), dict(width=4, depth=3, stages=2, norm="bn", pool="flatten")),
    "resnet-none": ("resnet", (16,), dict(width=6, depth=2, norm=None)),
}


def _build(case: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    name, shape, kw = CASES[case]
    net = models.build(name, input_shape=shape, num_classes=3, seed=seed, **kw).to(dtype)
    return net, shape


def _random_point(net: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The model's point with buffers; 1-D parameters and BN running stats set to non-trivial values."""
    g = torch.Generator().manual_seed(seed)
    p = params.get_point(net, buffers=True)
    for k, v in p.items():
        if not v.is_floating_point():
            continue
        noise = torch.randn(v.shape, generator=g, dtype=torch.float64).to(v.dtype)
        if k.endswith("running_var"):
            p[k] = 0.5 + torch.rand(v.shape, generator=g, dtype=torch.float64).to(v.dtype)
        elif k.endswith("running_mean"):
            p[k] = 0.3 * noise
        elif v.dim() == 1:
            p[k] = v + 0.3 * noise  # biases, norm affine: break the 1 / 0 defaults
        else:
            p[k] = v + 0.05 * noise
    return p


def _inputs(shape, seed: int = 1, n: int = 7, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _outputs(net: nn.Module, point, x) -> torch.Tensor:
    net.eval()
    with torch.no_grad():
        return params.call(net, point, x)


def _equal_points(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _sq_norm(point, keys) -> float:
    return float(sum((point[k].double() ** 2).sum() for k in keys))


# ------------------------------------------------------------------------------------ specs
@pytest.mark.parametrize("case", list(CASES))
def test_random_permutation_keeps_function(case):
    net, shape = _build(case)
    spec = spec_for(net)
    a = _random_point(net, 0)
    perm = random_permutation(spec, a, seed=3)
    assert any(not torch.equal(p, torch.arange(p.numel())) for p in perm.values())
    b = apply_permutation(spec, perm, a)
    assert not _equal_points(a, b)
    x = _inputs(shape)
    ya, yb = _outputs(net, a, x), _outputs(net, b, x)
    assert ya.abs().max() > 0.1  # non-degenerate outputs
    assert (ya - yb).abs().max().item() < 1e-5
    # the inverse permutation restores the point exactly
    assert _equal_points(apply_permutation(spec, invert_permutation(perm), b), a)


def test_function_identity_float64_exact():
    net, shape = _build("resnet-proj-bn", dtype=torch.float64)
    spec = spec_for(net)
    a = _random_point(net, 0)
    b = apply_permutation(spec, random_permutation(spec, a, seed=5), a)
    x = _inputs(shape, dtype=torch.float64)
    assert (_outputs(net, a, x) - _outputs(net, b, x)).abs().max().item() < 1e-10


def test_family_builders_match_spec_for_and_reject_other_families():
    for case, builder in [("mlp-bn", mlp_spec), ("cnn1d-flatten-bn", cnn_spec), ("cnn2d-avg-bn", cnn_spec),
                          ("resnet-skip-bn", resnet_spec), ("resnet-proj-bn", resnet_spec)]:
        net, _ = _build(case)
        assert builder(net) == spec_for(net)
    mlp, _ = _build("mlp")
    cnn, _ = _build("cnn2d-flatten")
    res, _ = _build("resnet-skip-bn")
    for builder, net in [(mlp_spec, cnn), (cnn_spec, mlp), (cnn_spec, res), (resnet_spec, cnn)]:
        with pytest.raises(LosslabError):
            builder(net)


def test_spec_structure_mlp_cnn_resnet():
    mlp, _ = _build("mlp-bn")
    spec = spec_for(mlp)
    assert set(spec.groups) == {"P_fc0", "P_fc1"}
    assert set(spec.groups["P_fc0"]) == {("fc0.weight", 0, 1), ("norm0.weight", 0, 1), ("norm0.bias", 0, 1),
                                          ("norm0.running_mean", 0, 1), ("norm0.running_var", 0, 1),
                                          ("fc1.weight", 1, 1)}
    assert spec.buffers == {"norm0.running_mean", "norm0.running_var", "norm1.running_mean", "norm1.running_var"}
    # flatten pooling: the head's input axis is channel-major blocks of the spatial size
    cnn, _ = _build("cnn2d-flatten")  # 1x6x6, stride 1 -> 5 channels x 36 positions
    assert ("head.weight", 1, 36) in spec_for(cnn).groups["P_conv1"]
    cnn_avg, _ = _build("cnn2d-avg-bn")
    assert ("head.weight", 1, 1) in spec_for(cnn_avg).groups["P_conv1"]
    # residual stream: one group for the stem and all identity-shortcut block outputs
    res, _ = _build("resnet-skip-bn")
    s = spec_for(res)
    assert set(s.groups) == {"P_conv0", "P_block0.conv1", "P_block1.conv1"}
    stream = {e[0] for e in s.groups["P_conv0"] if e[1] == 0}
    assert {"conv0.weight", "block0.conv2.weight", "block1.conv2.weight", "block1.norm2.running_var"} <= stream
    noskip, _ = _build("resnet-noskip-bn")
    assert set(spec_for(noskip).groups) == {"P_conv0", "P_block0.conv1", "P_block0", "P_block1.conv1",
                                                "P_block1"}
    proj, _ = _build("resnet-proj-bn")
    sp = spec_for(proj)
    assert ("block2.shortcut.conv.weight", 0, 1) in sp.groups["P_block2"]
    assert ("block2.shortcut.conv.weight", 1, 1) in sp.groups["P_conv0"]
    assert ("head.weight", 1, 16) in sp.groups["P_block2"]  # 8x8 -> 4x4 after the stride-2 stage


def test_spec_for_rejects_unsupported_layers():
    class Weird(nn.Module):
        def forward(self, x):
            return x.flip(-1)

    with pytest.raises(LosslabError, match="'2'.*Weird"):
        spec_for(nn.Sequential(nn.Linear(4, 5), nn.ReLU(), Weird(), nn.Linear(5, 2)))
    with pytest.raises(LosslabError, match="grouped"):
        spec_for(nn.Sequential(nn.Conv1d(2, 4, 3), nn.Conv1d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(8, 2)))
    with pytest.raises(LosslabError, match="GroupNorm"):
        spec_for(nn.Sequential(nn.Conv1d(2, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(LosslabError, match="'weight' directly in forward"):
        spec_for(nn.Linear(3, 2))


class _UserMLP(nn.Module):
    """A model written as a class: a Sequential body, a functional activation, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 9), nn.Tanh(), nn.Linear(9, 7))
        self.norm = nn.LayerNorm(7)
        self.head = nn.Linear(7, 3)

    def forward(self, x):
        return self.head(torch.nn.functional.relu(self.norm(self.body(x))))


class _UserCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 5, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(5 * 3 * 3, 6), nn.Linear(6, 3)

    def forward(self, x):
        h = torch.nn.functional.max_pool2d(torch.relu(self.b1(self.c1(x))), 2)
        h = self.c2(h).relu()
        h = h.view(h.size(0), -1)
        return self.fc2(torch.flatten(torch.sigmoid(self.fc1(h)), 1))


class _UserResNet(nn.Module):
    """Residual connections written out in forward: ``h + f(h)`` twice on one stream, then a gate."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv1d(2, 4, 3, padding=1), nn.BatchNorm1d(4)
        self.a1, self.a2 = nn.Conv1d(4, 5, 3, padding=1), nn.Conv1d(5, 4, 3, padding=1)
        self.b1 = nn.Conv1d(4, 4, 1)
        self.g1, self.g2 = nn.Linear(4 * 6, 7), nn.Linear(4 * 6, 7)
        self.head = nn.Linear(7, 3)

    def forward(self, x):
        h = torch.relu(self.bn0(self.stem(x)))
        h = h + self.a2(torch.relu(self.a1(h)))
        h = torch.add(h, torch.tanh(self.b1(h)))
        f = h.flatten(1)
        return self.head(self.g1(f) * torch.sigmoid(self.g2(f)))


@pytest.mark.parametrize("make,shape,groups", [
    (_UserMLP, (3, 4), {"P_body.1", "P_body.3"}),
    (_UserCNN, (1, 6, 6), {"P_c1", "P_c2", "P_fc1"}),
    (_UserResNet, (2, 6), {"P_stem", "P_a1", "P_g1"}),  # stem + a2 + b1 share a stream; g1 and g2 a gate
])
def test_spec_for_traces_models_written_as_classes(make, shape, groups):
    torch.manual_seed(0)
    net = make().double()
    spec = spec_for(net)
    assert set(spec.groups) == groups
    a = _random_point(net, 0)
    b = apply_permutation(spec, random_permutation(spec, a, seed=4), a)
    assert not _equal_points(a, b)
    x = _inputs(shape, dtype=torch.float64)
    ya = _outputs(net, a, x)
    assert ya.abs().max() > 0.1 and (ya - _outputs(net, b, x)).abs().max().item() < 1e-10
    res = align(net, x, point_a=a, point_b=b)
    assert res.verified and params.distance(res.point_b_aligned, a) < 1e-8


class _StreamMLP(nn.Module):
    """``h + relu(W h)``: ``mid.weight`` carries the stream's permutation on both axes."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.mid, self.out = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        return self.out(h + torch.relu(self.mid(h)))


def test_weight_matching_with_a_tensor_on_two_axes_of_one_group():
    # The cost of such a group is linear in its permutation only with the other axis held fixed;
    # plain coordinate descent then cycled (objective up and down, never converging). It must rise
    # monotonically, converge, and recover a random permutation exactly.
    torch.manual_seed(0)
    net = _StreamMLP().double()
    spec = spec_for(net)
    assert set(spec.groups) == {"P_inp"} and ("mid.weight", 0, 1) in spec.groups["P_inp"]
    x = _inputs((6,), dtype=torch.float64)
    a = _random_point(net, 0)
    b = apply_permutation(spec, random_permutation(spec, a, seed=2), a)
    res = align(net, x, point_a=a, point_b=b)
    assert res.verified and params.distance(res.point_b_aligned, a) < 1e-10
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        other = _random_point(_StreamMLP().double(), seed)
        r = align(net, x, point_a=a, point_b=other)
        obj = r.info.objective
        assert r.verified and r.info.converged and r.info.iterations < 100
        assert all(later >= earlier - 1e-12 for earlier, later in zip(obj, obj[1:])) and obj[-1] > obj[0]


def test_spec_for_mlp_class_equals_its_sequential():
    torch.manual_seed(0)
    net = _UserMLP()
    seq = nn.Sequential(net.body, net.norm, nn.ReLU(), net.head)  # the same layers, as a Sequential
    rename = {"0": "body", "1": "norm", "3": "head"}

    def groups(spec, ren=lambda n: n):
        return {frozenset((ren(t), axis, block) for t, axis, block in entries) for entries in spec.groups.values()}

    expected = groups(spec_for(seq), lambda n: rename[n.split(".", 1)[0]] + "." + n.split(".", 1)[1])
    assert groups(spec_for(net)) == expected and len(expected) == 2


def test_spec_for_refuses_what_it_cannot_derive():
    class InputSkip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.c = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.c(x + torch.relu(self.a(x)))

    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(6, 2)

        def forward(self, x):
            return self.c(torch.cat([self.a(x), self.b(x)], 1))

    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 2)

        def forward(self, x, mask):
            return self.a(x) * mask

    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 2)

        def forward(self, x):
            return self.a(x) if x.sum() > 0 else -self.a(x)

    class Flip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(self.a(x).flip(-1))

    for model, match in ((InputSkip(), "combines the model's input with a hidden activation"),
                         (Cat(), "'cat' in Cat.forward combines 2 activations"), (TwoInputs(), "2 inputs"),
                         (Dynamic(), "cannot trace Dynamic"), (Flip(), "unsupported operation call_method 'flip'")):
        with pytest.raises(LosslabError, match=match) as info:
            spec_for(model)
        assert "\n" not in str(info.value) and "own spec" in str(info.value)


def test_spec_for_nested_sequential_and_user_dict():
    net = nn.Sequential(nn.Sequential(nn.Linear(4, 6), nn.ReLU()), nn.Linear(6, 2))
    spec = spec_for(net)
    assert spec.as_dict() == {"P_0.0": [("0.0.weight", 0, 1), ("0.0.bias", 0, 1), ("1.weight", 1, 1)]}
    user = {"h": [("0.0.weight", 0), ("0.0.bias", 0), ("1.weight", 1)]}
    assert list(PermutationSpec(user).groups.values()) == list(spec.groups.values())
    a = params.get_point(net)
    b = apply_permutation(user, random_permutation(user, a, seed=0), a)
    x = torch.randn(3, 4)
    assert torch.allclose(params.call(net, a, x), params.call(net, b, x), atol=1e-6)


def test_spec_validation_errors():
    with pytest.raises(LosslabError, match="twice"):
        PermutationSpec({"a": [("w", 0)], "b": [("w", 0)]})
    with pytest.raises(LosslabError, match="axis"):
        PermutationSpec({"a": [("w", -1)]})
    with pytest.raises(LosslabError, match="no entries"):
        PermutationSpec({"a": []})
    with pytest.raises(LosslabError, match="entry"):
        PermutationSpec({"a": ["w"]})
    spec = PermutationSpec({"a": [("w", 0), ("v", 1)]})
    with pytest.raises(LosslabError, match="size"):
        spec.group_sizes({"w": torch.zeros(3, 2), "v": torch.zeros(2, 4)})
    point = {"w": torch.zeros(3, 2), "v": torch.zeros(2, 3)}
    with pytest.raises(LosslabError, match="not a permutation"):
        apply_permutation(spec, {"a": torch.tensor([0, 0, 1])}, point)
    with pytest.raises(LosslabError, match="missing groups"):
        apply_permutation(spec, {}, point)
    with pytest.raises(LosslabError, match="shape"):
        apply_permutation(spec, {"a": torch.tensor([0, 1])}, point)


# ------------------------------------------------------------------------------------ weight matching
@pytest.mark.parametrize("case", ["mlp", "mlp-bn", "mlp-ln", "cnn1d-flatten-bn", "cnn2d-avg-bn",
                                  "resnet-skip-bn", "resnet-noskip-ln", "resnet-proj-bn"])
def test_weight_matching_recovers_random_permutation(case):
    net, _ = _build(case)
    spec = spec_for(net)
    a = _random_point(net, 0)
    perm = random_permutation(spec, a, seed=11)
    b = apply_permutation(spec, perm, a)
    found, info = weight_matching(spec, a, b, seed=0)
    assert info.converged
    inv = invert_permutation(perm)
    assert all(torch.equal(found[g], inv[g]) for g in spec.groups)
    assert _equal_points(apply_permutation(spec, found, b), a)
    sq = _sq_norm(a, info.keys)
    assert set(info.keys) == {k for k in a if a[k].is_floating_point()} - spec.buffers
    assert info.objective[-1] == pytest.approx(sq, rel=1e-12)
    assert info.identity_objective < sq
    assert all(y >= x for x, y in zip(info.objective, info.objective[1:]))


@pytest.mark.parametrize("case", ["mlp", "cnn2d-flatten", "resnet-skip-bn"])
def test_weight_matching_independent_models_improves_on_identity(case):
    net, _ = _build(case)
    a = _random_point(net, 0)
    b = _random_point(_build(case, seed=1)[0], 1)
    spec = spec_for(net)
    perm, info = weight_matching(spec, a, b, seed=0)
    assert info.objective[0] == info.identity_objective
    assert all(y >= x for x, y in zip(info.objective, info.objective[1:]))
    assert info.objective[-1] > info.identity_objective
    # the objective is <a, perm(b)> over info.keys, i.e. the aligned point is closer to a
    aligned = apply_permutation(spec, perm, b)
    assert info.objective[-1] == pytest.approx(params.dot({k: a[k] for k in info.keys},
                                                          {k: aligned[k] for k in info.keys}), rel=1e-6)
    keys = list(info.keys)
    dist = lambda p: params.distance({k: a[k] for k in keys}, {k: p[k] for k in keys})  # noqa: E731
    assert dist(aligned) < dist(b)
    # deterministic under a seed; init="random" also converges and never goes down
    perm2, _ = weight_matching(spec, a, b, seed=0)
    assert all(torch.equal(perm[g], perm2[g]) for g in perm)
    _, info_r = weight_matching(spec, a, b, seed=1, init="random")
    assert all(y >= x for x, y in zip(info_r.objective, info_r.objective[1:]))


def test_weight_matching_argument_errors():
    net, _ = _build("mlp")
    a = params.get_point(net)
    with pytest.raises(LosslabError, match="max_iter"):
        weight_matching(spec_for(net), a, a, max_iter=0)
    with pytest.raises(LosslabError, match="init"):
        weight_matching(spec_for(net), a, a, init="greedy")  # type: ignore[arg-type]
    other, _ = models.build("mlp", input_shape=(12,), num_classes=3, seed=0, width=11), None
    with pytest.raises(LosslabError, match="shape"):
        weight_matching(spec_for(net), a, params.get_point(other))


# ------------------------------------------------------------------------------------ align
@pytest.mark.parametrize("case", ["mlp-bn", "cnn1d-flatten-bn", "resnet-skip-bn", "resnet-noskip-bn"])
def test_align_verifies_and_does_not_mutate(case):
    net, shape = _build(case)
    net.train()
    a = _random_point(net, 0)
    b = _random_point(_build(case, seed=1)[0], 1)
    a0, b0 = params.clone(a), params.clone(b)
    state0 = copy.deepcopy(net.state_dict())
    x = _inputs(shape)
    res = align(net, x, point_a=a, point_b=b)
    assert isinstance(res, AlignResult) and res.verified
    assert res.max_abs_output_diff < 1e-5
    assert res.info.objective[-1] >= res.info.identity_objective
    assert (_outputs(net, b, x) - _outputs(net, res.point_b_aligned, x)).abs().max() < 1e-5
    # nothing passed in was changed (points, model tensors, training flag)
    net.train()  # _outputs above switched it; align itself must restore it
    assert _equal_points(a, a0) and _equal_points(b, b0)
    assert all(torch.equal(v, state0[k]) for k, v in net.state_dict().items())
    res2 = align(net, x, point_a=a, point_b=b)
    assert net.training
    assert _equal_points(res2.point_b_aligned, res.point_b_aligned)
    assert _equal_points(a, a0) and _equal_points(b, b0)


def test_align_self_permuted_recovers_original():
    net, shape = _build("resnet-proj-bn")
    a = _random_point(net, 0)
    spec = resnet_spec(net)
    b = apply_permutation(spec, random_permutation(spec, a, seed=2), a)
    res = align(net, _inputs(shape), point_a=a, point_b=b, spec=spec)
    assert _equal_points(res.point_b_aligned, a)


def _without(spec: PermutationSpec, tensor: str, axis: int) -> dict:
    return {g: [e for e in es if (e[0], e[1]) != (tensor, axis)] for g, es in spec.groups.items()}


def test_align_raises_on_wrong_spec():
    net, shape = _build("mlp-bn")
    a = _random_point(net, 0)
    b = _random_point(_build("mlp-bn", seed=1)[0], 1)
    x = _inputs(shape)
    spec = spec_for(net)
    # forgetting the next layer's input axis: the permutation is no longer a symmetry
    with pytest.raises(LosslabError, match="not functionally identical"):
        align(net, x, point_a=a, point_b=b, spec=_without(spec, "fc1.weight", 1))
    # forgetting the BN running statistics also breaks it (caught in eval mode)
    bad = {g: [e for e in es if "running" not in e[0]] for g, es in spec.groups.items()}
    with pytest.raises(LosslabError, match="not functionally identical"):
        align(net, x, point_a=a, point_b=b, spec=bad)
    # a plausible but wrong spec: per-block output groups (no-skip structure) on a net WITH identity
    # shortcuts, whose residual stream must share one permutation; same tensor names, same shapes
    res, rshape = _build("resnet-skip-bn")
    noskip_spec = spec_for(models.build("resnet", input_shape=(1, 6, 6), num_classes=3, seed=0, width=6,
                                        depth=2, norm="bn", skip=False))
    ra, rb = _random_point(res, 0), _random_point(_build("resnet-skip-bn", seed=1)[0], 1)
    with pytest.raises(LosslabError, match="not functionally identical"):
        align(res, _inputs(rshape), point_a=ra, point_b=rb, spec=noskip_spec)
    assert align(res, _inputs(rshape), point_a=ra, point_b=rb).verified
    # a wrong block on the flattened head input of a CNN
    cnn, cshape = _build("cnn2d-flatten")
    ca, cb = _random_point(cnn, 0), _random_point(_build("cnn2d-flatten", seed=1)[0], 1)
    cspec = spec_for(cnn).as_dict()
    cspec["P_conv1"] = [(n, ax, 1) if n == "head.weight" else (n, ax, blk) for n, ax, blk in cspec["P_conv1"]]
    with pytest.raises(LosslabError):  # block 1 on a 180-wide axis: sizes disagree
        align(cnn, _inputs(cshape), point_a=ca, point_b=cb, spec=cspec)
    # points without the buffers the spec permutes are refused up front
    with pytest.raises(LosslabError, match="lacks"):
        align(net, x, point_a=params.get_point(net), point_b=params.get_point(net))
    with pytest.raises(LosslabError, match="x, a non-empty tensor of inputs"):
        align(net, torch.zeros(0, 12), point_a=a, point_b=b)


def test_doctests():
    result = doctest.testmod(permute_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
