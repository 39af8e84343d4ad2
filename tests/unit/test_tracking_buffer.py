"""Rank 0's buffered MLflow writes (platform/tracking_buffer.py): delivered in the order they
were made after the server failed, never holding up the caller, bounded by dropping the
oldest metric batches only; refusals dropped, undelivered writes reported at close; the
checkpoint record of a worker group that starts during an outage; the final status set once
the server answers. The server is a stand-in that fails the way MLflow's REST client fails."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time

import pytest
import requests
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)

from pix2seqd.platform import tracking
from pix2seqd.platform.tracking_buffer import BufferedClient, set_final_status, unreachable
from pix2seqd.platform.train.checkpoints import CheckpointLog

FAST = (0.01, 0.05)  # retry pauses of the tests' buffers


def _unreachable_error() -> MlflowException:
    """What MLflow's REST client raises once its own retries of a refused connection are
    spent: an MlflowException raised while handling the requests error."""
    try:
        raise requests.exceptions.ConnectionError("[Errno 111] Connection refused")
    except requests.exceptions.ConnectionError as err:
        try:
            raise MlflowException(f"API request to http://127.0.0.1:1 failed with exception {err}")
        except MlflowException as wrapped:
            return wrapped


class Server:
    """An MlflowClient stand-in: records what reaches it, in order; fails as an unreachable
    server while `down` is set or for its first `fail_first` calls; holds each call while
    `hold` is set; refuses (INVALID_PARAMETER_VALUE) tags named in `refuse`."""

    tracking_uri = "http://127.0.0.1:1"

    def __init__(self, fail_first: int = 0, refuse: tuple[str, ...] = ()):
        self.fail_first, self.refuse = fail_first, refuse
        self.down, self.hold, self.released = (
            threading.Event(),
            threading.Event(),
            threading.Event(),
        )
        self.calls = self.failures = 0
        self.received: list[tuple] = []  # ("metric", key, step) / ("tag", key, value) / ...
        self.requests: list[str] = []  # "metrics" or "tags", one per delivered request

    def _gate(self) -> None:
        self.calls += 1
        if self.hold.is_set():
            self.released.wait(10)
        if self.down.is_set() or self.calls <= self.fail_first:
            self.failures += 1
            raise _unreachable_error()

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self._gate()
        if any(t.key in self.refuse for t in tags):
            raise MlflowException("bad tag", error_code=INVALID_PARAMETER_VALUE)
        self.received += [("metric", m.key, m.step) for m in metrics]
        self.received += [("tag", t.key, t.value) for t in tags]
        self.requests.append("tags" if tags else "metrics")

    def set_tag(self, run_id, key, value):
        self.log_batch(run_id, tags=[RunTag(key, value)])

    def delete_tag(self, run_id, key):
        self._gate()
        if key.startswith("absent"):
            raise MlflowException(f"No tag with name: {key}", error_code=RESOURCE_DOES_NOT_EXIST)
        self.received.append(("deleted", key))

    def set_terminated(self, run_id, status):
        self._gate()
        self.received.append(("status", status))


def _log_steps(buf, steps, tag_every: int) -> list[tuple]:
    """Log train/loss and train/lr at each step, and a checkpoint tag every `tag_every`;
    returns what the server should receive, in order."""
    expected = []
    for step in steps:
        tracking.log_metrics(buf, "run", {"train/loss": 1.0 / step, "train/lr": 0.1}, step)
        expected += [("metric", "train/loss", step), ("metric", "train/lr", step)]
        if step % tag_every == 0:
            tracking.set_tags(buf, "run", {f"checkpoint/{step}": f"/ckpt/{step}"})
            expected.append(("tag", f"checkpoint/{step}", f"/ckpt/{step}"))
    return expected


def test_writes_made_during_an_outage_arrive_in_order_once_the_server_is_back():
    server = Server()
    server.down.set()
    buf = BufferedClient(server, retry_pause_s=FAST)
    expected = _log_steps(buf, range(1, 31), tag_every=10)
    deadline = time.monotonic() + 5
    while server.failures < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.failures >= 3  # tried, failed, kept
    assert buf.pending == 33
    server.down.clear()
    assert buf.close(timeout=10) == 0
    assert server.received == expected
    # the backlog goes in few requests: the metric batches between two tags share one
    assert server.requests == ["metrics", "tags"] * 3


def test_a_write_never_waits_for_the_server():
    server = Server()
    server.hold.set()  # every request hangs, as on a server that stopped answering
    buf = BufferedClient(server, retry_pause_s=FAST)
    t0 = time.perf_counter()
    expected = _log_steps(buf, range(1, 201), tag_every=50)
    assert time.perf_counter() - t0 < 1.0  # 204 writes while the first request hangs
    server.released.set()
    assert buf.close(timeout=10) == 0
    assert server.received == expected


def test_a_full_buffer_drops_the_oldest_metric_batches_and_keeps_every_tag(caplog):
    server = Server()
    server.hold.set()
    buf = BufferedClient(server, capacity=5, retry_pause_s=FAST)
    tracking.set_tags(buf, "run", {"worker_nodes": "[1]"})  # in flight, hanging
    deadline = time.monotonic() + 5
    while server.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    with caplog.at_level(logging.WARNING, "pix2seqd.platform.tracking_buffer"):
        _log_steps(buf, range(1, 13), tag_every=3)
    server.released.set()
    assert buf.close(timeout=10) == 0
    # 12 batches queued behind the hanging request, room for 5: steps 1-7 went
    assert buf.dropped == 7
    assert sorted({r[2] for r in server.received if r[0] == "metric"}) == [8, 9, 10, 11, 12]
    tags = [r[1] for r in server.received if r[0] == "tag"]
    assert tags == ["worker_nodes", "checkpoint/3", "checkpoint/6", "checkpoint/9", "checkpoint/12"]
    assert "dropped metrics of step 1" in caplog.text


def test_a_refused_write_is_dropped_and_the_rest_delivered(caplog):
    server = Server(refuse=("bad",))
    buf = BufferedClient(server, retry_pause_s=FAST)
    with caplog.at_level(logging.WARNING, "pix2seqd.platform.tracking_buffer"):
        tracking.log_metrics(buf, "run", {"train/loss": 1.0}, 1)
        tracking.set_tags(buf, "run", {"bad": "x"})
        buf.delete_tag("run", "absent")  # already gone: done, not refused
        buf.set_tag("run", "note", "y")
        buf.delete_tag("run", "note")
        tracking.log_metrics(buf, "run", {"train/loss": 0.5}, 2)
        assert buf.close(timeout=10) == 0
    assert server.received == [
        ("metric", "train/loss", 1),
        ("tag", "note", "y"),
        ("deleted", "note"),
        ("metric", "train/loss", 2),
    ]
    assert buf.refused == 1
    assert "MLflow refused tags bad" in caplog.text


def test_close_reports_what_the_server_never_got(caplog):
    server = Server()
    server.down.set()
    buf = BufferedClient(server, retry_pause_s=FAST)
    _log_steps(buf, range(1, 4), tag_every=3)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, "pix2seqd.platform.tracking_buffer"):
        assert buf.close(timeout=0.5) == 4  # three metric batches and a tag
    assert 0.4 < time.monotonic() - t0 < 3
    assert "4 writes not delivered" in caplog.text
    assert server.received == []
    with pytest.raises(RuntimeError, match="closed"):
        tracking.log_metrics(buf, "run", {"train/loss": 1.0}, 4)


class Gate:
    """A real MlflowClient behind a switch: while `down`, every call fails as on an
    unreachable server."""

    def __init__(self, client):
        self.client, self.down, self.failures = client, False, 0
        self.tracking_uri = client.tracking_uri

    def __getattr__(self, name):
        method = getattr(self.client, name)

        def call(*args, **kwargs):
            if self.down:
                self.failures += 1
                raise _unreachable_error()
            return method(*args, **kwargs)

        return call


@pytest.fixture(scope="module")
def local_mlc(tmp_path_factory):
    """A client of one SQLite store for the module (creating a store takes seconds)."""
    tmp = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tracking, "HOME_DIR", tmp / "home")
        yield tracking.client(f"sqlite:///{tmp}/mlflow.db")


def test_a_checkpoint_log_started_during_an_outage_keeps_the_right_best(tmp_path, local_mlc):
    mlc = local_mlc
    run = tracking.start_run(mlc, {}, {})
    local = tmp_path / "ckpt"
    local.mkdir()
    (local / "checkpoint.pt").write_bytes(b"weights")
    store, keep = str(tmp_path / "store"), 2
    before = CheckpointLog(mlc, run, store, "r", keep)  # the first worker group
    for step, score in ((2, 0.4), (4, 0.5)):
        before.record(step, f"checkpoint_{step:08d}", str(local), score)

    gate = Gate(mlc)
    gate.down = True  # the worker group restarts while the server is down
    buf = BufferedClient(gate, retry_pause_s=FAST)
    log = CheckpointLog(buf, run, store, "r", keep)
    for step, score in ((6, 0.3), (8, 0.45), (10, 0.6)):
        log.record(step, f"checkpoint_{step:08d}", str(local), score)
    # not knowing the run's best (0.5), each better score of its own was copied apart
    assert sorted(os.listdir(tmp_path / "store/r")) == [f"best_{s:08d}" for s in (4, 6, 8, 10)]
    deadline = time.monotonic() + 5
    while gate.failures < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gate.failures >= 2  # the run's tags were asked for, and could not be read
    gate.down = False
    assert buf.close(timeout=30) == 0

    tags = mlc.get_run(run).data.tags
    assert sorted(k for k in tags if k.startswith("checkpoint/")) == [
        "checkpoint/10",
        "checkpoint/8",
    ]
    assert tags["best_checkpoint"] == f"{store}/r/best_00000010"
    assert tags["best_step"] == "10" and float(tags["best_val_pq"]) == 0.6
    # 0.3 and 0.45 lost to the run's 0.5, which lost to 0.6: one copy is left
    assert os.listdir(tmp_path / "store/r") == ["best_00000010"]
    assert log.steps == [8, 10] and log.best_score == 0.6


def test_the_final_status_is_set_once_the_server_answers(monkeypatch):
    from pix2seqd.platform import tracking_buffer

    monkeypatch.setattr(tracking_buffer, "RETRY_PAUSE_S", FAST)
    server = Server(fail_first=3)
    set_final_status(server, "run", "FINISHED", wait_s=5)
    assert server.received == [("status", "FINISHED")] and server.failures == 3
    down = Server()
    down.down.set()
    t0 = time.monotonic()
    with pytest.raises(MlflowException, match="Connection refused"):
        set_final_status(down, "run", "FAILED", wait_s=0.3)
    assert time.monotonic() - t0 < 2


def test_unreachable_tells_a_down_server_from_a_refusal(local_mlc, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with _refusing_port() as port:
        down = tracking.client(f"http://127.0.0.1:{port}")
        with pytest.raises(MlflowException) as err:
            down.get_run("0" * 32)
    assert unreachable(err.value)
    with pytest.raises(MlflowException) as err:
        local_mlc.get_run("0" * 32)
    assert not unreachable(err.value)  # RESOURCE_DOES_NOT_EXIST: asking again cannot help
    assert unreachable(MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE))


@contextlib.contextmanager
def _refusing_port():
    """A local port that is bound but not listening, so connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
