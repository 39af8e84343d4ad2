"""The embedded default data set: generated once from a seed, cached under the user's home.

A half-written cache is never reused: the set is generated into a temporary folder next to
the cache entry and renamed into place when complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from pix2seqd.platform.synthetic.coco import make_coco
from pix2seqd.platform.synthetic.davis import make_davis

log = logging.getLogger(__name__)

# Bump when the generator's output changes, so stale caches are not reused.
GENERATOR_VERSION = 1
DEFAULT_COCO = {"seed": 0, "n_train": 800, "n_val": 100, "min_size": 64, "max_size": 96}
DEFAULT_DAVIS = {"seed": 0, "n_train": 30, "n_val": 10, "min_size": 64, "max_size": 96}


def cache_dir() -> Path:
    base = os.environ.get("PIX2SEQD_CACHE") or os.path.join(Path.home(), ".cache", "pix2seqd")
    return Path(base)


def default_coco_root(**params) -> Path:
    """Path of the generated COCO-panoptic set for `params` (DEFAULT_COCO when empty),
    generating it first if it is not in the cache."""

    p = {**DEFAULT_COCO, **params}
    name = "coco-v{}-s{seed}-t{n_train}-v{n_val}-{min_size}-{max_size}".format(
        GENERATOR_VERSION, **p
    )
    return _cached(
        name,
        lambda out: make_coco(
            out, p["seed"], p["n_train"], p["n_val"], p["min_size"], p["max_size"]
        ),
    )


def default_davis_root(**params) -> Path:
    """The generated DAVIS-2017 set (DEFAULT_DAVIS: sequences of 10-16 frames), cached."""

    p = {**DEFAULT_DAVIS, **params}
    name = "davis-v{}-s{seed}-t{n_train}-v{n_val}-{min_size}-{max_size}".format(
        GENERATOR_VERSION, **p
    )
    return _cached(
        name,
        lambda out: make_davis(
            out, p["seed"], p["n_train"], p["n_val"], p["min_size"], p["max_size"]
        ),
    )


def _cached(name: str, write) -> Path:
    """cache_dir()/synthetic/<name>, made by `write(folder)` into a temporary folder first."""
    target = cache_dir() / "synthetic" / name
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        log.info("generating the default data set into %s (once)", target)
        write(tmp)
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


def resolve_data_root(root: str, video: bool = False) -> Path:
    """`data.root` -> a folder; empty means the generated default set (COCO panoptic, or
    DAVIS 2017 with `video`)."""
    if not root:
        return default_davis_root() if video else default_coco_root()
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"data root {root!r} is not a folder")
    return path
