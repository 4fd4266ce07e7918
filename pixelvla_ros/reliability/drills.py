"""Fault drills: the real ur_driver node (over DDS) against the UR controller emulator, one fault at a time.

One emulator (its own process, on a free loopback address) and one ur_driver node process (actuation on, the
loose watchdog, state-age and command-age values of test/test_ur_driver.py, because a loaded 2-core machine
runs both in Python, and a short reconnection back-off) serve nine drills in sequence. This process is a ROS
client in its own rclpy Context (ROS_DOMAIN_ID from the environment): it reads /diagnostics, publishes
/pixelvla/action_chunk and calls /ur_driver/rearm. Each drill starts a slow chunk towards the middle of the
workspace box, injects its fault while the arm moves, waits for the state the fault must cause (FAULT, or
RECONNECTING: in /diagnostics, or in the node's log where it lasts less than the 2 Hz diagnostics show),
recovers as an operator would (re-arm, unlock, release, power on) or waits for the node to recover by
itself, then judges:

- crashes: the node process exited. It is restarted then and the next drills run against the new one.
- unexpected motion: the emulator's own TCP (never what the driver reports) moved more than
  MOTION_TOLERANCE_M in the hold window: from SETTLE_S after the fault is seen (for a lost RTDE client:
  after the controller has stopped the orphaned control script, which its watchdog does) until HOLD_AFTER_S
  after the recovery, with no new chunk. A drill that clears a FAULT itself stays in it for FAULT_DWELL_S of
  the window first. The interrupted chunk (MOVE_STEPS long) must not resume: where the recovery comes
  within max_command_age of its stamp (the FAULT drills), it would still cover now.
- survived: after the recovery a fresh chunk moves the emulator's TCP by more than SURVIVAL_MOTION_M and the
  node is alive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Vector3
from rclpy.executors import SingleThreadedExecutor
from std_srvs.srv import Trigger

from pixelvla_ros.msg import ActionChunk
from pixelvla_ros.reliability.report import DrillRow
from pixelvla_ros.ur_emulator import EmulatorProcess, free_loopback_host
from pixelvla_ros.ur_emulator.testing import DashboardHooks
from pixelvla_ros.ur_modes import RUNTIME_STOPPED, SAFETY_NORMAL

# The node's parameters as test/test_ur_driver.py runs it: a loaded 2-core machine can miss 100 ms in the
# driver or in the (Python) emulator, which would trip the default watchdog or state age mid-drill.
WATCHDOG_HZ = 2.0
MAX_STATE_AGE_S = 0.15
MAX_COMMAND_AGE_S = 1.9
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 0.8

MOTION_TOLERANCE_M = 1e-3
SURVIVAL_MOTION_M = 5e-3
SETTLE_S = 0.5  # after the fault is seen: the servo's and the stop's deceleration
HOLD_AFTER_S = 0.3  # after the recovery, no new chunk: the interrupted one must not resume
FAULT_DWELL_S = 0.3  # of the hold window in FAULT before the drill clears the fault
STEP_M, STEP_DT = 3e-3, 0.1  # the chunks' motion: 3 mm per 0.1 s step
MOVE_STEPS = 20  # the chunk a fault interrupts (2 s; the fault comes within its first 0.3 s)
SURVIVAL_STEPS = 5
X_CENTER = 0.5  # chunks move along x towards the middle of the default workspace box (x 0.2 - 0.8)
NODE_START_TIMEOUT_S = 60.0  # the node spawns its RTDE client process, which imports numpy and ur_rtde
POLL_S = 0.03


class NodeDied(RuntimeError):
    """The ur_driver node process exited during a drill."""


def node_command(host: str) -> list[str]:
    """The installed ur_driver executable with the drills' parameters, for the emulator on `host`."""
    exe = Path(sys.prefix) / "lib" / "pixelvla_ros" / "ur_driver"
    params = {
        "robot_ip": host,
        "enable_actuation": "true",
        "watchdog_min_frequency": repr(WATCHDOG_HZ),
        "max_state_age": repr(MAX_STATE_AGE_S),
        "max_command_age": repr(MAX_COMMAND_AGE_S),
        "reconnect.backoff_min": repr(BACKOFF_MIN_S),
        "reconnect.backoff_max": repr(BACKOFF_MAX_S),
    }
    args = [str(exe), "--ros-args"]
    for name, value in params.items():
        args += ["-p", f"{name}:={value}"]
    return args


