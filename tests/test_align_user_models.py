"""connect.align on models written by users (issue 15): reshapes at the ends, output-scaled tolerance, float64 recheck."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from losslab import params
from losslab.connect import align, spec_for
from losslab.errors import LosslabError


class UnsqueezeCNN(nn.Module):
    """A plain 1-D CNN whose forward adds the channel axis itself and reshapes its output."""

    def __init__(self, out_scale: float = 1.0):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv1d(1, 6, 3, padding=1), nn.Conv1d(6, 5, 3, padding=1)
        self.fc = nn.Linear(5 * 8, 6)
        self.out_scale = out_scale

    def forward(self, x):
        h = F.relu(self.conv1(x.unsqueeze(1)))
        h = F.relu(self.conv2(h))
        return self.fc(h.view(h.size(0), -1)).view(-1, 2, 3) * self.out_scale


class HiddenReshape(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(3, 2)

    def forward(self, x):
        return self.b(self.a(x).view(-1, 2, 3))


def _points(model, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) for k, v in params.get_point(model, buffers=True).items()}


def test_reshapes_before_the_first_and_after_the_last_layer_are_derived():
    m = UnsqueezeCNN()
    spec = spec_for(m)
    assert set(spec.tensors) >= {"conv1.weight", "conv2.weight", "fc.weight"} and len(spec.groups) == 2
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    res = align(m, x, point_a=_points(m, 1), point_b=_points(m, 2))
    assert res.verified and res.max_abs_output_diff < 1e-5
    with pytest.raises(LosslabError, match="between layers"):
        spec_for(HiddenReshape())


def test_tolerance_scales_with_the_outputs_and_float64_decides():
    m = UnsqueezeCNN(out_scale=1e3)  # logits of magnitude ~1e3-1e4: float32 rounding is ~1e-4 absolute
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    a, b = _points(m, 1), _points(m, 2)
    res = align(m, x, point_a=a, point_b=b)  # atol 1e-5 + rtol 1e-5 x max|out|
    assert res.verified
    strict = align(m, x, point_a=a, point_b=b, atol=0.0, rtol=0.0)  # float32 fails, the float64 recheck passes
    assert strict.verified and strict.float64_output_diff < 1e-9 * 1e5 and res.float64_output_diff is None
    with torch.no_grad():
        scale = float(params.call(m, b, x).abs().max())
    assert scale > 100 and res.max_abs_output_diff > 1e-5  # the old absolute 1e-5 check would have blamed the spec
    # a wrong spec fails in float64 too: swap the roles of two groups' entries
    spec = spec_for(m)
    wrong = {g: [e for e in entries if not e[0].startswith("fc.")] for g, entries in spec.groups.items()}
    with pytest.raises(LosslabError, match="in float64.*spec is wrong"):
        align(m, x, point_a=a, point_b=b, spec=wrong, atol=0.0, rtol=0.0)


NETS = """
import torch
from torch import nn


class Hidden(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 6), nn.Linear(6, 3)

    def forward(self, x):  # a round trip through a (N, 6, 1) view between the layers: not derived
        return self.b(torch.relu(self.a(x)).view(-1, 6, 1).squeeze(-1))


def hidden():
    return Hidden()
"""


def test_cli_connect_align_fails_before_any_path_and_takes_a_spec_file(tmp_path, monkeypatch, capsys):
    import json

    import numpy as np

    import losslab.connect.paths as paths
    from losslab.cli.main import main

    name = f"alignnets_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(NETS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = __import__(name)
    for seed in (0, 1):
        torch.manual_seed(seed)
        torch.save(mod.hidden().state_dict(), tmp_path / f"m{seed}.pt")
    g = torch.Generator().manual_seed(0)
    np.savez(tmp_path / "d.npz", x=torch.randn(64, 8, generator=g).numpy(), y=torch.randint(0, 3, (64,)).numpy())
    calls = []
    real = paths.linear_path
    monkeypatch.setattr(paths, "linear_path", lambda *a, **k: calls.append(1) or real(*a, **k))
    args = ["connect", "m0.pt", "m1.pt", "--model", f"{name}:hidden", "--data", "d.npz", "--align", "--num", "5"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "between layers" in err and err.count("\n") == 1 and calls == []  # no path was computed
    # the user's own spec: the hidden layer's 6 units, on a's outputs and b's inputs
    spec = {"P_a": [["a.weight", 0], ["a.bias", 0], ["b.weight", 1]]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    assert main([*args, "--spec", "spec.json", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.replace("NaN", "null"))
    assert out["align"]["verified"] and out["align"]["spec"] == "spec.json" and len(calls) == 2
