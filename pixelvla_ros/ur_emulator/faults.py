"""Fault injection and test hooks.

Every hook is ``fn(emu, **kwargs) -> JSON-serialisable result``. They are reachable three ways:

* in process: ``Emulator.hook(name, **kwargs)``;
* from a test process: ``EmulatorProcess.<name>(**kwargs)`` (a pipe to the emulator's own process);
* over the dashboard, when test hooks are on: ``emulator <name> {"json": "kwargs"}`` -> one JSON line.

Hooks: ``protective_stop``, ``emergency_stop``, ``release_emergency_stop``, ``trip_watchdog``,
``drop_connections``, ``delay_packets``, ``stall_outputs``, ``restart_controller``, ``set_joint_positions``,
``set_tcp_pose``, ``set_speed_scaling``, ``power_off``, ``power_on``, ``commands``, ``clear_commands``,
``state``, ``logs``, ``ping``.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from pixelvla_ros import ur_modes
from pixelvla_ros.ur_emulator import robot_state as rs

log = logging.getLogger("pixelvla_ros.ur_emulator")


def protective_stop(emu, reason: str = "injected by a test") -> None:
    emu.protective_stop(reason)


def emergency_stop(emu, reason: str = "injected by a test") -> None:
    emu.emergency_stop(reason)


def release_emergency_stop(emu) -> None:
    emu.release_emergency_stop()


def trip_watchdog(emu) -> bool:
    """Act as if the RTDE watchdog fired now: the program stops and the arm stops. False if no program ran."""
    with emu.lock:
        running = emu.program is not None
        emu.stop_program("RTDE watchdog tripped (injected); program stopped", level=logging.ERROR)
    return running


def drop_connections(emu, kind: str = "all") -> None:
    """Close client connections (kind: all, rtde, dashboard, script); the servers keep listening."""
    log.warning("dropping %s connections (injected)", kind)
    if kind in ("all", "rtde"):
        emu.rtde.drop_connections()
    if kind in ("all", "dashboard"):
        emu.dashboard.drop_connections()
    if kind in ("all", "script"):
        for s in emu.scripts:
            s.drop_connections()


def delay_packets(emu, delay_s: float, duration_s: float = 3600.0) -> None:
    """Deliver every RTDE output package ``delay_s`` late for ``duration_s`` (0 delay ends it)."""
    with emu.lock:
        emu.output_delay = max(0.0, float(delay_s))
        emu.output_delay_until = time.monotonic() + float(duration_s)


def stall_outputs(emu, duration_s: float) -> None:
    """Send no RTDE output package for ``duration_s`` (> 2.5 s makes ur_rtde declare the link lost)."""
    log.warning("stalling RTDE outputs for %.2f s (injected)", duration_s)
    emu.stall_until = time.monotonic() + float(duration_s)


def restart_controller(emu, downtime_s: float = 1.0, keep_pose: bool = True) -> None:
    """Close every server and connection, reset the controller state, listen again after ``downtime_s``."""
    log.warning("controller restart (injected): down for %.2f s", downtime_s)

    def run() -> None:
        time.sleep(0.05)  # let the hook's reply (dashboard / pipe) go out first
        emu._close_servers()
        with emu.lock:
            q = emu.state.q.copy() if keep_pose else None
            emu.program = None
            emu.state = rs.RobotState(
                emu.version, q if q is not None else emu.config.q0, powered=emu.config.powered
            )
            emu.rtde.owners.clear()
        time.sleep(max(0.0, float(downtime_s)))
        for _ in range(50):
            try:
                emu._open_servers()
                break
            except OSError as e:  # a port still held by a closing socket
                log.warning("restart: reopening servers failed (%s); retrying", e)
                emu._close_servers()
                time.sleep(0.1)
        log.info("controller restarted")

    emu.restarting = True
    t = threading.Thread(target=run, name="controller-restart", daemon=True)
    t.start()


def set_joint_positions(emu, q) -> list[float]:
    with emu.lock:
        emu.state.set_joint_positions(q)
        return emu.state.tcp_pose().tolist()


def set_tcp_pose(emu, pose) -> list[float]:
    with emu.lock:
        emu.state.set_tcp_pose(pose)
        return emu.state.q.tolist()


def set_speed_scaling(emu, fraction: float) -> None:
    with emu.lock:
        emu.state.speed_fraction = float(np.clip(fraction, 0.0, 1.0))


def power_off(emu) -> None:
    emu.power_off("power off (injected)")


def power_on(emu) -> None:
    """Power on and release the brakes (robot_mode RUNNING), unless an e-stop is active."""
    with emu.lock:
        if not emu.state.emergency_stopped:
            emu.state.robot_mode = ur_modes.ROBOT_MODE_RUNNING


def commands(emu, kind: str | None = None, since: float = 0.0, name: str | None = None) -> list[dict]:
    """Recorded events (kind: command, dashboard, script, rtde, rtde_inputs, program_stopped, ...)."""
    with emu.lock:
        recs = list(emu.records)
    return [
        r
        for r in recs
        if (kind is None or r["kind"] == kind) and r["t"] >= since and (name is None or r.get("name") == name)
    ]


def clear_commands(emu) -> None:
    with emu.lock:
        emu.records.clear()


def state(emu) -> dict:
    with emu.lock:
        st = emu.state
        prog = emu.program
        return {
            "t": time.monotonic() - emu.t0,
            "q": st.q.tolist(),
            "qd": st.qd.tolist(),
            "tcp_pose": st.tcp_pose().tolist(),
            "robot_mode": st.robot_mode,
            "safety_mode": st.safety_mode,
            "runtime_state": st.runtime_state,
            "program": st.program_name if prog is not None else None,
            "register_offset": getattr(prog, "o", None),
            "watchdog_hz": getattr(prog, "watchdog_freq", 0.0),
            "motion": st.motion.name,
            "speed_fraction": st.speed_fraction,
            "out_int": st.out_int[:3] + st.out_int[24:27],
            "in_int0": [st.in_int[0], st.in_int[24]],
            "control_hz": emu.control_hz,
            "ticks": st.ticks,
            "tick_overruns": emu.tick_overruns,
            "tick_realtime": emu.tick_realtime,
            "rtde": [
                {
                    "id": c.cid,
                    "started": c.started,
                    "hz": emu.control_hz / c.divider if c.output else 0,
                    "fields": len(c.output.names) if c.output else 0,
                    "inputs": len(c.inputs),
                    "sent": c.sent,
                    "dropped": c.dropped,
                }
                for c in emu.rtde.connections()
            ],
        }


def logs(emu, min_level: str = "WARNING") -> list[dict]:
    lv = logging.getLevelName(min_level)
    return [r for r in list(emu.log_buffer) if logging.getLevelName(r["level"]) >= lv]


def ping(emu) -> str:
    return "pong"


HOOKS = {
    fn.__name__: fn
    for fn in (
        protective_stop,
        emergency_stop,
        release_emergency_stop,
        trip_watchdog,
        drop_connections,
        delay_packets,
        stall_outputs,
        restart_controller,
        set_joint_positions,
        set_tcp_pose,
        set_speed_scaling,
        power_off,
        power_on,
        commands,
        clear_commands,
        state,
        logs,
        ping,
    )
}
