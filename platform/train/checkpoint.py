"""Checkpoint files: one `checkpoint.pt` per directory, a plain dict of state dicts.

Everything in it loads with `torch.load(weights_only=True)`: tensors, numbers, strings and
containers of them; the config is stored flattened (dotted paths -> values).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FILE = "checkpoint.pt"


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


def load(directory: str | os.PathLike, map_location: str = "cpu", mmap: bool = False
         ) -> dict[str, Any]:
    """Load a checkpoint directory (or the file itself) written by `save`. `mmap`: tensors
    stay on disk until touched (for reading the config and metadata of a large file)."""
    path = Path(directory)
    if path.is_dir():
        path = path / FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)


def config_to_storable(flat: dict[str, Any]) -> dict[str, Any]:
    """Tuples become lists so the flattened config survives `weights_only` loading."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in flat.items()}
