"""One intra-op thread for the tests that train a tiny model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one thread for the block: the same float sums, so the same training run, on
    any machine, and no thread contention over tiny tensors on a shared 2-core one (where
    two busy threads made a 7 s test take over 2 minutes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
