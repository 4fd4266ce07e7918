"""make_thread_realtime: SCHED_FIFO for the calling thread only, or a logged refusal and normal scheduling."""

from __future__ import annotations

import logging
import os
import threading

import pytest

from pixelvla_ros.realtime import make_thread_realtime

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setscheduler"), reason="Linux scheduling API")


def in_thread(fn):  # noqa: ANN001, ANN201 - a new thread's result, so the test process keeps its policy
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def test_zero_leaves_the_thread_alone() -> None:
    assert in_thread(lambda: (make_thread_realtime(0), os.sched_getscheduler(0))) == (False, os.SCHED_OTHER)


def test_out_of_range_priority_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"\[1, 99\]"):
        make_thread_realtime(120)


def test_granted_only_to_the_calling_thread() -> None:
    granted, policy = in_thread(lambda: (make_thread_realtime(10), os.sched_getscheduler(0)))
    assert policy == (os.SCHED_FIFO if granted else os.SCHED_OTHER)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # this thread is untouched


def test_refusal_is_logged_and_scheduling_stays_normal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(*_args) -> None:  # noqa: ANN002
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with caplog.at_level(logging.WARNING, logger="pixelvla_ros.realtime"):
        assert make_thread_realtime(50) is False
    assert "refused (Operation not permitted)" in caplog.text and "normal scheduling" in caplog.text


def test_emulator_rtde_readers_run_just_below_the_real_time_tick() -> None:
    """A reader preempted while holding the GIL would stall the tick behind it (priority inversion)."""
    import socket
    import time

    from pixelvla_ros.ur_emulator import free_loopback_host
    from pixelvla_ros.ur_emulator.emulator import Emulator, EmulatorConfig

    with Emulator(EmulatorConfig(host=free_loopback_host(), realtime_priority=10)) as emu:
        deadline = time.monotonic() + 2.0
        with socket.create_connection((emu.config.host, emu.config.rtde_port), timeout=2.0):
            readers: list[threading.Thread] = []
            while not readers and time.monotonic() < deadline:
                readers = [
                    t for t in threading.enumerate() if t.name.startswith("rtde-") and t.name[5:].isdigit()
                ]
                time.sleep(0.01)
            assert readers, "no RTDE reader thread for the connection"
            tid = readers[0].native_id
            time.sleep(0.05)  # the reader sets its policy as it starts
            if emu.tick_realtime:
                assert os.sched_getscheduler(tid) == os.SCHED_FIFO
                assert os.sched_getparam(tid).sched_priority == 9
            else:  # no permission here: both stay on the normal scheduler
                assert os.sched_getscheduler(tid) == os.SCHED_OTHER
