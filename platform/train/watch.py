"""What the training loop watches besides its steps: the run's training clock, which the
time budget reads across restarts, and Ray Train's preemption notices."""

from __future__ import annotations

import time
from dataclasses import dataclass

import ray.train

# Steps between two looks at Ray Train's preemption notice (a Ray collective of all ranks,
# a round trip to Ray Train's synchronization actor): often enough that a checkpoint is
# written within seconds of a notice on any machine, rare enough to cost nothing per step.
PREEMPTION_CHECK_EVERY = 16


@dataclass(frozen=True)
class TrainClock:
    """Training seconds of the run over all its attempts: those its checkpoint recorded
    plus this attempt's. `origin` is the `time.monotonic()` reading at which the run's
    training would have begun had it never stopped."""

    origin: float

    @classmethod
    def resumed(cls, train_seconds: float) -> TrainClock:
        return cls(time.monotonic() - train_seconds)

    def elapsed(self) -> float:
        return time.monotonic() - self.origin


class PreemptionWatch:
    """Ray Train's notices that a node of the worker group is drained for preemption (its
    preemption watcher, `train.preemption_watcher`), as every rank sees them: the same
    answer on all ranks, each set of nodes once."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.seen: frozenset[str] = frozenset()

    def due(self, step: int) -> bool:
        return self.enabled and step % PREEMPTION_CHECK_EVERY == 0

    def new_notice(self) -> ray.train.PreemptionInfo | None:
        """A notice naming nodes not noticed before, else None (a collective: all ranks
        call it at the same step)."""
        info = ray.train.get_preemption_info()
        if info is None or frozenset(info.preempted_node_ids) <= self.seen:
            return None
        self.seen |= frozenset(info.preempted_node_ids)
        return info


def seconds_left(info: ray.train.PreemptionInfo) -> float:
    """Seconds until the notice's deadline, -1 when it gave none."""
    if info.deadline_ms is None:
        return -1.0
    return max(0.0, info.deadline_ms / 1000 - time.time())
