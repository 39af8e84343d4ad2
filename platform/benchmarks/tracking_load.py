"""`benchmark.py tracking-load`: one MLflow server on SQLite under a sweep's concurrent trials.

As on a cluster's head (scripts/cluster/start_mlflow.sh: SQLite store, two server workers),
a real `mlflow server` is started on a free local port. A local Ray cluster is started with
more logical CPUs than the machine has, so that `trials` short training trials (the tiny
preset, one worker each, fractional CPUs, every step logged, evaluation at every
checkpoint, each trial's final evaluation in its own Ray actor) run at once. The sweep runs
as a user runs one: `sweep_command` in its own process, joined to that cluster.

A probe in this process times one metric write and one run read every `probe_every_s`
seconds, first against the idle server (the baseline) and then while the sweep runs.
Afterwards every trial's `train/loss` history is checked step by step (none may be
missing), every metric value the trials logged is counted, and the sweep's output and the
server's log are searched for "database is locked" and for the writes the training loop's
buffer had to hold back (`tracking_buffer`: "unreachable", "refused").
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.tracking
import ray

from pix2seqd.platform import tracking
from pix2seqd.platform.benchmarks.train_overhead import free_port
from pix2seqd.platform.sweep.spec import Axis, Sweep, SweepKind
from pix2seqd.platform.synthetic.coco import make_coco

log = logging.getLogger(__name__)

EXPERIMENT = "tracking-load"
PROBE_METRIC = "probe/latency_ms"
# what the sweep's output or the server's log may say when SQLite or the server falls behind
TROUBLE = ("database is locked", "unreachable", "refused")
# the trials' generated data set: small, so that its validation does not dominate a trial
TRAIN_IMAGES, VAL_IMAGES = 64, 8


@dataclass(frozen=True)
class LoadSettings:
    """trials: trials at once (one grid point each, `train.seed` 0..trials-1); steps:
    training steps per trial, each logged; checkpoint_every: steps between checkpoints, each
    with a periodic evaluation; server_workers: the server's worker processes (the cluster
    head runs 2); idle_probe_s: how long the idle server is probed first; probe_every_s:
    the probe's period."""

    trials: int = 8
    steps: int = 200
    checkpoint_every: int = 50
    server_workers: int = 2
    idle_probe_s: float = 20.0
    probe_every_s: float = 0.5


def sweep_overrides(s: LoadSettings) -> list[str]:
    """The trials' `--set` values: a tiny, short training whose every step is logged."""
    return [
        f"train.steps={s.steps}",
        "train.batch_size=4",
        "train.num_workers=1",
        "train.cpus_per_worker=1",
        "train.torch_threads=1",
        "train.log_every=1",
        f"train.checkpoint_every={s.checkpoint_every}",
        f"eval.every_steps={s.checkpoint_every}",
        "train.time_budget_min=0",
        "train.progress_every=0",
        "data.image_size=32",
        "sample.steps=2",
        "eval.max_images=4",
        "eval.overlays=0",
    ]


def sweep_command(s: LoadSettings, data: Path, storage: Path, summary: Path) -> list[str]:
    """The sweep (`__main__` below: `train.seed` over 0..trials-1) as its own process."""
    cmd = [sys.executable, "-m", "pix2seqd.platform.benchmarks.tracking_load"]
    cmd += ["--data-root", str(data)]
    cmd += ["--grid", "train.seed=" + ",".join(str(k) for k in range(s.trials))]
    cmd += ["--max-concurrent", str(s.trials), "--storage-path", str(storage)]
    cmd += ["--summary-json", str(summary), "--experiment", EXPERIMENT]
    return cmd + [x for v in sweep_overrides(s) for x in ("--set", v)]


def load_sweep() -> Sweep:
    """The trials: `train.seed` is the axis (`sweep_command` gives its values)."""
    return Sweep(
        "tracking_load",
        SweepKind.TRAIN,
        (Axis("train.seed", tuple(range(8))),),
        "MLflow load",
        trial_cpus=0.05,
    )


class Probe:
    """A thread that times one metric write and one run read, every `period` seconds,
    against run `run_id`; `take()` returns and clears the times (ms) gathered so far."""

    def __init__(self, uri: str, run_id: str, period: float):
        self.client, self.run_id, self.period = mlflow.tracking.MlflowClient(uri), run_id, period
        self.writes: list[float] = []
        self.reads: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlflow-probe", daemon=True)
        self._step = 0

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def take(self) -> tuple[list[float], list[float]]:
        writes, reads = self.writes, self.reads
        self.writes, self.reads = [], []
        return writes, reads

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._step += 1
            try:
                t0 = time.perf_counter()
                self.client.log_metric(self.run_id, PROBE_METRIC, 0.0, step=self._step)
                t1 = time.perf_counter()
                self.client.get_run(self.run_id)
                t2 = time.perf_counter()
            except Exception as err:  # noqa: BLE001 - counted, the probe goes on
                self.errors.append(f"{type(err).__name__}: {err}"[:300])
                continue
            self.writes.append(1000 * (t1 - t0))
            self.reads.append(1000 * (t2 - t1))


