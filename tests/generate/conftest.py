"""Generator tests train tiny models on the CPU with one thread: two threads may split sums
differently between runs, and the tests compare runs bit for bit."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