class _Rig:
    """The emulator, the node process, the ROS client, and the hold-window bookkeeping of the drills."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.host = free_loopback_host()
        self.emu: EmulatorProcess | None = None
        self.proc: subprocess.Popen | None = None
        self.node_log: IO[bytes] | None = None  # the node's stdout and stderr (its child's logging too)
        self.context = rclpy.Context()
        self.node = None
        self.executor: SingleThreadedExecutor | None = None
        self.spinner: threading.Thread | None = None
        self.lock = threading.Lock()
        self.diags: list[tuple[float, dict[str, str]]] = []  # (arrival, monotonic clock; key values)
        self.hold_from: float | None = None  # the hold window: TCP samples count from this time on
        self.hold_ref: np.ndarray | None = None
        self.hold_max = 0.0
        self.hold_samples = 0
        self.marks: dict[float, int] = {}  # monotonic time -> size of the node's log then

    # -- set-up and tear-down --------------------------------------------------------------------------
    def start(self) -> None:
        self.start_emulator()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("pixelvla_reliability_drills", context=self.context)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.pub = self.node.create_publisher(ActionChunk, "/pixelvla/action_chunk", 10)
        self.rearm_client = self.node.create_client(Trigger, "/ur_driver/rearm")
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self._spin, name="drills-spin", daemon=True)
        self.spinner.start()
        self.start_node()

    def start_emulator(self) -> None:
        self.emu = EmulatorProcess(host=self.host, version="5.11.1").start()

    def start_node(self) -> None:
        """Start the node and wait until it is RUNNING, its chunk subscription and re-arm service found."""
        self.node_log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            node_command(self.host), stdout=self.node_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        t = time.monotonic()
        if not self.wait(lambda: self.state(since=t) == "RUNNING", NODE_START_TIMEOUT_S):
            seen = self.values(t) or "no diagnostics"
            raise RuntimeError(f"the ur_driver node did not reach RUNNING: {seen}; {self.log_tail(3)}")
        if not self.wait(lambda: self.pub.get_subscription_count() > 0, 10.0):
            raise RuntimeError("the ur_driver node's /pixelvla/action_chunk subscription was not discovered")
        if not self.rearm_client.wait_for_service(timeout_sec=10.0):
            raise RuntimeError("the /ur_driver/rearm service was not discovered")

    def stop_node(self) -> int | None:
        """SIGINT, then kill after 15 s; the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(15.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5.0)
        if self.node_log is not None:
            self.node_log.close()
            self.node_log = None
        return proc.returncode

    def close(self) -> None:
        try:
            rc = self.stop_node()
            if rc not in (0, None):
                self.log(f"drills: the ur_driver node exited with {rc} when stopped")
        finally:
            try:
                if self.emu is not None:
                    self.emu.stop()
            finally:
                if self.executor is not None:
                    self.executor.shutdown(timeout_sec=2.0)
                if self.spinner is not None:
                    self.spinner.join(2.0)
                if self.node is not None:
                    self.node.destroy_node()
                rclpy.try_shutdown(context=self.context)

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shut down under us: the suite is ending
                return

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == "pixelvla_ros: ur_driver":
                with self.lock:
                    self.diags.append((time.monotonic(), {kv.key: kv.value for kv in status.values}))

    # -- observation -----------------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def values(self, since: float = 0.0) -> dict[str, str]:
        """The newest diagnostics values that arrived after `since` ({} if none did)."""
        with self.lock:
            return next((v for t, v in reversed(self.diags) if t > since), {})

    def state(self, since: float = 0.0) -> str:
        return self.values(since).get("state", "")

    def seen(self, state: str, since: float, reason: str = "") -> bool:
        """Whether the node went through `state` (reason containing `reason`) after `since`: in /diagnostics,
        or in its log, where a state shorter than the diagnostics' 0.5 s period shows too."""
        with self.lock:
            if any(t > since and v["state"] == state and reason in v["reason"] for t, v in self.diags):
                return True
        return any(f"{state}: " in line and reason in line for line in self.log_lines(since))

    def log_mark(self) -> int:
        return os.fstat(self.node_log.fileno()).st_size if self.node_log is not None else 0

    def _read_log(self, start: int) -> str:
        if self.node_log is None:
            return ""
        size = os.fstat(self.node_log.fileno()).st_size
        # pread: the node writes through the same open file, whose offset must not move under it
        return os.pread(self.node_log.fileno(), max(0, size - start), start).decode(errors="replace")

    def log_lines(self, since: float) -> list[str]:
        """The node's log lines written after the mark taken at monotonic time `since`."""
        return self._read_log(self.marks.get(since, 0)).splitlines()

    def now_mark(self) -> float:
        """A monotonic time to pass as `since`, with the node log's size at that time."""
        t = time.monotonic()
        self.marks[t] = self.log_mark()
        return t

    def log_tail(self, n: int = 5) -> str:
        text = self._read_log(max(0, self.log_mark() - 20000))
        return " | ".join(line.strip() for line in text.splitlines()[-n:])

    def tcp(self) -> np.ndarray:
        return np.array(self.emu.state()["tcp_pose"][:3])

    def sample(self) -> None:
        """One TCP sample for the hold window, if it is open."""
        if self.hold_from is None or time.monotonic() < self.hold_from:
            return
        p = self.tcp()
        if self.hold_ref is None:
            self.hold_ref = p
        self.hold_max = max(self.hold_max, float(np.linalg.norm(p - self.hold_ref)))
        self.hold_samples += 1

    def open_hold(self, at: float) -> None:
        self.hold_from, self.hold_ref, self.hold_max, self.hold_samples = at, None, 0.0, 0

    def close_hold(self) -> tuple[float, int]:
        """(largest TCP excursion in the window, m; samples taken) and the window closed."""
        result = self.hold_max, self.hold_samples
        self.hold_from = None
        return result

    def wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        """Poll `pred` until true or `timeout` s; samples the hold window; NodeDied if the node exits."""
        t_end = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise NodeDied(f"exit code {self.proc.returncode}")
            self.sample()
            if pred():
                return True
            if time.monotonic() >= t_end:
                return False
            time.sleep(POLL_S)

    def pause(self, seconds: float) -> None:
        self.wait(lambda: False, seconds)

    # -- actions ---------------------------------------------------------------------------------------
    def publish_chunk(self, steps: int) -> None:
        """`steps` steps of STEP_M along x towards the box's middle, stamped now, in the base frame."""
        direction = 1.0 if self.tcp()[0] < X_CENTER else -1.0
        msg = ActionChunk(dt=STEP_DT, source_image_stamp=self.node.get_clock().now().to_msg())
        msg.header.frame_id = "base"
        msg.header.stamp = msg.source_image_stamp
        msg.translation = [Vector3(x=direction * STEP_M) for _ in range(steps)]
        msg.rotation = [Vector3() for _ in range(steps)]
        msg.gripper = [0.0] * steps
        self.pub.publish(msg)

    def move(self, steps: int, distance: float, timeout: float) -> float:
        """Publish a chunk and wait until the emulator's TCP moved `distance`; the distance it moved. One
        retry with a fresh chunk if the first was not accepted (lost on the way, or refused)."""
        p0 = self.tcp()
        moved = lambda: float(np.linalg.norm(self.tcp() - p0))  # noqa: E731
        for _ in range(2):
            accepted = int(self.values().get("chunks_accepted", "0"))
            self.publish_chunk(steps)
            if self.wait(lambda: moved() > distance, timeout):
                return moved()
            if int(self.values().get("chunks_accepted", "0")) > accepted:
                break  # accepted, yet the arm did not move (enough): no retry
        return moved()

    def rearm(self, timeout: float = 20.0) -> tuple[bool | None, str]:
        """Call /ur_driver/rearm: (success, message), or (None, why no answer came)."""
        future = self.rearm_client.call_async(Trigger.Request())
        if not self.wait(future.done, timeout):
            self.rearm_client.remove_pending_request(future)
            return None, f"no answer within {timeout:g} s"
        response = future.result()
        return response.success, response.message

    def rearm_until_granted(self, timeout: float) -> tuple[bool, list[tuple[bool | None, str]]]:
        """Re-arm every 0.2 s until granted (the receive stream shows a cleared cause a few ms late)."""
        answers: list[tuple[bool | None, str]] = []
        t_end = time.monotonic() + timeout
        while True:
            answers.append(self.rearm())
            if answers[-1][0] or time.monotonic() >= t_end:
                return bool(answers[-1][0]), answers
            self.pause(0.2)

    def wait_program_stopped(self, timeout: float) -> bool:
        return self.wait(lambda: self.emu.state()["runtime_state"] == RUNTIME_STOPPED, timeout)


