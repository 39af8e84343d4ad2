"""The checkpoint a restarted worker group continues from, the same on every rank.

Ray Train gives every worker the run's newest registered checkpoint. Rank 0 loads it; one
that does not load (a truncated or partial `checkpoint.pt`, a missing one, a file without
the state resume needs) is set aside (`checkpoints.set_aside`: the file renamed
`checkpoint.pt.corrupt`) and the run's older checkpoint folders in storage
(`<storage>/<run name>/checkpoint_*`, the last `train.keep_checkpoints` that Ray Train
keeps) are tried, newest first, until one loads. Rank 0 broadcasts its choice and the other
ranks load that one, so all ranks continue from the same step. No loadable checkpoint is an
error: a run must not silently start again from step 0.

A checkpoint that cannot be fetched (a storage error) is not set aside: the error ends the
attempt, and Ray Train's next restart tries again.
"""

from __future__ import annotations

import logging
import pickle
import posixpath
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs
import ray.train
import torch.distributed as dist

from pix2seqd.platform.train import checkpoints

log = logging.getLogger(__name__)

# what `state.restore` reads: a file without them cannot continue the run
RESUME_KEYS = ("model", "ema", "optimizer", "step", "rng")
# what a truncated, partial or foreign checkpoint.pt raises from torch.load
LOAD_ERRORS = (RuntimeError, EOFError, OSError, ValueError, KeyError, pickle.UnpicklingError)
REASON_CHARS = 300  # of the error message, in the MLflow tag


class Unloadable(Exception):
    """A fetched checkpoint folder whose `checkpoint.pt` is missing, does not load, or
    lacks the state resume needs."""


@dataclass(frozen=True)
class SetAside:
    """A checkpoint that failed to load: its step, folder name and the error."""

    step: int
    dir_name: str
    reason: str


@dataclass(frozen=True)
class RestorePoint:
    """What a worker group starts from: `snap` (None: a fresh run) and its folder name
    `dir_name`, the checkpoints set aside on the way (rank 0 tags them), and `taken`: the
    run's folder names that hold a set-aside checkpoint (new checkpoints of those steps get
    other names, `checkpoints.folder_name`)."""

    snap: dict[str, Any] | None = None
    dir_name: str = ""
    set_aside: tuple[SetAside, ...] = ()
    taken: frozenset[str] = field(default_factory=frozenset)


def agreed(newest: ray.train.Checkpoint | None, rank: int, world: int) -> RestorePoint:
    """The restore point of every rank (a collective when restoring: all ranks call it).
    `newest`: `ray.train.get_checkpoint()`, the same on every rank."""
    if newest is None:
        return RestorePoint()
    fs = newest.filesystem
    choice: tuple[str, tuple[SetAside, ...], frozenset[str]] | None = None
    snap = None
    if rank == 0:
        path, snap, set_aside, taken = _choose(fs, newest.path)
        choice = (path, set_aside, taken)
    if world > 1 and dist.is_initialized():
        box = [choice]
        dist.broadcast_object_list(box, src=0)
        choice = box[0]
    path, set_aside, taken = choice
    if snap is None:  # the other ranks: rank 0's choice is known to load
        snap = _load(fs, path)
    return RestorePoint(snap, posixpath.basename(path.rstrip("/")), set_aside, taken)


def _choose(
    fs: pafs.FileSystem, newest: str
) -> tuple[str, dict[str, Any], tuple[SetAside, ...], frozenset[str]]:
    """Rank 0: (folder, snapshot) of the newest checkpoint that loads, the ones set aside on
    the way, and the names of the run's set-aside folders."""
    run, name = posixpath.split(newest.rstrip("/"))
    limit = checkpoints.folder_order(name)
    older = [
        path
        for path in checkpoints.run_folders(fs, run)
        if limit is None or checkpoints.folder_order(posixpath.basename(path)) < limit
    ]
    set_aside: list[SetAside] = []
    for path in [newest, *older]:
        try:
            snap = _load(fs, path)
        except Unloadable as err:
            if not checkpoints.is_set_aside(fs, path):
                set_aside.append(_set_aside(fs, path, err))
            continue
        return path, snap, tuple(set_aside), _taken(fs, run)
    tried = [posixpath.basename(p.rstrip("/")) for p in [newest, *older]]
    raise RuntimeError(f"no checkpoint of the run in {run} loads (tried {tried})")


def _set_aside(fs: pafs.FileSystem, path: str, err: Unloadable) -> SetAside:
    name = posixpath.basename(path.rstrip("/"))
    reason = str(err)[:REASON_CHARS]
    log.warning("checkpoint %s does not load (%s); set aside, trying an older one", path, reason)
    if fs.get_file_info(f"{path}/{checkpoints.FILE}").type == pafs.FileType.File:
        checkpoints.set_aside(fs, path)
    else:  # nothing to rename: an empty file marks the folder set aside all the same
        fs.open_output_stream(f"{path}/{checkpoints.FILE}{checkpoints.SET_ASIDE_SUFFIX}").close()
    order = checkpoints.folder_order(name)
    return SetAside(order[0] if order else -1, name, reason)


def _taken(fs: pafs.FileSystem, run: str) -> frozenset[str]:
    """Names of the run's folders that hold a set-aside checkpoint."""
    return frozenset(
        posixpath.basename(p)
        for p in checkpoints.run_folders(fs, run)
        if checkpoints.is_set_aside(fs, p)
    )


def _load(fs: pafs.FileSystem, path: str) -> dict[str, Any]:
    """The snapshot in checkpoint folder `path`, on the CPU (`state.restore` moves it): a
    device's out-of-memory error must not pass for a corrupt file. Fetching errors pass
    through; what the fetched folder holds raises `Unloadable`."""
    with ray.train.Checkpoint(path, filesystem=fs).as_directory() as local:
        try:
            snap = checkpoints.load(local, map_location="cpu")
        except LOAD_ERRORS as err:
            raise Unloadable(f"{type(err).__name__}: {err}") from err
    missing = [k for k in RESUME_KEYS if k not in snap]
    if missing:
        raise Unloadable(f"{checkpoints.FILE} lacks {missing}")
    return snap
