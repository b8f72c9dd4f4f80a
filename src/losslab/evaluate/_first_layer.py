"""First-layer precomputation for points given as linear combinations.

The first layer with parameters is affine in its parameters; when its input depends on the data only,
its output at ``theta_k = theta_0 + sum_j c_kj d_j`` is ``T_0 + sum_j c_kj T_j`` with ``T_j`` the layer
applied to the data with term ``j``'s weight and bias. :class:`_FirstLayerMixin` finds such a layer,
computes the terms once per set of directions on the evaluation chunks (validated against computing
the layer) and the evaluator combines them at each point instead of running the layer's matrix product.
See the package docstring of :mod:`losslab.evaluate` for when a layer qualifies.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..errors import LosslabError
from ._memory import _PROBE_EXAMPLES
from ._sources import _Combinations

FIRST_LAYER_MIN_RATIO = 16
"""``first_layer="auto"`` precomputes when the layer's fan-in >= this x the number of terms."""
FIRST_LAYER_MIN_SHARE = 0.10
"""... and when the layer does at least this fraction of the multiply-adds of the forward's Linear/Conv
layers (the most the precomputation can save; below it the terms' memory traffic eats the saving:
bench/RESULTS.md, "Surfaces on real networks")."""
_AFFINE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _StopForward(Exception):
    """Raised by a hook to stop a forward pass once the first layer's input is known."""


class _Injected(nn.Module):
    """Stands in for the first layer: returns the output combined for the current chunk."""

    def __init__(self) -> None:
        super().__init__()
        self.value: Tensor | None = None

    def forward(self, *_args: Any, **_kwargs: Any) -> Tensor:
        assert self.value is not None
        return self.value


class _FirstLayer:
    """A first layer whose output can be precomputed: its shell module, and (:attr:`shell`, built on
    first use) a copy of the model's shell with the layer replaced by :attr:`slot`."""

    def __init__(self, name: str, module: nn.Module, model_shell: nn.Module, keys: dict[str, str], fan_in: int,
                 owner: Any = None) -> None:
        self.name, self.module, self.keys, self.fan_in = name, module, keys, fan_in
        self._owner = owner  # shared, never copied, by the shell copy (hooks bound to it stay bound to it)
        self.slot = _Injected()
        self._model_shell: nn.Module | None = model_shell
        self._shell: nn.Module | None = None

    @property
    def shell(self) -> nn.Module:
        if self._shell is None:
            if self.name:
                memo = {} if self._owner is None else {id(self._owner): self._owner}
                self._shell = copy.deepcopy(self._model_shell, memo)
                parent, _, attr = self.name.rpartition(".")
                setattr(self._shell.get_submodule(parent), attr, self.slot)
            else:
                self._shell = self.slot
            self._model_shell = None
        return self._shell


class _FirstCache:
    """Per chunk, the first layer's output for each term: the constant part (``j = -1``) and the
    directions ``j``; :meth:`combine` forms ``T_const + sum_j c_j T_j`` in a reused buffer."""

    def __init__(self, layer: _FirstLayer, terms: list[list[Tensor]], js: list[int], key: Any) -> None:
        self.layer, self.terms, self.js, self.key = layer, terms, js, key
        self.bufs: list[Tensor | None] = [None] * len(terms)
        self.refs: list[Tensor] = []  # the tensors named in ``key``, kept alive while cached

    def combine(self, q: int, c: Sequence[float]) -> Tensor:
        ts, js = self.terms[q], self.js
        buf = self.bufs[q]
        if buf is None:
            buf = self.bufs[q] = torch.empty_like(ts[0])
        if js[0] < 0:
            if len(ts) > 1:
                torch.add(ts[0], ts[1], alpha=float(c[js[1]]), out=buf)
            else:
                buf.copy_(ts[0])
            start = 2
        else:
            torch.mul(ts[0], float(c[js[0]]), out=buf)
            start = 1
        for t, j in zip(ts[start:], js[start:]):
            buf.add_(t, alpha=float(c[j]))
        return buf

    def combine_many(self, q: int, c: Tensor) -> Tensor:
        """``(K, *out)``: the first layer's outputs on chunk ``q`` at the K coefficient rows ``c``."""
        ts, js = self.terms[q], self.js
        dirs = [(t, j) for t, j in zip(ts, js) if j >= 0]
        k = int(c.shape[0])
        if dirs:
            w = c[:, [j for _, j in dirs]].to(ts[0].dtype)  # (K, nd)
            z = torch.tensordot(w, torch.stack([t for t, _ in dirs]), dims=1)
        else:
            z = torch.zeros((k, *ts[0].shape), dtype=ts[0].dtype, device=ts[0].device)
        if js[0] < 0:
            z = z + ts[0]
        return z


