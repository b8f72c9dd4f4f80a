"""losslab.optim's SGD, Adam and RMSprop against torch.optim's (CPU, single-tensor path): the same bits.

Each case trains two copies of a small model, one with ``torch.optim`` and one with ``losslab.optim``,
on gradients that change every step (a new random batch, a learning rate set through ``param_groups``
each step as the trainer does, and a parameter that only gets a gradient on even steps, so the
"no gradient: skipped" path is exercised), and checks after every step that the parameters are
``torch.equal`` and at the end that the state dicts are equal, tensor for tensor and key for key
(their ``torch.save`` bytes included). State dicts move both ways mid-run (torch -> ours, ours ->
torch, through ``torch.save``/``torch.load(weights_only=True)``) and training continues bit-identically.
The trainer gives the same run with either implementation and resumes across them; whether
``torch._dynamo`` stays unimported is checked in a subprocess in ``tests/test_startup.py``.
"""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from losslab import optim

STEPS = 25

CASES = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "momentum": 0.9}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    ("sgd", {"lr": 0.05, "momentum": 0.5, "dampening": 0.1, "weight_decay": 1e-2}),
    ("sgd", {"lr": 0.01, "weight_decay": 5e-4, "maximize": True}),
    ("adam", {"lr": 1e-2}),
    ("adam", {"lr": 1e-2, "weight_decay": 1e-2}),
    ("adam", {"lr": 1e-2, "amsgrad": True}),
    ("adam", {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("adam", {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6, "maximize": True}),
    ("rmsprop", {"lr": 1e-2}),
    ("rmsprop", {"lr": 1e-2, "momentum": 0.9}),
    ("rmsprop", {"lr": 1e-2, "momentum": 0.9, "weight_decay": 1e-3}),
    ("rmsprop", {"lr": 1e-2, "momentum": 0.5, "centered": True}),
    ("rmsprop", {"lr": 5e-3, "alpha": 0.9, "weight_decay": 1e-2, "maximize": True}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for n, kw in CASES]
TORCH = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}
OURS = {"sgd": optim.SGD, "adam": optim.Adam, "rmsprop": optim.RMSprop}


class Net(nn.Module):
    """Two layers and a scale ``s`` used only on even steps (its gradient is None on odd ones)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(5, 8)
        self.b = nn.Linear(8, 3)
        self.s = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        out = self.b(torch.tanh(self.a(x)))
        return out * self.s if step % 2 == 0 else out


def _pair(dtype: torch.dtype) -> tuple[Net, Net]:
    torch.manual_seed(0)
    m = Net().to(dtype)
    twin = Net().to(dtype)
    twin.load_state_dict(m.state_dict())
    return m, twin


def _train(model: Net, opt, steps: range, dtype: torch.dtype) -> list[list[torch.Tensor]]:
    """``steps`` steps on batches and learning rates that depend on the step; the parameters after each."""
    out = []
    for step in steps:
        g = torch.Generator().manual_seed(1000 + step)
        x = torch.randn(16, 5, generator=g, dtype=dtype)
        y = torch.randint(0, 3, (16,), generator=g)
        for group in opt.param_groups:
            group["lr"] = group["lr"] * (0.97 if step % 3 else 1.01)
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x, step), y).backward()
        opt.step()
        out.append([p.detach().clone() for p in model.parameters()])
    return out


def _same_trajectory(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> None:
    assert len(a) == len(b)
    for step, (pa, pb) in enumerate(zip(a, b)):
        for i, (x, y) in enumerate(zip(pa, pb)):
            assert x.dtype == y.dtype and torch.equal(x, y), f"parameter {i} differs after step {step + 1}"


def _same_state_dict(a: dict, b: dict) -> None:
    assert list(a) == list(b) == ["state", "param_groups"]
    assert len(a["param_groups"]) == len(b["param_groups"])
    for ga, gb in zip(a["param_groups"], b["param_groups"]):
        assert list(ga) == list(gb), "group keys (and their order) differ"
        for k in ga:
            assert type(ga[k]) is type(gb[k]) and ga[k] == gb[k], k
    assert list(a["state"]) == list(b["state"])
    for idx in a["state"]:
        sa, sb = a["state"][idx], b["state"][idx]
        assert list(sa) == list(sb), f"state keys of parameter {idx} differ"
        for k in sa:
            assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape, (idx, k)
            assert torch.equal(sa[k], sb[k]), (idx, k)


def _saved(sd: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


def _reload(sd: dict) -> dict:
    """Through a file, as the trainer's resume state goes (loaded with ``weights_only=True``)."""
    return torch.load(io.BytesIO(_saved(sd)), weights_only=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_bit_identical_to_torch(name, kw, dtype):
    m_ref, m = _pair(dtype)
    ref, ours = TORCH[name](m_ref.parameters(), **kw), OURS[name](m.parameters(), **kw)
    _same_trajectory(_train(m_ref, ref, range(STEPS), dtype), _train(m, ours, range(STEPS), dtype))
    _same_state_dict(ours.state_dict(), ref.state_dict())
    assert _saved(ours.state_dict()) == _saved(ref.state_dict())


@pytest.mark.parametrize("name,kw", CASES, ids=IDS)
def test_state_dicts_move_both_ways(name, kw):
    dtype, k = torch.float32, 10
    m_ref, m = _pair(dtype)
    ref = TORCH[name](m_ref.parameters(), **kw)
    _train(m_ref, ref, range(k), dtype)
    m.load_state_dict(m_ref.state_dict())
    ours = OURS[name](m.parameters(), **{**kw, "lr": 123.0})  # the saved hyper-parameters win
    ours.load_state_dict(_reload(ref.state_dict()))  # a run saved with torch.optim, resumed with ours
    _same_state_dict(ours.state_dict(), ref.state_dict())
    _same_trajectory(_train(m_ref, ref, range(k, STEPS), dtype), _train(m, ours, range(k, STEPS), dtype))
    _same_state_dict(ours.state_dict(), ref.state_dict())

    m_back = Net().to(dtype)
    m_back.load_state_dict(m.state_dict())
    back = TORCH[name](m_back.parameters(), **kw)
    back.load_state_dict(_reload(ours.state_dict()))  # and ours into torch's
    _same_trajectory(_train(m_back, back, range(STEPS, STEPS + 10), dtype), _train(m, ours, range(STEPS, STEPS + 10), dtype))
    _same_state_dict(ours.state_dict(), back.state_dict())


def test_groups_and_float64_state_cast():
    """Two groups with their own hyper-parameters; a float32 state loaded for float64 parameters is cast
    (``step`` kept float32), as torch casts it."""
    m_ref, m = _pair(torch.float64)
    groups = lambda mm: [{"params": [mm.a.weight, mm.a.bias], "lr": 0.02},  # noqa: E731
                         {"params": [mm.b.weight, mm.b.bias, mm.s], "eps": 1e-6}]
    ref, ours = torch.optim.Adam(groups(m_ref), lr=1e-2), optim.Adam(groups(m), lr=1e-2)
    _same_trajectory(_train(m_ref, ref, range(8), torch.float64), _train(m, ours, range(8), torch.float64))
    _same_state_dict(ours.state_dict(), ref.state_dict())
    f32 = {"state": {i: {k: v.float() if k != "step" else v for k, v in st.items()}
                     for i, st in ref.state_dict()["state"].items()},
           "param_groups": ref.state_dict()["param_groups"]}
    ref.load_state_dict(_reload(f32))  # each its own copy: loading shares the tensors that need no cast
    ours.load_state_dict(_reload(f32))
    _same_state_dict(ours.state_dict(), ref.state_dict())
    assert ours.state[m.a.weight]["exp_avg"].dtype == torch.float64
    assert ours.state[m.a.weight]["step"].dtype == torch.float32
    _same_trajectory(_train(m_ref, ref, range(8, 14), torch.float64), _train(m, ours, range(8, 14), torch.float64))


def test_zero_grad_closure_and_checks():
    w = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = optim.SGD([w], lr=0.1)
    loss = opt.step(lambda: (w**2).sum().backward() or torch.tensor(3.0))
    assert float(loss) == 3.0 and w.grad is not None
    assert torch.equal(w.detach(), torch.tensor([0.8, -1.6]))
    opt.zero_grad(set_to_none=False)
    assert w.grad is not None and not w.grad.any()
    opt.zero_grad()
    assert w.grad is None
    for bad in ({"foreach": True}, {"fused": True}, {"differentiable": True}, {"lr": torch.tensor(0.1)}):
        with pytest.raises(ValueError, match="torch.optim"):
            optim.SGD([{"params": [nn.Parameter(torch.zeros(2))], **bad}])
    with pytest.raises(ValueError, match="complex"):
        optim.Adam([nn.Parameter(torch.zeros(2, dtype=torch.complex64))])
    with pytest.raises(ValueError, match="empty"):
        optim.RMSprop([])
    with pytest.raises(ValueError, match="more than one"):
        optim.SGD([{"params": [w]}, {"params": [w]}])
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([w], momentum=0, nesterov=True)
    sd = opt.state_dict()
    sd["param_groups"][0]["capturable"] = True
    with pytest.raises(ValueError, match="capturable"):
        opt.load_state_dict(sd)
    assert opt.param_groups[0].get("capturable") is None  # a refused load changes nothing


def test_build_picks_by_device():
    cpu = [nn.Parameter(torch.zeros(3))]
    assert type(optim.build("sgd", cpu, lr=0.1, momentum=0.9)) is optim.SGD
    assert type(optim.build("adam", [{"params": iter(cpu)}], lr=0.1)) is optim.Adam
    meta = [nn.Parameter(torch.zeros(3, device="meta"))]
    assert type(optim.build("rmsprop", meta, lr=0.1)) is torch.optim.RMSprop
    with pytest.raises(Exception, match="unknown optimizer"):
        optim.build("lbfgs", cpu)


def _torch_build(name, params, **kw):
    """What the trainer built before losslab.optim: torch.optim's class."""
    return {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}[name](params, **kw)


@pytest.mark.parametrize("name,kw", [("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
                                     ("adam", {"lr": 3e-3, "weight_decay": 1e-3}),
                                     ("rmsprop", {"lr": 1e-3, "momentum": 0.5, "weight_decay": 1e-3})])
def test_trainer_runs_and_resumes_across_implementations(tmp_path, monkeypatch, name, kw):
    """The trainer with losslab.optim gives the run torch.optim gave (weights and sealed resume state, byte
    for byte); a run time-boxed with torch.optim (saved before this module existed) resumes with ours to
    the same end, and one time-boxed with ours resumes with torch's."""
    import losslab.train as T
    from losslab.config import ModelConfig, OptimConfig, TrainConfig
    from losslab.runs import load_resume_state

    cfg = TrainConfig(model=ModelConfig(model="mlp", model_kwargs={"width": 16, "depth": 1}),
                      optim=OptimConfig(optimizer=name, epochs=3, **{"lr": 0.05, **kw}))
    ours_build = T.build_optimizer

    def run(out, impl, **extra):
        monkeypatch.setattr(T, "build_optimizer", impl)
        return T.train(cfg, out=tmp_path / out, progress=False, **extra)

    ref = run("torch", _torch_build)
    assert isinstance(T.make_optimizer(cfg, ref.build_model()), torch.optim.Optimizer)
    ours = run("ours", ours_build)
    assert type(T.make_optimizer(cfg, ours.build_model())).__module__ == "losslab.optim"
    sealed = [torch.load(r.path / "state.pt", weights_only=True)["sha256"] for r in (ref, ours)]
    assert sealed[0] == sealed[1]
    _same_state_dict(load_resume_state(ours.path / "state.pt")["optimizer"],
                     load_resume_state(ref.path / "state.pt")["optimizer"])
    for first, then, out in ((_torch_build, ours_build, "t2o"), (ours_build, _torch_build, "o2t")):
        assert not run(out, first, max_epochs=1).done
        resumed = run(out, then)
        assert resumed.done and resumed.info["resumed_from_epoch"] == 1
        for k, v in ref.state_dict().items():
            assert torch.equal(v, resumed.state_dict()[k]), (out, k)