# -- the drills ----------------------------------------------------------------------------------------------
# Each returns (recovered, note); on return the hold window is open (if the fault was seen) and the node is
# back in RUNNING (if recovered). `t_fault` is set by the drill when it injects the fault.


class _Drill:
    def __init__(self, rig: _Rig) -> None:
        self.rig = rig
        self.t_fault = time.monotonic()
        self.moving = False

    def start_moving(self) -> None:
        """A slow chunk, and wait until the arm moves with it (2 mm)."""
        self.moving = self.rig.move(MOVE_STEPS, 2e-3, 2.0) > 2e-3

    def inject(self, fault: Callable[[], object]) -> float:
        """Inject the fault; the `since` mark just before it."""
        since = self.rig.now_mark()
        self.t_fault = time.monotonic()
        fault()
        return since

    def seen(self, state: str, since: float, reason: str = "", timeout: float = 5.0) -> bool:
        """Wait until the node goes through `state`; the hold window opens SETTLE_S later."""
        ok = self.rig.wait(lambda: self.rig.seen(state, since, reason), timeout)
        self.rig.open_hold(time.monotonic() + SETTLE_S)
        return ok

    def running_again(self, since: float, timeout: float, pid_changed_from: str | None = None) -> bool:
        """Wait for RUNNING in diagnostics that arrived after `since` (and a new RTDE client process)."""
        after = since + 0.05  # not a message already in flight before the fault

        def ok() -> bool:
            v = self.rig.values(after)
            return v.get("state") == "RUNNING" and (
                pid_changed_from is None or v.get("rtde_process_pid") not in (pid_changed_from, "None")
            )

        return self.rig.wait(ok, timeout)

    def dwell(self) -> None:
        """Stay in the fault until the hold window has run FAULT_DWELL_S: the window then covers the fault
        itself, not only the time after the recovery."""
        self.rig.pause(max(0.0, (self.rig.hold_from or 0.0) + FAULT_DWELL_S - time.monotonic()))

    def took(self) -> str:
        return f"{time.monotonic() - self.t_fault:.1f} s"


