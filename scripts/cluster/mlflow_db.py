"""Keep the head node's MLflow SQLite store in object storage (cluster.yaml).

    python mlflow_db.py restore LOCAL.db REMOTE_URI   # before the server starts: a new head
                                                      # picks up the runs of the last one
    python mlflow_db.py backup LOCAL.db REMOTE_URI    # a consistent copy (SQLite backup API,
                                                      # safe while the server writes)
    python mlflow_db.py loop LOCAL.db REMOTE_URI [SECONDS]   # backup every SECONDS (300)

REMOTE_URI is anything pyarrow opens: s3://bucket/key (credentials from the instance
profile), or a local path (tests).
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.fs as pafs


def _remote(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in uri:
        uri = Path(uri).absolute().as_uri()
    return pafs.FileSystem.from_uri(uri)


def backup(local: Path, uri: str) -> None:
    fs, path = _remote(uri)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "mlflow.db"
        src, dst = sqlite3.connect(local), sqlite3.connect(copy)
        with dst:
            src.backup(dst)
        src.close()
        dst.close()
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(str(copy), path, destination_filesystem=fs)


def restore(local: Path, uri: str) -> bool:
    """Copy the remote store to `local` when `local` does not exist; True if copied."""
    if local.exists():
        return False
    fs, path = _remote(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return False
    local.parent.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(local), source_filesystem=fs)
    return True


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[0] not in ("backup", "restore", "loop"):
        sys.exit(__doc__)
    action, local, uri = argv[0], Path(argv[1]).expanduser(), argv[2]
    if action == "restore":
        print(f"restored {uri} -> {local}" if restore(local, uri) else f"kept {local}")
        return
    while True:
        if local.exists():
            backup(local, uri)
        if action == "backup":
            return
        time.sleep(float(argv[3]) if len(argv) > 3 else 300.0)


if __name__ == "__main__":
    main(sys.argv[1:])
