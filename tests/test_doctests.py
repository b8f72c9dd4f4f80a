"""The examples in losslab's docstrings run and print what they say (``doctest``, one test per module).

Modules are found by scanning src/losslab for ``>>>`` (``__main__`` modules are skipped: importing
them runs a command). Each module's examples run with :mod:`doctest` under the suite's settings
(one torch thread, warnings are errors, ``ELLIPSIS`` as in pytest's ``--doctest-modules``); what they
register (models, datasets) and the global RNG states are restored afterwards. They are kept fast:
the whole set takes about 10 s on one CPU thread.
"""
from __future__ import annotations

import doctest
import importlib
import io
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "losslab"


def modules_with_examples() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py" or ">>>" not in path.read_text(encoding="utf-8"):
            continue
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = modules_with_examples()


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Examples register models and datasets and draw from the global RNGs: undo that afterwards,
    so that the rest of the suite sees the same registries and random streams as without them."""
    import numpy as np
    import torch

    from losslab.data import _registry as data_registry
    from losslab.models import _registry as model_registry

    registries = [(r._REGISTRY, dict(r._REGISTRY)) for r in (model_registry, data_registry)]
    torch_rng, np_rng = torch.get_rng_state(), np.random.get_state()
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    yield
    for live, saved in registries:
        live.clear()
        live.update(saved)
    torch.set_rng_state(torch_rng)
    np.random.set_state(np_rng)
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


def test_examples_are_found():
    assert len(MODULES) >= 40
    assert "losslab.params" in MODULES and "losslab.experiments.criteria" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
    assert tests, f"{name} mentions '>>>' but doctest finds no example in it"
    report = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for t in tests:
        runner.run(t, out=report.write)
    assert runner.failures == 0, f"{runner.failures} of {runner.tries} examples in {name} failed:\n{report.getvalue()}"