def _rearmed_to_running(d: _Drill, since: float, when: str) -> str | None:
    """Re-arm until granted, then RUNNING again; None, or what went wrong."""
    granted, answers = d.rig.rearm_until_granted(3.0)
    if not granted:
        return f"re-arm {when}not granted: {answers[-1]}"
    if not d.running_again(since, 3.0):
        return f"re-arm granted, but no RUNNING: {d.rig.values()}"
    return None


def drill_protective_stop(d: _Drill) -> tuple[bool, str]:
    rig = d.rig
    since = d.inject(lambda: rig.emu.protective_stop("reliability drill"))
    if not d.seen("FAULT", since, "protective stop"):
        return False, f"no FAULT (protective stop) seen: {rig.values()}"
    ok, message = rig.rearm()
    if ok is not False or "protective stop" not in message:
        return False, f"re-arm during the protective stop not refused: {ok}, {message!r}"
    d.dwell()
    with DashboardHooks(rig.host) as dash:
        unlocked = dash.send("unlock protective stop")
    if not rig.wait(lambda: rig.emu.state()["safety_mode"] == SAFETY_NORMAL, 2.0):
        return False, f"the emulator did not leave the protective stop ({unlocked!r})"
    if failed := _rearmed_to_running(d, since, "after unlock "):
        return False, failed
    return True, f"FAULT: protective stop; re-arm refused, granted after unlock; node alive; {d.took()}"


def drill_emergency_stop(d: _Drill) -> tuple[bool, str]:
    rig = d.rig
    since = d.inject(lambda: rig.emu.emergency_stop("reliability drill"))
    if not d.seen("FAULT", since, "emergency stop"):
        return False, f"no FAULT (emergency stop) seen: {rig.values()}"
    ok, message = rig.rearm()
    if ok is not False or "emergency stop" not in message:
        return False, f"re-arm during the e-stop not refused: {ok}, {message!r}"
    d.dwell()
    rig.emu.release_emergency_stop()  # the arm stays powered off, as a real one does
    answers: list[tuple[bool | None, str]] = []

    def refused_for_power() -> bool:
        answers.append(rig.rearm())
        return answers[-1][0] is False and "POWER_OFF" in answers[-1][1]

    if not rig.wait(refused_for_power, 3.0):
        return False, f"re-arm after the release not refused for power: {answers[-1:]}"
    if any(ok for ok, _ in answers):
        return False, f"re-arm granted while powered off: {answers}"
    rig.emu.power_on()
    if failed := _rearmed_to_running(d, since, "after power on "):
        return False, failed
    return True, f"FAULT: emergency stop; re-arm refused, refused powered off, granted powered on; {d.took()}"


