"""What the training loop measures as it goes: the `train/*` metrics every
`train.log_every` steps and, on rank 0, a progress line every `train.progress_every` steps.

The line is a `logging` record of this module; Ray forwards a worker's stderr to the
driver's terminal, so it shows where the job was started.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowStats:
    """Mean loss, steps, wall seconds and seconds spent waiting for data of a window."""

    loss: float
    steps: int
    seconds: float
    wait_s: float

    def img_per_s(self, global_batch: int) -> float:
        return global_batch * self.steps / self.seconds

    @property
    def wait_frac(self) -> float:
        return self.wait_s / self.seconds


class Window:
    """Steps since the window was opened. The loss sum stays a tensor until `close`, so
    adding a step does not wait for the device."""

    def __init__(self):
        self.open()

    def open(self) -> None:
        self.t0, self.wait, self.sum, self.steps = time.perf_counter(), 0.0, 0.0, 0

    def add(self, loss, wait_s: float) -> None:
        self.sum = self.sum + loss
        self.steps += 1
        self.wait += wait_s

    def close(self) -> WindowStats:
        """The window's figures; a new window opens."""
        seconds = max(1e-9, time.perf_counter() - self.t0)
        stats = WindowStats(float(self.sum) / max(1, self.steps), self.steps, seconds, self.wait)
        self.open()
        return stats


class Meter:
    """Running loss, throughput and the fraction of time spent waiting for data: one window
    for the MLflow metrics, one for the progress line."""

    def __init__(self):
        self.metrics, self.line = Window(), Window()
        self.last_loss = float("nan")

    def add(self, loss, wait_s: float) -> None:
        self.metrics.add(loss, wait_s)
        self.line.add(loss, wait_s)

    def flush(self, global_batch: int, opt) -> dict[str, float]:
        """The `train/*` metrics since the last flush."""
        stats = self.metrics.close()
        self.last_loss = stats.loss
        return {
            "train/loss": stats.loss,
            "train/lr": opt.param_groups[0]["lr"],
            "train/img_per_s": stats.img_per_s(global_batch),
            "train/data_wait_frac": stats.wait_frac,
        }


class ProgressLine:
    """Rank 0's line: step / total, loss, lr, img/s and data-wait share over the last
    window, the ETA, and the last periodic score (`val_metric`, '-' before the first).

    The ETA is the remaining steps at the window's pace; with a time budget
    (`budget_s` > 0, counted from `started`, a `time.monotonic()` reading) it is the
    smaller of that and the budget left, since the run stops at whichever comes first."""

    def __init__(
        self, total: int, global_batch: int, val_metric: str, budget_s: float, started: float
    ):
        self.total, self.global_batch, self.val_metric = total, global_batch, val_metric
        self.budget_s, self.started = budget_s, started

    def text(self, step: int, stats: WindowStats, lr: float, scores: dict[str, float]) -> str:
        score = scores.get(self.val_metric)
        return (
            f"step {step}/{self.total}  loss {stats.loss:.4f}  lr {lr:.3g}  "
            f"{stats.img_per_s(self.global_batch):.1f} img/s  "
            f"data wait {stats.wait_frac:.0%}  ETA {_duration(self.eta_s(step, stats))}  "
            f"{self.val_metric} {'-' if score is None else f'{score:.4f}'}"
        )

    def eta_s(self, step: int, stats: WindowStats) -> float:
        eta = max(0, self.total - step) * stats.seconds / max(1, stats.steps)
        if self.budget_s > 0:
            eta = min(eta, max(0.0, self.budget_s - (time.monotonic() - self.started)))
        return eta

    def show(self, step: int, stats: WindowStats, lr: float, scores: dict[str, float]) -> None:
        log.info("%s", self.text(step, stats, lr, scores))


def _duration(seconds: float) -> str:
    """'1h02m', '4m05s', '12s'."""
    if not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
