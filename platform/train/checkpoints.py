"""Checkpoints: the file, references to it, fetching it, and its MLflow tags.

File: one `checkpoint.pt` per folder, a plain dict of state dicts (model, EMA, optimizer,
step, data position, every rank's RNG state, the flattened config, where it came from).
Everything in it loads with `torch.load(weights_only=True)`: tensors, numbers, strings and
containers of them; the config is stored flattened (dotted paths -> values).

References (docs/cli.md, CKPT): a local folder (or `file://` URI), a storage URI such as
`s3://bucket/path?endpoint_override=...`, or `runs:/<mlflow run id>` = that run's best
checkpoint as recorded in its tags. `checkpoint_location` turns a reference into a folder or
URI every node can read; `fetched` makes it a local folder for the length of a `with` block:
a remote checkpoint is copied with Ray's `Checkpoint.to_directory` into a temporary folder
that is removed when the block ends, a local one is used in place.

Inference reads the weights only (`inference_state`, `load_meta`): `checkpoint.pt` is one
file, so a remote one is fetched whole, but it is memory-mapped and only the EMA weights,
the config and the metadata are read from it; the optimizer's and the raw model's tensors
are never paged in, and the local copy is removed as soon as the caller's block ends.

Tags: `CheckpointTags` is the one reader and writer of a training run's checkpoint tags;
`CheckpointLog` is rank 0's record of them during training.

Folders of a run (`<storage>/<run name>/`, any storage pyarrow reads): `folder_name`,
`run_folders`; a checkpoint that fails to load when a worker group restarts is set aside
(`set_aside`: its file renamed `checkpoint.pt.corrupt`, platform/train/restore_point.py).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch
from mlflow.exceptions import MlflowException

from pix2seqd.platform import tracking
from pix2seqd.platform.tracking_buffer import delete_tag_if_present, in_order

FILE = "checkpoint.pt"
# trained_scope: the state-dict key prefixes whose weights were trained or pretrained ("" =
# all; absent in older checkpoints, which were all trained): models/weight_transfer.py
META_KEYS = ("config", "step", "mlflow_run_id", "tracking_uri", "categories", "trained_scope")
INFERENCE_KEYS = ("ema", *META_KEYS)
TEMP_PREFIX = "pix2seqd-ckpt-"


def save(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write `state` atomically to `directory/checkpoint.pt` (temp file + rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pt")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, directory / FILE)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return directory / FILE


def load(
    directory: str | os.PathLike, map_location: str = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Load a local checkpoint folder (or the file itself) written by `save`. `mmap`: tensors
    stay on disk until touched (for reading the config and metadata of a large file)."""
    path = Path(directory)
    if path.is_dir():
        path = path / FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)


@contextlib.contextmanager
def inference_state(ref: str, map_location: str = "cpu") -> Iterator[dict[str, Any]]:
    """The keys of `INFERENCE_KEYS` the checkpoint `ref` holds: EMA weights, config, metadata.

    The tensors are memory-mapped from the (local or fetched) file and valid inside the
    block only: copy them out (`load_state_dict` does) before it ends."""
    with fetched(ref) as path:
        snap = load(path, map_location=map_location, mmap=True)
        yield {k: snap[k] for k in INFERENCE_KEYS if k in snap}


def load_meta(ref: str) -> dict[str, Any]:
    """The config and metadata (`META_KEYS`, those present) of checkpoint `ref`, no tensors."""
    with fetched(ref) as path:
        snap = load(path, mmap=True)
        return {k: snap[k] for k in META_KEYS if k in snap}


def checkpoint_ref(storage: str, run_name: str, dir_name: str) -> str:
    """The URI (or local path) of a checkpoint folder under the Ray Train storage path;
    a query string of the storage URI (e.g. an S3 endpoint) is kept at the end."""
    if "://" not in storage:
        return f"{storage.rstrip('/')}/{run_name}/{dir_name}"
    base, _, query = storage.partition("?")
    return f"{base.rstrip('/')}/{run_name}/{dir_name}" + (f"?{query}" if query else "")


def checkpoint_uri(path: str, storage_path: str) -> str:
    """Ray's checkpoint path (filesystem-relative for remote stores) -> a full URI."""
    if "://" not in storage_path or "://" in path or storage_path.startswith("file://"):
        return path
    scheme = storage_path.split("://", 1)[0]
    query = storage_path.split("?", 1)[1] if "?" in storage_path else ""
    return f"{scheme}://{path.lstrip('/')}" + (f"?{query}" if query else "")


def checkpoint_location(ref: str) -> str:
    """CKPT reference -> the folder or storage URI it names (`runs:/` looked up in MLflow),
    without fetching it: what remote actors are given to fetch for themselves."""
    if not ref.startswith("runs:/"):
        return ref
    run_id = ref[len("runs:/") :].strip("/")
    mlc = tracking.client()
    try:
        chosen = CheckpointTags.of_run(mlc, run_id).chosen()
    except MlflowException as err:  # unknown run, unreachable server: name what was asked
        raise ValueError(
            f"checkpoint reference {ref}: cannot read MLflow run {run_id} at "
            f"{mlc.tracking_uri}: {err.message}"
        ) from err
    if not chosen:
        raise ValueError(f"MLflow run {run_id} recorded no checkpoint")
    return chosen


