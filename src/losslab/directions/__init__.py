"""Directions in parameter space: random (filter-normalized), model-to-model, planes, PCA.

A :class:`Direction` is a point-shaped tensor dict (``{name: tensor}``, keyed like
``model.named_parameters()``) plus a JSON-able ``meta`` dict saying how it was made. Surfaces
evaluate ``L(θ* + α·d₁ + β·d₂)``; this module only produces the ``d``'s.

Definitions follow Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets"
(arXiv 1712.09913) and the public reference code ``tomgoldstein/loss-landscape``:

* **Filter normalization** (Li et al. eq. 1). For every tensor with ``dim > 1``, each slice
  along dimension 0 (a conv filter / output neuron) ``d_i`` of a Gaussian direction is rescaled
  to the norm of the same slice of the weights::

      d_i  <-  d_i / ||d_i|| * ||θ_i||

* Tensors with ``dim <= 1`` (biases, BatchNorm/LayerNorm affine, scalars) are set to zero by
  default (``ignore_1d=True``, the reference code's ``--xignore biasbn``). With
  ``ignore_1d=False`` see :func:`normalize` for the documented rule per method.
* Non-floating tensors (integer/bool/complex, e.g. ``num_batches_tracked`` when buffers are
  included) are always zero.

Random draws never touch the global RNG: each function builds its own ``torch.Generator``
from ``seed`` (or uses the ``generator`` passed), drawing float64 Gaussians on the CPU tensor
by tensor in key order, so a seed gives the same direction on any device and dtype. When
neither is given a fresh nondeterministic seed is drawn and recorded in ``meta["seed"]``.

Example:
    >>> import torch
    >>> from losslab import directions
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).double()
    >>> d = directions.random_direction(net, seed=0)
    >>> w = dict(net.named_parameters())
    >>> bool(torch.allclose(d.vector["0.weight"].norm(dim=1), w["0.weight"].norm(dim=1)))
    True
    >>> float(d.vector["0.bias"].abs().sum())   # 1-D tensors ignored by default
    0.0
    >>> dx, dy = directions.random_plane(net, seed=1, orthogonalize=True, renormalize=False)
    >>> abs(dy.meta["cosine"]) < 1e-12
    True
"""
from __future__ import annotations

from ._core import NORMALIZATIONS, Direction
from ._core import Normalization as Normalization, PointLike as PointLike, VectorLike as VectorLike
from ._random import normalize, orthogonalize, random_direction, random_plane
from ._between import Plane, model_to_model, plane_through
from ._pca import PCAResult, pca_directions
from ._files import count_directions, direction_recipe, from_recipe, load_direction, read_direction_file, save_direction
from ._build import DIRECTION_KINDS, BuiltDirections, build, hessian_directions

__all__ = [
    "Direction",
    "PCAResult",
    "Plane",
    "NORMALIZATIONS",
    "normalize",
    "random_direction",
    "random_plane",
    "orthogonalize",
    "model_to_model",
    "plane_through",
    "pca_directions",
    "DIRECTION_KINDS",
    "BuiltDirections",
    "build",
    "hessian_directions",
    "direction_recipe",
    "from_recipe",
    "save_direction",
    "load_direction",
    "read_direction_file",
    "count_directions",
]
