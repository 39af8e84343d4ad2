"""Rank 0's MLflow writes during training, kept in order through a tracking-server outage.

`BufferedClient` stands in for an `MlflowClient` in the training loop: metric batches, tags,
tag deletions and ordered record actions (`in_order`, the checkpoint record's
read-modify-write) go into one queue that a background thread delivers oldest first, so a
training step never waits on the network and the server receives the steps in order.

A write that fails because the server cannot be reached (`unreachable`: no connection, a
timeout, a 5xx or 429 answer, each after MLflow's own HTTP retries, which
`MLFLOW_HTTP_REQUEST_MAX_RETRIES` / `_BACKOFF_FACTOR` / `_TIMEOUT` set) stays at the head of
the queue and is tried again after a pause that doubles from `RETRY_PAUSE_S[0]` up to
`RETRY_PAUSE_S[1]`. A write the server refuses (a 4xx answer) is dropped with a warning:
trying it again cannot help, and it must not hold back the writes behind it.

Bound: at most `capacity` metric batches (one per logged step) wait in the queue; a new
one beyond that drops the oldest waiting batch, with a warning that counts the drops. Tag
writes and record actions (checkpoint references, the best checkpoint, the worker nodes) are
never dropped: the queue exceeds the bound only by them, one or two per checkpoint.
Consecutive metric batches of a run go to the server as one request of up to
`MAX_METRICS_PER_REQUEST` metrics, so a backlog drains quickly once the server is back.

There is no `get_run`: a read during training would wait on, or fail with, an unreachable
server; code that must read goes through `call` / `in_order`, whose action runs on the
sender thread in queue order once the server answers.

`close` waits, at most `FLUSH_TIMEOUT_S` seconds by default, for the queue to empty and logs
what could not be delivered. The queue lives in the worker's memory: writes still waiting
when the process dies are lost (a restarted worker group logs its steps again from the
restored checkpoint).
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

log = logging.getLogger(__name__)

CAPACITY = 20_000  # metric batches; about 11 h of an outage at one logged step every 2 s
FLUSH_TIMEOUT_S = 300.0
RETRY_PAUSE_S = (1.0, 30.0)  # first and longest pause between tries of a failed write
MAX_METRICS_PER_REQUEST = 1000  # MLflow's log_batch limit
# Unreachable-server errors are one exception wrapped in others; a chain this long is a loop.
_MAX_CHAIN = 16


class WriteKind(enum.Enum):
    METRICS = "metrics"  # one step's metric batch: dropped, oldest first, when the queue is full
    RECORD = "record"  # tags, tag deletions, record actions: never dropped


@dataclass(frozen=True)
class _Write:
    """One queued write. `send` delivers it through the real client; a metric batch also
    keeps its run and metrics, so neighbouring batches can share one request."""

    kind: WriteKind
    send: Callable[[Any], None] | None  # None for a metric batch
    what: str
    run_id: str = ""
    metrics: tuple[Metric, ...] = ()


def unreachable(err: BaseException) -> bool:
    """Whether `err` says the tracking server could not be reached or could not answer now
    (worth trying again later), rather than refused the request."""
    seen: BaseException | None = err
    for _ in range(_MAX_CHAIN):
        if seen is None:
            break
        if isinstance(seen, (requests.exceptions.RequestException, ConnectionError, TimeoutError)):
            return True
        seen = seen.__cause__ or seen.__context__
    if isinstance(err, MlflowException):
        status = err.get_http_status_code()
        return status >= 500 or status == 429
    return False


class BufferedClient:
    """The subset of `MlflowClient` that rank 0 writes through during training, queued and
    delivered in order by a background thread (see the module docstring).

    `client`: the real `MlflowClient`; `capacity`: the bound on waiting metric batches;
    `retry_pause_s`: (first, longest) pause between tries while the server is unreachable."""

    def __init__(
        self,
        client,
        capacity: int = CAPACITY,
        retry_pause_s: tuple[float, float] = RETRY_PAUSE_S,
    ):
        if capacity <= 0:
            raise ValueError(f"BufferedClient capacity must be > 0, got {capacity}")
        self.client, self.capacity = client, capacity
        self._pause = retry_pause_s
        self._queue: collections.deque[_Write] = collections.deque()
        self._metric_batches = 0  # METRICS writes in `_queue`
        self._in_flight: list[_Write] = []
        self._cond = threading.Condition()
        self._closing = False
        self.dropped = 0  # metric batches dropped for the bound
        self.refused = 0  # writes the server refused
        self._down_since: float | None = None
        self._thread = threading.Thread(target=self._deliver_all, name="mlflow-buffer", daemon=True)
        self._thread.start()

    @property
    def tracking_uri(self) -> str:
        return self.client.tracking_uri

    @property
    def pending(self) -> int:
        """Writes not yet delivered (queued or in flight)."""
        with self._cond:
            return len(self._queue) + len(self._in_flight)

    # ----- the MlflowClient subset --------------------------------------------------------

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
    ) -> None:
        metrics, params, tags = tuple(metrics), tuple(params), tuple(tags)
        if params or tags:
            self._put(
                _Write(
                    WriteKind.RECORD,
                    lambda c: c.log_batch(run_id, metrics=metrics, params=params, tags=tags),
                    f"tags {', '.join(t.key for t in tags) or '-'}",
                )
            )
        elif metrics:
            steps = sorted({m.step for m in metrics})
            what = f"metrics of step {steps[0]}" + (f"-{steps[-1]}" if len(steps) > 1 else "")
            self._put(_Write(WriteKind.METRICS, None, what, run_id, metrics))

    def set_tag(self, run_id: str, key: str, value: Any) -> None:
        self._put(_Write(WriteKind.RECORD, lambda c: c.set_tag(run_id, key, value), f"tag {key}"))

    def delete_tag(self, run_id: str, key: str) -> None:
        """Queue the tag's deletion; a tag already absent then is no error (see
        `delete_tag_if_present`)."""
        self._put(
            _Write(
                WriteKind.RECORD,
                lambda c: delete_tag_if_present(c, run_id, key),
                f"deletion of tag {key}",
            )
        )

    def call(self, action: Callable[[Any], None], what: str) -> None:
        """Queue `action(client)`, run on the sender thread in queue order with the real
        client, and tried again whole while the server is unreachable: it must be safe to
        repeat (a read, then writes that set, not add)."""
        self._put(_Write(WriteKind.RECORD, action, what))

    # ----- end ----------------------------------------------------------------------------

    def close(self, timeout: float = FLUSH_TIMEOUT_S) -> int:
        """Deliver what is queued, waiting at most `timeout` seconds; returns the number of
        writes left undelivered (logged as a warning). Later writes raise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while (self._queue or self._in_flight) and time.monotonic() < deadline:
                self._cond.wait(min(1.0, max(0.0, deadline - time.monotonic())))
            left = list(self._in_flight) + list(self._queue)
        if left:
            log.warning(
                "MLflow at %s unreachable: %d writes not delivered after waiting %g s (%s ... %s)",
                self.tracking_uri,
                len(left),
                timeout,
                left[0].what,
                left[-1].what,
            )
        if self.dropped or self.refused:
            log.warning(
                "MLflow buffer: %d metric batches dropped (bound %d), %d writes refused",
                self.dropped,
                self.capacity,
                self.refused,
            )
        return len(left)

    # ----- the queue ----------------------------------------------------------------------

    def _put(self, write: _Write) -> None:
        with self._cond:
            if self._closing:
                raise RuntimeError(f"BufferedClient closed: cannot queue {write.what}")
            self._queue.append(write)
            if write.kind is WriteKind.METRICS:
                self._metric_batches += 1
                while self._metric_batches > self.capacity:
                    self._drop_oldest_metrics()
            self._cond.notify_all()

    def _drop_oldest_metrics(self) -> None:
        for i, queued in enumerate(self._queue):
            if queued.kind is WriteKind.METRICS:
                del self._queue[i]
                self._metric_batches -= 1
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning(
                        "MLflow buffer full (%d metric batches waiting): dropped %s, "
                        "%d batches dropped so far",
                        self.capacity,
                        queued.what,
                        self.dropped,
                    )
                return

    def _take(self) -> list[_Write]:
        """Move the head of the queue in flight: a record write alone, or consecutive metric
        batches of one run up to MAX_METRICS_PER_REQUEST metrics."""
        head = self._queue.popleft()
        taken = [head]
        if head.kind is WriteKind.METRICS:
            count = len(head.metrics)
            while self._queue and self._queue[0].kind is WriteKind.METRICS:
                nxt = self._queue[0]
                if nxt.run_id != head.run_id or count + len(nxt.metrics) > MAX_METRICS_PER_REQUEST:
                    break
                taken.append(self._queue.popleft())
                count += len(nxt.metrics)
            self._metric_batches -= len(taken)
        self._in_flight = taken
        return taken

    def _deliver_all(self) -> None:
        pause = self._pause[0]
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                taken = self._take()
            delivered = self._send(taken)
            with self._cond:
                if not delivered:  # back at the head, tried again after a pause
                    self._queue.extendleft(reversed(taken))
                    self._metric_batches += sum(w.kind is WriteKind.METRICS for w in taken)
                self._in_flight = []
                self._cond.notify_all()
                if not delivered:
                    self._wait(pause)
                pause = min(2 * pause, self._pause[1]) if not delivered else self._pause[0]

    def _wait(self, pause: float) -> None:
        """Pause `pause` seconds before trying again (the condition held), however many
        writes arrive meanwhile; once closing, at most the first pause."""
        start = time.monotonic()
        while True:
            limit = min(pause, self._pause[0]) if self._closing else pause
            left = start + limit - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _send(self, taken: list[_Write]) -> bool:
        """Deliver `taken`; False when the server was unreachable (to be tried again)."""
        try:
            if taken[0].kind is WriteKind.METRICS:
                metrics = [m for w in taken for m in w.metrics]
                self.client.log_batch(taken[0].run_id, metrics=metrics)
            else:
                taken[0].send(self.client)
        except Exception as err:  # noqa: BLE001 - the sender thread must outlive any error
            if unreachable(err):
                self._note_down(err, taken[0])
                return False
            self.refused += len(taken)
            log.warning("MLflow refused %s (dropped): %s", taken[0].what, err, exc_info=True)
        self._note_up()
        return True

    def _note_down(self, err: BaseException, write: _Write) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "MLflow at %s unreachable (%s): training goes on, writes are kept from %s on "
                "(%d waiting)",
                self.tracking_uri,
                _first_line(err),
                write.what,
                self.pending,
            )

    def _note_up(self) -> None:
        if self._down_since is not None:
            log.warning(
                "MLflow at %s reachable again after %.0f s: delivering %d waiting writes",
                self.tracking_uri,
                time.monotonic() - self._down_since,
                self.pending,
            )
            self._down_since = None


