"""One driver per MLflow training run: a lease kept in the run's tags.

A driver claims its run by writing who it is (`driver/host`, `driver/pid`, `driver/id`,
`driver/pid_space`) and keeps `driver/heartbeat` (its clock, Unix seconds) fresh from a
daemon thread every `LeaseTiming.heartbeat_s`; when the run ends the heartbeat becomes
`released`. Another process takes the holder as live while that heartbeat is younger than
`LeaseTiming.stale_s`, except that a holder whose process is known to be gone (same machine
and pid namespace, no such process) is dead at once.

MLflow has no compare-and-swap, so a claim is written, left to settle
(`LeaseTiming.settle_s`, longer than the gap between a racing driver's read and its write)
and read again: the last writer holds the run, the other one refuses.

A RUNNING run whose holder is dead is marked FAILED, the reason in `driver/lost`, by the
next process that looks: `--resume auto`, a claim, or any training job of the experiment
(`mark_dead_runs`). Runs without `driver/id` (made without a lease) are never judged.
Cheap to import (no MLflow at module level): `platform/cli.py` uses it for `--resume`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pix2seqd.platform import tracking

log = logging.getLogger(__name__)

HOST_TAG, PID_TAG, ID_TAG = "driver/host", "driver/pid", "driver/id"
PID_SPACE_TAG, HEARTBEAT_TAG, LOST_TAG = "driver/pid_space", "driver/heartbeat", "driver/lost"
RELEASED = "released"  # the heartbeat of a driver that let its run go
# checkpoints.STEP_TAG_PREFIX, the tags of a run's checkpoints; not imported from there,
# which loads torch while a job is still parsing its flags
CHECKPOINT_TAG_PREFIX = "checkpoint/"


@dataclass(frozen=True)
class LeaseTiming:
    """How often a driver refreshes its heartbeat, when a silent holder counts as dead, and
    how long a claim waits before it reads back who won. stale_s is ten heartbeats: a
    tracking server that is slow or briefly down must not make a live driver look dead."""

    heartbeat_s: float = 30.0
    stale_s: float = 300.0
    settle_s: float = 3.0


class RunLockedError(RuntimeError):
    """Another live driver trains the run (the message names it and how to proceed)."""


@dataclass(frozen=True)
class Holder:
    """A driver process: its host, pid, a random id for this claim, and its pid space (boot
    id and pid namespace; '' off Linux), within which its pid can be checked."""

    host: str
    pid: int
    id: str
    pid_space: str

    @classmethod
    def this_process(cls) -> Holder:
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex, _pid_space())

    @classmethod
    def of_tags(cls, tags: Mapping[str, str]) -> Holder | None:
        if ID_TAG not in tags:
            return None
        pid = tags.get(PID_TAG, "")
        return cls(
            tags.get(HOST_TAG, "?"),
            int(pid) if pid.isdigit() else 0,
            tags[ID_TAG],
            tags.get(PID_SPACE_TAG, ""),
        )

    def tags(self) -> dict[str, str]:
        return {
            HOST_TAG: self.host,
            PID_TAG: str(self.pid),
            ID_TAG: self.id,
            PID_SPACE_TAG: self.pid_space,
        }

    def gone_as_seen_from(self, here: Holder) -> bool:
        """True when this holder's process is known to have ended: it ran in `here`'s pid
        space and no such process is left (a zombie counts as ended)."""
        if not self.pid_space or self.pid_space != here.pid_space:
            return False
        return not _process_alive(self.pid)

    def __str__(self) -> str:
        return f"host {self.host}, pid {self.pid}"


def heartbeat_age(tags: Mapping[str, str], now: float) -> float | None:
    """Seconds since the holder's last heartbeat (never negative: another host's clock may
    run ahead); None once released or when there is none."""
    try:
        return max(0.0, now - float(tags.get(HEARTBEAT_TAG, "")))
    except ValueError:
        return None


def live_holder(tags: Mapping[str, str], here: Holder, timing: LeaseTiming) -> Holder | None:
    """The holder of a run with these tags while it is live, else None."""
    holder = Holder.of_tags(tags)
    age = heartbeat_age(tags, time.time())
    if holder is None or age is None or age > timing.stale_s:
        return None
    return None if holder.gone_as_seen_from(here) else holder


def refusal(run, holder: Holder, timing: LeaseTiming) -> RunLockedError:
    """The error of a driver that may not train `run`, held by `holder`."""
    now = time.time()
    beat = now - (heartbeat_age(run.data.tags, now) or 0.0)
    gone_at = _iso(beat + timing.stale_s)
    return RunLockedError(
        f"MLflow run {run.info.run_id} ('{run.info.run_name}') is being trained by another "
        f"driver ({holder}, last heartbeat at {_iso(beat)}); two drivers cannot train one run. "
        f"Let it finish, or stop it (ray job stop on its job, or kill {holder.pid} on "
        f"{holder.host}) and submit the command again with --resume auto. A driver that "
        f"died without stopping counts as gone once its heartbeat is {timing.stale_s:.0f} s "
        f"old (at {gone_at}), or at once when seen from its own host."
    )


def refuse_if_held(run, here: Holder, timing: LeaseTiming) -> None:
    """Raise `RunLockedError` while a live driver other than `here` holds `run`."""
    holder = live_holder(run.data.tags, here, timing)
    if holder is not None and holder.id != here.id:
        raise refusal(run, holder, timing)


def mark_if_dead(mlc, run, here: Holder, timing: LeaseTiming) -> bool:
    """Mark `run` FAILED, with the reason in `driver/lost`, when it is RUNNING and its
    holder is dead; True when it did."""
    tags = run.data.tags
    holder = Holder.of_tags(tags)
    if run.info.status != "RUNNING" or holder is None or live_holder(tags, here, timing):
        return False
    beat = heartbeat_age(tags, time.time())
    last = "released" if beat is None else f"last heartbeat {_iso(time.time() - beat)}"
    reason = (
        f"the driver ({holder}) stopped without ending the run ({last}); "
        f"marked FAILED at {_iso(time.time())} by {here}"
    )
    tracking.set_tags(mlc, run.info.run_id, {LOST_TAG: reason})
    mlc.set_terminated(run.info.run_id, "FAILED")
    log.warning("MLflow run %s ('%s'): %s", run.info.run_id, run.info.run_name, reason)
    return True


def mark_dead_runs(mlc, experiment_id: str, here: Holder, timing: LeaseTiming) -> int:
    """Mark FAILED every RUNNING run of the experiment whose driver died; how many."""
    runs = mlc.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
    return sum(mark_if_dead(mlc, run, here, timing) for run in runs)


def unfinished_runs(mlc, experiment_id: str, name: str) -> list:
    """The runs named `name` in the experiment that did not finish (RUNNING, FAILED,
    KILLED, SCHEDULED), newest first."""
    quote = "'" if "'" not in name else '"'
    if quote in name:
        raise ValueError(f"run name {name!r} holds both quote characters; give --run-name")
    return list(
        mlc.search_runs(
            [experiment_id],
            f"attributes.run_name = {quote}{name}{quote} and attributes.status != 'FINISHED'",
            max_results=1000,
            order_by=["attributes.start_time DESC"],
        )
    )


def resumable_run(mlc, experiment_id: str, name: str, timing: LeaseTiming) -> str | None:
    """`--resume auto`: the id of the unfinished run named `name` to continue, the newest
    that recorded a checkpoint; None to start a new run. Refuses while a live driver holds
    any unfinished run of the name; marks those whose driver died FAILED."""
    here = Holder.this_process()
    runs = unfinished_runs(mlc, experiment_id, name)
    for run in runs:
        refuse_if_held(run, here, timing)
        mark_if_dead(mlc, run, here, timing)
    return next((r.info.run_id for r in runs if _has_checkpoint(r.data.tags)), None)


class DriverLease:
    """This driver's claim on one MLflow run, and the thread that keeps it fresh. `lost` is
    set when another driver took the run over (this one's heartbeat had gone stale)."""

    def __init__(self, mlc, timing: LeaseTiming | None = None):
        self.mlc = mlc
        self.timing = timing or LeaseTiming()
        self.holder = Holder.this_process()
        self.lost = threading.Event()

    def tags(self) -> dict[str, str]:
        """The lease as the tags of a run made or claimed now."""
        return {**self.holder.tags(), HEARTBEAT_TAG: repr(time.time())}

    def claim(self, run_id: str) -> None:
        """Take `run_id` for this driver: refused while another live driver holds it; a
        RUNNING run of a dead driver is marked FAILED first (its record of what happened)."""
        run = self.mlc.get_run(run_id)
        refuse_if_held(run, self.holder, self.timing)
        mark_if_dead(self.mlc, run, self.holder, self.timing)
        tracking.set_tags(self.mlc, run_id, self.tags())
        time.sleep(self.timing.settle_s)
        run = self.mlc.get_run(run_id)
        winner = Holder.of_tags(run.data.tags)
        if winner is None or winner.id != self.holder.id:
            raise refusal(run, winner or self.holder, self.timing)

    def confirm_sole(self, run_id: str, name: str, experiment_id: str) -> None:
        """After this driver made `run_id` under `--resume auto`: give way, deleting it, when
        another driver made a run of the same name first and holds it (both found none)."""
        time.sleep(self.timing.settle_s)
        mine = self.mlc.get_run(run_id)
        for run in unfinished_runs(self.mlc, experiment_id, name):
            holder = live_holder(run.data.tags, self.holder, self.timing)
            if holder is not None and holder.id != self.holder.id and _order(run) < _order(mine):
                self.mlc.delete_run(run_id)
                raise refusal(run, holder, self.timing)

    @contextlib.contextmanager
    def kept(self, run_id: str) -> Iterator[None]:
        """Refresh the heartbeat during the block, then release the run (unless lost)."""
        stop = threading.Event()
        beat = threading.Thread(
            target=self._beat, args=(run_id, stop), name="driver-heartbeat", daemon=True
        )
        beat.start()
        try:
            yield
        finally:
            stop.set()
            # a beat may hang in MLflow's retries while the server is down: not waited for
            beat.join(timeout=5)
            if not self.lost.is_set():
                self._release(run_id)

    def _beat(self, run_id: str, stop: threading.Event) -> None:
        while not stop.wait(self.timing.heartbeat_s):
            try:
                holder = Holder.of_tags(self.mlc.get_run(run_id).data.tags)
                if holder is None or holder.id != self.holder.id:
                    self.lost.set()
                    log.error(
                        "MLflow run %s is now held by another driver (%s); this driver no "
                        "longer owns it and will leave its status alone: stop one of them",
                        run_id,
                        holder,
                    )
                    return
                tracking.set_tags(self.mlc, run_id, {HEARTBEAT_TAG: repr(time.time())})
            except Exception as exc:  # the tracking server may be down for a while: retry
                log.warning(
                    "driver heartbeat of MLflow run %s failed (%s); retrying in %.0f s",
                    run_id,
                    exc,
                    self.timing.heartbeat_s,
                )

    def _release(self, run_id: str) -> None:
        try:
            tracking.set_tags(self.mlc, run_id, {HEARTBEAT_TAG: RELEASED})
        except Exception as exc:  # the run's lease then goes stale on its own
            log.warning("could not release MLflow run %s (%s)", run_id, exc)


def _has_checkpoint(tags: Mapping[str, str]) -> bool:
    return any(k.startswith(CHECKPOINT_TAG_PREFIX) for k in tags)


def _order(run) -> tuple[int, str]:
    """Which of two runs of one name came first."""
    return run.info.start_time, run.info.run_id


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pid_space() -> str:
    """This process's boot id and pid namespace ('' off Linux): processes that share both
    see each other's pids."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def _process_alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (Linux's /proc; elsewhere a pid
    that exists counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
