"""`data.executor_nap`: Ray Data's scheduling loop pauses only while its output waits.

The `test_ray_*` tests read the installed Ray's own streaming executor for what the nap
relies on, so a Ray upgrade that moves it fails them by name."""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import time

import numpy as np
import pytest
import ray
import ray.data

from pix2seqd.platform import ray_env
from pix2seqd.platform.config import Config, override
from pix2seqd.platform.data import executor_nap
from pix2seqd.platform.data.executor_nap import NAP_S


class _Executor:
    def __init__(self, idling: bool, used_mb: float = 0.0, limit_mb: float = float("inf")):
        self.idling = idling
        self._resource_manager = _Budget(used_mb, limit_mb)

    def _consumer_idling(self) -> bool:  # the StreamingExecutor method the callback reads
        return self.idling


class _Budget:  # the executor's ResourceManager methods `budget_full` reads
    def __init__(self, used_mb: float, limit_mb: float):
        self.used = ray.data.ExecutionResources(object_store_memory=used_mb * 2**20)
        self.limit = ray.data.ExecutionResources(object_store_memory=limit_mb * 2**20)

    def get_global_usage(self):
        return self.used

    def get_global_limits(self):
        return self.limit


@pytest.fixture
def naps(monkeypatch):
    slept = []
    monkeypatch.setattr(executor_nap, "_sleep", slept.append)
    return slept


@pytest.fixture
def no_cached_class(monkeypatch):
    """Ray's pieces looked up afresh in this test; the process's class stays as it was."""
    monkeypatch.setattr(executor_nap, "callback_class", executor_nap.build_callback_class)


def _nap_classes(ctx) -> list[type]:
    return [c for c in ctx.custom_execution_callback_classes if c.__name__ == "NapWhenAhead"]


def test_ray_streaming_executor_still_has_consumer_idling():
    module, name = executor_nap.EXECUTOR
    executor = getattr(importlib.import_module(module), name)
    idling = getattr(executor, executor_nap.IDLING_METHOD)
    assert callable(idling) and list(inspect.signature(idling).parameters) == ["self"]


def test_ray_execution_callback_still_has_the_step_hook():
    module, name = executor_nap.CALLBACK_BASE
    base = getattr(importlib.import_module(module), name)
    assert callable(getattr(base, executor_nap.STEP_HOOK))
    executor = importlib.import_module(executor_nap.EXECUTOR[0])
    assert f"callback.{executor_nap.STEP_HOOK}(self)" in inspect.getsource(executor)
    assert "custom_execution_callback_classes" in {
        f.name for f in ray.data.DataContext.__dataclass_fields__.values()
    }


@pytest.mark.ray
def test_ray_runs_the_nap_in_its_real_executor(ray_session, naps):
    """A consumer slower than the stream: the real executor's output queue fills, its
    `_consumer_idling` says so, and it calls the callback, which naps."""
    ctx = ray.data.DataContext.get_current()
    saved = list(ctx.custom_execution_callback_classes)
    assert executor_nap.install(ctx)
    try:
        ds = ray.data.range(400, override_num_blocks=20)
        for _ in ds.iter_batches(batch_size=20):
            time.sleep(0.02)
    finally:
        ctx.custom_execution_callback_classes = saved
    assert naps and set(naps) == {NAP_S}


def test_it_naps_while_the_output_waits_and_not_while_the_consumer_does(naps):
    cb = executor_nap.NapWhenAhead()
    cb.on_execution_step(_Executor(idling=False))
    assert naps == [NAP_S]
    cb.on_execution_step(_Executor(idling=True))
    assert naps == [NAP_S]


def test_it_naps_while_the_object_store_budget_is_full(naps):
    cb = executor_nap.NapWhenAhead()
    cb.on_execution_step(_Executor(idling=True, used_mb=190.7, limit_mb=156.3))
    cb.on_execution_step(_Executor(idling=True, used_mb=156.3, limit_mb=156.3))
    assert naps == [NAP_S, NAP_S]
    cb.on_execution_step(_Executor(idling=True, used_mb=150.0, limit_mb=156.3))
    executor = _Executor(idling=True)
    del executor._resource_manager  # an executor without one: only the output queue counts
    cb.on_execution_step(executor)
    assert naps == [NAP_S, NAP_S]


