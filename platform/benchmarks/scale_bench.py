"""`benchmark.py scale`: start-up time and memory of the data paths at COCO train's size.

On a linked set of `records` images (`scale_data.write_scale_set`: 118,287 by default,
COCO train's count, with its 7.27 segments per image), each phase runs in its own fresh
process, as a job would, while this process samples the memory (RSS) and CPU time of that
process and of every process below it (the local Ray it starts: raylet, GCS, workers):

- `annotation`: the annotation files parsed into records (`load_splits`, the training
  job's reader), the stream's rows built from them (`record_item`), and the rows pickled
  as Ray stores them: the training stream's map function holds every row, is put into
  the object store once, and every map task unpickles it.
- `raw_stream`: the training job's start on the raw layout, up to its first batch: Ray
  started as the job starts it, `load_train_inputs` (both splits parsed, every record
  validated in Ray Data tasks, the rows built), the image task's stream (`ImageStream`,
  `build_rank_dataset`) and its first batch of one worker's size.
- `prepare`: `prepare_dataset` on a local Ray, as jobs/prepare_data.py runs it (both splits).
- `prepared_stream`: the same start as `raw_stream` on the shards `prepare` wrote.

Times are wall seconds on a machine possibly shared with other work: the load average at
the start and end is recorded, and CPU seconds (all processes of the phase) per record
are the figure that does not depend on it.
"""

from __future__ import annotations

import enum
import gc
import json
import logging
import multiprocessing
import os
import pickle
import shutil
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pix2seqd.platform.benchmarks.scale_data import COCO_TRAIN_IMAGES, write_scale_set
from pix2seqd.platform.config import Config, DatasetKind, override
from pix2seqd.platform.data.coco_panoptic import record_item
from pix2seqd.platform.data.prepare import prepare_dataset
from pix2seqd.platform.log import configure_logging, package_level
from pix2seqd.platform.ray_env import ray_session
from pix2seqd.platform.train.image_task import ImageTask
from pix2seqd.platform.train.inputs import load_splits

log = logging.getLogger(__name__)
MB = 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


class Phase(enum.Enum):
    """What one measured process does (module docstring)."""

    ANNOTATION = "annotation"
    RAW_STREAM = "raw_stream"
    PREPARE = "prepare"
    PREPARED_STREAM = "prepared_stream"


@dataclass(frozen=True)
class ScaleSettings:
    """records / pool / val_records: the linked set (`write_scale_set`); rows_per_shard:
    as jobs/prepare_data.py's flag; work_dir: where the set and the shards go (default a
    new folder in the temp folder, removed at the end unless `keep`); interval_s: how
    often memory is sampled; phases: which to run, in order."""

    records: int = COCO_TRAIN_IMAGES
    pool: int = 200
    val_records: int = 50
    rows_per_shard: int = 500
    work_dir: Path | None = None
    keep: bool = False
    interval_s: float = 0.2
    phases: tuple[Phase, ...] = tuple(Phase)


# ---------------------------------------------------------------- sampling


@dataclass
class Peaks:
    """Highest values seen by `ProcessSampler` (bytes), and the CPU seconds per process."""

    driver_rss: int = 0
    worker_rss: int = 0  # the largest single Ray worker
    workers_rss: int = 0  # all Ray workers together, at one instant
    ray_system_rss: int = 0  # raylet, GCS and Ray's other helper processes together
    workers: int = 0  # most Ray workers alive at once
    cpu_s: dict[int, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "driver_peak_mb": round(self.driver_rss / MB, 1),
            "worker_peak_mb": round(self.worker_rss / MB, 1),
            "workers_peak_mb": round(self.workers_rss / MB, 1),
            "ray_system_peak_mb": round(self.ray_system_rss / MB, 1),
            "ray_workers": self.workers,
            "cpu_s": round(sum(self.cpu_s.values()), 1),
        }