def delete_tag_if_present(client, run_id: str, key: str) -> None:
    """Delete a run's tag; one that is not there is fine (a deletion tried again after an
    outage may have reached the server the first time)."""
    try:
        client.delete_tag(run_id, key)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


def in_order(mlc, action: Callable[[Any], None], what: str) -> None:
    """Run `action(client)` after the writes already made through `mlc`: queued when `mlc`
    is a `BufferedClient` (see `BufferedClient.call`), at once with a plain client."""
    if isinstance(mlc, BufferedClient):
        mlc.call(action, what)
    else:
        action(mlc)


def set_final_status(mlc, run_id: str, status: str, wait_s: float = FLUSH_TIMEOUT_S) -> None:
    """`mlc.set_terminated(run_id, status)`, tried again while the server is unreachable,
    for at most `wait_s` seconds (then the last error is raised)."""
    deadline, pause = time.monotonic() + wait_s, RETRY_PAUSE_S[0]
    while True:
        try:
            mlc.set_terminated(run_id, status)
            return
        except Exception as err:
            if not unreachable(err) or time.monotonic() + pause > deadline:
                raise
            log.warning(
                "MLflow unreachable (%s): marking run %s %s again in %g s",
                _first_line(err),
                run_id,
                status,
                pause,
            )
            time.sleep(pause)
            pause = min(2 * pause, RETRY_PAUSE_S[1])


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__