def drill_watchdog(d: _Drill) -> tuple[bool, str]:
    rig = d.rig
    since = d.inject(rig.emu.trip_watchdog)
    if not d.seen("FAULT", since, "control script stopped"):
        return False, f"no FAULT (control script stopped) seen: {rig.values()}"
    d.dwell()
    if failed := _rearmed_to_running(d, since, ""):
        return False, failed
    return True, f"FAULT: control script stopped; re-arm granted; {d.took()}"


def drill_dropped_connections(d: _Drill) -> tuple[bool, str]:
    rig = d.rig
    since = d.inject(lambda: rig.emu.drop_connections("all"))
    # The control script keeps servoing to its last target (reached within the settling time) until the
    # driver's new connection takes it over, before its watchdog would stop it.
    if not d.seen("RECONNECTING", since):
        return False, f"no RECONNECTING seen: {rig.values()}"
    if not d.running_again(since, 15.0):
        return False, f"no RUNNING again: {rig.values()}"
    return True, f"RECONNECTING, then RUNNING by itself; {d.took()}"


def drill_delayed_packets(d: _Drill) -> tuple[bool, str]:
    rig = d.rig
    delay_s, duration_s = 0.3, 2.0
    since = d.inject(lambda: rig.emu.delay_packets(delay_s, duration_s=duration_s))
    if not d.seen("FAULT", since, "late", timeout=duration_s):
        return False, f"no FAULT (robot state late) seen: {rig.values()}"
    ok, message = rig.rearm()
    if time.monotonic() < d.t_fault + duration_s and (ok is not False or "late" not in message):
        return False, f"re-arm while the packets are late not refused: {ok}, {message!r}"
    rig.pause(max(0.0, d.t_fault + duration_s + delay_s - time.monotonic()))
    granted, answers = rig.rearm_until_granted(5.0)
    if not granted:
        return False, f"re-arm after the delay not granted: {answers[-1]}"
    if not d.running_again(since, 3.0):
        return False, f"re-arm granted, but no RUNNING: {rig.values()}"
    return True, f"FAULT: robot state late; re-arm refused during, granted after; {d.took()}"


def drill_controller_restart(d: _Drill) -> tuple[bool, str]:
    rig = d.rig
    since = d.inject(lambda: rig.emu.restart_controller(downtime_s=1.0))
    if not d.seen("RECONNECTING", since):
        return False, f"no RECONNECTING seen: {rig.values()}"
    if not d.running_again(since, 15.0):
        return False, f"no RUNNING again: {rig.values()}"
    return True, f"RECONNECTING, then RUNNING by itself after 1 s down; {d.took()}"


def drill_emulator_killed(d: _Drill) -> tuple[bool, str]:
    rig = d.rig

    def kill() -> None:
        rig.emu.proc.kill()  # no shutdown: the sockets just die
        rig.emu.stop()

    since = d.inject(kill)
    if not d.seen("RECONNECTING", since):
        return False, f"no RECONNECTING seen: {rig.values()}"
    rig.hold_from = None  # no emulator to sample until the new one runs
    rig.start_emulator()
    rig.open_hold(time.monotonic())  # the new emulator's arm, from its start: no motion until a new chunk
    if not d.running_again(since, 20.0):
        return False, f"no RUNNING with the new emulator: {rig.values()}"
    return True, f"RECONNECTING, then RUNNING with a new emulator on {rig.host}; {d.took()}"


def _rtde_process_fault(d: _Drill, sig: signal.Signals, reason: str) -> tuple[bool, str]:
    rig = d.rig
    pid = rig.values().get("rtde_process_pid", "None")
    if pid == "None":
        return False, "no rtde_process_pid in diagnostics"
    since = d.inject(lambda: os.kill(int(pid), sig))
    if not d.seen("RECONNECTING", since, reason, timeout=8.0):
        return False, f"no RECONNECTING ({reason}) seen: {rig.values()}"
    # The orphaned control script runs on until its watchdog stops it: the hold window starts after that.
    rig.hold_from = None
    rig.wait_program_stopped(1.0 / WATCHDOG_HZ + 1.5)
    rig.open_hold(time.monotonic() + SETTLE_S)
    if not d.running_again(since, 40.0, pid_changed_from=pid):
        return False, f"no RUNNING with a new RTDE client process: {rig.values()}"
    new = rig.values().get("rtde_process_pid")
    return True, f"RECONNECTING ({reason}), then RUNNING, RTDE client pid {pid} -> {new}; {d.took()}"