@contextlib.contextmanager
def fetched(ref: str) -> Iterator[Path]:
    """CKPT reference -> a local folder holding checkpoint.pt (or the file itself), for the
    block. A local one is used in place; a remote one is copied by Ray's `Checkpoint` into
    a temporary folder (`TEMP_PREFIX`, under the system temp dir), removed when the block
    ends, raise or not."""
    location = checkpoint_location(ref)
    if "://" not in location or location.startswith("file://"):
        yield _checked(Path(location.removeprefix("file://")).expanduser(), ref)
        return
    # lazy: Ray Train loads in seconds, and only a remote checkpoint needs it
    import ray.train

    with tempfile.TemporaryDirectory(prefix=TEMP_PREFIX) as local:
        ray.train.Checkpoint(location).to_directory(local)
        yield _checked(Path(local), ref)


def _checked(path: Path, ref: str) -> Path:
    if not (path / FILE).is_file() and not path.is_file():
        raise FileNotFoundError(f"checkpoint {ref!r}: no {FILE} in {path}")
    return path


# A run's checkpoint folders: checkpoint_<step:08d>, or checkpoint_<step:08d>-<n> when a
# set-aside checkpoint of the same step still holds the plain name.
_FOLDER = re.compile(r"checkpoint_(\d{8})(?:-(\d+))?")
SET_ASIDE_SUFFIX = ".corrupt"


def folder_name(step: int, taken: Collection[str] = ()) -> str:
    """The folder name of the checkpoint of `step`: `checkpoint_<step:08d>`, or that with
    `-1`, `-2`, ... while a set-aside checkpoint (`taken`) holds the name. Ray Train tracks
    its checkpoints by folder: two of one name would share a folder, and its deleting the
    older one would delete the newer."""
    name, n = f"checkpoint_{step:08d}", 0
    while (f"{name}-{n}" if n else name) in taken:
        n += 1
    return f"{name}-{n}" if n else name


def folder_order(name: str) -> tuple[int, int] | None:
    """(step, n) of a checkpoint folder name (`folder_name`), None for other names."""
    match = _FOLDER.fullmatch(name)
    return (int(match[1]), int(match[2] or 0)) if match else None


def run_folders(fs: pafs.FileSystem, run_path: str) -> list[str]:
    """The checkpoint folders under a run's storage folder (`fs` paths), newest first."""
    infos = fs.get_file_info(pafs.FileSelector(run_path, allow_not_found=True))
    named = [
        (order, info.path)
        for info in infos
        if info.type == pafs.FileType.Directory and (order := folder_order(info.base_name))
    ]
    return [path for _, path in sorted(named, reverse=True)]


def set_aside(fs: pafs.FileSystem, folder: str) -> None:
    """Rename `folder/checkpoint.pt` to `checkpoint.pt.corrupt` (`fs` path, local or
    remote): nothing loads it again, and the folder stays, since Ray Train's record of
    the run names it (and deletes it in its turn)."""
    fs.move(f"{folder}/{FILE}", f"{folder}/{FILE}{SET_ASIDE_SUFFIX}")


def is_set_aside(fs: pafs.FileSystem, folder: str) -> bool:
    return fs.get_file_info(f"{folder}/{FILE}{SET_ASIDE_SUFFIX}").type == pafs.FileType.File


STEP_TAG_PREFIX = "checkpoint/"
SET_ASIDE_TAG_PREFIX = "corrupt_checkpoint/"
BEST_TAG, BEST_SCORE_TAG, BEST_STEP_TAG = "best_checkpoint", "best_val_pq", "best_step"


