"""Checkpoint references (notes/cli.md): a local directory, a storage URI, or
`runs:/<mlflow_run_id>` = that run's best checkpoint as recorded in its tags."""
from __future__ import annotations

from pathlib import Path


def checkpoint_uri(path: str, storage_path: str) -> str:
    """Ray's checkpoint path (filesystem-relative for remote stores) -> a full URI."""
    if "://" not in storage_path or "://" in path or storage_path.startswith("file://"):
        return path
    scheme = storage_path.split("://", 1)[0]
    query = storage_path.split("?", 1)[1] if "?" in storage_path else ""
    return f"{scheme}://{path.lstrip('/')}" + (f"?{query}" if query else "")


def checkpoint_location(ref: str) -> str:
    """CKPT reference -> the folder or storage URI it names (`runs:/` looked up in MLflow),
    without downloading: what remote actors resolve for themselves."""
    if ref.startswith("runs:/"):
        return _best_of_run(ref[len("runs:/"):].strip("/"))
    return ref


def resolve_checkpoint(ref: str) -> str:
    """CKPT reference -> a local directory holding checkpoint.pt (downloads when remote)."""
    if ref.startswith("runs:/"):
        return resolve_checkpoint(checkpoint_location(ref))
    if "://" in ref and not ref.startswith("file://"):
        return _download(ref)
    path = Path(ref.removeprefix("file://")).expanduser()
    if not (path / "checkpoint.pt").is_file() and not path.is_file():
        raise FileNotFoundError(f"checkpoint {ref!r}: no checkpoint.pt in {path}")
    return str(path)


def _best_of_run(run_id: str) -> str:
    from pix2seqd.platform import tracking

    run = tracking.client().get_run(run_id)
    tags = run.data.tags
    if "best_checkpoint" in tags:
        return tags["best_checkpoint"]
    steps = sorted((int(k.split("/", 1)[1]), v) for k, v in tags.items() if k.startswith("checkpoint/"))
    if not steps:
        raise ValueError(f"MLflow run {run_id} recorded no checkpoint")
    return steps[-1][1]


def _download(uri: str) -> str:
    """Copy a remote checkpoint directory (pyarrow filesystem) into a local temp folder."""
    import tempfile

    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    local = tempfile.mkdtemp(prefix="pix2seqd-ckpt-")
    pafs.copy_files(path, local, source_filesystem=fs)
    return local
