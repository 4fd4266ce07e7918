"""Dashboard server (port 29999): the line protocol of ur_rtde's DashboardClient, wired to the robot state.

Replies end in ``\\n`` only (a ``\\r`` breaks ur_rtde's exact string comparisons). Commands a real robot does
not know are answered ``could not understand: '<cmd>'``. When test hooks are enabled, ``emulator <hook>
[json kwargs]`` calls a fault-injection hook (see :mod:`pixelvla_ros.ur_emulator.faults`) and answers one
line of JSON — a real robot would answer "could not understand" there too.
"""

from __future__ import annotations

import json
import logging
import socket
from typing import TYPE_CHECKING

from pixelvla_ros import ur_modes
from pixelvla_ros.ur_emulator.tcp_server import ThreadedTcpServer

if TYPE_CHECKING:
    from pixelvla_ros.ur_emulator.emulator import Emulator

log = logging.getLogger("pixelvla_ros.ur_emulator")

WELCOME = "Connected: Universal Robots Dashboard Server"
MAX_LINE = 4096


class DashboardServer(ThreadedTcpServer):
    thread_name = "dashboard"

    def __init__(self, emu: Emulator, host: str, port: int = 29999):
        super().__init__(emu, host, port)

    def _serve(self, c: socket.socket, addr) -> None:
        buf = b""
        try:
            c.sendall((WELCOME + "\n").encode())
            while True:
                data = c.recv(4096)
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    line = raw.decode("utf-8", errors="replace").strip()
                    if not line:
                        continue
                    reply, close = self.handle(line)
                    c.sendall((reply + "\n").encode())
                    if close:
                        return
                if len(buf) > MAX_LINE:
                    log.warning(
                        "dashboard %s: line longer than %d bytes without a newline; closing", addr, MAX_LINE
                    )
                    c.sendall(b"could not understand: line too long\n")
                    return
        except OSError:
            pass
        finally:
            self._forget(c)

    def handle(self, line: str) -> tuple[str, bool]:
        """One command line -> (reply without newline, close connection afterwards)."""
        emu = self.emu
        emu.record("dashboard", command=line)
        cmd = line.strip()
        low = cmd.lower()
        if emu.test_hooks and low.startswith("emulator "):
            parts = cmd.split(None, 2)
            name = parts[1] if len(parts) > 1 else ""
            try:
                kwargs = json.loads(parts[2]) if len(parts) > 2 else {}
                result = emu.hook(name, **kwargs)
                return json.dumps({"ok": True, "result": result}), False
            except Exception as e:  # noqa: BLE001 - report any hook failure to the caller
                return json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}), False
        with emu.lock:
            st = emu.state
            major, minor, bugfix, build = emu.version
            if low == "polyscopeversion":
                return f"URSoftware {major}.{minor}.{bugfix}.{build} (Jun 28 2021)", False
            if low == "version":
                return f"Version: {major}.{minor}.{bugfix}.{build}", False
            if low == "get serial number":
                return emu.serial, False
            if low == "get robot model":
                return "UR5", False
            if low == "robotmode":
                return f"Robotmode: {ur_modes.ROBOT_MODE_NAMES.get(st.robot_mode, 'UNKNOWN')}", False
            if low == "safetymode":
                return f"Safetymode: {ur_modes.SAFETY_MODE_NAMES.get(st.safety_mode, 'UNKNOWN')}", False
            if low == "safetystatus":
                return f"Safetystatus: {ur_modes.SAFETY_MODE_NAMES.get(st.safety_mode, 'UNKNOWN')}", False
            if low == "programstate":
                state = {ur_modes.RUNTIME_PLAYING: "PLAYING", ur_modes.RUNTIME_PAUSED: "PAUSED"}.get(
                    st.runtime_state, "STOPPED"
                )
                return f"{state} {st.program_name}", False
            if low == "running":
                return (
                    f"Program running: {'true' if st.runtime_state == ur_modes.RUNTIME_PLAYING else 'false'}",
                    False,
                )
            if low == "is in remote control":
                return "true", False
            if low == "get operational mode":
                return "NONE", False
            if low == "power on":
                if st.emergency_stopped:
                    return "Failed to execute: power on (emergency stop active)", False
                if st.robot_mode == ur_modes.ROBOT_MODE_POWER_OFF:
                    st.robot_mode = ur_modes.ROBOT_MODE_IDLE
                return "Powering on", False
            if low == "power off":
                emu.power_off("dashboard power off")
                return "Powering off", False
            if low == "brake release":
                if st.robot_mode == ur_modes.ROBOT_MODE_POWER_OFF or st.emergency_stopped:
                    return "Failed to execute: brake release (robot is powered off)", False
                st.robot_mode = ur_modes.ROBOT_MODE_RUNNING
                return "Brake releasing", False
            if low == "unlock protective stop":
                return emu.unlock_protective_stop(), False
            if low == "close popup":
                return "closing popup", False
            if low == "close safety popup":
                return "closing safety popup", False
            if low.startswith("popup "):
                return "showing popup", False
            if low.startswith("addtolog "):
                return "Added log message", False
            if low == "restart safety":
                emu.restart_safety()
                return "Restarting safety", False
            if low == "stop":
                emu.stop_program("dashboard stop", level=logging.INFO)
                return "Stopped", False
            if low == "pause":
                if st.runtime_state == ur_modes.RUNTIME_PLAYING:
                    st.runtime_state = ur_modes.RUNTIME_PAUSED
                    st.soft_stop()
                    return "Pausing program", False
                return "Failed to execute: pause", False
            if low == "play":
                return emu.play(), False
            if low.startswith("load "):
                prog = cmd[5:].strip()
                st.loaded_program = prog
                return f"Loading program: {prog}", False
            if low == "get loaded program":
                return (
                    f"Loaded program: {st.loaded_program}" if st.loaded_program else "No program loaded",
                    False,
                )
            if low == "isprogramsaved":
                return f"True {st.loaded_program or st.program_name}", False
            if low.startswith("setuserrole") or low.startswith("set user role"):
                return "Setting user role", False
            if low == "quit":
                return "Disconnected", True
            if low == "shutdown":
                return "Shutting down", True
        log.warning("dashboard: command not understood: %r", cmd[:200])
        return f"could not understand: '{cmd[:200]}'", False
