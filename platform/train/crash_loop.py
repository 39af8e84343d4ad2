"""Ray Train's failure handling of a training run: `train.max_failures` restarts, and the
guard that ends a run failing again and again without progress.

Ray Train restarts a failed worker group from the latest checkpoint up to
`train.max_failures` times; -1 (Ray's convention) restarts it forever, as a spot run
wants. A deterministic failure (a bug met at the same step after every restart, a storage
that refuses writes) would then restart forever too: Ray Train counts failures but has no
notion of progress. `CrashLoopGuard` counts the worker-group failures since the last
checkpoint was reported; at `train.crash_loop_limit` in a row it raises in Ray Train's
controller, and the run fails (Ray Train does not retry an error of its controller's own
callbacks). Failures caused by a preemption (a worker on a node drained for preemption)
are not counted: Ray Train retries those on a budget of their own
(`FailureConfig.max_preemption_failures`, unlimited), and a spot pool takes nodes at any
time.
"""

from __future__ import annotations

import ray.train
from ray.exceptions import RayActorError

from pix2seqd.platform.config import TrainConfig


class CrashLoopError(RuntimeError):
    """A run failed `train.crash_loop_limit` times in a row without a new checkpoint."""


class CrashLoopGuard(ray.train.UserCallback):
    """Runs in Ray Train's controller: ends the run at `limit` worker-group failures in a
    row with no checkpoint reported between them."""

    def __init__(self, limit: int):
        self.limit, self.in_a_row = limit, 0

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if checkpoint is not None:
            self.in_a_row = 0

    def after_exception(self, run_context, worker_exceptions) -> None:
        if any(_preempted(err) for err in worker_exceptions.values()):
            return
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            raise CrashLoopError(
                f"the worker group failed {self.in_a_row} times in a row without writing a "
                f"checkpoint (train.crash_loop_limit={self.limit}); the last error: "
                f"{_last_line(next(iter(worker_exceptions.values())))}"
            )


def _last_line(err: Exception) -> str:
    """The error's last line: a worker's error is its traceback, the message last."""
    lines = str(err).strip().splitlines()
    return (lines[-1] if lines else type(err).__name__)[:500]


def _preempted(err: Exception) -> bool:
    """Whether a worker's error is its node's preemption (Ray Train's own test: a health
    check that found the actor dead on a node drained for preemption)."""
    err = getattr(err, "health_check_failure", err)
    return isinstance(err, RayActorError) and err.preempted


def failure_handling(t: TrainConfig) -> tuple[ray.train.FailureConfig, list[CrashLoopGuard]]:
    """The run's FailureConfig and its crash-loop guard (none with a limit of 0)."""
    if t.max_failures < -1:
        raise ValueError(f"train.max_failures must be -1 (unlimited) or >= 0, got {t.max_failures}")
    if t.crash_loop_limit < 0:
        raise ValueError(
            f"train.crash_loop_limit must be >= 0 (0: no limit), got {t.crash_loop_limit}"
        )
    guards = [CrashLoopGuard(t.crash_loop_limit)] if t.crash_loop_limit else []
    return ray.train.FailureConfig(max_failures=t.max_failures), guards