class ProcessSampler(threading.Thread):
    """Samples the RSS and CPU time of process `pid` and its descendants every
    `interval_s` until `stop()`, from /proc (Linux). RSS counts the object store pages a
    worker maps, so the worker figures include what they read from it."""

    def __init__(self, pid: int, interval_s: float):
        super().__init__(daemon=True)
        self.pid, self.interval_s, self.peaks = pid, interval_s, Peaks()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval_s)

    def stop(self) -> Peaks:
        self._stop_event.set()
        self.join()
        return self.peaks

    def sample(self) -> None:
        workers, system, p = [], 0, self.peaks
        for pid, (rss_bytes, cpu_s) in descendants(self.pid).items():
            p.cpu_s[pid] = cpu_s
            if pid == self.pid:
                p.driver_rss = max(p.driver_rss, rss_bytes)
            elif command(pid).startswith("ray::"):  # Ray names its worker processes so
                workers.append(rss_bytes)
            else:
                system += rss_bytes
        p.worker_rss = max([p.worker_rss, *workers])
        p.workers_rss = max(p.workers_rss, sum(workers))
        p.ray_system_rss = max(p.ray_system_rss, system)
        p.workers = max(p.workers, len(workers))


def proc_stat(pid: int | str) -> tuple[int, int, float] | None:
    """(parent pid, RSS bytes, user + system CPU seconds) of a process; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after the command, which may hold spaces
    cpu_ticks = int(fields[11]) + int(fields[12])
    return int(fields[1]), int(fields[21]) * PAGE, cpu_ticks / TICKS


def descendants(root: int) -> dict[int, tuple[int, float]]:
    """{pid: (RSS bytes, CPU seconds)} of `root` and every process below it."""
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := proc_stat(entry.name)) is not None:
            table[int(entry.name)] = stat
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root] if root in table else []
    while todo:
        pid = todo.pop()
        out[pid] = table[pid][1:]
        todo += children.get(pid, [])
    return out


def command(pid: int) -> str:
    """A process's first command-line word ('' if gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def vm_hwm() -> int:
    """This process's peak resident memory so far (Linux VmHWM), bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


# ---------------------------------------------------------------- the phases (in their process)


@dataclass(frozen=True)
class PhaseJob:
    """What a phase's process gets: the preset, the linked set's root, the shards' folder,
    jobs/prepare_data.py's --rows-per-shard, the package's log level, and when (time.time)
    the process was started, so a job's start-up counts its interpreter and imports."""

    phase: Phase
    cfg: Config
    root: Path
    prepared: Path
    rows_per_shard: int
    log_level: int
    started_at: float = 0.0


def annotation_phase(job: PhaseJob) -> dict[str, Any]:
    """Parse both splits into records and build the train rows, timed; then again under
    tracemalloc for the bytes they hold (RSS would count the parser's freed memory); the
    rows pickled and unpickled, as Ray stores them and each map task reads them."""
    cfg, path = phase_config(job), job.root / "annotations" / "panoptic_train2017.json"
    t0 = time.perf_counter()
    json.loads(path.read_text())
    json_s, t0 = time.perf_counter() - t0, time.perf_counter()
    train, _, _ = load_splits(job.root, cfg)
    parse_s, t0 = time.perf_counter() - t0, time.perf_counter()
    rows = [record_item(r) for r in train]
    rows_s = time.perf_counter() - t0
    blob = pickle.dumps(rows, protocol=5)
    t0 = time.perf_counter()
    pickle.loads(blob)
    unpickle_s = time.perf_counter() - t0
    del train, rows
    gc.collect()
    hwm = vm_hwm()  # before tracemalloc, whose own records would add to it
    tracemalloc.start()
    train, _, _ = load_splits(job.root, cfg)
    records_bytes, parse_peak = tracemalloc.get_traced_memory()
    rows = [record_item(r) for r in train]
    rows_bytes = tracemalloc.get_traced_memory()[0] - records_bytes
    tracemalloc.stop()
    return {
        "driver_hwm_mb": hwm / MB,
        "records_in_split": len(rows),
        "json_loads_s": json_s,
        "parse_s": parse_s,
        "records_mb": records_bytes / MB,
        "parse_peak_mb": parse_peak / MB,
        "rows_s": rows_s,
        "rows_mb": rows_bytes / MB,
        "rows_pickle_mb": len(blob) / MB,
        "rows_unpickle_s": unpickle_s,
    }


