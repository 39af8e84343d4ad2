"""The training loop's watch on preemption notices and its clock (platform/train/watch.py),
and the switch of Ray Train's preemption watcher (platform/ray_env.py). The watcher on a
real cluster: tests/integration/test_fault_cluster.py."""

from __future__ import annotations

import os
import time

import pytest
import ray.train

from pix2seqd.platform.ray_env import PREEMPTION_WATCHER_ENV, preemption_watcher
from pix2seqd.platform.train import watch
from pix2seqd.platform.train.watch import PreemptionWatch, TrainClock


def _notice(*nodes: str, deadline_ms: int | None = None) -> ray.train.PreemptionInfo:
    return ray.train.PreemptionInfo(
        deadline_ms=deadline_ms, preempted_node_to_ranks={n: [0] for n in nodes}
    )


def test_each_set_of_drained_nodes_is_noticed_once(monkeypatch):
    answers = iter([None, _notice("a"), _notice("a"), _notice("a", "b"), _notice("b")])
    monkeypatch.setattr(watch.ray.train, "get_preemption_info", lambda: next(answers))
    seen = PreemptionWatch(enabled=True)
    got = [seen.new_notice() for _ in range(5)]
    assert [n and n.preempted_node_ids for n in got] == [None, ["a"], None, ["a", "b"], None]


def test_the_notice_is_asked_for_every_16_steps_and_only_when_on():
    on, off = PreemptionWatch(enabled=True), PreemptionWatch(enabled=False)
    assert [s for s in range(40) if on.due(s)] == [0, 16, 32]
    assert not any(off.due(s) for s in range(40))


def test_seconds_left_before_the_deadline():
    soon = _notice("a", deadline_ms=int((time.time() + 90) * 1000))
    assert 85 < watch.seconds_left(soon) <= 90
    assert watch.seconds_left(_notice("a")) == -1.0  # the drain gave no deadline
    past = _notice("a", deadline_ms=int((time.time() - 5) * 1000))
    assert watch.seconds_left(past) == 0.0


def test_a_resumed_clock_goes_on_from_the_recorded_seconds():
    clock = TrainClock.resumed(100.0)
    assert 100.0 <= clock.elapsed() < 101.0


@pytest.mark.parametrize("enabled", [True, False])
def test_the_config_key_sets_rays_switch_for_the_fit_only(monkeypatch, enabled):
    monkeypatch.delenv(PREEMPTION_WATCHER_ENV, raising=False)
    with preemption_watcher(enabled):
        assert os.environ[PREEMPTION_WATCHER_ENV] == ("1" if enabled else "0")
    assert PREEMPTION_WATCHER_ENV not in os.environ


def test_a_value_the_user_set_wins(monkeypatch):
    monkeypatch.setenv(PREEMPTION_WATCHER_ENV, "0")
    with preemption_watcher(True):
        assert os.environ[PREEMPTION_WATCHER_ENV] == "0"
    assert os.environ[PREEMPTION_WATCHER_ENV] == "0"