def drill_rtde_crash(d: _Drill) -> tuple[bool, str]:
    return _rtde_process_fault(d, signal.SIGSEGV, "SIGSEGV")


def drill_rtde_hang(d: _Drill) -> tuple[bool, str]:
    return _rtde_process_fault(d, signal.SIGSTOP, "hung")


DRILLS: tuple[tuple[str, Callable[[_Drill], tuple[bool, str]]], ...] = (
    ("protective stop; re-arm refused, then granted", drill_protective_stop),
    ("emergency stop; release, power on, re-arm", drill_emergency_stop),
    ("RTDE watchdog trip", drill_watchdog),
    ("dropped connections", drill_dropped_connections),
    ("RTDE packets delayed 0.3 s for 2 s", drill_delayed_packets),
    ("controller restart", drill_controller_restart),
    ("emulator killed and restarted", drill_emulator_killed),
    ("RTDE client process crash (SIGSEGV)", drill_rtde_crash),
    ("RTDE client process hang (SIGSTOP)", drill_rtde_hang),
)


def _run_one(rig: _Rig, kind: str, body: Callable[[_Drill], tuple[bool, str]]) -> DrillRow:
    """One drill: move, fault, recovery, hold window, fresh chunk; a node exit is a crash row."""
    d = _Drill(rig)
    crashes, unexpected, survived = 0, 0, False
    try:
        if not rig.wait(lambda: rig.state() == "RUNNING", 10.0):
            return DrillRow("drill", kind, 1, 0, 0, False, f"not RUNNING before the drill: {rig.values()}")
        d.start_moving()
        recovered, note = body(d)
        if recovered:
            rig.pause(max(0.0, (rig.hold_from or 0.0) - time.monotonic()) + HOLD_AFTER_S)
        excursion, samples = rig.close_hold()
        if excursion > MOTION_TOLERANCE_M:
            unexpected = 1
            note += f"; TCP moved {excursion * 1e3:.1f} mm while it had to hold"
        if recovered:
            moved = rig.move(SURVIVAL_STEPS, SURVIVAL_MOTION_M, 3.0)
            survived = moved > SURVIVAL_MOTION_M and rig.alive()
            if not survived:
                note += f"; a fresh chunk moved the TCP {moved * 1e3:.1f} mm only"
        if not d.moving:
            note += "; the arm was not moving when the fault came"
        rig.log(
            f"drill {kind}: {'ok' if recovered and survived and not unexpected else 'FAILED'}: {note} "
            f"(hold window: {samples} samples, max {excursion * 1e3:.2f} mm)"
        )
    except NodeDied as error:
        crashes, survived = 1, False
        rig.close_hold()
        note = f"the ur_driver node died ({error}): {rig.log_tail(1)}"
        rig.log(f"drill {kind}: CRASH: {note}")
    except Exception as error:  # noqa: BLE001 - an emulator or ROS failure fails this drill, not the suite
        rig.close_hold()
        note = f"drill failed: {type(error).__name__}: {error}"
        rig.log(f"drill {kind}: FAILED: {note}")
    return DrillRow("drill", kind, 1, crashes, unexpected, survived, note)


def run(log: Callable[[str], None] = print) -> list[DrillRow]:
    """The nine fault drills against one emulator and one ur_driver node; one DrillRow each.

    A node that dies in a drill is restarted for the next ones (its row says so); if it cannot be restarted,
    the remaining drills are rows that did not survive."""
    t0 = time.monotonic()
    rig = _Rig(log)
    rows: list[DrillRow] = []
    try:
        log(f"drills: UR emulator on {rig.host}, starting the ur_driver node")
        rig.start()
        log(f"drills: ur_driver RUNNING after {time.monotonic() - t0:.1f} s")
        for i, (kind, body) in enumerate(DRILLS):
            log(f"drill {i + 1}/{len(DRILLS)}: {kind}")
            rows.append(_run_one(rig, kind, body))
            if not rig.alive():
                try:
                    rig.stop_node()
                    log("drills: restarting the ur_driver node for the next drills")
                    rig.start_node()
                except Exception as error:  # noqa: BLE001 - the remaining drills are reported as not run
                    note = f"not run: the ur_driver node could not be restarted ({error})"
                    rows += [DrillRow("drill", k, 1, 0, 0, False, note) for k, _ in DRILLS[i + 1 :]]
                    break
    finally:
        rig.close()
    log(f"drills: {len(rows)} drills in {time.monotonic() - t0:.1f} s")
    return rows
