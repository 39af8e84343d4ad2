"""`data.executor_nap`: Ray Data's scheduling loop pauses only while its output waits."""
from __future__ import annotations

import numpy as np
import pytest
import ray
import ray.data

from pix2seqd.platform import ray_env
from pix2seqd.platform.data import executor_nap
from pix2seqd.platform.data.executor_nap import NAP_S, NapWhenAhead


class _Executor:
    def __init__(self, idling: bool):
        self.idling = idling

    def _consumer_idling(self) -> bool:  # the StreamingExecutor method the callback reads
        return self.idling


@pytest.fixture
def naps(monkeypatch):
    slept = []
    monkeypatch.setattr(executor_nap, "_sleep", slept.append)
    return slept


def test_it_naps_while_the_output_waits_and_not_while_the_consumer_does(naps):
    cb = NapWhenAhead()
    cb.on_execution_step(_Executor(idling=False))
    assert naps == [NAP_S]
    cb.on_execution_step(_Executor(idling=True))
    assert naps == [NAP_S]


def test_an_executor_without_the_method_is_left_as_ray_runs_it(naps):
    NapWhenAhead().on_execution_step(object())
    assert naps == []


def test_install_adds_the_callback_once_and_keeps_the_others():
    ctx = ray.data.DataContext()
    marker = type("Other", (), {})
    ctx.custom_execution_callback_classes = [marker]
    executor_nap.install(ctx)
    executor_nap.install(ctx)
    assert ctx.custom_execution_callback_classes == [marker, NapWhenAhead]


def test_init_ray_installs_it_in_the_current_context(monkeypatch):
    ctx = ray.data.DataContext()
    monkeypatch.setattr(ray.data.DataContext, "get_current", staticmethod(lambda: ctx))
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # join, start nothing
    assert ray_env.init_ray() is False
    assert NapWhenAhead in ctx.custom_execution_callback_classes


@pytest.mark.ray
def test_a_split_stream_with_the_nap_delivers_every_row_once(ray_session):
    """The callback travels to the SplitCoordinator actor and the stream stays whole."""
    ctx = ray.data.DataContext.get_current()
    saved = list(ctx.custom_execution_callback_classes)
    executor_nap.install(ctx)
    try:
        ds = ray.data.range(4000, override_num_blocks=40).map_batches(
            lambda b: {"id": b["id"], "sq": b["id"] ** 2}, batch_size=50)
        left, right = ds.streaming_split(2, equal=True)
        coordinator_ctx = ray.get(left._coord_actor.get_dataset_context.remote())
        got = _rows(left, right)
    finally:
        ctx.custom_execution_callback_classes = saved
    assert NapWhenAhead in coordinator_ctx.custom_execution_callback_classes
    ids = np.concatenate([ids for ids, _ in got])
    assert sorted(ids.tolist()) == list(range(4000))
    assert all((sq == ids ** 2).all() for ids, sq in got)
    assert len(got[0][0]) == len(got[1][0]) == 2000


def _rows(left, right) -> list[tuple[np.ndarray, np.ndarray]]:
    @ray.remote(num_cpus=0.25)
    def take(it):
        out = [(b["id"], b["sq"]) for b in it.iter_batches(batch_size=64)]
        return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])

    return ray.get([take.remote(left), take.remote(right)])
