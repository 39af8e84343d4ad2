"""The crash-loop guard and the failure settings of a run (platform/train/crash_loop.py);
the guard ending a real run: tests/integration/test_fault_restarts.py."""

from __future__ import annotations

from dataclasses import replace

import pytest
from ray.exceptions import RayActorError
from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError

from pix2seqd.platform.config import TrainConfig
from pix2seqd.platform.train.crash_loop import CrashLoopError, CrashLoopGuard, failure_handling


def _fail(guard: CrashLoopGuard, err: Exception | None = None) -> None:
    guard.after_exception(None, {0: err or RuntimeError("boom"), 1: RuntimeError("peer")})


def test_the_third_failure_in_a_row_without_a_checkpoint_ends_the_run():
    guard = CrashLoopGuard(3)
    _fail(guard)
    _fail(guard)
    with pytest.raises(CrashLoopError, match=r"3 times in a row.*error: boom"):
        _fail(guard)


def test_a_checkpoint_between_failures_starts_the_count_again():
    guard = CrashLoopGuard(2)
    _fail(guard)
    guard.after_report(None, [{}], checkpoint=None)  # metrics only: no progress kept
    with pytest.raises(CrashLoopError):
        _fail(guard)
    guard = CrashLoopGuard(2)
    _fail(guard)
    guard.after_report(None, [{}], checkpoint=object())
    _fail(guard)  # one in a row again
    assert guard.in_a_row == 1


def test_a_preempted_worker_is_not_a_crash():
    # Ray Train's form of it: a health check that found the actor dead on a drained node
    preempted = WorkerHealthCheckFailedError("dead", RayActorError(preempted=True))
    guard = CrashLoopGuard(1)
    for _ in range(5):
        _fail(guard, preempted)
    assert guard.in_a_row == 0
    with pytest.raises(CrashLoopError):
        _fail(guard, WorkerHealthCheckFailedError("dead", RayActorError(preempted=False)))


def test_failure_settings_unlimited_restarts_and_bad_values():
    failures, guards = failure_handling(replace(TrainConfig(), max_failures=-1))
    assert failures.max_failures == -1 and failures.max_preemption_failures == -1
    assert [g.limit for g in guards] == [TrainConfig().crash_loop_limit]
    assert failure_handling(replace(TrainConfig(), crash_loop_limit=0))[1] == []
    with pytest.raises(ValueError, match=r"train\.max_failures must be -1"):
        failure_handling(replace(TrainConfig(), max_failures=-2))
    with pytest.raises(ValueError, match=r"train\.crash_loop_limit must be >= 0"):
        failure_handling(replace(TrainConfig(), crash_loop_limit=-1))
