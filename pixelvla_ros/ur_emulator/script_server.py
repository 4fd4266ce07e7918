"""Script ports 30001-30003 and the emulation of ur_rtde's ``rtde_control`` script command protocol.

The controller does not run URScript. An uploaded program is framed (``def name():`` ... a line ``end``);
``rtde_control`` (ur_rtde's control script) starts :class:`ControlScript`, which reproduces the script's
main loop over the RTDE registers (notes §3): ready (out_int[o]=1) / done (=2) handshake, RT commands
re-executed every cycle, blocking commands run once until the client clears, ``stopScript`` (255), and the
``rtde_set_watchdog(..., "stop")`` watchdog on input_int_register_<o>. The register offset (0 or 24) is read
from the script text. Anything else is logged loudly and refused.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from typing import TYPE_CHECKING

import numpy as np

from pixelvla_ros import ur5e
from pixelvla_ros.ur_emulator import robot_state as rs
from pixelvla_ros.ur_emulator.tcp_server import ThreadedTcpServer

if TYPE_CHECKING:
    from pixelvla_ros.ur_emulator.emulator import Emulator

log = logging.getLogger("pixelvla_ros.ur_emulator")

CMD_NAMES = {
    0: "clear",
    1: "moveJ",
    2: "moveJ_IK",
    3: "moveL",
    4: "moveL_FK",
    6: "forceMode",
    7: "forceModeStop",
    8: "zeroFtSensor",
    9: "speedJ",
    10: "speedL",
    11: "servoJ",
    12: "servoC",
    15: "speedStop",
    16: "servoStop",
    17: "setPayload",
    18: "teachMode",
    19: "endTeachMode",
    20: "forceModeSetDamping",
    21: "forceModeSetGainScaling",
    24: "servoL",
    25: "toolContact",
    26: "getStepTime",
    27: "getActualJointPositionsHistory",
    28: "getTargetWaypoint",
    29: "setTcp",
    30: "getInverseKinematics",
    31: "triggerProtectiveStop",
    33: "stopL",
    34: "stopJ",
    35: "setWatchdog",
    36: "isPoseWithinSafetyLimits",
    37: "isJointsWithinSafetyLimits",
    38: "getJointTorques",
    39: "poseTrans",
    40: "getTCPOffset",
    41: "jogStart",
    42: "jogStop",
    43: "getForwardKinematics",
    44: "getForwardKinematics",
    45: "movePath",
    46: "getInverseKinematics",
    47: "isSteady",
    51: "moveUntilContact",
    52: "freedriveMode",
    53: "endFreedriveMode",
    54: "getFreedriveStatus",
    56: "ftRtdeInputEnable",
    57: "enableExternalFtSensor",
    58: "getActualToolFlangePose",
    59: "setGravity",
    60: "getInverseKinematicsHasSolution",
    61: "getInverseKinematicsHasSolution",
    62: "startContactDetection",
    63: "stopContactDetection",
    64: "readContactDetection",
    65: "setTargetPayload",
    255: "stopScript",
}
# Commands the script re-executes every cycle without a done-wait (1.6.5 script's RT list).
RT_COMMANDS = {24, 11, 9, 10, 6, 25, 26, 27, 38, 58, 66, 67, 68, 69, 70, 71}
# Blocking commands that only acknowledge (the emulator keeps no model of what they change).
ACK_ONLY = {7, 8, 17, 18, 19, 20, 21, 56, 57, 59, 63, 65}
RDY, DONE = 1, 2

_PROGRAM_START = re.compile(r"^\s*(def|sec)\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(\s*\)\s*:\s*$")
_INT_OFFSET = [
    re.compile(r"#\s*int register offset\s*\n\s*(\d+)"),
    re.compile(r"reg_offset_int\s*=\s*#[^\n]*\n\s*(\d+)"),
]
_FLOAT_OFFSET = [
    re.compile(r"#\s*float register offset\s*\n\s*(\d+)"),
    re.compile(r"reg_offset_float\s*=\s*#[^\n]*\n\s*(\d+)"),
]
_CUSTOM_FN = re.compile(r"write_output_integer_register\(\s*0\s*\+\s*(\d+)\s*,\s*1\s*\)")
MAX_PROGRAM_BYTES = 1 << 20


def parse_offset(text: str) -> tuple[int | None, int | None]:
    """(int offset, float offset) injected by ur_rtde after the '# ... register offset' comments."""

    def first(patterns):
        for p in patterns:
            m = p.search(text)
            if m:
                return int(m.group(1))
        return None

    return first(_INT_OFFSET), first(_FLOAT_OFFSET)


def _async_word(wr_count: int, op_id: int, value: int) -> int:
    reg = wr_count * 65536 + op_id * 16777216
    if value >= 0:
        reg += (value & 0x7FFF) + 32768
    return reg


class ControlScript:
    """The running ``rtde_control`` program: its main loop, evaluated once per controller tick."""

    def __init__(self, emu: Emulator, offset: int, name: str = "rtde_control"):
        self.emu = emu
        self.o = offset
        self.name = name
        self.executing = False
        self.busy: str | None = None  # a blocking command in progress ("moveL", "stopL", ...)
        self.busy_cmd = 0
        self.async_motion = False
        self.watchdog_freq = 0.0
        self.watchdog_armed_at = 0.0
        self.async_wr = 0
        self.async_op = 0
        self._servo_key = None
        self._servo_q = None
        st = emu.state
        self._write_async(-1)
        st.out_int[self.o] = RDY

    # -- register helpers ----------------------------------------------------------------------------
    def i(self, k: int) -> int:
        return self.emu.state.in_int[self.o + k]

    def d(self, k: int, n: int = 1):
        if n == 1:
            return self.emu.state.in_dbl[self.o + k]
        return np.array(self.emu.state.in_dbl[self.o + k : self.o + k + n], dtype=float)

    def out_d(self, values) -> None:
        for k, v in enumerate(values):
            self.emu.state.out_dbl[self.o + k] = float(v)

    def out_i(self, k: int, v: int) -> None:
        self.emu.state.out_int[self.o + k] = int(v)

    def _write_async(self, value: int) -> None:
        self.async_wr = (self.async_wr + 1) % 128
        if value == 0:
            self.async_op = (self.async_op + 1) % 128
        self.emu.state.out_int[self.o + 2] = _async_word(self.async_wr, self.async_op, value)

    # -- main loop -------------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        st = self.emu.state
        if self.watchdog_freq > 0:
            last = max(st.input_update_time.get(f"input_int_register_{self.o}", 0.0), self.watchdog_armed_at)
            if now - last > 1.0 / self.watchdog_freq:
                self.emu.stop_program(
                    f"RTDE watchdog on input_int_register_{self.o} tripped: no update for "
                    f"{now - last:.3f} s > 1/{self.watchdog_freq:g} Hz; program stopped",
                    level=logging.ERROR,
                )
                return
        # A blocking command in progress (the real script is inside movel/stopl/...).
        if self.busy is not None:
            if st.motion.done or isinstance(st.motion, rs.Idle):
                failed = getattr(st.motion, "failed", "")
                if failed:
                    self.emu.stop_program(
                        f"{self.busy}: IK failed on the path ({failed}); program stopped", level=logging.ERROR
                    )
                    return
                self.busy = None
                if self.async_motion:
                    self._write_async(-1)
                    self.async_motion = False
                else:
                    self.out_i(0, DONE)
                    self.executing = True
            else:
                if self.async_motion:
                    prog = getattr(st.motion, "progress", lambda: 0.0)()
                    self._write_async(int(prog * 1000))
                if not self.async_motion:
                    return
        cmd = st.in_int[self.o]
        if cmd == 255:
            self.emu.stop_program("received stopScript (255)", level=logging.INFO)
            return
        if cmd in RT_COMMANDS:
            self.executing = False
            if self._run_rt(cmd):
                self.out_i(0, RDY)
            return
        if cmd == 0:
            self.executing = False
            self.out_i(0, RDY)
            return
        if not self.executing:
            self._run_blocking(cmd)

    # -- RT commands -------------------------------------------------------------------------------------
    def _cancel_async(self) -> None:
        if self.busy is not None and self.async_motion:
            self._write_async(-1)
            self.busy = None
            self.async_motion = False

    def _run_rt(self, cmd: int) -> bool:
        st = self.emu.state
        if cmd in (11, 24):
            self._cancel_async()
            lookahead = self.d(9)
            if cmd == 11:
                q_target = self.d(0, 6)
            else:
                key = tuple(self.emu.state.in_dbl[self.o : self.o + 6])
                if key != self._servo_key:
                    seed = st.motion.q_target if isinstance(st.motion, rs.ServoJ) else st.q
                    res = ur5e.ik(rs.pose_to_matrix(key), seed, st.T_flange_tcp, max_iter=50)
                    if not res.success:
                        self.emu.stop_program(
                            f"servoL: get_inverse_kin failed for {list(key)}: {res.reason}; program stopped",
                            level=logging.ERROR,
                        )
                        return False
                    self._servo_key, self._servo_q = key, res.q
                q_target = self._servo_q
            violation = self._servo_limit_violation(CMD_NAMES[cmd], q_target, lookahead)
            if violation is not None:
                self.emu.protective_stop(violation)
                return False
            if isinstance(st.motion, rs.ServoJ):
                st.motion.set_target(q_target, lookahead)
            else:
                st.motion = rs.ServoJ(q_target, lookahead)
        elif cmd == 9:
            self._cancel_async()
            qd, a = self.d(0, 6), self.d(6)
            if isinstance(st.motion, rs.SpeedJ):
                st.motion.qd_target, st.motion.acc = qd, max(a, 1e-3)
            else:
                st.motion = rs.SpeedJ(qd, a, st.qd)
        elif cmd == 10:
            self._cancel_async()
            xd, a = self.d(0, 6), self.d(6)
            if isinstance(st.motion, rs.SpeedL):
                st.motion.xd_target, st.motion.acc = xd, max(a, 1e-3)
            else:
                st.motion = rs.SpeedL(xd, a, st.tcp_speed())
        elif cmd == 26:
            self.out_d([st.period])
        elif cmd == 27:
            self.out_d(st.q)
        elif cmd == 38:
            self.out_d(np.zeros(6))
        elif cmd == 58:
            self.out_d(rs.matrix_to_pose(ur5e.fk(st.q)))
        elif cmd == 25:
            self.out_i(1, 0)
        elif cmd == 6:
            pass  # forceMode: hold (no force control in the emulator)
        else:
            self.emu.stop_program(
                f"RT command {cmd} ({CMD_NAMES.get(cmd, '?')}) is not emulated; program stopped",
                level=logging.ERROR,
            )
            return False
        return True

    def _servo_limit_violation(self, name: str, q_target: np.ndarray, lookahead: float) -> str | None:
        """Why tracking this servo target would break the safety limits (None: within them). A real
        controller's safety system does not clip such a target: it raises a protective stop."""
        st, cfg = self.emu.state, self.emu.config
        if not ur5e.within_limits(q_target):
            return f"{name} target {np.round(q_target, 3).tolist()} is outside the joint limits"
        qd = (q_target - st.q) / max(rs.servo_time_constant(lookahead), st.period)  # as ServoJ tracks it
        joint_speed = float(np.max(np.abs(qd)))
        if joint_speed > cfg.joint_speed_limit:
            return (
                f"{name} target needs joint speed {joint_speed:.2f} rad/s > limit {cfg.joint_speed_limit:g}"
            )
        tcp_speed = float(np.linalg.norm((st.jacobian() @ qd)[:3]))
        if tcp_speed > cfg.tcp_speed_limit:
            return f"{name} target needs TCP speed {tcp_speed:.2f} m/s > limit {cfg.tcp_speed_limit:g}"
        return None

    # -- blocking commands -----------------------------------------------------------------------------
    def _done(self) -> None:
        self.out_i(0, DONE)
        self.executing = True

    def _start_motion(self, motion: rs.Motion, label: str, cmd: int, async_flag: bool) -> None:
        st = self.emu.state
        st.motion = motion
        self.busy, self.busy_cmd = label, cmd
        self.async_motion = async_flag
        if async_flag:
            self._write_async(0)
            self._done()

    def _run_blocking(self, cmd: int) -> None:
        st = self.emu.state
        name = CMD_NAMES.get(cmd, "?")
        if cmd in (1, 2, 3, 4):
            target, v, a, async_flag = self.d(0, 6), self.d(6), self.d(7), self.i(1) == 1
            if cmd in (1, 4):
                q1 = target
                if not ur5e.within_limits(q1):
                    self.emu.stop_program(
                        f"{name}: joint target outside the limits {q1.tolist()}", level=logging.ERROR
                    )
                    return
            if cmd == 1:
                motion = rs.MoveJ(st.q, q1, v, a)
            elif cmd == 2:
                res = ur5e.ik(rs.pose_to_matrix(target), st.q, st.T_flange_tcp, max_iter=200)
                if not res.success:
                    self.emu.stop_program(
                        f"moveJ_IK: get_inverse_kin failed: {res.reason}", level=logging.ERROR
                    )
                    return
                motion = rs.MoveJ(st.q, res.q, v, a)
            else:
                pose = target if cmd == 3 else st.tcp_pose(q1)
                res = ur5e.ik(rs.pose_to_matrix(pose), st.q, st.T_flange_tcp, max_iter=200)
                if not res.success:
                    self.emu.stop_program(f"{name}: target not reachable: {res.reason}", level=logging.ERROR)
                    return
                motion = rs.MoveL(st, pose, v, a)
            self._start_motion(motion, name, cmd, async_flag)
        elif cmd in (15, 16, 33, 34):
            decel = self.d(0)
            async_flag = cmd in (33, 34) and self.i(1) == 1
            linear = cmd in (16, 33) or (cmd == 15 and isinstance(st.motion, rs.SpeedL))
            self._cancel_async()
            self._start_motion(rs.Stop(st.qd, decel if decel > 0 else 10.0, linear), name, cmd, async_flag)
        elif cmd == 35:
            f = self.d(0)
            self.watchdog_freq = f if f > 0 else 0.0
            self.watchdog_armed_at = time.monotonic()
            log.info("watchdog armed on input_int_register_%d at %.3g Hz (action: stop)", self.o, f)
            self._done()
        elif cmd == 29:
            st.set_tcp_offset(self.d(0, 6))
            self._done()
        elif cmd == 40:
            self.out_d(st.tcp_offset)
            self._done()
        elif cmd == 28:
            target = st.motion.q_target if isinstance(st.motion, rs.ServoJ) else st.q
            self.out_d(st.tcp_pose(target))
            self._done()
        elif cmd == 43:
            self.out_d(st.tcp_pose())
            self._done()
        elif cmd == 44:
            q = self.d(0, 6)
            ndbl = self.emu.last_command_doubles
            T_tcp = rs.pose_to_matrix(self.d(6, 6)) if ndbl >= 12 else st.T_flange_tcp
            self.out_d(rs.matrix_to_pose(ur5e.fk(q, T_tcp)))
            self._done()
        elif cmd in (30, 46, 60, 61):
            pose = self.d(0, 6)
            seed = self.d(6, 6) if cmd in (30, 61) and np.any(self.d(6, 6)) else st.q
            res = ur5e.ik(rs.pose_to_matrix(pose), seed, st.T_flange_tcp, max_iter=200)
            if cmd in (60, 61):
                self.out_i(1, 1 if res.success else 0)
            elif not res.success:
                # On a robot a failed get_inverse_kin is a runtime error: the program stops.
                self.emu.stop_program(f"{name}: get_inverse_kin failed: {res.reason}", level=logging.ERROR)
                return
            else:
                self.out_d(res.q)
            self._done()
        elif cmd == 36:
            res = ur5e.ik(rs.pose_to_matrix(self.d(0, 6)), st.q, st.T_flange_tcp, max_iter=200)
            self.out_i(1, 1 if res.success else 0)
            self._done()
        elif cmd == 37:
            self.out_i(1, 1 if ur5e.within_limits(self.d(0, 6)) else 0)
            self._done()
        elif cmd == 39:
            T = rs.pose_to_matrix(self.d(0, 6)) @ rs.pose_to_matrix(self.d(6, 6))
            self.out_d(rs.matrix_to_pose(T))
            self._done()
        elif cmd == 47:
            self.out_i(1, 1 if float(np.max(np.abs(st.qd))) < 1e-3 else 0)
            self._done()
        elif cmd == 31:
            self.emu.protective_stop("triggerProtectiveStop (cmd 31) from the control script")
        elif cmd == 54:
            self.out_i(1, 0)
            self._done()
        elif cmd in ACK_ONLY:
            if cmd == 17:
                st.payload, st.payload_cog = self.d(0), self.d(1, 3)
            self._done()
        else:
            self.emu.stop_program(
                f"command {cmd} ({name}) is not emulated; refusing it and stopping the program "
                "(an unsupported ur_rtde call or a different ur_rtde version than 1.6.5)",
                level=logging.ERROR,
            )