class _FirstLayerMixin:
    """The :class:`~losslab.evaluate.Evaluator`'s first-layer precomputation (finding, validating and
    caching the terms); it uses the evaluator's shell, data, base point and ``info``."""

    def _find_first_layer(self) -> tuple["_FirstLayer | None", str]:
        """The first layer with parameters, if its output can be precomputed per direction.

        It qualifies when it is a plain ``Linear``/``Conv1d/2d/3d`` (exact type, no hooks), called
        once per forward, its parameters are not shared, and no module with parameters or buffers
        runs before it while every parameter of the model belongs to a leaf module (so its input
        depends on the data only). Returns the layer (or None) and the reason.
        """
        shell = self._shell
        leaves = {id(m): n for n, m in shell.named_modules() if next(m.children(), None) is None}
        uses: dict[int, int] = {}
        for name, prm in shell.named_parameters(remove_duplicate=False):
            if id(shell.get_submodule(name.rpartition(".")[0])) not in leaves:
                return None, f"parameter {name!r} is not owned by a leaf module"
            uses[id(prm)] = uses.get(id(prm), 0) + 1
        order = self._leaf_order  # recorded by the activation probe

        def stateful(m: nn.Module) -> bool:
            return any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False))

        layer = next((m for m in order if stateful(m)), None)
        if layer is None:
            return None, "no layer with parameters runs"
        name = leaves[id(layer)]
        label = repr(name) if name else "the model"
        if type(layer) not in _AFFINE_TYPES:
            return None, f"the first layer with parameters, {label}, is a {type(layer).__name__}, not Linear/Conv"
        if sum(m is layer for m in order) != 1:
            return None, f"the first layer, {label}, runs more than once"
        if layer._forward_hooks or layer._forward_pre_hooks or any(True for _ in layer.buffers(recurse=False)):
            return None, f"the first layer, {label}, has hooks or buffers"
        if any(uses[id(prm)] > 1 for prm in layer.parameters(recurse=False)):
            return None, f"the first layer's parameters ({label}) are shared"
        keys = {f"{name}.{k}" if name else k: k for k, _ in layer.named_parameters(recurse=False)}
        return _FirstLayer(name, layer, shell, keys, int(layer.weight[0].numel()), owner=self), "qualifies"

    def _first_cache_for(self, src: "_Combinations", xs: Sequence[Tensor]) -> "_FirstCache | None":
        """The first layer's output terms on the loop chunks ``xs`` for ``src`` (cached), or None."""
        fl = self._first
        if fl is None:
            return None
        note = self.info["first_layer"]
        base, basis = src.base_pt, src.basis_pts
        wkey = next(k for k, v in fl.keys.items() if v == "weight")
        bkey = next((k for k, v in fl.keys.items() if v == "bias"), None)

        def const(key: str | None) -> Tensor | None:
            if key is None:
                return None
            if base is not None and key in base:
                return base[key]
            if any(key in d for d in basis):
                return None
            return self._base[key]

        terms: list[tuple[int, Tensor | None, Tensor | None]] = []
        cw, cb = const(wkey), const(bkey)
        if cw is not None or cb is not None:
            terms.append((-1, cw, cb))
        for j, d in enumerate(basis):
            dw, db = d.get(wkey), (d.get(bkey) if bkey is not None else None)
            if dw is not None or db is not None:
                terms.append((j, dw, db))
        if not terms:
            return None
        if self.first_layer_requested == "auto" and fl.fan_in < FIRST_LAYER_MIN_RATIO * len(terms):
            note["reason"] = f"fan-in {fl.fan_in} < {FIRST_LAYER_MIN_RATIO} x {len(terms)} terms"
            return None
        macs = self._leaf_macs
        share = macs.get(id(fl.module), 0.0) / max(sum(macs.values()), 1e-30)
        if self.first_layer_requested == "auto" and share < FIRST_LAYER_MIN_SHARE:
            note["reason"] = (f"the first layer does {share:.1%} of the forward's multiply-adds "
                              f"< {FIRST_LAYER_MIN_SHARE:.0%}")
            return None
        # The key names each tensor by identity and version; the cache holds references to them
        # (``refs``), so no id or address in a live key can be reused by a new tensor.
        refs = [*xs, *(t for _, w, b in terms for t in (w, b) if t is not None)]
        key = tuple((id(t), t.data_ptr(), t._version, tuple(t.shape), t.stride()) for t in refs)
        if self._first_cache is not None and self._first_cache.key == key:
            return self._first_cache
        self._first_cache = None

        def term_outputs(u: Tensor) -> list[Tensor]:
            outs = []
            for _, w, b in terms:
                tensors = {"weight": w if w is not None else torch.zeros_like(self._base[wkey])}
                if bkey is not None:
                    tensors["bias"] = b if b is not None else torch.zeros_like(self._base[bkey])
                outs.append(torch.func.functional_call(fl.module, tensors, (u,)))
            return outs

        with torch.inference_mode():
            # validate on a few examples at c = 1 for every direction: precomputed == computed
            xv = self.x[: min(self.n, _PROBE_EXAMPLES)]
            ones = [1.0] * len(basis)
            point = next(src.each_coeffs(ones))
            direct = self._forward_one(self._merged(point, {}), xv)
            probe = _FirstCache(fl, [term_outputs(self._first_input(xv))], [j for j, _, _ in terms], key)
            fl.slot.value = probe.combine(0, ones)
            try:
                rest = {k: v for k, v in self._merged(point, {}).items() if k not in fl.keys}
                got = torch.func.functional_call(fl.shell, rest, (xv,), strict=False)
            finally:
                fl.slot.value = None
            if not isinstance(direct, Tensor) or not torch.isfinite(direct).all():
                note["reason"] = "validation output not finite"
                return None
            scale = float(direct.abs().max()) + 1e-30
            if got.shape != direct.shape or float((got - direct).abs().max()) > 1e-3 * scale:
                note["reason"] = "validation failed: the precomputed first layer changes the output"
                return None
            per_example = sum(t.numel() for t in probe.terms[0]) * probe.terms[0][0].element_size() / xv.shape[0]
            if per_example * self.n > self.memory_budget_mb * 2**20 / 2:
                note["reason"] = f"terms need {per_example * self.n / 2**20:.0f} MiB > half the memory budget"
                return None
            chunks = [term_outputs(self._first_input(xc)) for xc in xs]
        note["reason"] = f"precomputed: {len(terms)} terms, fan-in {fl.fan_in}, {share:.0%} of the multiply-adds"
        self._first_cache = _FirstCache(fl, chunks, [j for j, _, _ in terms], key)
        self._first_cache.refs = refs
        return self._first_cache

    def _first_input(self, x: Tensor) -> Tensor:
        """The first layer's input for data ``x`` (the forward stops there)."""
        fl = self._first
        assert fl is not None
        got: list[Tensor] = []

        def grab(_m: nn.Module, args: tuple[Any, ...]) -> None:
            got.append(args[0])
            raise _StopForward

        h = fl.module.register_forward_pre_hook(grab)
        try:
            self._forward_one(self._merged({}, self._base_buffers), x)
        except _StopForward:
            pass
        finally:
            h.remove()
        if not got:
            raise LosslabError("the first layer did not run")
        return got[0]
