import os

import pytest
import torch

torch.set_num_threads(1)

SHARED_DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


@pytest.fixture
def shared_data() -> str:
    """The real datasets folder (``../shared/data`` beside the repo, or $DARKKNOWLEDGE_DATA); skip if absent."""
    for d in (os.environ.get("DARKKNOWLEDGE_DATA"), SHARED_DATA):
        if d and os.path.isfile(os.path.join(d, "mnist", "train-images-idx3-ubyte.gz")):
            return d
    pytest.skip("real MNIST files not found")
