"""The embedded default data set: generated once from a seed, cached under the user's home.

A half-written cache is never reused: the set is generated into a temporary folder next to
the cache entry and renamed into place when complete.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Bump when the generator's output changes, so stale caches are not reused.
GENERATOR_VERSION = 1
DEFAULT_COCO = {"seed": 0, "n_train": 800, "n_val": 100, "min_size": 64, "max_size": 96}


def cache_dir() -> Path:
    base = os.environ.get("PIX2SEQD_CACHE") or os.path.join(Path.home(), ".cache", "pix2seqd")
    return Path(base)


def default_coco_root(**params) -> Path:
    """Path of the generated COCO-panoptic set for `params` (DEFAULT_COCO when empty),
    generating it first if it is not in the cache."""
    from pix2seqd.platform.synthetic.coco import make_coco

    p = {**DEFAULT_COCO, **params}
    name = "coco-v{}-s{seed}-t{n_train}-v{n_val}-{min_size}-{max_size}".format(GENERATOR_VERSION, **p)
    target = cache_dir() / "synthetic" / name
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        print(f"[pix2seqd] generating the default data set into {target} (once)")
        make_coco(tmp, p["seed"], p["n_train"], p["n_val"], p["min_size"], p["max_size"])
        (tmp / ".complete").write_text("ok\n")
        if (target / ".complete").is_file():
            return target  # another process finished first; keep its copy
        if target.exists():
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / ".complete").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_data_root(root: str) -> Path:
    """`data.root` -> a folder; empty means the generated default set."""
    if not root:
        return default_coco_root()
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"data root {root!r} is not a folder")
    return path