class CustomFunctionProgram:
    """``sendCustomScriptFunction``: writes out_int[o]=1, runs the body (not interpreted), writes 2, ends."""

    def __init__(self, emu: Emulator, offset: int, name: str):
        self.emu, self.o, self.name, self.n = emu, offset, name, 0
        emu.state.out_int[offset] = RDY

    def tick(self, now: float) -> None:
        self.n += 1
        if self.n >= 2:
            self.emu.state.out_int[self.o] = DONE
            self.emu.stop_program(
                f"custom function {self.name} finished (body not interpreted)", level=logging.INFO
            )


class ScriptServer(ThreadedTcpServer):
    """One script port (30001 primary, 30002 secondary, 30003 realtime): accepts programs, sends nothing."""

    def __init__(self, emu: Emulator, host: str, port: int):
        super().__init__(emu, host, port)
        self.thread_name = f"script-{port}"

    def _serve(self, c: socket.socket, addr) -> None:
        buf = ""
        program: list[str] | None = None
        size = 0
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    break
                size += len(data)
                buf += data.decode("utf-8", errors="replace")
                lines = buf.split("\n")
                buf = lines.pop()
                for line in lines:
                    if program is None:
                        if _PROGRAM_START.match(line):
                            program, size = [line], len(line)
                        elif line.strip():
                            self.emu.record("script", port=self.port, line=line[:200])
                            log.warning(
                                "script port %d from %s: ignoring text outside a def/sec program "
                                "(not emulated): %r",
                                self.port,
                                addr,
                                line[:120],
                            )
                    else:
                        program.append(line)
                        if line.rstrip("\r") == "end":
                            self.emu.run_program("\n".join(program) + "\n", port=self.port)
                            program, size = None, 0
                if size > MAX_PROGRAM_BYTES or len(buf) > MAX_PROGRAM_BYTES:
                    log.error(
                        "script port %d from %s: more than %d bytes without a complete program; closing",
                        self.port,
                        addr,
                        MAX_PROGRAM_BYTES,
                    )
                    break
        except OSError:
            pass
        finally:
            if program is not None:
                log.warning(
                    "script port %d: connection closed inside an unterminated program (%d lines) — ignored",
                    self.port,
                    len(program),
                )
            self._forget(c)
