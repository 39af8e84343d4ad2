"""`data.executor_nap`: a pause in Ray Data's scheduling loop while its output waits.

Once a stream is ahead of its consumer, the paused map tasks' next blocks are ready, so
the streaming executor's `ray.wait` returns at once and its loop goes round without rest,
each round ~4 ms of Python (resource accounting, operator selection). In the training
stream's `SplitCoordinator` actor that takes 0.4-0.6 of a core for as long as the stream
runs, CPU the training workers need on a small machine.

`NapWhenAhead` is a Ray Data execution callback that sleeps `NAP_S` after a loop step
whenever the executor's output queue holds blocks not yet taken (any split's), or its
object-store budget is full (`data.ahead_steps`: finished blocks then wait inside the
operators, and the loop spins the same way); otherwise the loop runs as Ray's does. A nap
delays the next dispatch by at most `NAP_S`, also when one split's consumer waits while
the queue holds another split's blocks; the training stream runs far enough ahead that
the workers' wait for data (`train/data_wait_frac`) stays at most 1.4 % of the step time
with it.
Measured on a stream longer than two consumers read (docs/results.md, "The scheduling
loop's nap"): the coordinator's CPU fell from 0.374 to 0.193 of a core with the nap and
the consumers finished 24 % more batches, hence `data.executor_nap` on by default.

The nap relies on pieces of Ray Data that are not public API (`RAY_PIECES`): the
`ExecutionCallback` base class, which `DataContext.custom_execution_callback_classes`
instantiates per execution, and the executor's `_consumer_idling()`. They are looked up
when the nap is installed, never when this module is imported: a Ray without them gets a
warning and no nap. tests/unit/test_executor_nap.py checks them on the installed Ray.
"""

from __future__ import annotations

import functools
import importlib
import logging
import time

import ray.data

log = logging.getLogger(__name__)

NAP_S = 0.02
_sleep = time.sleep  # the tests replace this, not the time module every thread uses

# (module, attribute) of Ray Data's private pieces the nap needs, checked at install time
CALLBACK_BASE = ("ray.data._internal.execution.execution_callback", "ExecutionCallback")
EXECUTOR = ("ray.data._internal.execution.streaming_executor", "StreamingExecutor")
IDLING_METHOD = "_consumer_idling"  # the executor's "output queue is empty"
RESOURCE_MANAGER = "_resource_manager"  # the executor's usage and limits (`budget_full`)
STEP_HOOK = "on_execution_step"  # the callback method the executor calls after a loop step
RAY_PIECES = f"{CALLBACK_BASE[0]}.{CALLBACK_BASE[1]}, {EXECUTOR[1]}.{IDLING_METHOD}"


def ahead(executor: object) -> bool:
    """True when the executor's output queue holds blocks not yet taken, or its
    object-store budget is used up (an executor without `_consumer_idling` never is)."""
    idling = getattr(executor, IDLING_METHOD, None)
    if idling is None:
        return False
    return not idling() or budget_full(executor)


def budget_full(executor: object) -> bool:
    """True when the executor's object-store usage has reached its limit: its map tasks'
    finished blocks then wait in the operators (not in the output queue) until the
    consumers take blocks, and `ray.wait` on those tasks returns at once, so the loop
    would spin as when ahead (`data.ahead_steps` sets such a limit). False where the
    executor has no `_resource_manager` with `get_global_usage` / `get_global_limits`."""
    manager = getattr(executor, RESOURCE_MANAGER, None)
    try:
        used, limit = manager.get_global_usage(), manager.get_global_limits()
    except AttributeError:
        return False
    return used.object_store_memory >= limit.object_store_memory


def _on_execution_step(self, executor: object) -> None:
    if ahead(executor):
        _sleep(NAP_S)


def build_callback_class() -> type | None:
    """`NapWhenAhead`, a subclass of Ray Data's `ExecutionCallback` that naps in its
    `on_execution_step`; None, with a warning, where this Ray lacks a piece it needs."""
    try:
        base = getattr(importlib.import_module(CALLBACK_BASE[0]), CALLBACK_BASE[1])
        executor = getattr(importlib.import_module(EXECUTOR[0]), EXECUTOR[1])
        if not callable(getattr(executor, IDLING_METHOD, None)) or not hasattr(base, STEP_HOOK):
            raise AttributeError(f"{EXECUTOR[1]}.{IDLING_METHOD} or {CALLBACK_BASE[1]}.{STEP_HOOK}")
    except (ImportError, AttributeError) as err:
        log.warning(
            "data.executor_nap is off: Ray %s lacks %s (%s: %s); Ray Data's scheduling "
            "loop runs without naps",
            ray.__version__,
            RAY_PIECES,
            type(err).__name__,
            err,
        )
        return None
    # Named and placed as a module attribute (see __getattr__) so that pickles of the
    # DataContext sent to Ray Data's actors find the class by reference.
    return type(
        "NapWhenAhead",
        (base,),
        {
            "__module__": __name__,
            "__qualname__": "NapWhenAhead",
            STEP_HOOK: _on_execution_step,
            "__doc__": "Sleeps `NAP_S` after each scheduling-loop step of an executor that is "
            "`ahead`. Ray makes one per execution (its planner instantiates the "
            "context's classes).",
        },
    )


# one class per process (and one warning): pickles must find the very class by name
callback_class = functools.cache(build_callback_class)


def __getattr__(name: str) -> type:
    # `NapWhenAhead` is built on first use, so importing this module imports no private
    # Ray module; an unpickling process builds it here too.
    if name == "NapWhenAhead" and (cls := callback_class()) is not None:
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def install(ctx: ray.data.DataContext | None = None, enabled: bool = True) -> bool:
    """Add `NapWhenAhead` to a DataContext (default: this process's current one) once, or
    with `enabled` False take it out; returns whether the context now naps.

    A dataset takes a copy of the current context when it is built, and the
    SplitCoordinator actor of its `streaming_split` runs its executor with that copy; Ray
    Train copies the driver's context to its workers, so their own (per-rank) datasets
    carry it too."""
    if ctx is None:
        ctx = ray.data.DataContext.get_current()
    cls = callback_class() if enabled else None
    others = [
        c
        for c in ctx.custom_execution_callback_classes
        if getattr(c, "__qualname__", "") != "NapWhenAhead" or c.__module__ != __name__
    ]
    ctx.custom_execution_callback_classes = others + ([cls] if cls is not None else [])
    return cls is not None
