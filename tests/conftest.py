import os

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _losslab_cache(tmp_path_factory):
    """All generated data (MNIST-1D .npz) goes to one session cache, never to ~/.cache."""
    if "LOSSLAB_CACHE" not in os.environ or not os.environ.get("LOSSLAB_TEST_KEEP_CACHE"):
        os.environ["LOSSLAB_CACHE"] = str(tmp_path_factory.mktemp("losslab-cache"))
    yield
