"""`ray_env.sigint_handler_kept`: the caller's Ctrl-C handler survives a Ray Train fit."""

from __future__ import annotations

import signal
import threading

import pytest

from pix2seqd.platform.ray_env import sigint_handler_kept


def _mine(signum, frame):  # a caller's own handler
    pass


def _rays(signum, frame):  # what TrainerV2.fit installs and leaves
    pass


def test_the_callers_handler_is_back_after_the_block_even_on_error():
    before = signal.signal(signal.SIGINT, _mine)
    try:
        with sigint_handler_kept():
            signal.signal(signal.SIGINT, _rays)
            assert signal.getsignal(signal.SIGINT) is _rays
        assert signal.getsignal(signal.SIGINT) is _mine
        with pytest.raises(RuntimeError), sigint_handler_kept():
            signal.signal(signal.SIGINT, _rays)
            raise RuntimeError("fit failed")
        assert signal.getsignal(signal.SIGINT) is _mine
    finally:
        signal.signal(signal.SIGINT, before)


def test_outside_the_main_thread_it_touches_nothing():
    # signal.signal raises there; Tune runs trials' fits in threads
    errors = []

    def trial():
        try:
            with sigint_handler_kept():
                pass
        except Exception as e:  # noqa: BLE001 - the test reports any
            errors.append(e)

    t = threading.Thread(target=trial)
    t.start()
    t.join()
    assert errors == []
