"""Deterministic parameter initialisation that never touches the global RNG."""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from ..errors import LosslabError

__all__ = ["init_parameters", "seeded_global_rng", "draw_seed"]

try:  # private in torch, but stable since 1.x: the common base of BatchNorm/InstanceNorm/SyncBatchNorm
    from torch.nn.modules.batchnorm import _NormBase
except ImportError:  # pragma: no cover
    _NormBase = nn.BatchNorm1d  # type: ignore[misc,assignment]

_NORMS: tuple[type[nn.Module], ...] = tuple(
    t for t in (_NormBase, nn.LayerNorm, nn.GroupNorm, getattr(nn, "RMSNorm", None), nn.LocalResponseNorm)
    if t is not None
)
_AFFINE: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)

_SEED_HIGH = 2**62


def draw_seed(generator: torch.Generator) -> int:
    """Draw a non-negative 62-bit integer seed from ``generator`` (advances it)."""
    return int(torch.randint(0, _SEED_HIGH, (), generator=generator))


@contextmanager
def seeded_global_rng(seed: int, cuda_devices: list[int] | None = None) -> Iterator[None]:
    """Run a block with the global CPU RNG (and given CUDA devices' RNGs) seeded, then restore them.

    Code inside the block that uses the global RNG (``reset_parameters``, module constructors) becomes
    deterministic; the caller's RNG state is unchanged afterwards.

    Args:
        seed: seed for the block.
        cuda_devices: CUDA device indices whose RNG is also forked and seeded (default none).
    """
    devices = list(cuda_devices or [])
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        for idx in devices:
            with torch.cuda.device(idx):
                torch.cuda.manual_seed(seed)
        yield


def _fill(param: Tensor, draw: Callable[[Tensor], object]) -> None:
    """Fill ``param`` from a float64 CPU draw, so values do not depend on device (and dtype up to rounding)."""
    tmp = torch.empty(param.shape, dtype=torch.float64)
    draw(tmp)
    with torch.no_grad():
        param.copy_(tmp.to(dtype=param.dtype, device=param.device))


def _fan_in(weight: Tensor) -> int:
    # Same as torch.nn.init._calculate_fan_in_and_fan_out(weight)[0] for Linear/Conv/ConvTranspose.
    return int(weight.shape[1]) * math.prod(int(s) for s in weight.shape[2:]) if weight.dim() >= 2 else 0


def _cuda_indices(module: nn.Module) -> list[int]:
    idx = {t.device.index or 0 for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]
           if t.device.type == "cuda"}
    return sorted(idx)


def init_parameters(model: nn.Module, *, generator: torch.Generator) -> nn.Module:
    """Re-initialise ``model``'s parameters in place from ``generator``, leaving the global RNG untouched.

    Modules are visited in ``model.named_modules()`` order, and each draw is taken in float64 on the CPU
    and cast, so the same generator state gives the same weights in any process and on any device.

    * ``nn.Linear`` and convolutions (incl. transposed): PyTorch's default rule,
      ``W ~ kaiming_uniform_(a=sqrt(5))`` i.e. ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, and
      ``b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.
    * Normalisation layers (BatchNorm, InstanceNorm, LayerNorm, GroupNorm, RMSNorm): weight 1, bias 0,
      running statistics reset.
    * Any other module with parameters of its own: its ``reset_parameters()`` is called with the global
      RNG forked and seeded from ``generator`` (then restored). Parameters of a module without
      ``reset_parameters()`` are left as they are.

    Args:
        model: the module to initialise (modified in place).
        generator: a CPU ``torch.Generator``; it is advanced.

    Returns:
        ``model``, for chaining.

    Raises:
        LosslabError: the generator is not a CPU generator, or the model has uninitialised (lazy) parameters.

    Example:
        >>> import torch
        >>> a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
        >>> _ = init_parameters(a, generator=torch.Generator().manual_seed(0))
        >>> _ = init_parameters(b, generator=torch.Generator().manual_seed(0))
        >>> torch.equal(a.weight, b.weight)
        True
    """
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise LosslabError(f"init_parameters needs a CPU torch.Generator, got {generator!r}")
    for name, p in model.named_parameters():
        if isinstance(p, nn.parameter.UninitializedParameter):
            raise LosslabError(f"parameter {name!r} is uninitialised (lazy module): run one forward pass first")
    g = generator
    for _, m in model.named_modules():
        if isinstance(m, _AFFINE):
            w = m.weight
            _fill(w, lambda t: nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=g))
            if getattr(m, "bias", None) is not None:
                fan_in = _fan_in(w)
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                _fill(m.bias, lambda t: nn.init.uniform_(t, -bound, bound, generator=g))
        elif isinstance(m, _NORMS):
            with torch.no_grad():
                if getattr(m, "weight", None) is not None:
                    m.weight.fill_(1.0)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
            if hasattr(m, "reset_running_stats"):
                m.reset_running_stats()
        elif any(True for _ in m.parameters(recurse=False)) and callable(getattr(m, "reset_parameters", None)):
            seed = draw_seed(g)
            with seeded_global_rng(seed, _cuda_indices(m)):
                m.reset_parameters()
    return model
