"""Raw-socket tests of the UR emulator: framing, recipes, IN_USE, bad input on every port, plus unit tests of
the protocol helpers and motion profiles. No ur_rtde client here; every socket has a timeout."""

from __future__ import annotations

import socket
import struct
import time

import numpy as np
import pytest

from pixelvla_ros import ur5e
from pixelvla_ros.ur_emulator import EmulatorProcess, free_loopback_host
from pixelvla_ros.ur_emulator import robot_state as rs
from pixelvla_ros.ur_emulator import rtde_protocol as rp
from pixelvla_ros.ur_emulator.script_server import parse_offset


class RawRTDE:
    def __init__(self, host: str, timeout: float = 2.0):
        self.sock = socket.create_connection((host, 30004), timeout=timeout)
        self.reader = rp.FrameReader(max_size=65535)
        self.queue: list[tuple[int, bytes]] = []

    def send(self, ptype: int, payload: bytes = b"") -> None:
        self.sock.sendall(rp.pack_package(ptype, payload))

    def recv(self, want: int | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
        t_end = time.monotonic() + timeout
        while True:
            while self.queue:
                ptype, payload = self.queue.pop(0)
                if want is None or ptype == want:
                    return ptype, payload
            self.sock.settimeout(max(0.01, t_end - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the emulator")
            self.queue.extend(self.reader.feed(data))

    def request(self, ptype: int, payload: bytes = b"") -> bytes:
        self.send(ptype, payload)
        return self.recv(ptype)[1]

    def handshake(self, names: list[str], freq: float = 500.0) -> bytes:
        assert self.request(rp.RTDE_REQUEST_PROTOCOL_VERSION, struct.pack(">H", 2)) == b"\x01"
        return self.request(
            rp.RTDE_CONTROL_PACKAGE_SETUP_OUTPUTS, struct.pack(">d", freq) + ",".join(names).encode()
        )

    def closed(self, timeout: float = 2.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def emu():
    with EmulatorProcess(host=free_loopback_host()) as e:
        yield e


def _healthy(host: str) -> bool:
    """A well-behaved client still gets a handshake and streamed data."""
    c = RawRTDE(host)
    try:
        reply = c.handshake(["timestamp", "actual_q"])
        assert reply[:1] == b"\x01" and reply[1:] == b"DOUBLE,VECTOR6D"
        assert c.request(rp.RTDE_CONTROL_PACKAGE_START) == b"\x01"
        _, payload = c.recv(rp.RTDE_DATA_PACKAGE)
        assert len(payload) == 1 + 8 + 48
        return True
    finally:
        c.close()


def _logged(emu, text: str) -> bool:
    return any(text in r["message"] for r in emu.logs("INFO"))


def test_handshake_types_and_versions(emu):
    c = RawRTDE(emu.host)
    assert c.request(rp.RTDE_REQUEST_PROTOCOL_VERSION, struct.pack(">H", 1)) == b"\x00"  # v1 not emulated
    assert c.request(rp.RTDE_REQUEST_PROTOCOL_VERSION, struct.pack(">H", 2)) == b"\x01"
    assert struct.unpack(">IIII", c.request(rp.RTDE_GET_URCONTROL_VERSION))[:3] == (5, 11, 1)
    names = "timestamp,joint_mode,runtime_state,payload_cog,actual_digital_output_bits,robot_mode,"
    reply = c.request(rp.RTDE_CONTROL_PACKAGE_SETUP_OUTPUTS, struct.pack(">d", 500.0) + names.encode())
    assert reply == b"\x01DOUBLE,VECTOR6INT32,UINT32,VECTOR3D,UINT64,INT32"
    bad = c.request(
        rp.RTDE_CONTROL_PACKAGE_SETUP_OUTPUTS, struct.pack(">d", 500.0) + b"timestamp,no_such_field,"
    )
    assert bad == b"\x00DOUBLE,NOT_FOUND"
    # P answered in any state, even before S; S then P then S again.
    assert c.request(rp.RTDE_CONTROL_PACKAGE_PAUSE) == b"\x01"
    assert c.request(rp.RTDE_CONTROL_PACKAGE_START) == b"\x01"
    _, payload = c.recv(rp.RTDE_DATA_PACKAGE)
    assert payload[0] == 1 and len(payload) == 1 + 8 + 24 + 4 + 24 + 8 + 4
    assert c.request(rp.RTDE_CONTROL_PACKAGE_PAUSE) == b"\x01"
    c.close()


def test_input_recipes_numbered_and_in_use(emu):
    a, b = RawRTDE(emu.host), RawRTDE(emu.host)
    for x in (a, b):
        assert x.request(rp.RTDE_REQUEST_PROTOCOL_VERSION, struct.pack(">H", 2)) == b"\x01"
    assert a.request(
        rp.RTDE_CONTROL_PACKAGE_SETUP_INPUTS, b"input_int_register_5,input_double_register_5,"
    ) == (b"\x01INT32,DOUBLE")
    assert (
        a.request(rp.RTDE_CONTROL_PACKAGE_SETUP_INPUTS, b"input_int_register_5,") == b"\x02INT32"
    )  # own: ok
    reply = b.request(rp.RTDE_CONTROL_PACKAGE_SETUP_INPUTS, b"input_int_register_6,input_int_register_5,")
    assert reply == b"\x00INT32,IN_USE"
    assert b.request(rp.RTDE_CONTROL_PACKAGE_SETUP_INPUTS, b"actual_q,") == b"\x00NOT_FOUND"  # output only
    # An input data package without START is applied (RTDEIOInterface never sends S).
    a.send(rp.RTDE_DATA_PACKAGE, b"\x01" + struct.pack(">id", 42, 1.5))
    time.sleep(0.05)
    a.close()
    time.sleep(0.2)
    # Ownership is released on disconnect; the value persists.
    assert b.request(rp.RTDE_CONTROL_PACKAGE_SETUP_INPUTS, b"input_int_register_5,") == b"\x01INT32"
    reply = b.handshake(["input_int_register_5", "input_double_register_5"])
    assert reply == b"\x01INT32,DOUBLE"
    assert b.request(rp.RTDE_CONTROL_PACKAGE_START) == b"\x01"
    _, payload = b.recv(rp.RTDE_DATA_PACKAGE)
    assert struct.unpack(">id", payload[1:]) == (42, 1.5)
    b.close()
    assert _logged(emu, "IN_USE")


def test_malformed_frames_close_only_that_connection(emu):
    # size field smaller than the header
    c = RawRTDE(emu.host)
    c.sock.sendall(b"\x00\x01\x56")
    assert c.closed()
    c.close()
    assert _logged(emu, "smaller than the 3-byte header")
    # oversized frame
    c = RawRTDE(emu.host)
    c.sock.sendall(struct.pack(">HB", 60000, rp.RTDE_CONTROL_PACKAGE_SETUP_INPUTS) + b"x" * 100)
    assert c.closed()
    c.close()
    assert _logged(emu, "exceeds the limit")
    # truncated frame, then the client goes away
    c = RawRTDE(emu.host)
    c.sock.sendall(struct.pack(">HB", 50, rp.RTDE_CONTROL_PACKAGE_SETUP_INPUTS) + b"input_int")
    time.sleep(0.1)
    c.close()
    time.sleep(0.2)
    assert _logged(emu, "incomplete package")
    assert _healthy(emu.host)


def test_bad_packages_are_dropped_and_the_connection_survives(emu):
    c = RawRTDE(emu.host)
    assert c.request(rp.RTDE_REQUEST_PROTOCOL_VERSION, struct.pack(">H", 2)) == b"\x01"
    assert c.request(rp.RTDE_CONTROL_PACKAGE_SETUP_INPUTS, b"input_double_register_30,") == b"\x01DOUBLE"
    c.send(rp.RTDE_DATA_PACKAGE, b"\x01" + b"\x00" * 3)  # wrong length
    c.send(rp.RTDE_DATA_PACKAGE, b"\x07" + b"\x00" * 8)  # unknown recipe id
    c.send(rp.RTDE_DATA_PACKAGE, b"")  # empty
    c.send(0x42, b"junk")  # unknown package type
    c.send(rp.RTDE_REQUEST_PROTOCOL_VERSION, b"\x00")  # malformed V
    assert c.recv(rp.RTDE_REQUEST_PROTOCOL_VERSION)[1] == b"\x00"
    assert c.request(rp.RTDE_CONTROL_PACKAGE_SETUP_OUTPUTS, b"\x00") == b"\x00NOT_FOUND"  # no frequency
    assert struct.unpack(">IIII", c.request(rp.RTDE_GET_URCONTROL_VERSION))[0] == 5  # still in step
    c.close()
    assert _logged(emu, "expected 8; dropped") and _logged(emu, "unknown input recipe 7")
    assert _logged(emu, "unknown package type 66")


def test_client_that_never_starts(emu):
    lazy = RawRTDE(emu.host)
    assert lazy.handshake(["timestamp"]) == b"\x01DOUBLE"
    with pytest.raises(TimeoutError):
        lazy.recv(rp.RTDE_DATA_PACKAGE, timeout=0.3)  # nothing streamed before START
    assert _healthy(emu.host)  # others unaffected
    assert lazy.request(rp.RTDE_CONTROL_PACKAGE_START) == b"\x01"
    _, payload = lazy.recv(rp.RTDE_DATA_PACKAGE)
    assert len(payload) == 9
    lazy.close()


def test_client_that_never_reads_does_not_stall_others(emu):
    hog = RawRTDE(emu.host)
    many = [n for n in rp.OUTPUT_FIELDS if n not in rp.INPUT_FIELDS]  # ~2.5 KB per package
    hog.handshake(many)
    assert hog.request(rp.RTDE_CONTROL_PACKAGE_START) == b"\x01"
    time.sleep(1.5)  # it never reads: its socket buffer fills, packages get dropped
    assert _healthy(emu.host)
    st = emu.state()
    hog.close()
    assert st["tick_overruns"] < 50
    assert any(c["dropped"] > 0 for c in st["rtde"])


def test_garbage_on_script_and_dashboard_ports(emu):
    for port in (30001, 30002, 30003):
        s = socket.create_connection((emu.host, port), timeout=2)
        s.sendall(b"\x00\xff\xfe garbage\nmovej([0,0,0,0,0,0])\n")
        s.sendall(b'def my_prog():\n  textmsg("hi")\nend\n')
        time.sleep(0.1)
        s.close()
    time.sleep(0.2)
    st = emu.state()
    assert st["runtime_state"] == 1 and st["program"] is None
    assert _logged(emu, "ignoring text outside") and _logged(emu, "UNSUPPORTED PROGRAM 'my_prog'")
    d = socket.create_connection((emu.host, 29999), timeout=2)
    f = d.makefile("rwb")
    assert f.readline() == b"Connected: Universal Robots Dashboard Server\n"
    f.write(b"\xff\xfe bogus command\nrobotmode\n")
    f.flush()
    assert f.readline().startswith(b"could not understand")
    assert f.readline() == b"Robotmode: RUNNING\n"
    f.write(b"quit\n")
    f.flush()
    assert f.readline() == b"Disconnected\n"
    d.close()
    assert _healthy(emu.host)


def test_dashboard_state_wiring(emu):
    d = socket.create_connection((emu.host, 29999), timeout=2)
    f = d.makefile("rwb")
    f.readline()

    def ask(cmd: str) -> str:
        f.write((cmd + "\n").encode())
        f.flush()
        return f.readline().decode()

    assert ask("PolyscopeVersion").startswith("URSoftware 5.11.1.")
    assert ask("get serial number").strip().isdigit()
    emu.protective_stop()
    assert ask("safetystatus") == "Safetystatus: PROTECTIVE_STOP\n"
    assert ask("unlock protective stop") == "Protective stop releasing\n"
    assert ask("safetymode") == "Safetymode: NORMAL\n"
    assert ask("power off") == "Powering off\n" and ask("robotmode") == "Robotmode: POWER_OFF\n"
    assert ask("brake release").startswith("Failed")
    assert ask("power on") == "Powering on\n" and ask("robotmode") == "Robotmode: IDLE\n"
    assert ask("brake release") == "Brake releasing\n" and ask("robotmode") == "Robotmode: RUNNING\n"
    assert ask("play").startswith("Failed")
    assert ask("load /programs/x.urp") == "Loading program: /programs/x.urp\n"
    assert ask("play") == "Starting program\n" and ask("programState") == "PLAYING /programs/x.urp\n"
    assert ask("running") == "Program running: true\n"
    assert ask("pause") == "Pausing program\n"
    assert ask("stop") == "Stopped\n" and ask("running") == "Program running: false\n"
    assert ask("emulator ping {}") == '{"ok": true, "result": "pong"}\n'
    assert '"ok": false' in ask("emulator no_such_hook {}")
    d.close()


# -- unit tests ---------------------------------------------------------------------------------------------
def test_frame_reader_splits_and_joins():
    data = rp.pack_package(86, b"\x00\x02") + rp.pack_package(118) + rp.pack_package(83)
    r = rp.FrameReader()
    out = []
    for i in range(len(data)):  # byte by byte
        out += r.feed(data[i : i + 1])
    assert out == [(86, b"\x00\x02"), (118, b""), (83, b"")]
    with pytest.raises(rp.ProtocolError):
        rp.FrameReader().feed(b"\x00\x02\x56")


def test_recipe_roundtrip_and_tables():
    names = ["input_int_register_0", "input_double_register_3", "external_force_torque"]
    rec = rp.Recipe.build(1, names, [rp.INPUT_FIELDS[n] for n in names])
    body = rec.struct.pack(7, 2.5, *range(6))
    assert rec.unpack(body) == {names[0]: 7, names[1]: 2.5, names[2]: tuple(float(x) for x in range(6))}
    assert rp.OUTPUT_FIELDS["joint_mode"] == "VECTOR6INT32" and rp.OUTPUT_FIELDS["payload_cog"] == "VECTOR3D"
    assert rp.OUTPUT_FIELDS["safety_status_bits"] == "UINT32" and rp.OUTPUT_FIELDS["robot_mode"] == "INT32"
    assert rp.parse_names(b"a,b,,c,") == ["a", "b", "c"]
    assert rp.parse_version("3.15") == (3, 15, 1, 108318)


def test_parse_offset_from_script_text():
    text = (
        "def rtde_control():\n    global reg_offset_float = # float register offset\n24\n"
        "    global reg_offset_int = # int register offset\n24\nend\n"
    )
    assert parse_offset(text) == (24, 24)
    assert parse_offset("def x():\nend\n") == (None, None)


def test_trapezoid_and_motion_generators():
    p = rs.Trapezoid(1.0, 0.5, 1.0)
    assert p.duration == pytest.approx(2.5) and p.s(p.duration) == pytest.approx(1.0)
    tri = rs.Trapezoid(0.01, 1.0, 1.0)
    assert tri.vpeak < 1.0 and tri.s(tri.duration / 2) == pytest.approx(0.005)
    st = rs.RobotState((5, 11, 1, 0))
    q1 = ur5e.Q_HOME + 0.5
    st.motion = rs.MoveJ(st.q, q1, 10.0, 100.0)  # asks for more than the joint speed limit
    for _ in range(2000):
        st.step(0.002)
        assert np.max(np.abs(st.qd)) <= np.pi + 1e-9
    np.testing.assert_allclose(st.q, q1, atol=1e-9)
    st.motion = rs.SpeedL([0, 0, 0.1, 0, 0, 0], 1.0, np.zeros(6))
    z0 = st.tcp_pose()[2]
    for _ in range(500):
        st.step(0.002)
    assert st.tcp_pose()[2] - z0 == pytest.approx(0.095, abs=0.003)  # 1 s at 0.1 m/s minus the 0.1 s ramp
    st.motion = rs.Stop(st.qd, 1.0, linear=True)
    for _ in range(100):
        st.step(0.002)
    assert st.motion.done and not np.any(st.qd)
