"""The controller emulator: owns the robot state, the servers and the controller-tick thread.

One lock (``Emulator.lock``) guards the robot state; the tick thread holds it while it steps the motion,
runs the control-script emulation and takes the output snapshot, then streams outside the lock.
"""

from __future__ import annotations

import collections
import logging
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from pixelvla_ros import ur_modes
from pixelvla_ros.realtime import make_thread_realtime
from pixelvla_ros.ur_emulator import robot_state as rs
from pixelvla_ros.ur_emulator import rtde_protocol as rp
from pixelvla_ros.ur_emulator.dashboard import DashboardServer
from pixelvla_ros.ur_emulator.rtde_server import RTDEServer
from pixelvla_ros.ur_emulator.script_server import (
    _CUSTOM_FN,
    _PROGRAM_START,
    CMD_NAMES,
    ControlScript,
    CustomFunctionProgram,
    ScriptServer,
    parse_offset,
)

log = logging.getLogger("pixelvla_ros.ur_emulator")

_REG = re.compile(r"^(input|output)_(int|double|bit)_register_(\d+)$")


@dataclass
class EmulatorConfig:
    host: str = "127.0.0.1"
    version: str = "5.11.1"
    serial: str = "20185500042"
    rtde_port: int = 30004
    dashboard_port: int = 29999
    script_ports: tuple[int, ...] = (30001, 30002, 30003)
    powered: bool = True  # start powered on with brakes released (robot_mode RUNNING)
    q0: list[float] | None = None  # initial joint positions (default ur5e.Q_HOME)
    pstop_unlock_delay: float = 0.0  # a real robot refuses "unlock protective stop" for 5 s
    # Safety limits: a servo target whose tracking would exceed them raises a protective stop, as the
    # safety system of a real controller does (UR defaults: tool speed 1.5 m/s, joint speed 191 deg/s).
    tcp_speed_limit: float = 1.5  # m/s
    joint_speed_limit: float = 3.3336  # rad/s
    test_hooks: bool = True  # "emulator <hook>" dashboard commands
    compute_lead_s: float = 0.001  # a tick's state and packages are computed this long before its deadline
    spin_s: float = 0.0003  # busy-wait this long before each tick deadline (tick regularity vs CPU)
    # SCHED_FIFO priority of the tick thread (0 = normal scheduling): a controller runs its RTDE loop on a
    # real-time kernel; without the permission the emulator logs it and runs at normal priority. Off here
    # (tests: on an overloaded machine a real-time emulator trips the watchdog of a starved client); the
    # ur_emulator command and the jitter benchmark turn it on.
    realtime_priority: int = 0
    record_max: int = 50000
    gil_switch_s: float = 0.0005  # sys.setswitchinterval in the emulator's process
    extra: dict = field(default_factory=dict)


class _RingHandler(logging.Handler):
    def __init__(self, buf: collections.deque):
        super().__init__(level=logging.INFO)
        self.buf = buf

    def emit(self, record: logging.LogRecord) -> None:
        self.buf.append({"t": record.created, "level": record.levelname, "message": record.getMessage()})


