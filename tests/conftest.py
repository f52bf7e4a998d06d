"""Hypothesis profiles ``ci`` / ``dev`` / ``fuzz`` (verify.strategies, picked by $HYPOTHESIS_PROFILE); fixtures."""

import pytest

from verify.strategies import register_profiles

register_profiles()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Two shared cores: torch's intra-op threads only spin there (float64 conv2d 5-8x slower); restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