def stream_phase(job: PhaseJob) -> dict[str, Any]:
    """A training job's start up to one worker's first batch (module docstring)."""
    cfg, t = phase_config(job), job.cfg.train
    t0 = time.perf_counter()
    with (
        ray_session(t.num_workers * t.cpus_per_worker, cfg.data.executor_nap),
        tempfile.TemporaryDirectory(prefix="pix2seqd-scale-") as tmp,
    ):
        ray_init_s, t1 = time.perf_counter() - t0, time.perf_counter()
        task = ImageTask.load(cfg, Path(tmp))
        load_inputs_s, t2 = time.perf_counter() - t1, time.perf_counter()
        stream = task.fit_inputs(task.resolved(cfg)).stream
        micro = t.batch_size // (t.num_workers * t.accum)
        batches = stream.dataset(cfg, 0, 1, 0).iter_batches(
            batch_size=micro, batch_format="numpy", drop_last=True
        )
        it = iter(batches)
        first = next(it)
        first_batch_s, startup_s = time.perf_counter() - t2, time.time() - job.started_at
        # stops the stream's prefetching thread, which otherwise reads Ray during its
        # shutdown, and Ray then ends the process before it reports (seen at 118k records)
        it.close()
    return {
        "startup_s": startup_s,
        "ray_init_s": ray_init_s,
        "load_inputs_s": load_inputs_s,
        "first_batch_s": first_batch_s,
        "batch": len(first["image"]),
    }


def prepare_phase(job: PhaseJob) -> dict[str, Any]:
    """jobs/prepare_data.py's work: both splits to shards on a local Ray."""
    cfg = phase_config(job)
    t0 = time.perf_counter()
    with ray_session():
        ray_init_s, t1 = time.perf_counter() - t0, time.perf_counter()
        report = prepare_dataset(
            DatasetKind.COCO,
            job.root,
            str(job.prepared),
            crowd=cfg.data.crowd,
            max_instances=cfg.model.max_instances,
            rows_per_shard=job.rows_per_shard,
        )
        prepare_s = time.perf_counter() - t1
    files = [p for p in job.prepared.rglob("*") if p.is_file()]
    return {
        "ray_init_s": ray_init_s,
        "prepare_s": prepare_s,
        "images": sum(s["n_records"] for s in report["splits"].values()),
        "bad": sum(s["n_bad"] for s in report["splits"].values()),
        "shards": sum(p.suffix == ".parquet" for p in files),
        "output_mb": sum(p.stat().st_size for p in files) / MB,
    }


PHASES = {
    Phase.ANNOTATION: annotation_phase,
    Phase.RAW_STREAM: stream_phase,
    Phase.PREPARE: prepare_phase,
    Phase.PREPARED_STREAM: stream_phase,
}


def phase_config(job: PhaseJob) -> Config:
    """The preset reading the linked set (or, for prepared_stream, its shards)."""
    prepared = str(job.prepared) if job.phase is Phase.PREPARED_STREAM else ""
    return override(
        job.cfg,
        {
            "data.dataset": DatasetKind.COCO,
            "data.root": str(job.root),
            "data.prepared": prepared,
            "data.train_split": "train2017",
            "data.val_split": "val2017",
        },
    )


def phase_process(job: PhaseJob, conn) -> None:
    """Entry of a phase's process: its figures and peak RSS, or {'error'}, sent to `conn`."""
    configure_logging(job.log_level)
    try:
        result = PHASES[job.phase](job)
        conn.send({"driver_hwm_mb": vm_hwm() / MB, **result})
    except Exception as err:  # reported by the parent, which names the phase
        log.exception("phase %s failed", job.phase.value)
        conn.send({"error": f"{type(err).__name__}: {err}"})
    finally:
        conn.close()


