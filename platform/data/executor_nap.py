"""A pause in Ray Data's scheduling loop while its output waits to be taken.

Ray Data's streaming executor (Ray 2.60) runs its scheduling loop without rest once the
stream is ahead of its consumer: the paused map tasks' next blocks are ready, so the
loop's `ray.wait` returns at once, and each round of resource accounting and operator
selection costs ~4 ms of Python. In the training stream's `SplitCoordinator` that took
~0.6 of the 2 cores for as long as the stream ran (py-spy), and the training workers ran
at 50-90 img/s until the stream ended, then at 160 (README, "Results").

`NapWhenAhead` is an execution callback that sleeps `NAP_S` after a loop step whenever
the executor's output queue holds blocks not yet taken (any split's). While it is empty
the loop runs as Ray's does. A nap delays the loop's next dispatch by at most `NAP_S`,
also when one split's consumer waits while the queue holds another split's blocks; the
training stream is far ahead of both workers, whose wait for data stayed at most 1.4 %
of the step time with the nap (`train/data_wait_frac` after the first 25 steps, 6 runs).
Napping only when no consumer waits as well (`num_waiting_consumers`) would be stricter;
it is not what was measured.
`python scripts/executor_nap_bench.py` measures the coordinator's CPU with and without it.
"""
from __future__ import annotations

import time

import ray.data
from ray.data._internal.execution.execution_callback import ExecutionCallback

NAP_S = 0.02
_sleep = time.sleep  # the tests replace this, not the time module every thread uses


def ahead(executor: object) -> bool:
    """True when the executor's output queue holds blocks not yet taken. An executor
    without Ray 2.60's `_consumer_idling` (another Ray version) is never napped."""
    idling = getattr(executor, "_consumer_idling", None)
    return idling is not None and not idling()


class NapWhenAhead(ExecutionCallback):
    """Sleeps `NAP_S` after each scheduling-loop step of an executor that is `ahead`.
    Ray makes one per execution (its planner instantiates the context's classes)."""

    def on_execution_step(self, executor: object) -> None:
        if ahead(executor):
            _sleep(NAP_S)


def install(ctx: "ray.data.DataContext | None" = None) -> None:
    """Add `NapWhenAhead` to a DataContext (default: this process's current one), once.
    A dataset takes a copy of the current context when it is built, and the
    SplitCoordinator actor of its `streaming_split` runs its executor with that copy; Ray
    Train copies the driver's context to its workers, so their own (per-rank) datasets
    carry it too."""
    if ctx is None:
        ctx = ray.data.DataContext.get_current()
    if NapWhenAhead not in ctx.custom_execution_callback_classes:
        ctx.custom_execution_callback_classes = [*ctx.custom_execution_callback_classes, NapWhenAhead]