def test_ray_resource_manager_still_has_global_usage_and_limits():
    from ray.data._internal.execution.resource_manager import ResourceManager

    for name in ("get_global_usage", "get_global_limits"):
        method = getattr(ResourceManager, name)
        assert callable(method) and list(inspect.signature(method).parameters) == ["self"]
    executor = importlib.import_module(executor_nap.EXECUTOR[0])
    assert f"self.{executor_nap.RESOURCE_MANAGER} = " in inspect.getsource(executor)


def test_an_executor_without_the_method_is_left_as_ray_runs_it(naps):
    executor_nap.NapWhenAhead().on_execution_step(object())
    assert naps == []


def test_install_adds_the_callback_once_keeps_the_others_and_takes_it_out():
    ctx = ray.data.DataContext()
    marker = type("Other", (), {})
    ctx.custom_execution_callback_classes = [marker]
    assert executor_nap.install(ctx) and executor_nap.install(ctx)
    assert ctx.custom_execution_callback_classes == [marker, executor_nap.NapWhenAhead]
    assert not executor_nap.install(ctx, enabled=False)
    assert ctx.custom_execution_callback_classes == [marker]


def test_a_ray_without_the_private_pieces_warns_and_runs_without_naps(
    monkeypatch, caplog, no_cached_class
):
    monkeypatch.setattr(executor_nap, "CALLBACK_BASE", ("ray.data._internal.moved_away", "X"))
    ctx = ray.data.DataContext()
    with caplog.at_level(logging.WARNING, logger=executor_nap.__name__):
        assert not executor_nap.install(ctx)
    assert _nap_classes(ctx) == []
    assert "data.executor_nap is off" in caplog.text and "moved_away" in caplog.text
    with pytest.raises(AttributeError):
        executor_nap.NapWhenAhead  # noqa: B018 - the lookup is what is tested


def test_an_executor_without_consumer_idling_warns_too(monkeypatch, caplog, no_cached_class):
    monkeypatch.setattr(executor_nap, "IDLING_METHOD", "_renamed_in_a_later_ray")
    with caplog.at_level(logging.WARNING, logger=executor_nap.__name__):
        assert not executor_nap.install(ray.data.DataContext())
    assert "_renamed_in_a_later_ray" in caplog.text


def test_the_module_imports_nothing_private_from_ray():
    """Importing it at a job's start-up cannot fail on a Ray that moved its internals."""
    tree = ast.parse(inspect.getsource(executor_nap))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    assert names and not [n for n in names if "_internal" in n]


def test_init_ray_follows_the_config_key(monkeypatch):
    ctx = ray.data.DataContext()
    monkeypatch.setattr(ray.data.DataContext, "get_current", staticmethod(lambda: ctx))
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # join, start nothing
    assert Config().data.executor_nap is True
    assert ray_env.init_ray() is False
    assert _nap_classes(ctx) == [executor_nap.NapWhenAhead]
    off = override(Config(), {"data.executor_nap": "false"})
    ray_env.init_ray(executor_nap=off.data.executor_nap)
    assert _nap_classes(ctx) == []


@pytest.mark.ray
def test_a_split_stream_with_the_nap_delivers_every_row_once(ray_session):
    """The callback travels to the SplitCoordinator actor and the stream stays whole."""
    ctx = ray.data.DataContext.get_current()
    saved = list(ctx.custom_execution_callback_classes)
    executor_nap.install(ctx)
    try:
        ds = ray.data.range(4000, override_num_blocks=40).map_batches(
            lambda b: {"id": b["id"], "sq": b["id"] ** 2}, batch_size=50
        )
        left, right = ds.streaming_split(2, equal=True)
        coordinator_ctx = ray.get(left._coord_actor.get_dataset_context.remote())
        got = _rows(left, right)
    finally:
        ctx.custom_execution_callback_classes = saved
    assert executor_nap.NapWhenAhead in coordinator_ctx.custom_execution_callback_classes
    ids = np.concatenate([ids for ids, _ in got])
    assert sorted(ids.tolist()) == list(range(4000))
    assert all((sq == ids**2).all() for ids, sq in got)
    assert len(got[0][0]) == len(got[1][0]) == 2000


def _rows(left, right) -> list[tuple[np.ndarray, np.ndarray]]:
    @ray.remote(num_cpus=0.25)
    def take(it):
        out = [(b["id"], b["sq"]) for b in it.iter_batches(batch_size=64)]
        return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])

    return ray.get([take.remote(left), take.remote(right)])
