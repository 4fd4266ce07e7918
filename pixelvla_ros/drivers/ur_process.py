"""The UR control loop in a child process: a crash or hang of the ur_rtde client is never a dead driver.

    driver = UrControllerProcess(UrDriverConfig(robot_ip="192.168.1.10"), clock=ros_now).start()
    driver.submit(chunk)     # as UrController.submit: raises ChunkRefused / UnsafeChunkError with the reason
    driver.status()          # UrDriverStatus; RECONNECTING while the child is being replaced
    driver.rearm()
    driver.stop()

The child (a spawned interpreter: no rclpy, no threads of the parent) runs UrController, whose loop keeps the
robot's rate on its own GIL, and sends a status snapshot every STATUS_PERIOD_S; submit, rearm and stop are
requests over a pipe, answered in order. The supervisor thread here reads that pipe and watches the child:
when it dies (a signal inside the client library: SIGSEGV was seen after controller restarts) or sends no
status for `hang_timeout` (it is killed then), the driver reports RECONNECTING with the reason and starts a
new child after the reconnection back-off. Meanwhile nothing is commanded: a dead child streams nothing, and
the controller's RTDE watchdog stops the control script. The new child connects afresh, so chunks computed
from images taken before it are refused (no measured pose at their stamp) and the arm holds until new ones
come. The child stops itself (servoStop, stopScript) when this process goes away (its pipe closes).

Times cross the process boundary on CLOCK_MONOTONIC (the child's clock); the caller's clock (ROS time) is
converted with the offset between the two at the moment of each call.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import logging
import math
import multiprocessing as mp
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pixelvla_ros.chunk_timeline import ChunkRefused, TimedChunk
from pixelvla_ros.drivers.ur_controller import DriverState, UrController, UrDriverConfig, UrDriverStatus
from pixelvla_ros.safety import UnsafeChunkError

__all__ = ["UrControllerProcess"]

log = logging.getLogger("pixelvla_ros.drivers.ur")

STATUS_PERIOD_S = 0.01  # the child's status snapshots (the node publishes the arm state at up to 50 Hz)
STARTUP_TIMEOUT_S = 60.0  # a spawned interpreter imports numpy and ur_rtde first; a loaded machine is slow
SUBMIT_TIMEOUT_S = 0.5  # a chunk not admitted by then is refused (the child is busy re-arming, or hung)
STOP_TIMEOUT_S = 10.0


def _serve(config: UrDriverConfig, conn: Any, log_level: int) -> None:
    """The child: UrController on the monotonic clock, requests answered in order, status pushed."""
    logging.basicConfig(level=log_level, stream=sys.stderr, format="[%(levelname)s] [%(name)s]: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group: the parent stops us
    controller = UrController(config, clock=time.monotonic).start()
    send_lock = threading.Lock()
    done = threading.Event()

    def send(message: tuple) -> None:
        with send_lock:
            conn.send(message)

    def push_status() -> None:
        while not done.wait(STATUS_PERIOD_S):
            try:
                send(("status", controller.status()))
            except (OSError, EOFError):  # the parent is gone
                done.set()

    threading.Thread(target=push_status, name="ur-status", daemon=True).start()
    try:
        while not done.is_set():
            if not conn.poll(0.2):
                continue
            kind, request_id, argument = conn.recv()
            if kind == "stop":
                break
            if kind == "submit":
                try:
                    controller.submit(argument)
                    answer: tuple = (True, "", "")
                except ValueError as error:
                    answer = (False, type(error).__name__, str(error))
            else:  # rearm
                answer = controller.rearm(argument)
            # The state after the request reaches the parent before its answer: a caller that reads the
            # status once its call returns sees the request's effect.
            send(("status", controller.status()))
            send(("reply", request_id, answer))
    except (OSError, EOFError):
        pass  # the parent is gone: stop streaming below
    finally:
        done.set()
        controller.stop()


class UrControllerProcess:
    """UrController's public API, with the controller in a supervised child process (module docstring)."""

    def __init__(
        self,
        config: UrDriverConfig,
        clock: Callable[[], float] = time.monotonic,
        hang_timeout: float = 2.0,
    ) -> None:
        if not (math.isfinite(hang_timeout) and hang_timeout > 10 * STATUS_PERIOD_S):
            raise ValueError(f"hang_timeout must be > {10 * STATUS_PERIOD_S} s, got {hang_timeout}")
        self.config = config
        self._clock = clock
        self._hang_timeout = float(hang_timeout)
        self._context = mp.get_context("spawn")
        self._lock = threading.Lock()  # guards the fields below and the pipe's sending end
        self._conn: Any = None
        self._process: Any = None
        self._status: UrDriverStatus | None = None  # the child's newest snapshot, on the monotonic clock
        self._down_reason = "not started"  # why there is no usable child (while _status is None)
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._ids = itertools.count()
        self._refused_here = 0  # chunks refused because no child could take them
        self._last_refusal = ""
        self.restarts = 0  # children replaced after a crash or hang
        self._ran = False  # the current child has reported RUNNING
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    # -- public API (any thread) -----------------------------------------------------------------------
    def start(self) -> UrControllerProcess:
        if self._supervisor is not None:
            raise RuntimeError("UrControllerProcess.start() called twice")
        self._supervisor = threading.Thread(target=self._supervise, name="ur-supervisor", daemon=True)
        self._supervisor.start()
        return self

    @property
    def pid(self) -> int | None:
        """The child's process id (None while there is none)."""
        with self._lock:
            return self._process.pid if self._process is not None else None

    def submit(self, chunk: TimedChunk) -> None:
        """As UrController.submit; the chunk's stamp is on this object's clock."""
        offset = self._clock() - time.monotonic()
        moved = dataclasses.replace(chunk, t0=chunk.t0 - offset)
        try:
            ok, kind, message = self._request("submit", moved, SUBMIT_TIMEOUT_S)
        except ChunkRefused as error:
            with self._lock:
                self._refused_here += 1
                self._last_refusal = str(error)
            raise
        if not ok:
            raise (UnsafeChunkError if kind == "UnsafeChunkError" else ChunkRefused)(message)

    def rearm(self, timeout: float = 15.0) -> tuple[bool, str]:
        try:
            return self._request("rearm", timeout, timeout + 1.0)
        except ChunkRefused as error:
            return False, str(error)

    def status(self) -> UrDriverStatus:
        with self._lock:
            status, down = self._status, self._down_reason
            refused, last_refusal = self._refused_here, self._last_refusal
        if status is None:
            return UrDriverStatus(
                state=DriverState.STOPPED if self._stopping.is_set() else DriverState.RECONNECTING,
                reason=down,
                connected=False,
                actuation=self.config.enable_actuation,
                cycles=0,
                last_period=math.nan,
                p99_period=math.nan,
                halted=True,
                filter_reasons=(),
                command_pose=None,
                gripper_command=0.0,
                measured_pose=None,
                measured_q=None,
                measured_time=math.nan,
                state_age=math.nan,
                chunks_accepted=0,
                chunks_refused=refused,
                last_refusal=last_refusal,
            )
        offset = self._clock() - time.monotonic()
        return dataclasses.replace(
            status,
            measured_time=status.measured_time + offset,
            chunks_refused=status.chunks_refused + refused,
            last_refusal=status.last_refusal or last_refusal,
        )

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the child (servoStop, stopScript, disconnect), then the supervisor."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout + 2.0)

    # -- requests --------------------------------------------------------------------------------------
    def _request(self, kind: str, argument: Any, timeout: float) -> Any:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._conn is None or self._status is None:
                raise ChunkRefused(f"driver is {DriverState.RECONNECTING.value} ({self._down_reason})")
            request_id = next(self._ids)
            self._pending[request_id] = future
            try:
                self._conn.send((kind, request_id, argument))
            except (OSError, ValueError) as error:
                del self._pending[request_id]
                raise ChunkRefused(f"the RTDE client process cannot be reached: {error}") from None
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise ChunkRefused(
                f"the RTDE client process did not answer {kind} within {timeout:g} s"
            ) from None
        finally:
            with self._lock:
                self._pending.pop(request_id, None)

    # -- supervisor thread -----------------------------------------------------------------------------
    def _supervise(self) -> None:
        backoff = self.config.reconnect_backoff_min
        while not self._stopping.is_set():
            self._ran = False
            why = self._run_child()
            if self._stopping.is_set():
                break
            if self._ran:  # a child that got to RUNNING was not part of a crash loop
                backoff = self.config.reconnect_backoff_min
            self.restarts += 1
            reason = f"{why}; a new RTDE client process starts in {backoff:.2f} s"
            log.error("RECONNECTING: %s", reason)
            with self._lock:
                self._down_reason = reason
            self._stopping.wait(backoff)
            backoff = min(2.0 * backoff, self.config.reconnect_backoff_max)
        with self._lock:
            self._down_reason = "stopped"

    def _run_child(self) -> str:
        """Start a child and serve its pipe until it dies, hangs or is stopped; returns why it ended."""
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(
            target=_serve,
            args=(self.config, child_end, logging.getLogger().getEffectiveLevel()),
            name=f"ur_rtde@{self.config.robot_ip}",
            daemon=True,
        )
        process.start()
        child_end.close()
        with self._lock:
            self._conn, self._process = parent_end, process
            self._down_reason = "the RTDE client process is starting"
        last_heard = time.monotonic()
        heard_once = False
        why = ""
        try:
            while not why:
                if self._stopping.is_set():
                    self._stop_child(parent_end, process)
                    return "stopped"
                try:
                    if parent_end.poll(0.05):
                        message = parent_end.recv()
                        last_heard, heard_once = time.monotonic(), True
                        self._take(message)
                        continue
                except (EOFError, OSError):
                    process.join(1.0)
                if process.exitcode is not None:
                    why = f"the RTDE client process ended ({_exit_description(process.exitcode)})"
                elif time.monotonic() - last_heard > (
                    self._hang_timeout if heard_once else STARTUP_TIMEOUT_S
                ):
                    process.kill()
                    process.join(2.0)
                    why = (
                        f"the RTDE client process hung (no status for {time.monotonic() - last_heard:.1f} s)"
                    )
        finally:
            with self._lock:
                self._conn, self._process, self._status = None, None, None
                pending, self._pending = self._pending, {}
            for future in pending.values():
                future.set_exception(ChunkRefused(f"driver is {DriverState.RECONNECTING.value} ({why})"))
            parent_end.close()
        return why

    def _take(self, message: tuple) -> None:
        if message[0] == "status":
            with self._lock:
                self._status = message[1]
            self._ran = self._ran or message[1].state is DriverState.RUNNING
            return
        _, request_id, answer = message
        with self._lock:
            future = self._pending.get(request_id)
        if future is not None and not future.done():
            future.set_result(answer)

    def _stop_child(self, conn: Any, process: Any) -> None:
        try:
            with self._lock:
                conn.send(("stop", -1, None))
        except (OSError, ValueError):
            pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while process.exitcode is None and time.monotonic() < deadline:
            try:  # keep reading: a child blocked on a full pipe would never finish stopping
                if conn.poll(0.05):
                    conn.recv()
            except (EOFError, OSError):
                process.join(0.1)
        if process.exitcode is None:
            log.error("the RTDE client process did not stop within %.0f s: killed", STOP_TIMEOUT_S)
            process.kill()
        process.join(2.0)


def _exit_description(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"
