"""Shared test fixtures."""

import pytest


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread: small CPU kernels lose more to OpenMP contention on a busy 2-core
    machine than they gain from a second thread. Use with ``pytestmark = usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