def latency(ms: Sequence[float]) -> dict[str, float | int]:
    """p50 / p95 / max of `ms` (rounded to 0.1 ms) and the count."""
    if not ms:
        return {"n": 0}
    ranked = sorted(ms)
    p95 = ranked[min(len(ranked) - 1, int(0.95 * len(ranked)))]
    return {
        "n": len(ranked),
        "p50_ms": round(statistics.median(ranked), 1),
        "p95_ms": round(p95, 1),
        "max_ms": round(ranked[-1], 1),
    }


def trouble_lines(text: str) -> dict[str, int]:
    """How many lines of `text` say each of `TROUBLE`."""
    lines = text.lower().splitlines()
    return {word: sum(word in line for line in lines) for word in TROUBLE}


def trial_counts(client, runs: Sequence[Any], steps: int) -> dict[str, Any]:
    """Per trial: the `train/loss` steps missing from 1..steps, and every metric value
    logged (all keys, all steps); with the span between the first and last loss write."""
    missing, values, first, last = {}, 0, float("inf"), 0.0
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "train/loss")
        gone = sorted(set(range(1, steps + 1)) - {m.step for m in history})
        if gone:
            missing[run.info.run_name] = gone
        if history:
            first = min(first, min(m.timestamp for m in history))
            last = max(last, max(m.timestamp for m in history))
        values += sum(len(client.get_metric_history(run.info.run_id, k)) for k in run.data.metrics)
    span_s = max(1e-3, (last - first) / 1000) if last else 0.0
    return {
        "trial_runs": len(runs),
        "loss_steps_missing": missing,
        "metric_values": values,
        "loss_span_s": round(span_s, 1),
    }


def start_server(folder: Path, workers: int) -> tuple[subprocess.Popen, str, Path]:
    """`mlflow server` on SQLite in `folder`, as the cluster head starts it (no login)."""
    port, server_log = free_port(), folder / "server.log"
    cmd = [str(Path(sys.executable).with_name("mlflow")), "server"]
    cmd += ["--backend-store-uri", f"sqlite:///{folder}/mlflow.db"]
    cmd += ["--artifacts-destination", str(folder / "artifacts")]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    with server_log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited: {server_log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return proc, uri, server_log
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"mlflow server not ready after 300 s: {server_log.read_text()[-2000:]}")


def run_sweep(s: LoadSettings, folder: Path, uri: str) -> tuple[int, float, str, str]:
    """The sweep's exit code, wall seconds, output, and parent run id ('' when it wrote no
    summary), on a local Ray cluster of 2 logical CPUs per trial plus 2 (a trial's worker
    and its evaluation actor hold one each), over a generated data set."""
    ray.init(address="local", num_cpus=2 * s.trials + 2, log_to_driver=False)
    try:
        env = {
            **os.environ,
            "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
            "MLFLOW_TRACKING_URI": uri,
            "PYTHONUNBUFFERED": "1",
        }
        summary = folder / "summary.json"
        data = make_coco(folder / "coco", 0, TRAIN_IMAGES, VAL_IMAGES)
        t0 = time.perf_counter()
        done = subprocess.run(
            sweep_command(s, data, folder / "storage", summary),
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    parent = ""
    if summary.exists():
        parent = json.loads(summary.read_text()).get("parent_run_id", "")
    return done.returncode, wall, done.stdout + done.stderr, parent


def benchmark_tracking_load(s: LoadSettings) -> dict[str, Any]:
    """Figures of the module docstring (docs/cli.md, benchmark JSON `tracking-load`)."""
    with tempfile.TemporaryDirectory(prefix="pix2seqd-load-") as d:
        folder = Path(d)
        proc, uri, server_log = start_server(folder, s.server_workers)
        try:
            client = mlflow.tracking.MlflowClient(uri)
            exp = client.create_experiment("tracking-load-probe")
            probe_run = client.create_run(exp, run_name="probe").info.run_id
            with Probe(uri, probe_run, s.probe_every_s) as probe:
                time.sleep(s.idle_probe_s)
                idle = probe.take()
                log.info("idle server: write %s, read %s", latency(idle[0]), latency(idle[1]))
                code, wall, output, parent = run_sweep(s, folder, uri)
                busy = probe.take()
            runs = _trial_runs(client, parent)
            counts = trial_counts(client, runs, s.steps)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        rate = s.steps * len(runs) / counts["loss_span_s"] if counts["loss_span_s"] else 0.0
        return {
            "settings": vars(s) | {"overrides": sweep_overrides(s)},
            "sweep_exit_code": code,
            "sweep_wall_s": round(wall, 1),
            **counts,
            "logged_steps_per_s": round(rate, 1),
            "metric_values_per_s": round(counts["metric_values"] / max(wall, 1e-3), 1),
            "idle_write": latency(idle[0]),
            "idle_read": latency(idle[1]),
            "busy_write": latency(busy[0]),
            "busy_read": latency(busy[1]),
            "probe_errors": len(probe.errors),
            "probe_error_examples": probe.errors[:3],
            "sweep_output_trouble": trouble_lines(output),
            "server_log_trouble": trouble_lines(server_log.read_text()),
            "sweep_output_tail": output[-3000:] if code else "",
        }


def _trial_runs(client, parent_run_id: str) -> list:
    if not parent_run_id:
        return []
    return tracking.child_runs(client, parent_run_id)


if __name__ == "__main__":
    from pix2seqd.platform.sweep.cli import main

    main(load_sweep())
