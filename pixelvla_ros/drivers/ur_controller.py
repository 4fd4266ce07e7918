"""The UR arm driver's control loop, ROS-free: timestamped action chunks in, servoL at the robot's rate out.

    driver = UrController(UrDriverConfig(robot_ip="192.168.1.10", enable_actuation=True), clock=ros_now)
    driver.start()                                   # connects in its own thread, with back-off
    driver.submit(TimedChunk(t0=image_stamp, dt=0.1, actions=chunk, frame_id="base"))  # ValueError: why not
    driver.status()                                  # snapshot for diagnostics
    driver.rearm()                                   # after a fault has been cleared on the robot
    driver.stop()

Structured like diffusion_policy's RTDE interpolation controller: one thread at the robot's rate (500 Hz
e-Series, 125 Hz CB3, paced by ur_rtde's initPeriod/waitPeriod). The ur_driver node runs it in a child process
(pixelvla_ros.drivers.ur_process), so that a crash of the client library is not a crash of the node. Chunks
are admitted by the rule every driver shares (ChunkTimeline.add: frame, image stamps ahead of the clock or
older than max_command_age, NaN, per-step limits, order). Each cycle reads the measured TCP pose, the age
of that state and the safety state, samples the waypoints of the chunk in control (ChunkTimeline) at now,
turns that target into this cycle's motion (the chunk's own motion plus closing the gap to the last command
within braking distance), limits it with SafetyFilter and streams servoL. A chunk's waypoints are integrated
from the TCP pose measured at its image stamp (a short time-stamped history of measured poses is kept), so the
policy's deltas apply to the pose it saw; steps whose interval has passed are never executed (ChunkTimeline).
All times are on the injected clock, the clock of the chunks' image stamps.

States:
  CONNECTING, RECONNECTING  no connection: retried with exponential back-off; chunks refused.
  RUNNING                   connected and streaming; holds (halted) whenever no chunk covers now, and at
                            once when the newest chunk's image is older than max_command_age.
  FAULT                     emergency or protective stop, safety mode not normal, robot not running,
                            the control script stopped (e.g. the RTDE watchdog tripped), servoL refused,
                            the robot state older than max_state_age (RTDE packets late or missing: the
                            poses that commands are integrated from would be stale), or the TCP outside
                            the workspace box: servoStop, chunks dropped and refused,
                            no motion until rearm(), which refuses while the cause is still active and
                            restarts from the measured pose.
  STOPPED                   after stop().
A lost connection (an exception from ur_rtde, isConnected() false) drops every chunk and the pose history,
so after reconnecting the driver holds until chunks computed from images taken after the reconnection come.

Dry run (enable_actuation=False, the default): only RTDEReceiveInterface is created, never
RTDEControlInterface (which uploads the control script), so a dry run cannot move the robot whatever else
goes wrong. Waypoints, filter and status run as usual and report what would have been commanded; there is no
control script and so no RTDE watchdog.

Watchdog: setWatchdog(min_frequency) once the control script runs; every cycle feeds it, by the servoL itself
while commanding and by kickWatchdog() while holding (a kick in the same cycle as a servoL would overwrite
the servoL's command register before the controller reads it).

Gripper: the UR has no gripper over RTDE here; the rate-limited gripper command is reported in the status for
a separate gripper driver.

ur_rtde holds the GIL in its connecting and blocking calls (constructors, reconnect, reuploadScript,
servoStop): other threads of the process pause while those run. waitPeriod releases it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import enum
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from pixelvla_ros.chunk_timeline import ChunkRefused, ChunkRules, ChunkTimeline, TimedChunk, Waypoints
from pixelvla_ros.realtime import make_thread_realtime
from pixelvla_ros.safety import FilteredCommand, SafetyFilter, SafetyLimits
from pixelvla_ros.ur5e import matrix_to_rotvec, rotvec_to_matrix
from pixelvla_ros.ur_modes import ROBOT_MODE_NAMES, ROBOT_MODE_RUNNING, SAFETY_MODE_NAMES, SAFETY_MODES_OK

__all__ = [
    "ChunkRefused",
    "CycleReport",
    "DriverState",
    "RtdeConnection",
    "UrController",
    "UrDriverConfig",
    "UrDriverStatus",
    "UrRtdeConnection",
]

log = logging.getLogger("pixelvla_ros.drivers.ur")

# RTDE output fields the driver reads (a short recipe keeps the client's parsing cheap at 500 Hz).
RECEIVE_FIELDS = (
    "timestamp",
    "actual_q",
    "actual_TCP_pose",
    "robot_mode",
    "safety_mode",
    "safety_status_bits",
    "runtime_state",
)
SCRIPT_START_TIMEOUT = 2.0  # s to wait for the re-uploaded control script to report PLAYING
# How fast the state-age baseline may rise, s per s: the controller's clock may drift from this machine's by
# far less (crystals: tens of ppm), a delay of the RTDE stream shows at once.
STATE_AGE_DRIFT = 1e-3


class DriverState(enum.Enum):
    CONNECTING = "CONNECTING"
    RUNNING = "RUNNING"
    FAULT = "FAULT"
    RECONNECTING = "RECONNECTING"
    STOPPED = "STOPPED"


@dataclass(frozen=True)
class UrDriverConfig:
    robot_ip: str = "127.0.0.1"
    frequency: float = 500.0  # Hz, RTDE and control-loop rate: 500 on e-Series, 125 on CB3
    enable_actuation: bool = False  # False: dry run, never an RTDEControlInterface (module docstring)
    lookahead_time: float = 0.1  # s, servoL lookahead (0.03-0.2): smoother but later with a larger value
    gain: float = 300.0  # servoL proportional gain (100-2000)
    servo_speed: float = 0.25  # servoL speed and acceleration arguments (ur_rtde 1.6.5's script ignores them)
    servo_acceleration: float = 1.2
    watchdog_min_frequency: float = 10.0  # Hz: the controller stops the script when fed less often
    reconnect_backoff_min: float = 0.5  # s, wait after the first failed (re)connection, doubled up to max
    reconnect_backoff_max: float = 5.0
    pose_history_s: float = 2.0  # s of measured poses kept to integrate chunks from their image's pose
    base_frame: str = "base"  # frame the chunks must be in: the controller's base frame
    max_stamp_lead: float = 0.05  # s an image stamp may lead the driver clock before the clocks are doubted
    max_command_age: float = 0.5  # s: refuse chunks from older images; halt once the newest is older
    max_state_age: float = 0.03  # s: FAULT when the newest robot state is older (RTDE packets late or lost)
    realtime_priority: int = 0  # SCHED_FIFO priority of the control thread, 1-99 (0: normal scheduling)
    # steps a started chunk keeps control (ChunkTimeline; 0: newest wins); None: each chunk's own (checkpoint)
    commit_steps: int | None = None
    limits: SafetyLimits = field(default_factory=SafetyLimits)

    def __post_init__(self) -> None:
        if not self.robot_ip:
            raise ValueError("robot_ip must name the UR controller")
        checks = (
            ("frequency", self.frequency, 1.0, 500.0),
            ("lookahead_time", self.lookahead_time, 0.03, 0.2),
            ("gain", self.gain, 100.0, 2000.0),
            ("servo_speed", self.servo_speed, 1e-3, 3.0),
            ("servo_acceleration", self.servo_acceleration, 1e-3, 40.0),
            ("watchdog_min_frequency", self.watchdog_min_frequency, 0.1, self.frequency),
            ("reconnect_backoff_min", self.reconnect_backoff_min, 1e-3, 60.0),
            ("reconnect_backoff_max", self.reconnect_backoff_max, self.reconnect_backoff_min, 600.0),
            ("pose_history_s", self.pose_history_s, 0.1, 60.0),
            ("max_stamp_lead", self.max_stamp_lead, 0.0, 1.0),
            ("max_command_age", self.max_command_age, 0.01, self.pose_history_s),
            ("max_state_age", self.max_state_age, 0.002, 1.0),
            ("realtime_priority", self.realtime_priority, 0, 99),
            ("commit_steps", 0 if self.commit_steps is None else self.commit_steps, 0, 64),
        )
        for name, value, lo, hi in checks:
            if not (math.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"{name} must be within [{lo:g}, {hi:g}], got {value}")
        if not self.base_frame:
            raise ValueError("base_frame must name the controller's base frame")

    @property
    def rules(self) -> ChunkRules:
        return ChunkRules(self.base_frame, self.max_stamp_lead, self.max_command_age)


class RtdeConnection(Protocol):
    """Creates the ur_rtde interfaces (the seam between the control loop and the client library)."""

    def receive(self, host: str, frequency: float) -> Any: ...

    def control(self, host: str, frequency: float) -> Any: ...


class UrRtdeConnection:
    """The real ur_rtde client (tested with ur-rtde 1.6.5)."""

    def receive(self, host: str, frequency: float) -> Any:
        import rtde_receive  # imported on use: the core stays importable where ur_rtde is not installed

        return rtde_receive.RTDEReceiveInterface(host, frequency, list(RECEIVE_FIELDS))

    def control(self, host: str, frequency: float) -> Any:
        import rtde_control

        return rtde_control.RTDEControlInterface(host, frequency)


@dataclass(frozen=True)
class CycleReport:
    """One RUNNING control cycle, for observers (tests, recorders); called in the control thread."""

    cycle: int
    t: float  # driver clock, s
    fresh: bool  # a chunk's waypoint was the target this cycle
    command: FilteredCommand
    pose: np.ndarray  # (6,) commanded TCP pose x, y, z, rx, ry, rz (base frame)


@dataclass(frozen=True)
class UrDriverStatus:
    state: DriverState
    reason: str
    connected: bool
    actuation: bool
    cycles: int
    last_period: float  # s between the last two cycle starts (NaN before two cycles)
    p99_period: float  # s, over the last 1000 cycles
    halted: bool  # no motion commanded (holding, faulted or not connected)
    filter_reasons: tuple[str, ...]  # why the safety filter changed or halted the last command
    command_pose: np.ndarray | None  # (6,) last commanded TCP pose (computed only, in a dry run)
    gripper_command: float  # rate-limited, 0 = open, 1 = closed
    measured_pose: np.ndarray | None  # (6,) actual TCP pose x, y, z, rx, ry, rz (base frame)
    measured_q: np.ndarray | None  # (6,) actual joint positions, rad
    measured_time: float  # driver clock time of that measurement
    state_age: float  # s, how much later than usual the newest robot state arrived (NaN: not connected)
    chunks_accepted: int
    chunks_refused: int
    last_refusal: str


class UrController:
    """The UR control loop; public methods are thread-safe, ur_rtde is only called from its own thread."""

    def __init__(
        self,
        config: UrDriverConfig,
        clock: Callable[[], float] = time.monotonic,
        connection: RtdeConnection | None = None,
        on_cycle: Callable[[CycleReport], None] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._connection = connection if connection is not None else UrRtdeConnection()
        self._on_cycle = on_cycle
        self._dt = 1.0 / config.frequency
        self._filter = SafetyFilter(config.limits, self._dt)
        self._timeline = ChunkTimeline(config.limits, config.commit_steps, config.rules)
        self._state_age = StateAge()
        self._waypoints: list[tuple[TimedChunk, Waypoints]] = []  # of the chunks the timeline holds
        self._history: collections.deque[tuple[float, np.ndarray]] = collections.deque(
            maxlen=max(2, int(config.pose_history_s * config.frequency))
        )
        self._lock = threading.Lock()  # guards everything the other threads read or write
        self._requests: queue.SimpleQueue[concurrent.futures.Future] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._r: Any = None  # RTDEReceiveInterface
        self._c: Any = None  # RTDEControlInterface (actuation only)
        self._position = np.zeros(3)  # last commanded TCP position
        self._rotation = np.eye(3)  # last commanded orientation (the filter limits rates, not attitude)
        self._periods: collections.deque[float] = collections.deque(maxlen=1000)
        self._last_start: float | None = None
        self._state = DriverState.CONNECTING
        self._reason = "not started"
        self._connected = False
        self._cycles = 0
        self._command: FilteredCommand | None = None
        self._command_pose: np.ndarray | None = None
        self._gripper = 0.0
        self._measured_pose: np.ndarray | None = None
        self._measured_q: np.ndarray | None = None
        self._measured_time = math.nan
        self._accepted = 0
        self._refused = 0
        self._last_refusal = ""

    # -- public API (any thread) -----------------------------------------------------------------------
    def start(self) -> UrController:
        if self._thread is not None:
            raise RuntimeError("UrController.start() called twice")
        if not self.config.enable_actuation:
            log.warning("dry run: no motion will be commanded (RTDEControlInterface is never created)")
        self._thread = threading.Thread(target=self._run, name="ur-driver", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop streaming (servoStop, stopScript), disconnect and end the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, chunk: TimedChunk) -> None:
        """Take a chunk for execution; raises ValueError (UnsafeChunkError, ChunkRefused) if it is refused."""
        try:
            self._admit(chunk)
        except ValueError as error:
            with self._lock:
                self._refused += 1
                self._last_refusal = str(error)
            raise

    def rearm(self, timeout: float = 15.0) -> tuple[bool, str]:
        """Leave FAULT once its cause is cleared on the robot: (True, state) or (False, why not)."""
        with self._lock:
            state, reason = self._state, self._reason
        if self._thread is None or state not in (DriverState.FAULT, DriverState.RUNNING):
            return False, f"cannot re-arm while {state.value}: {reason}"
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._requests.put(future)
        try:
            return future.result(timeout)
        except TimeoutError:
            return False, f"re-arm did not complete within {timeout:g} s"

    def status(self) -> UrDriverStatus:
        with self._lock:
            periods = np.array(self._periods)
            command = self._command
            return UrDriverStatus(
                state=self._state,
                reason=self._reason,
                connected=self._connected,
                actuation=self.config.enable_actuation,
                cycles=self._cycles,
                last_period=float(periods[-1]) if len(periods) else math.nan,
                p99_period=float(np.percentile(periods, 99)) if len(periods) else math.nan,
                halted=self._state is not DriverState.RUNNING or command is None or command.halted,
                filter_reasons=command.reasons if command is not None else (),
                command_pose=None if self._command_pose is None else self._command_pose.copy(),
                gripper_command=self._gripper,
                measured_pose=None if self._measured_pose is None else self._measured_pose.copy(),
                measured_q=None if self._measured_q is None else self._measured_q.copy(),
                measured_time=self._measured_time,
                state_age=self._state_age.age if self._connected else math.nan,
                chunks_accepted=self._accepted,
                chunks_refused=self._refused,
                last_refusal=self._last_refusal,
            )

    # -- chunks ----------------------------------------------------------------------------------------
    def _admit(self, chunk: TimedChunk) -> None:
        now = self._clock()
        with self._lock:
            if self._state is not DriverState.RUNNING:
                raise ChunkRefused(f"driver is {self._state.value} ({self._reason}): chunk ignored")
            checked = self._timeline.check(chunk, now)  # the rule every driver applies
            start = self._pose_at(checked.t0)
            if start is None:
                oldest = self._history[0][0] if self._history else math.nan
                raise ChunkRefused(
                    f"no measured TCP pose at image stamp {chunk.t0:.3f} (history starts at {oldest:.3f}): "
                    "its image precedes the last (re)connection"
                )
            held = self._timeline.add(checked, now)
            waypoints = held.waypoints(start[:3], rotvec_to_matrix(start[3:]), self._gripper)
            # pruned here, at the policy's rate, not in the 500 Hz loop
            self._waypoints = [(c, w) for c, w in self._waypoints if c.t_end > now] + [(held, waypoints)]
            self._accepted += 1

    def _pose_at(self, t: float) -> np.ndarray | None:
        """The newest measured pose at or before t (caller holds the lock)."""
        if not self._history or t < self._history[0][0]:
            return None
        for stamp, pose in reversed(self._history):
            if stamp <= t:
                return pose
        return None

    # -- control thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        make_thread_realtime(self.config.realtime_priority)
        backoff = self.config.reconnect_backoff_min
        ending = "stopped"
        try:
            while not self._stop.is_set():
                if not self._connected:
                    try:
                        self._connect()
                        backoff = self.config.reconnect_backoff_min
                    except RuntimeError as error:
                        state = (
                            DriverState.CONNECTING
                            if self._state is DriverState.CONNECTING
                            else DriverState.RECONNECTING
                        )
                        self._set_state(state, f"{error}; retrying in {backoff:.2f} s")
                        self._answer_requests(False, "not connected")
                        self._stop.wait(backoff)
                        backoff = min(2.0 * backoff, self.config.reconnect_backoff_max)
                    continue
                try:
                    self._cycle()
                except RuntimeError as error:  # ur_rtde reports a broken connection this way
                    self._lose_connection(f"connection lost: {error}")
        except Exception as error:  # a bug (or a raising on_cycle observer): stop streaming rather than guess
            log.exception("UR control loop failed")
            ending = f"control loop failed: {error!r}"
        finally:
            self._shutdown(ending)

    def _connect(self) -> None:
        cfg = self.config
        if self._r is None:
            self._r = self._connection.receive(cfg.robot_ip, cfg.frequency)
        elif not self._r.reconnect():
            raise RuntimeError(f"RTDE receive interface could not reconnect to {cfg.robot_ip}")
        with self._lock:
            self._history.clear()
        self._state_age.reset()
        self._measure(self._clock())
        log.info("connected to the UR controller at %s", cfg.robot_ip)
        fault = self._fault_reason(check_program=False)
        if fault is not None:
            self._enter_fault(fault)
        else:
            self._arm()
        with self._lock:  # only now: a failure above leaves the driver (re)connecting
            self._connected = True

    def _arm(self) -> None:
        """Start holding at the measured pose: control script and watchdog up (actuation), filter reset."""
        cfg = self.config
        pose = self._measured_pose
        lo, hi = np.asarray(cfg.limits.workspace_min), np.asarray(cfg.limits.workspace_max)
        if np.any(pose[:3] < lo) or np.any(pose[:3] > hi):
            # Resetting the filter would clip the command into the box: motion no chunk asked for.
            self._enter_fault(
                f"TCP at {np.round(pose[:3], 3).tolist()} is outside the workspace box {lo.tolist()} - "
                f"{hi.tolist()}: move it inside, then re-arm"
            )
            return
        if cfg.enable_actuation:
            if self._c is None or not self._c.isConnected():
                # A fresh interface rather than RTDEControlInterface.reconnect(): after a controller restart
                # reconnect() aborted the whole process once in CI (an exception escaping a ur_rtde thread).
                self._c = None
                self._c = self._connection.control(cfg.robot_ip, cfg.frequency)
            if not self._c.isProgramRunning() and not self._restart_script():
                self._enter_fault("the control script does not start on the controller")
                return
            if not self._c.setWatchdog(cfg.watchdog_min_frequency):
                self._enter_fault("the controller refused setWatchdog")
                return
        self._measure(self._clock())
        pose = self._measured_pose
        self._filter.reset(pose[:3], self._gripper)
        self._position, self._rotation = pose[:3].copy(), rotvec_to_matrix(pose[3:])
        with self._lock:
            self._timeline.clear()
            self._waypoints = []
            self._command = None
            self._command_pose = pose.copy()
        self._set_state(DriverState.RUNNING, "armed at the measured pose: moves while a chunk covers now")

    def _restart_script(self) -> bool:
        if not self._c.reuploadScript():
            return False
        deadline = time.monotonic() + SCRIPT_START_TIMEOUT
        while time.monotonic() < deadline:
            if self._c.isProgramRunning():
                return True
            time.sleep(0.01)
        return False

    def _cycle(self) -> None:
        r = self._r
        t_start = r.initPeriod()
        if not r.isConnected():
            raise RuntimeError("the RTDE receive interface is disconnected")
        now = self._clock()
        self._measure(now)
        started = time.perf_counter()
        if self._last_start is not None:
            self._periods.append(started - self._last_start)
        self._last_start = started
        self._serve_requests()
        if self._state is DriverState.RUNNING:
            if self.config.enable_actuation and not self._c.isConnected():
                raise RuntimeError("the RTDE control interface is disconnected")
            fault = self._fault_reason(check_program=self.config.enable_actuation)
            if fault is not None:
                self._enter_fault(fault)
            else:
                self._control(now)
        elif self._state is DriverState.FAULT:
            # The control and receive interfaces are separate streams: a stopped script can be seen a cycle
            # before the protective stop that stopped it. Name the active safety cause once it shows.
            cause = self._fault_reason(check_program=False)
            if cause is not None and cause != self._reason:
                self._set_state(DriverState.FAULT, cause)
        with self._lock:
            self._cycles += 1
        r.waitPeriod(t_start)

    def _control(self, now: float) -> None:
        cfg = self.config
        with self._lock:
            stale = self._timeline.stale_reason(now)
            chunk = self._timeline.chunk_at(now)  # also forgets chunks entirely in the past
            waypoints = next((w for c, w in self._waypoints if c is chunk), None)
        target = waypoints.sample(now) if waypoints is not None and stale is None else None
        if stale is not None:
            command = self._filter.halt(stale)
        elif target is None:
            command = self._filter.step(None)
        else:
            command = self._filter.step(*self._wanted(waypoints, target, now))
        self._position = command.position
        self._rotation = rotvec_to_matrix(command.rotation_delta) @ self._rotation
        pose = np.concatenate([command.position, matrix_to_rotvec(self._rotation)])
        if cfg.enable_actuation:
            if command.halted:
                ok = self._c.kickWatchdog()
            else:
                ok = self._c.servoL(
                    pose.tolist(),
                    cfg.servo_speed,
                    cfg.servo_acceleration,
                    self._dt,
                    cfg.lookahead_time,
                    cfg.gain,
                )
            if not ok:
                self._enter_fault(self._fault_reason(check_program=True) or "the controller refused servoL")
                return
        with self._lock:
            self._command, self._command_pose, self._gripper = command, pose, command.gripper
            cycle = self._cycles
        if self._on_cycle is not None:
            self._on_cycle(CycleReport(cycle, now, target is not None, command, pose))

    def _wanted(
        self, waypoints: Waypoints, target: tuple[np.ndarray, np.ndarray, float], now: float
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """This cycle's motion (translation, rotation, gripper): the chunk's own motion over one nominal cycle
        (feed-forward) plus closing what remains between command and target no faster than the filter can
        still brake within it. Asking for the whole error in one cycle would make the filter's acceleration
        limit overshoot the target and ring around it; feeding forward the target's motion since a late cycle
        would ask for a burst the filter must then brake from."""
        position, rotation, gripper = target
        p_before, r_before, _ = waypoints.sample(max(now - self._dt, waypoints.times[0]))
        step_position = position - p_before
        step_rotation = matrix_to_rotvec(rotation @ r_before.T)
        lim = self.config.limits
        error_position = position - (self._position + step_position)
        error_rotation = matrix_to_rotvec(rotation @ (rotvec_to_matrix(step_rotation) @ self._rotation).T)
        return (
            step_position + _closing_step(error_position, self._dt, 0.5 * lim.max_linear_acceleration),
            step_rotation + _closing_step(error_rotation, self._dt, 0.5 * lim.max_angular_acceleration),
            gripper,
        )

    def _measure(self, now: float) -> None:
        pose = np.asarray(self._r.getActualTCPPose(), dtype=np.float64)
        q = np.asarray(self._r.getActualQ(), dtype=np.float64)
        self._state_age.update(time.monotonic(), float(self._r.getTimestamp()))
        with self._lock:
            self._measured_pose, self._measured_q, self._measured_time = pose, q, now
            self._history.append((now, pose))

    def _fault_reason(self, check_program: bool) -> str | None:
        """Why the robot must not be commanded now (None: it may)."""
        r = self._r
        if self._state_age.age > self.config.max_state_age:
            return (
                f"robot state {self._state_age.age * 1e3:.0f} ms late (max_state_age "
                f"{self.config.max_state_age * 1e3:.0f} ms): RTDE packets delayed or lost"
            )
        if r.isEmergencyStopped():
            return "emergency stop"
        if r.isProtectiveStopped():
            return "protective stop"
        mode = r.getSafetyMode()
        if mode not in SAFETY_MODES_OK:
            return f"safety mode {SAFETY_MODE_NAMES.get(mode, mode)}"
        robot_mode = r.getRobotMode()
        if robot_mode != ROBOT_MODE_RUNNING:
            name = ROBOT_MODE_NAMES.get(robot_mode, robot_mode)
            return f"robot mode {name}: power on and release the brakes"
        if check_program and not self._c.isProgramRunning():
            return "the control script stopped (RTDE watchdog tripped, or stopped on the controller)"
        return None

    def _enter_fault(self, reason: str) -> None:
        c = self._c
        if self.config.enable_actuation and c is not None and c.isConnected():
            # Ends a servo still running. With the script already stopped (protective stop, watchdog) it
            # returns False at once but clears the command register, so that a re-uploaded script does not
            # replay the last servoL towards a stale target.
            c.servoStop()
        with self._lock:
            self._timeline.clear()
            self._waypoints = []
        self._set_state(DriverState.FAULT, reason)

    def _lose_connection(self, reason: str) -> None:
        with self._lock:
            self._connected = False
            self._timeline.clear()
            self._waypoints = []
            self._history.clear()
            self._last_start = None
        self._set_state(DriverState.RECONNECTING, reason)

    def _serve_requests(self) -> None:
        while True:
            try:
                future = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(self._rearm_now())
            except RuntimeError as error:
                future.set_result((False, f"connection lost while re-arming: {error}"))
                raise

    def _rearm_now(self) -> tuple[bool, str]:
        if self._state is DriverState.RUNNING:
            return True, "already running"
        fault = self._fault_reason(check_program=False)
        if fault is not None:
            return False, f"fault still active: {fault}"
        self._arm()
        return self._state is DriverState.RUNNING, self._reason

    def _answer_requests(self, ok: bool, message: str) -> None:
        while True:
            try:
                self._requests.get_nowait().set_result((ok, message))
            except queue.Empty:
                return

    def _set_state(self, state: DriverState, reason: str) -> None:
        with self._lock:
            changed = (state, reason) != (self._state, self._reason)
            self._state, self._reason = state, reason
        if changed:
            level = logging.ERROR if state is DriverState.FAULT else logging.INFO
            log.log(level, "%s: %s", state.value, reason)

    def _shutdown(self, reason: str) -> None:
        try:
            c = self._c
            if c is not None:
                if c.isConnected() and c.isProgramRunning():
                    c.servoStop()
                    c.stopScript()
                c.disconnect()
            if self._r is not None:
                self._r.disconnect()
        except RuntimeError as error:
            log.warning("while disconnecting from the UR controller: %s", error)
        finally:
            with self._lock:
                self._connected = False
            self._answer_requests(False, f"driver stopped: {reason}")
            self._set_state(DriverState.STOPPED, reason)


class StateAge:
    """How late the newest robot state is: this machine's clock at reading minus the controller's timestamp of
    the state, less the smallest such offset seen since the connection (the transport's own latency). The
    baseline rises at STATE_AGE_DRIFT s/s so that clock drift is not taken for delay; a state that stops
    changing (no packets) ages with the local clock. A stream already late when connecting sets a late
    baseline: its delay shows only once it recovers or grows."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._baseline = math.inf
        self._last_local = math.nan
        self.age = 0.0

    def update(self, local: float, controller_time: float) -> float:
        offset = local - controller_time
        if math.isfinite(self._last_local):
            self._baseline += STATE_AGE_DRIFT * (local - self._last_local)
        self._last_local = local
        self._baseline = min(self._baseline, offset)
        self.age = offset - self._baseline
        return self.age


def _closing_step(error: np.ndarray, dt: float, deceleration: float) -> np.ndarray:
    """The part of `error` to close in one cycle of dt: all of it when small, else at the speed from which
    `deceleration` still stops within the remaining distance."""
    distance = float(np.linalg.norm(error))
    if distance == 0.0:
        return np.zeros(3)
    speed = min(distance / dt, math.sqrt(2.0 * deceleration * distance))
    return error * (speed * dt / distance)