@dataclass(frozen=True)
class CheckpointTags:
    """A training run's MLflow record of its checkpoints (docs/cli.md): `checkpoint/<step>`
    -> the reference of each checkpoint Ray Train keeps; `best_checkpoint` -> the one the
    run stands for, with `best_val_pq` and `best_step` when it was chosen by val/pq;
    `corrupt_checkpoint/<step>` -> a checkpoint that failed to load at a restart and was set
    aside, with the reason.

    The one reader (`read`, `of_run`) and writer (`step_key`, `best_tags`,
    `set_aside_tags`) of these tags."""

    refs: Mapping[int, str] = field(default_factory=dict)  # step -> reference, by step
    best_ref: str = ""
    best_score: float = -math.inf
    best_step: int | None = None

    @classmethod
    def read(cls, tags: Mapping[str, str]) -> CheckpointTags:
        refs = {
            int(k[len(STEP_TAG_PREFIX) :]): v
            for k, v in tags.items()
            if k.startswith(STEP_TAG_PREFIX)
        }
        step = tags.get(BEST_STEP_TAG, "")
        return cls(
            dict(sorted(refs.items())),
            tags.get(BEST_TAG, ""),
            float(tags.get(BEST_SCORE_TAG, "-inf")),
            int(step) if step else None,
        )

    @classmethod
    def of_run(cls, mlc, run_id: str) -> CheckpointTags:
        return cls.read(mlc.get_run(run_id).data.tags)

    @property
    def latest_step(self) -> int:
        """The newest recorded checkpoint's step (0 when none)."""
        return max(self.refs, default=0)

    def chosen(self) -> str:
        """The checkpoint the run stands for: the best, else the newest ('' when none)."""
        return self.best_ref or (self.refs[self.latest_step] if self.refs else "")

    @staticmethod
    def step_key(step: int) -> str:
        return f"{STEP_TAG_PREFIX}{step}"

    @staticmethod
    def best_tags(ref: str, score: float | None = None, step: int | None = None) -> dict[str, str]:
        """`best_checkpoint`, with `best_val_pq` and `best_step` when chosen by a score."""
        tags = {BEST_TAG: ref}
        if score is not None:
            tags.update({BEST_SCORE_TAG: repr(score), BEST_STEP_TAG: str(step)})
        return tags

    @staticmethod
    def set_aside_tags(step: int, ref: str, reason: str) -> dict[str, str]:
        """`corrupt_checkpoint/<step>`: the set-aside checkpoint's reference and why."""
        return {f"{SET_ASIDE_TAG_PREFIX}{step}": f"{ref} ({reason})"}


class CheckpointLog:
    """Rank 0's MLflow record of the persisted checkpoints and of the best one.

    Each checkpoint is tagged once Ray Train has persisted it (the tags of those it has
    deleted, beyond the last `keep`, are removed). The best by val/pq is copied apart to
    `<storage>/<run name>/best_<step:08d>` before `best_checkpoint` is moved to it, so the
    tag always names a complete checkpoint. State is read back from the run's tags, so a
    restarted worker group continues it.

    Through a `tracking_buffer.BufferedClient` that reading and the tagging run on its
    sender thread, in step order, when the server answers: a worker group that starts during
    an outage trains on, copies apart each score better than any it has seen, and decides
    which copy is the best once the run's tags can be read (removing the others then). With
    a plain client everything happens in the call."""

    def __init__(self, mlc, run_id: str, storage: str, run_name: str, keep: int):
        self.mlc, self.run_id, self.storage, self.run_name, self.keep = (
            mlc,
            run_id,
            storage,
            run_name,
            keep,
        )
        self.steps: list[int] = []
        self.best_score, self.best_ref = -math.inf, ""
        self._loaded = False
        self._copied = -math.inf  # the best score this worker group copied apart
        in_order(mlc, self._load, "checkpoint tags of the run")

    def record(self, step: int, dir_name: str, local_dir: str, score: float | None) -> None:
        ref = checkpoint_ref(self.storage, self.run_name, dir_name)
        copy = ""
        # local_dir is gone after this call: a possible best is copied now, judged later
        if score is not None and score > max(self.best_score, self._copied):
            copy = self._copy_best(step, local_dir)
            self._copied = score
        in_order(
            self.mlc,
            lambda client: self._tag(client, step, ref, score, copy),
            f"tags of checkpoint {step}",
        )

    def _load(self, client) -> None:
        if self._loaded:
            return
        tags = CheckpointTags.of_run(client, self.run_id)
        self.steps = sorted(tags.refs)
        self.best_score, self.best_ref = tags.best_score, tags.best_ref
        self._loaded = True

    def _copy_best(self, step: int, local_dir: str) -> str:
        ref = checkpoint_ref(self.storage, self.run_name, f"best_{step:08d}")
        fs, path = pafs.FileSystem.from_uri(_as_uri(ref))
        fs.create_dir(path, recursive=True)
        pafs.copy_files(local_dir, path, destination_filesystem=fs)
        return ref

    def _tag(self, client, step: int, ref: str, score: float | None, copy: str) -> None:
        """Tag checkpoint `step` (and the best), untag those beyond `keep`, remove the best
        copy that lost. Safe to repeat: an outage can interrupt it anywhere before the state
        is updated."""
        self._load(client)
        tags = {CheckpointTags.step_key(step): ref}
        best, stale = None, copy
        if score is None:  # no periodic evaluation: the latest checkpoint is the best guess
            tags.update(CheckpointTags.best_tags(ref))
        elif copy and score > self.best_score:
            tags.update(CheckpointTags.best_tags(copy, score, step))
            best, stale = (score, copy), self.best_ref if "/best_" in self.best_ref else ""
        tracking.set_tags(client, self.run_id, tags)
        steps = sorted(set(self.steps) | {step})
        for old in steps[: -self.keep]:  # Ray Train deleted these folders
            delete_tag_if_present(client, self.run_id, CheckpointTags.step_key(old))
        self.steps = steps[-self.keep :]
        if best:
            self.best_score, self.best_ref = best
        if stale:
            fs, path = pafs.FileSystem.from_uri(_as_uri(stale))
            with contextlib.suppress(FileNotFoundError):  # removed by an earlier try
                fs.delete_dir(path)


def _as_uri(ref: str) -> str:
    return ref if "://" in ref else f"file://{ref}"
