"""Which checkpoint a restarted worker group continues from when the newest one does not
load (platform/train/restore_point.py), on a local run folder like Ray Train's."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray.train
import torch

from pix2seqd.platform.train import checkpoints, restore_point
from pix2seqd.platform.train.restore_point import SetAside


def _write(run: Path, name: str, step: int, **extra) -> Path:
    folder = run / name
    state = {"model": {"w": torch.full((4,), float(step))}, "ema": {}, "optimizer": {}}
    checkpoints.save(folder, {**state, "step": step, "rng": [], **extra})
    return folder


def _truncate(folder: Path) -> None:
    path = folder / checkpoints.FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture()
def run(tmp_path) -> Path:
    """A run folder with the checkpoints of steps 10, 20, 30 (Ray Train keeps 3)."""
    run = tmp_path / "pix2seqd-abc"
    for step in (10, 20, 30):
        _write(run, f"checkpoint_{step:08d}", step)
    (run / "checkpoint_manager_snapshot.json").write_text("{}")  # Ray's file, not a folder
    return run


def _agreed(folder: Path):
    return restore_point.agreed(ray.train.Checkpoint(str(folder)), rank=0, world=1)


def test_a_truncated_newest_checkpoint_is_set_aside_and_the_previous_one_used(run):
    _truncate(run / "checkpoint_00000030")
    point = _agreed(run / "checkpoint_00000030")
    assert point.snap["step"] == 20 and point.dir_name == "checkpoint_00000020"
    assert torch.equal(point.snap["model"]["w"], torch.full((4,), 20.0))
    [aside] = point.set_aside
    assert (aside.step, aside.dir_name) == (30, "checkpoint_00000030")
    assert "RuntimeError" in aside.reason or "EOFError" in aside.reason
    newest = run / "checkpoint_00000030"
    assert not (newest / checkpoints.FILE).exists()
    assert (newest / f"{checkpoints.FILE}.corrupt").is_file()  # kept, renamed
    assert point.taken == {"checkpoint_00000030"}
    # the new checkpoint of step 30 goes to a folder of its own
    assert checkpoints.folder_name(30, point.taken) == "checkpoint_00000030-1"
    assert checkpoints.folder_name(20, point.taken) == "checkpoint_00000020"


def test_a_later_restart_handed_the_same_checkpoint_again_sets_nothing_aside_twice(run):
    _truncate(run / "checkpoint_00000030")
    _agreed(run / "checkpoint_00000030")
    again = _agreed(run / "checkpoint_00000030")  # Ray still names it until it rotates out
    assert again.snap["step"] == 20 and again.set_aside == ()
    assert again.taken == {"checkpoint_00000030"}


def test_a_set_aside_rewritten_step_is_passed_over_by_name(run):
    # after a set-aside, step 30 was written again as checkpoint_00000030-1; then that
    # one is truncated too: the fall-back passes both and takes step 20
    _truncate(run / "checkpoint_00000030")
    _agreed(run / "checkpoint_00000030")
    rewritten = _write(run, "checkpoint_00000030-1", 30)
    _truncate(rewritten)
    point = _agreed(rewritten)
    assert point.snap["step"] == 20
    assert [a.dir_name for a in point.set_aside] == ["checkpoint_00000030-1"]
    assert point.taken == {"checkpoint_00000030", "checkpoint_00000030-1"}
    assert checkpoints.folder_name(30, point.taken) == "checkpoint_00000030-2"


def test_only_checkpoints_older_than_the_failed_one_are_tried(run):
    # a folder newer than Ray's newest registered checkpoint (written, never registered)
    _write(run, "checkpoint_00000040", 40)
    _truncate(run / "checkpoint_00000030")
    assert _agreed(run / "checkpoint_00000030").snap["step"] == 20


def test_a_file_without_the_state_resume_needs_is_set_aside(run):
    folder = run / "checkpoint_00000030"
    checkpoints.save(folder, {"step": 30, "model": {}})  # loads, but no optimizer, EMA, RNG
    point = _agreed(folder)
    assert point.snap["step"] == 20
    assert point.set_aside == (
        SetAside(30, "checkpoint_00000030", "checkpoint.pt lacks ['ema', 'optimizer', 'rng']"),
    )


def test_no_checkpoint_that_loads_is_an_error_naming_those_set_aside(run):
    for step in (10, 20, 30):
        _truncate(run / f"checkpoint_{step:08d}")
    with pytest.raises(RuntimeError, match="no checkpoint of the run .* loads") as err:
        _agreed(run / "checkpoint_00000030")
    for step in (10, 20, 30):
        assert f"checkpoint_{step:08d}" in str(err.value)
        assert (run / f"checkpoint_{step:08d}" / f"{checkpoints.FILE}.corrupt").is_file()


def test_a_fresh_run_has_nothing_to_restore():
    point = restore_point.agreed(None, rank=0, world=1)
    assert point.snap is None and point.set_aside == () and point.taken == frozenset()


def test_a_folder_without_its_file_is_marked_set_aside(run):
    (run / "checkpoint_00000030" / checkpoints.FILE).unlink()  # an upload that never came
    point = _agreed(run / "checkpoint_00000030")
    assert point.snap["step"] == 20
    assert [a.dir_name for a in point.set_aside] == ["checkpoint_00000030"]
    assert "no checkpoint file" in point.set_aside[0].reason
    assert point.taken == {"checkpoint_00000030"}  # its name is not used again
