"""Loss, accuracy and user metrics of one model at many points in parameter space.

This package is split by concern: :mod:`._evaluator` (the :class:`Evaluator`: public API, strategy
choice, BatchNorm recompute, evaluation passes), :mod:`._memory` (memory/cache sizing and the allocator
warm-up), :mod:`._first_layer` (the first-layer precomputation), :mod:`._layout` (channels-last
storage for convolution nets on a CPU), :mod:`._sources` (stacked points and linear combinations) and
:mod:`._metrics` (built-in losses and metrics). The model's shell, the data
normalizer and the types come from the functional core, :mod:`losslab._functional`.

An :class:`Evaluator` holds a model, a dataset (resident tensors, moved to the device once) and a
loss; it turns points (``dict[str, Tensor]`` keyed like ``model.named_parameters()``) into numbers
without ever touching the user's model. For a point :math:`\\theta` and data
:math:`\\{(x_n, y_n)\\}_{n=1}^N` split into chunks :math:`C_1, \\dots, C_m` it returns

.. math::

    L(\\theta) = \\frac{1}{N} \\sum_{c=1}^{m} |C_c| \\, \\bar\\ell_c(\\theta), \\qquad
    \\bar\\ell_c(\\theta) = \\mathrm{loss}(f_\\theta(x_{C_c}), y_{C_c}),

i.e. the full-batch mean, exact for any chunking (chunks may differ in size). Every metric is
aggregated the same way, so a metric must return the *mean over the examples of its batch*.

How the model is run:

* The model is copied once into a private *shell* whose tensors live on the ``meta`` device (no
  memory is duplicated) and which is always evaluated with ``torch.func.functional_call`` under
  ``torch.inference_mode()``. The user's parameters, buffers and ``training`` flags are never read
  for writing, so they are bit-identical before and after every call. Evaluation is always in
  eval mode (dropout off), whatever mode the user's model is in.
* Keys absent from a point are taken from the model's parameters as they were at construction
  (shared storage when no device/dtype/layout conversion is needed) and from a snapshot of its buffers.
* Layout (``memory_format``): ``"auto"`` stores the inputs and 4-D weights channels-last for
  ``nn.Conv2d`` nets on 4-D float32 inputs on a CPU, after a check forward agrees with the default
  layout (1.04-1.7x per forward on the nets measured; see :mod:`._layout`).
* Strategies: ``"loop"`` evaluates one point after another; ``"vmap"`` evaluates groups of
  ``points_per_chunk`` stacked points at once with ``torch.vmap(functional_call)``; ``"auto"``
  measures both once, at the first call with two or more points: the loop on the first point
  (time :math:`t_1`), then vmap on the first :math:`m = \\mathrm{clip}(\\mathrm{round}(\\tau / t_1),
  2, \\min(\\texttt{points\\_per\\_chunk}, \\max(2, \\lfloor K/4 \\rfloor)))` points of that call
  (:math:`K` points given, :math:`\\tau` = 20 ms), over all the data, and keeps the strategy with
  the smaller time per point for the evaluator's lifetime. No point is repeated to fill a group.
  The probe's results are kept when they are what the chosen strategy computes anyway (the loop's
  first point; vmap's group when :math:`m` covers the whole first group), so the overhead is
  :math:`m` points evaluated by the slower strategy (or, when vmap wins on a partial group, the
  probe redone as part of that group). The time is process CPU time on a CPU with one torch thread
  (steady on a loaded machine), wall-clock time otherwise. The choice and the timings are
  recorded in :attr:`Evaluator.info`.
* Points that are linear combinations :math:`\\theta_k = \\theta_0 + \\sum_j c_{kj} d_j` (grids,
  lines) can be given as coefficients (:meth:`Evaluator.evaluate_combinations`): the loop then
  writes each point, tensor by tensor, into one set of preallocated buffers just before evaluating
  it (no stacked copies of the parameters, no concatenation, no page faults), vmap builds one
  stacked group at a time; both compute ``torch.add(theta_0, d_1, alpha=c_k1)``, then
  ``+= c_kj d_j`` (``add_`` with ``alpha``) for the other directions, elementwise in the evaluation
  dtype, so a point's tensors are bit-identical whichever strategy builds them. The buffers (and
  the first layer's terms) are kept for the next call with the same direction tensors (same
  address and version), so a surface evaluated block by block builds them once.
* First layer (combinations, loop or vmap): the first layer with parameters is affine in its parameters
  and, when it qualifies, sees an input that depends on the data only, so its output at
  :math:`\\theta_k` is :math:`T_0 + \\sum_j c_{kj} T_j` with :math:`T_j` the layer applied to the
  data with direction :math:`j`'s weight and bias (:math:`T_0`: the base, or the model's values
  for keys no direction moves). With ``first_layer="precompute"`` (or ``"auto"`` when the fan-in
  is at least :data:`FIRST_LAYER_MIN_RATIO` times the number of terms and the layer does at least
  :data:`FIRST_LAYER_MIN_SHARE` of the multiply-adds of the model's Linear/Conv layers, counted by
  the activation probe) the :math:`T_j` are
  computed once per set of directions on the evaluation chunks and combined at each point (for
  vmap, for the K points of a call at once, as one extra input of the vmapped forward), replacing
  the layer's matrix product by a few additions. The saving grows with the layer's fan-in (the
  matrix product it replaces) relative to the number of terms (the additions it costs); see
  bench/RESULTS.md for measurements. The layer qualifies when it is an exact ``nn.Linear`` or
  ``nn.Conv1d/2d/3d`` without hooks or shared parameters, runs once, no module with parameters
  or buffers runs before it, and every parameter belongs to a leaf module; before use, the model's
  output on a few examples at :math:`c = (1, \\dots, 1)` is checked against computing the layer
  (relative difference at most 1e-3), and the terms must fit in half the memory budget.
  Otherwise, or with ``"compute"``, the layer is computed; :attr:`Evaluator.info` says which and
  why. The results equal the computed ones to rounding (not bit for bit).
* BatchNorm: ``bn="recompute"`` (the default when the model has BatchNorm layers that track
  running statistics) resets the running statistics at every point and recomputes them with one
  pass over ``bn_data`` (default: the evaluation data) in chunks of ``batch_size`` with the
  BatchNorm layers in train mode and cumulative-average semantics (``momentum=None``, as
  ``torch.optim.swa_utils.update_bn`` and Garipov et al.'s ``update_bn``): after chunks
  :math:`1..m`, ``running_mean`` is the plain average of the per-chunk batch means and
  ``running_var`` of the per-chunk unbiased variances; with a single chunk they are the exact
  full-data statistics. Other layers (dropout) stay in eval mode during this pass, so it is
  deterministic. Then the point is evaluated in eval mode with those statistics. ``bn="eval"``
  uses the model's stored buffers (or buffers given in the point).
* Memory: one probe forward of a few examples with hooks on every leaf module measures the
  activation bytes per example, :math:`b = \\text{input bytes} + \\sum_{\\text{leaf modules}}
  \\text{output bytes}` (a conservative bound: it counts all activations as alive at once), and
  the largest single activation per example, :math:`a = \\max(\\text{input}, \\text{leaf outputs})`.
  With a budget :math:`M` bytes the chunk is :math:`B = \\min(N, \\lfloor M / b \\rfloor)` examples
  (or ``batch_size``) and a group of points is :math:`K = \\min(64, \\lfloor M / (B b + P)
  \\rfloor)` points (``P``: bytes of one point), or ``points_per_chunk``. :math:`B` is the
  BatchNorm chunking and does not depend on the strategy, so BatchNorm statistics are the same
  for both.
* Cache (CPU): a full-batch forward on a CPU is slowed down by its size: ``malloc`` serves large
  activations with ``mmap`` or hands them back to the OS after each use, so the next forward
  page-faults and zeroes them again (kernel time that can dominate a small model's forward), and
  they do not stay in cache. With ``cache_mb`` = :math:`C` (4 MiB on a CPU by default, off on GPUs) the
  evaluation passes use chunks of :math:`B_c = \\mathrm{clip}(\\lfloor C / a \\rfloor, 64, B)`
  examples (cut into equal chunks), for the loop and for vmap, and each vmap call takes
  :math:`K_c = \\mathrm{clip}(\\lfloor C / (a B_c) \\rfloor, 1, K)` points of a group (so
  :math:`K_c B_c a \\approx C`: the same calls per point as any split of that product, with the
  largest per-point matrix products); the memory budget stays the upper bound. glibc's allocator
  thresholds are then raised above one chunk's activations (see :meth:`Evaluator._warm_allocator`),
  so chunks after the first reuse memory without page faults. Results do not depend on the
  chunking beyond rounding, and a point always shares its vmap call with the same points, so
  reruns are bit-identical. With the allocator warm, chunks of a fair fraction of the data cost
  about the same per example, while very small chunks pay per-call overhead (hence the floor of
  64 examples); bench/RESULTS.md has the measurements behind these choices.
* Measured chunks (CPU, ``cache_mb="auto"``, the default): which chunk size is fastest depends on
  the model (a convolutional net may run its 3x3 convolutions fastest on 64 images, a transformer
  on a few hundred sequences, a wide-stem net on the whole batch), so :math:`B_c` is only the first
  candidate. The candidates are :math:`B_c, 2B_c, 4B_c, \\dots` below :math:`B`, and :math:`B`
  (one per distinct number of chunks); the loop's first points are evaluated one per candidate,
  in increasing size, each timed over the whole point (process CPU time with one thread), until
  one is slower than the best so far; the loop keeps the fastest size for the rest of the
  evaluator's life. Nothing is thrown away: each of those points is exact for its own chunking.
  The choice is recorded in ``info["chunking"]`` and as ``info["cache_mb"]`` = size :math:`\\times a`,
  the cache target whose rule gives that size, so an evaluator built with that ``cache_mb`` (a
  resumed surface is) uses the same chunks without measuring. Pass ``cache_mb`` (a number, or
  ``None``) for chunks by rule only, e.g. for results that must not depend on timings.
* Non-finite values are recorded as NaN/inf, never raised.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from losslab.evaluate import Evaluator
    >>> from losslab import params
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(20, 3, generator=g), torch.randint(0, 2, (20,), generator=g)
    >>> model = nn.Linear(3, 2)
    >>> ev = Evaluator(model, (x, y), batch_size=8)
    >>> r = ev.evaluate(params.get_point(model))
    >>> sorted(r)
    ['accuracy', 'loss']
    >>> abs(r["loss"] - nn.functional.cross_entropy(model(x), y).item()) < 1e-6
    True
    >>> ev.evaluate_many([params.get_point(model)] * 3)["loss"].shape
    (3,)
"""
from __future__ import annotations

# Re-exports: every name ``losslab.evaluate`` had before it became a package keeps working.
from .._functional import LossFn, Point  # noqa: F401
from .._functional import make_shell as _make_shell  # noqa: F401 (the old private name; connect.neb uses it)
from ._evaluator import Evaluator, MetricFn, PointSource
from ._examples import evaluate_examples
from ._first_layer import FIRST_LAYER_MIN_RATIO, FIRST_LAYER_MIN_SHARE  # noqa: F401
from ._memory import DEFAULT_CACHE_MB
from ._metrics import accuracy, check_model_output, has_batchnorm  # noqa: F401
from ._sources import _Combinations, _Source, _Stacked  # noqa: F401

__all__ = ["Evaluator", "LossFn", "MetricFn", "PointSource", "has_batchnorm", "accuracy", "DEFAULT_CACHE_MB",
           "evaluate_examples"]