class Emulator:
    def __init__(self, config: EmulatorConfig | None = None):
        self.config = cfg = config or EmulatorConfig()
        self.version = rp.parse_version(cfg.version)
        self.control_hz = 500.0 if self.version[0] > 3 else 125.0
        self.serial = cfg.serial
        self.test_hooks = cfg.test_hooks
        self.lock = threading.RLock()
        self.state = rs.RobotState(self.version, cfg.q0, powered=cfg.powered)
        self.program = None
        self.last_program_text = ""
        self.last_command_doubles = 0
        self.records: collections.deque = collections.deque(maxlen=cfg.record_max)
        self.log_buffer: collections.deque = collections.deque(maxlen=2000)
        self._log_handler = _RingHandler(self.log_buffer)
        self.t0 = time.monotonic()
        self.output_delay = 0.0
        self.output_delay_until = 0.0
        self.stall_until = 0.0
        self.restarting = False
        self._stop = threading.Event()
        self._tick_thread: threading.Thread | None = None
        self._plans: dict[tuple, list] = {}
        self._listeners: list[socket.socket] = []
        self.rtde = RTDEServer(self, cfg.host, cfg.rtde_port)
        self.dashboard = DashboardServer(self, cfg.host, cfg.dashboard_port)
        self.scripts = [ScriptServer(self, cfg.host, p) for p in cfg.script_ports]
        self.tick_overruns = 0
        self.tick_realtime = False  # whether the tick thread got its real-time priority

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> Emulator:
        log.addHandler(self._log_handler)
        # Hand the GIL over quickly: the tick thread must not wait up to 5 ms behind a reader thread.
        sys.setswitchinterval(self.config.gil_switch_s)
        self._open_servers()
        self._tick_thread = threading.Thread(target=self._tick_loop, name="controller-tick", daemon=True)
        self._tick_thread.start()
        log.info(
            "UR controller emulator %s on %s (RTDE %d, dashboard %d, script %s, %g Hz)",
            ".".join(map(str, self.version)),
            self.config.host,
            self.config.rtde_port,
            self.config.dashboard_port,
            list(self.config.script_ports),
            self.control_hz,
        )
        return self

    def _open_servers(self) -> None:
        self.rtde.start()
        self.dashboard.start()
        for s in self.scripts:
            s.start()

    def _close_servers(self) -> None:
        self.rtde.close()
        self.dashboard.close()
        for s in self.scripts:
            s.close()

    def stop(self) -> None:
        self._stop.set()
        self._close_servers()
        if self._tick_thread is not None:
            self._tick_thread.join(2.0)
        log.removeHandler(self._log_handler)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def listen(self, host: str, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            s.close()
            raise
        s.listen(16)
        return s

    def close_listener(self, s: socket.socket | None) -> None:
        if s is None:
            return
        try:
            s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in accept()
        except OSError:
            pass
        s.close()

    # -- controller tick -------------------------------------------------------------------------------
    def _tick_loop(self) -> None:
        """Each tick's state and data packages are computed `compute_lead_s` before its deadline and sent at
        the deadline, so the stream's period does not vary with the time the computing takes (other threads
        hold the GIL and the lock at times): a controller's output is as regular as its clock."""
        self.tick_realtime = make_thread_realtime(self.config.realtime_priority)
        period = self.state.period
        lead, spin = self.config.compute_lead_s, self.config.spin_s
        next_t = time.monotonic() + period
        last = next_t - period
        while not self._stop.is_set():
            remaining = next_t - lead - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
            with self.lock:
                dt = min(max(next_t - last, 0.0), 5 * period)
                last = next_t
                st = self.state
                if dt > 0:
                    st.step(dt)
                if self.program is not None and st.runtime_state == ur_modes.RUNTIME_PLAYING:
                    try:
                        self.program.tick(next_t)
                    except Exception:  # noqa: BLE001 - a bug in the emulation must not kill the controller
                        log.exception("control script emulation failed; program stopped")
                        self.stop_program("internal emulator error", level=logging.ERROR)
                snap = self.snapshot()
                tick = st.ticks
                delay = self.output_delay if next_t < self.output_delay_until else 0.0
                stalled = next_t < self.stall_until
            prepared = [] if stalled else self.rtde.prepare(tick, snap, next_t, delay)
            remaining = next_t - spin - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
            while time.monotonic() < next_t:
                pass
            self.rtde.send(prepared)
            next_t += period
            if time.monotonic() - next_t > 0.05:  # the process was stopped or starved: restart the clock
                self.tick_overruns += 1
                next_t = time.monotonic() + period
                last = next_t - period

    def snapshot(self):
        """Values of all model-backed output fields for this tick; a function name -> value."""
        st = self.state
        q = tuple(st.q.tolist())
        qd = tuple(st.qd.tolist())
        pose = tuple(rs.matrix_to_pose(st.tcp_matrix()).tolist())
        speed = tuple(st.tcp_speed().tolist())
        target_q = tuple(st.motion.q_target.tolist()) if isinstance(st.motion, rs.ServoJ) else q
        zeros6 = (0.0,) * 6
        d = {
            "timestamp": st.control_time,
            "actual_q": q,
            "target_q": target_q,
            "actual_qd": qd,
            "target_qd": qd,
            "target_qdd": tuple(st.qdd.tolist()),
            "actual_TCP_pose": pose,
            "target_TCP_pose": pose,
            "actual_TCP_speed": speed,
            "target_TCP_speed": speed,
            "tcp_offset": tuple(st.tcp_offset.tolist()),
            "robot_mode": st.robot_mode,
            "safety_mode": st.safety_mode,
            "safety_status": st.safety_mode,
            "runtime_state": st.runtime_state,
            "robot_status_bits": st.robot_status_bits(),
            "safety_status_bits": st.safety_status_bits(),
            "joint_mode": (
                ur_modes.JOINT_MODE_RUNNING
                if st.robot_mode == ur_modes.ROBOT_MODE_RUNNING
                else ur_modes.JOINT_MODE_IDLE
                if st.powered
                else ur_modes.JOINT_MODE_POWER_OFF,
            )
            * 6,
            "speed_scaling": st.speed_fraction,
            "target_speed_fraction": st.speed_fraction,
            "actual_digital_output_bits": st.digital_out,
            "joint_temperatures": (30.0,) * 6,
            "actual_main_voltage": 48.0,
            "actual_robot_voltage": 48.0 if st.powered else 0.0,
            "actual_joint_voltage": (48.0,) * 6 if st.powered else zeros6,
            "actual_execution_time": 0.2,
            "target_execution_time": 0.2,
            "actual_tool_accelerometer": (0.0, 0.0, -9.81),
            "payload": st.payload,
            "payload_cog": tuple(st.payload_cog.tolist()),
            "output_bit_registers0_to_31": st.out_bits & 0xFFFFFFFF,
            "output_bit_registers32_to_63": (st.out_bits >> 32) & 0xFFFFFFFF,
            "input_bit_registers0_to_31": st.in_bits & 0xFFFFFFFF,
            "input_bit_registers32_to_63": (st.in_bits >> 32) & 0xFFFFFFFF,
            "control_step": st.ticks,
        }
        get_field = self._field_value

        def snap(name: str):
            v = d.get(name)
            return v if v is not None else get_field(name)

        return snap

    def _field_value(self, name: str):
        st = self.state
        m = _REG.match(name)
        if m:
            io, kind, idx = m.group(1), m.group(2), int(m.group(3))
            if kind == "int":
                return (st.in_int if io == "input" else st.out_int)[idx]
            if kind == "double":
                return (st.in_dbl if io == "input" else st.out_dbl)[idx]
            bits = st.in_bits if io == "input" else st.out_bits
            return bool((bits >> idx) & 1)
        if name in st.inputs:
            return st.inputs[name]
        typ = rp.OUTPUT_FIELDS.get(name, "DOUBLE")
        fmt, n = rp.TYPE_FORMATS[typ]
        zero = 0.0 if fmt[0] == "d" else (False if fmt[0] == "?" else 0)
        return zero if n == 1 else (zero,) * n

    # -- inputs ----------------------------------------------------------------------------------------
    def _plan(self, names: tuple) -> list:
        plan = self._plans.get(names)
        if plan is None:
            plan = []
            for n in names:
                m = _REG.match(n)
                plan.append((n, m.group(2), int(m.group(3))) if m else (n, "other", 0))
            self._plans[names] = plan
        return plan

    def apply_inputs(self, values: dict, conn_id: int, recipe_id: int) -> None:
        now = time.monotonic()
        names = tuple(values)
        with self.lock:
            st = self.state
            for name, kind, idx in self._plan(names):
                v = values[name]
                if kind == "int":
                    st.in_int[idx] = v
                elif kind == "double":
                    st.in_dbl[idx] = v
                elif kind == "bit":
                    st.in_bits = (st.in_bits | (1 << idx)) if v else (st.in_bits & ~(1 << idx))
                elif name == "input_bit_registers0_to_31":
                    st.in_bits = (st.in_bits & ~0xFFFFFFFF) | v
                elif name == "input_bit_registers32_to_63":
                    st.in_bits = (st.in_bits & ~(0xFFFFFFFF << 32)) | (v << 32)
                else:
                    st.inputs[name] = v
                st.input_update_time[name] = now
            if "speed_slider_mask" in values and values["speed_slider_mask"] & 1:
                st.speed_fraction = float(np.clip(values.get("speed_slider_fraction", 1.0), 0.0, 1.0))
            if "standard_digital_output_mask" in values:
                mask = values["standard_digital_output_mask"]
                st.digital_out = (st.digital_out & ~mask) | (values.get("standard_digital_output", 0) & mask)
            first = names[0]
            if first in ("input_int_register_0", "input_int_register_24"):
                cmd = values[first]
                doubles = [values[n] for n in names if "double" in n]
                ints = [values[n] for n in names[1:] if "_int_" in n]
                self.last_command_doubles = len(doubles)
                self.records.append(
                    {
                        "t": now - self.t0,
                        "kind": "command",
                        "conn": conn_id,
                        "recipe": recipe_id,
                        "cmd": cmd,
                        "name": "kickWatchdog/clear" if cmd == 0 else CMD_NAMES.get(cmd, f"unknown({cmd})"),
                        "ints": ints,
                        "doubles": doubles,
                    }
                )

    def record(self, kind: str, **info) -> None:
        info["t"] = time.monotonic() - self.t0
        info["kind"] = kind
        self.records.append(info)

    # -- programs --------------------------------------------------------------------------------------
    def run_program(self, text: str, port: int) -> None:
        first = text.split("\n", 1)[0]
        m = _PROGRAM_START.match(first)
        name = m.group(2) if m else "?"
        int_off, float_off = parse_offset(text)
        self.record("script", port=port, program=name, size=len(text), offset=int_off)
        with self.lock:
            st = self.state
            if self.program is not None or st.runtime_state == ur_modes.RUNTIME_PLAYING:
                self.stop_program(f"new program {name!r} received on port {port}", level=logging.INFO)
            if not st.can_move():
                log.error(
                    "refusing to start program %r: robot_mode %s, safety_mode %s (power on, release the "
                    "brakes and clear stops first)",
                    name,
                    ur_modes.ROBOT_MODE_NAMES.get(st.robot_mode),
                    ur_modes.SAFETY_MODE_NAMES.get(st.safety_mode),
                )
                return
            custom = _CUSTOM_FN.search(text)
            if name == "rtde_control":
                if int_off is None:
                    log.warning("rtde_control script without an injected register offset; assuming 0")
                    int_off = 0
                if float_off is not None and float_off != int_off:
                    log.warning(
                        "rtde_control script: int offset %d != float offset %d; using %d",
                        int_off,
                        float_off,
                        int_off,
                    )
                if int_off not in (0, 24):
                    log.error(
                        "refusing rtde_control script with register offset %d (expected 0 or 24)", int_off
                    )
                    return
                owners = self.rtde.owners
                if f"input_int_register_{int_off}" not in owners:
                    log.warning(
                        "rtde_control script uses offset %d but no RTDE connection owns "
                        "input_int_register_%d",
                        int_off,
                        int_off,
                    )
                self.program = ControlScript(self, int_off)
                log.info("rtde_control script started (%d bytes, register offset %d)", len(text), int_off)
            elif custom is not None:
                self.program = CustomFunctionProgram(self, int(custom.group(1)), name)
                log.info("custom script function %r started (body not interpreted)", name)
            else:
                log.error(
                    "UNSUPPORTED PROGRAM %r (%d bytes) on port %d: the emulator only runs ur_rtde's "
                    "rtde_control script and custom script functions; refused",
                    name,
                    len(text),
                    port,
                )
                return
            self.last_program_text = text
            st.program_name = name
            st.runtime_state = ur_modes.RUNTIME_PLAYING

    def stop_program(self, reason: str, level: int = logging.WARNING) -> None:
        with self.lock:
            st = self.state
            if st.runtime_state != ur_modes.RUNTIME_STOPPED or self.program is not None:
                log.log(level, "program %r stopped: %s", st.program_name, reason)
                self.record("program_stopped", reason=reason)
            self.program = None
            st.runtime_state = ur_modes.RUNTIME_STOPPED
            if not isinstance(st.motion, (rs.Idle, rs.Stop)):
                st.soft_stop()

    def play(self) -> str:
        with self.lock:
            st = self.state
            if st.runtime_state == ur_modes.RUNTIME_PAUSED:
                st.runtime_state = ur_modes.RUNTIME_PLAYING
                return "Starting program"
            if not st.loaded_program:
                return "Failed to execute: play"
            if not st.can_move():
                return "Failed to execute: play"
            st.program_name = st.loaded_program
            st.runtime_state = ur_modes.RUNTIME_PLAYING
            self.program = None  # a loaded .urp is not interpreted: it just "runs"
            return "Starting program"

    # -- safety ----------------------------------------------------------------------------------------
    def protective_stop(self, reason: str = "injected") -> None:
        with self.lock:
            st = self.state
            log.warning("PROTECTIVE STOP: %s", reason)
            st.safety_mode = ur_modes.SAFETY_PROTECTIVE_STOP
            st.protective_stop_time = time.monotonic()
            st.halt()
            self.stop_program(f"protective stop ({reason})")
            self.record("protective_stop", reason=reason)

    def unlock_protective_stop(self) -> str:
        with self.lock:
            st = self.state
            if st.emergency_stopped:
                return "Failed to execute: unlock protective stop (emergency stop active)"
            if st.protective_stopped:
                if time.monotonic() - st.protective_stop_time < self.config.pstop_unlock_delay:
                    return (
                        "Cannot unlock protective stop until 5s after occurrence. Always inspect cause of "
                        "protective stop before unlocking"
                    )
                st.safety_mode = ur_modes.SAFETY_NORMAL
                log.info("protective stop unlocked")
            return "Protective stop releasing"

    def emergency_stop(self, reason: str = "injected") -> None:
        with self.lock:
            st = self.state
            log.warning("EMERGENCY STOP: %s", reason)
            st.safety_mode = ur_modes.SAFETY_ROBOT_EMERGENCY_STOP
            st.halt()
            self.stop_program(f"emergency stop ({reason})")
            st.robot_mode = ur_modes.ROBOT_MODE_POWER_OFF
            self.record("emergency_stop", reason=reason)

    def release_emergency_stop(self) -> None:
        with self.lock:
            st = self.state
            if st.emergency_stopped:
                st.safety_mode = ur_modes.SAFETY_NORMAL
                log.info("emergency stop released (robot stays powered off: power on + brake release)")

    def restart_safety(self) -> None:
        with self.lock:
            st = self.state
            if not st.emergency_stopped:
                st.safety_mode = ur_modes.SAFETY_NORMAL
            self.stop_program("restart safety")
            st.halt()
            st.robot_mode = ur_modes.ROBOT_MODE_POWER_OFF

    def power_off(self, reason: str = "power off") -> None:
        with self.lock:
            st = self.state
            st.halt()
            self.stop_program(reason)
            st.robot_mode = ur_modes.ROBOT_MODE_POWER_OFF

    # -- hooks -----------------------------------------------------------------------------------------
    def hook(self, _hook: str, **kwargs):
        from pixelvla_ros.ur_emulator import faults

        fn = faults.HOOKS.get(_hook)
        if fn is None:
            raise KeyError(f"unknown emulator hook {_hook!r}; known: {sorted(faults.HOOKS)}")
        return fn(self, **kwargs)
