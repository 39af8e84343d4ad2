"""A per-process cache of decoded training files, bounded in bytes (`data.cache_mb`).

Ray Data runs the clip decoder as tasks in long-lived worker processes, and a video set is
read clip after clip: each frame's mask is read by every clip that holds it, in every
epoch, and a still image in every epoch. On the generated DAVIS set reading the files was
~70 % of a clip's decode time, and the decoder tasks, decoding the stream ahead of the
trainers, took most of the CPU for the first minutes of a run. Decoded once per process,
the same arrays are looked up instead. Least recently used entries go first once the
budget is full; an array larger than the budget is not kept.

Cached arrays are read-only: a caller that wrote into one would change what the next
clip reads, so it gets an error instead.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

_PROCESS_CACHE: ByteLRU | None = None  # made on first use, one per worker process


class ByteLRU:
    """key -> array or tuple of arrays, at most `budget` bytes in all."""

    def __init__(self, budget: int):
        self.budget = budget
        self.used = 0
        self.hits = self.misses = 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """The cached value of `key`, or `load()` (then kept if it fits)."""
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key][0]
        self.misses += 1
        value = _read_only(load())
        size = sum(a.nbytes for a in (value if isinstance(value, tuple) else (value,)))
        if size <= self.budget:
            self._items[key] = (value, size)
            self.used += size
            while self.used > self.budget:
                _, (_, old) = self._items.popitem(last=False)
                self.used -= old
        return value

    def __len__(self) -> int:
        return len(self._items)


def process_cache(budget_mb: float) -> ByteLRU | None:
    """This process's cache with a `budget_mb` MB budget (None when the budget is 0)."""
    global _PROCESS_CACHE
    if budget_mb <= 0:
        return None
    budget = int(budget_mb * 2**20)
    if _PROCESS_CACHE is None or _PROCESS_CACHE.budget != budget:
        _PROCESS_CACHE = ByteLRU(budget)
    return _PROCESS_CACHE


def cached(cache: ByteLRU | None, key: Hashable, load: Callable[[], Any]) -> Any:
    """cache.get(key, load), or load() without a cache."""
    return load() if cache is None else cache.get(key, load)


def cached_file(cache: ByteLRU | None, path, read: Callable[[Any], Any]) -> Any:
    """read(path), through `cache` for a file path (key: `file_key`); anything else, such
    as a prepared-shard row reference, is read each time."""
    if cache is None or not isinstance(path, (str, Path)):
        return read(path)
    return cache.get(file_key(path), lambda: read(path))


def file_key(path) -> tuple:
    """A cache key for a file: its path, modification time and size (a file rewritten in
    place is read again). A missing file gets a key of its own, so its reader raises."""
    try:
        st = os.stat(path)
    except OSError:
        return ("missing", str(path), object())
    return ("file", str(path), st.st_mtime_ns, st.st_size)


def _read_only(value: Any) -> Any:
    for a in value if isinstance(value, tuple) else (value,):
        a.setflags(write=False)
    return value
