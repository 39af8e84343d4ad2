"""The training loop's meter and rank 0's progress line."""

from __future__ import annotations

import logging
import time

import pytest
import torch

from pix2seqd.platform.train.progress import Meter, ProgressLine, WindowStats


class _Opt:
    def __init__(self):
        self.param_groups = [{"lr": 0.003}]


def test_meter_windows_for_metrics_and_line_close_apart():
    meter = Meter()
    for loss, wait in ((1.0, 0.0), (3.0, 0.0)):
        meter.add(torch.tensor(loss), wait)
    metrics = meter.flush(global_batch=16, opt=_Opt())
    assert metrics["train/loss"] == pytest.approx(2.0) and meter.last_loss == pytest.approx(2.0)
    assert metrics["train/lr"] == 0.003 and metrics["train/img_per_s"] > 0
    meter.add(torch.tensor(5.0), 0.0)
    line = meter.line.close()  # the line's window still holds all three steps
    assert (line.steps, line.loss) == (3, pytest.approx(3.0))
    assert meter.metrics.steps == 1


def test_line_shows_rates_eta_and_the_last_score():
    line = ProgressLine(
        total=1000, global_batch=16, val_metric="val/pq", budget_s=0.0, started=time.monotonic()
    )
    stats = WindowStats(loss=0.51234, steps=200, seconds=40.0, wait_s=10.0)
    text = line.text(400, stats, 0.003, {"val/pq": 0.4123})
    assert text == (
        "step 400/1000  loss 0.5123  lr 0.003  80.0 img/s  data wait 25%  ETA 2m00s  val/pq 0.4123"
    )
    assert line.text(400, stats, 0.003, {}).endswith("val/pq -")


def test_eta_is_the_budget_left_when_that_is_shorter():
    stats = WindowStats(loss=1.0, steps=10, seconds=10.0, wait_s=0.0)  # 1 s a step
    budget = ProgressLine(1000, 16, "val/jf", budget_s=60.0, started=time.monotonic() - 30.0)
    assert budget.eta_s(0, stats) == pytest.approx(30.0, abs=1.0)
    assert budget.eta_s(990, stats) == pytest.approx(10.0)  # steps run out first
    assert "ETA 1h06m" in ProgressLine(4000, 16, "val/jf", 0.0, 0.0).text(0, stats, 1e-4, {})


def test_line_is_a_logging_record(caplog):
    line = ProgressLine(10, 4, "val/pq", 0.0, time.monotonic())
    with caplog.at_level(logging.INFO, logger="pix2seqd"):
        line.show(5, WindowStats(1.0, 5, 1.0, 0.1), 0.1, {})
    assert [r.name for r in caplog.records] == ["pix2seqd.platform.train.progress"]
    assert caplog.records[0].getMessage().startswith("step 5/10  loss 1.0000")