# ---------------------------------------------------------------- the benchmark


def run_phase(job: PhaseJob, interval_s: float) -> dict[str, Any]:
    """Run `job` in a fresh (spawned) process, sampled every `interval_s`; its figures,
    wall time (process start to end) and peaks."""
    ctx = multiprocessing.get_context("spawn")  # fresh: no memory or Ray of this process
    receive, send = ctx.Pipe(duplex=False)
    job = replace(job, started_at=time.time())
    proc = ctx.Process(target=phase_process, args=(job, send), name=f"scale-{job.phase.value}")
    t0 = time.perf_counter()
    proc.start()
    send.close()
    sampler = ProcessSampler(proc.pid, interval_s)
    sampler.start()
    try:
        result = receive.recv()
    except EOFError:
        result = {"error": "the process ended without a result"}
    finally:
        proc.join()
        peaks = sampler.stop()
    if "error" in result:
        raise RuntimeError(f"scale benchmark, phase {job.phase.value}: {result['error']}")
    return {**result, "wall_s": time.perf_counter() - t0, **peaks.to_json()}


def benchmark_scale(
    cfg: Config, settings: ScaleSettings, save: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Generate the linked set, run the phases, remove what was written (docs/cli.md keys).

    `save` gets the figures so far after each phase (a long run keeps what it measured); a
    phase that fails is recorded under `errors` and the next one runs."""
    work = settings.work_dir or Path(tempfile.mkdtemp(prefix=f"pix2seqd-scale-{settings.records}-"))
    try:
        t0 = time.perf_counter()
        made = write_scale_set(
            work / "coco", settings.records, pool=settings.pool, val_records=settings.val_records
        )
        result: dict[str, Any] = {
            "records": made.records,
            "segments": made.segments,
            "pool": made.pool,
            "json_mb": made.json_bytes / MB,
            "generate_s": time.perf_counter() - t0,
            "cores": os.cpu_count(),
            "load_avg_start": os.getloadavg()[0],
        }
        base = PhaseJob(
            Phase.ANNOTATION,
            cfg,
            made.root,
            work / "prepared",
            settings.rows_per_shard,
            package_level(),
        )
        for phase in settings.phases:
            log.info("scale benchmark: %s, %d records", phase.value, settings.records)
            try:
                result[phase.value] = run_phase(replace(base, phase=phase), settings.interval_s)
            except RuntimeError as err:
                log.error("%s", err)
                result.setdefault("errors", {})[phase.value] = str(err)
            result["load_avg_end"] = os.getloadavg()[0]
            with_rates(result, settings.val_records)
            if save:
                save(result)
            log.info("%s: %s", phase.value, json.dumps(result.get(phase.value)))
        return result
    finally:
        if not settings.keep:
            shutil.rmtree(work, ignore_errors=True)


def with_rates(result: dict[str, Any], val_records: int) -> dict[str, Any]:
    """Add per-record figures: bytes per record, CPU ms per record, images/s (per core)."""
    n = result["records"]
    if "annotation" in result:
        a = result["annotation"]
        a["records_bytes_per_record"] = round(a["records_mb"] * MB / n)
        a["rows_bytes_per_record"] = round(a["rows_mb"] * MB / n)
    for key in ("raw_stream", "prepared_stream"):
        if key in result:
            result[key]["cpu_ms_per_record"] = result[key]["cpu_s"] * 1000 / (n + val_records)
    if "prepare" in result:
        p = result["prepare"]
        p["img_s"] = p["images"] / p["prepare_s"]
        p["img_s_per_core"] = p["img_s"] / (result["cores"] or 1)
        p["cpu_ms_per_image"] = p["cpu_s"] * 1000 / p["images"]
    return result
