"""The per-process cache of decoded training files (`data.cache_mb`): LRU within a byte
budget, read-only values, files rewritten in place read again, same clips as uncached."""

import os

import numpy as np
import pytest

from pix2seqd.platform.data.davis import load_davis
from pix2seqd.platform.data.frame_cache import ByteLRU, cached, file_key, process_cache
from pix2seqd.platform.data.video_pipeline import read_clip
from pix2seqd.platform.synthetic.davis import make_davis


def arr(nbytes, fill=0):
    return np.full(nbytes, fill, np.uint8)


def test_lru_keeps_the_recently_used_within_the_budget():
    cache = ByteLRU(300)
    loads = []

    def load(key, n=100):
        return lambda: loads.append(key) or arr(n, key)

    for key in (1, 2, 3):
        cache.get(key, load(key))
    assert cache.used == 300 and len(cache) == 3
    cache.get(1, load(1))  # hit: 1 becomes the most recent
    cache.get(4, load(4))  # evicts 2, the least recently used
    assert loads == [1, 2, 3, 4] and (cache.hits, cache.misses) == (1, 4)
    cache.get(2, load(2))  # miss again: evicts 3
    cache.get(1, load(1))
    assert loads == [1, 2, 3, 4, 2] and cache.used == 300
    big = cache.get(9, load(9, 301))  # larger than the budget: returned, not kept
    assert big.nbytes == 301 and 9 not in cache._items and cache.used == 300
    pair = cache.get("pair", lambda: (arr(10), arr(20)))
    assert cache.used <= 300 and cache._items["pair"][1] == 30 and isinstance(pair, tuple)


def test_cached_values_are_read_only_and_no_cache_loads_each_time():
    value = ByteLRU(100).get("k", lambda: arr(8))
    with pytest.raises(ValueError, match="read-only"):
        value[0] = 1
    calls = []
    for _ in range(2):
        cached(None, "k", lambda: calls.append(1) or arr(1))
    assert len(calls) == 2
    assert process_cache(0) is None
    assert process_cache(1) is process_cache(1) and process_cache(1).budget == 2**20
    assert process_cache(2) is not None and process_cache(2).budget == 2 * 2**20


def test_file_key_follows_rewrites_and_missing_files(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    first = file_key(path)
    assert file_key(path) == first
    path.write_bytes(b"abcd")  # size changes
    os.utime(path, ns=(1, 1))  # and mtime
    assert file_key(path) != first
    assert file_key(tmp_path / "none") != file_key(tmp_path / "none")  # never a hit


def test_read_clip_through_the_cache_equals_the_files(tmp_path):
    video = load_davis(make_davis(tmp_path, 0, 1, 0, 32, 48), "train")[0]
    cache = ByteLRU(2**20)
    plain = read_clip(video, 2, 3, 16)
    for _ in range(2):
        image, ids = read_clip(video, 2, 3, 16, cache)
        assert np.array_equal(image, plain[0]) and np.array_equal(ids, plain[1])
    assert (cache.misses, cache.hits) == (4, 4)  # 1 frame + 3 masks, then all hits
    assert np.array_equal(read_clip(video, 3, 3, 16, cache)[1], read_clip(video, 3, 3, 16)[1])
    assert (cache.misses, cache.hits) == (6, 6)  # frame 5 and mask 5 new, masks 3-4 cached
