"""What the restart tests read about a training run while it goes on: its MLflow run by
name, and the checkpoints Ray Train has registered (its `checkpoint_manager_snapshot.json`
in the run's storage folder, rewritten at each registration; rank 0's MLflow tag of a
checkpoint can come a moment before Ray Train registers it, and a restart before that
starts from the one before)."""

from __future__ import annotations

import json
from pathlib import Path

SNAPSHOT = "checkpoint_manager_snapshot.json"


def find_run(mlc, name: str):
    """The run named `name` in the experiment `pix2seqd`, or None (not yet)."""
    exp = mlc.get_experiment_by_name("pix2seqd")
    runs = mlc.search_runs([exp.experiment_id], f"attributes.run_name = '{name}'") if exp else []
    return runs[0] if runs else None


def run_folder(storage: Path, run_id: str) -> Path:
    """The run's folder in Ray Train's storage (fit.ray_run_name)."""
    return storage / f"pix2seqd-{run_id[:12]}"


def registered(storage: Path, run_id: str) -> list[str]:
    """Folder names of the checkpoints Ray Train has registered and keeps, oldest first."""
    try:
        snap = json.loads((run_folder(storage, run_id) / SNAPSHOT).read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not yet, or being rewritten
        return []
    return [r["checkpoint_dir_name"] for r in snap["checkpoint_results"]]
