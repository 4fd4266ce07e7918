"""The UR driver (pixelvla_ros.drivers.ur_controller, its child-process host drivers.ur_process and the
ur_driver node) with the REAL ur_rtde 1.6.5 client against the UR controller emulator.

The emulator runs in its own process (ur_rtde holds the GIL in its blocking calls). The driver core runs in a
child process (UrControllerProcess, as the node runs it: a crash inside ur_rtde is then a reconnection, not a
dead test run), or in the test process where a test observes its cycles or stalls its clock; the node runs in
a child process talking DDS with this one. Motion is judged on the emulator's
own state (its TCP pose, its log of received commands), never on what the driver says it did.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("rtde_control")

from pixelvla_ros.chunk_timeline import ChunkRefused, TimedChunk  # noqa: E402
from pixelvla_ros.drivers.ur_controller import (  # noqa: E402
    CycleReport,
    DriverState,
    UrController,
    UrDriverConfig,
)
from pixelvla_ros.drivers.ur_process import UrControllerProcess  # noqa: E402
from pixelvla_ros.safety import UnsafeChunkError  # noqa: E402
from pixelvla_ros.ur5e import matrix_to_rotvec, rotvec_to_matrix  # noqa: E402
from pixelvla_ros.ur_emulator import EmulatorProcess, free_loopback_host  # noqa: E402
from pixelvla_ros.ur_emulator.testing import DashboardHooks  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_PLAYING, RUNTIME_STOPPED = 2, 1
# The RTDE watchdog in the tests: loose, because on a loaded 2-core machine the driver or the emulator
# (both Python) can miss 100 ms, which would trip the default 10 Hz and fault the driver mid-test.
WATCHDOG_HZ = 2.0
# Likewise the state age (the emulator's packets, sent by Python, can be late on a loaded machine), and the
# chunks' age: the tests send one long chunk where a policy would send one every 0.1 s.
STATE_AGE_S = 0.15
COMMAND_AGE_S = 1.9


def _wait(pred: Callable[[], bool], timeout: float = 5.0, dt: float = 0.01) -> bool:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if pred():
            return True
        time.sleep(dt)
    return pred()


def _chunk(
    t0: float,
    n: int = 10,
    dt: float = 0.1,
    step=(0.008, 0.0, 0.0),
    rot=(0.0, 0.0, 0.0),
    grip=0.0,
    hold=0,
    commit_steps=0,
) -> TimedChunk:
    """n steps of the same motion, then `hold` steps that stay there: time for the rate-limited command to
    settle on the last target (a moving chunk's end is dropped once its time has passed, by design)."""
    actions = np.zeros((n + hold, 7))
    actions[:n, 0:3], actions[:n, 3:6], actions[:, 6] = step, rot, grip
    return TimedChunk(t0, dt, actions, commit_steps=commit_steps)


def _tcp(emu: EmulatorProcess) -> np.ndarray:
    return np.array(emu.state()["tcp_pose"])


@pytest.fixture
def emu() -> Iterator[EmulatorProcess]:
    with EmulatorProcess(host=free_loopback_host(), version="5.11.1") as e:
        yield e


@contextlib.contextmanager
def running_driver(emu: EmulatorProcess, **kwargs) -> Iterator[UrController | UrControllerProcess]:
    """The driver core, RUNNING; in a child process unless the test observes cycles or injects a clock."""
    config = UrDriverConfig(
        robot_ip=emu.host,
        enable_actuation=kwargs.pop("enable_actuation", True),
        commit_steps=kwargs.pop("commit_steps", 0),
        watchdog_min_frequency=WATCHDOG_HZ,
        reconnect_backoff_min=0.2,
        reconnect_backoff_max=0.8,
        max_state_age=kwargs.pop("max_state_age", STATE_AGE_S),
        max_command_age=kwargs.pop("max_command_age", COMMAND_AGE_S),
    )
    host = UrController if kwargs else UrControllerProcess
    driver = host(config, **kwargs).start()
    try:
        assert _wait(lambda: driver.status().state is DriverState.RUNNING, 10.0), driver.status()
        yield driver
    finally:
        driver.stop()
    assert driver.status().state is DriverState.STOPPED


# ------------------------------------------------------------------------------------------------------------
def test_servol_streaming_moves_the_tcp_to_the_chunk_targets(emu: EmulatorProcess) -> None:
    with running_driver(emu) as driver:
        assert emu.state()["watchdog_hz"] == pytest.approx(WATCHDOG_HZ)
        p0 = _tcp(emu)
        t0 = time.monotonic()
        driver.submit(_chunk(t0, step=(0.008, -0.004, 0.003), rot=(0.0, 0.0, 0.02), grip=1.0, hold=5))
        time.sleep(1.5 + 0.3)  # the chunk (holding its end for 0.5 s), then settling of the servo tracking
        p1 = _tcp(emu)
        status = driver.status()
        servo = emu.commands(kind="command", name="servoL")
    np.testing.assert_allclose(
        p1[:3] - p0[:3], [0.08, -0.04, 0.03], atol=0.003, err_msg=f"commanded {status.command_pose - p0}"
    )
    turned = matrix_to_rotvec(rotvec_to_matrix(p1[3:]) @ rotvec_to_matrix(p0[3:]).T)
    np.testing.assert_allclose(turned, [0.0, 0.0, 0.2], atol=0.01)
    # One "hold here" servoL when armed, then the chunk streamed at the robot's rate (loose: a shared
    # machine), then holding: kicks only.
    moving = servo[1:]
    assert len(moving) > 200 and len(moving) / (moving[-1]["t"] - moving[0]["t"]) > 200.0, len(moving)
    assert status.state is DriverState.RUNNING and status.halted and status.actuation
    assert status.gripper_command == 1.0  # rate-limited to 1 within the chunk's second
    assert status.cycles > 300 and 0.0015 < status.p99_period < 0.05
    np.testing.assert_allclose(status.measured_pose[:3], p1[:3], atol=1e-3)
    assert status.chunks_accepted == 1 and status.chunks_refused == 0


def test_dry_run_reports_but_never_commands(emu: EmulatorProcess) -> None:
    p0 = _tcp(emu)
    with running_driver(emu, enable_actuation=False) as driver:
        driver.submit(_chunk(time.monotonic(), hold=5))
        time.sleep(1.6)
        status = driver.status()
        moved = _tcp(emu) - p0
    np.testing.assert_allclose(moved, 0.0, atol=1e-9)
    assert emu.commands(kind="script") == [] and emu.commands(kind="command") == []  # no control script
    assert status.state is DriverState.RUNNING and not status.actuation
    assert status.command_pose[0] - p0[0] == pytest.approx(0.08, abs=0.003)  # computed and reported


def test_stale_chunk_halts_within_two_cycles(emu: EmulatorProcess) -> None:
    reports: list[CycleReport] = []
    with running_driver(emu, enable_actuation=False, on_cycle=reports.append) as driver:
        chunk = _chunk(time.monotonic(), n=3, dt=0.05)
        driver.submit(chunk)
        submitted = time.monotonic()
        # cycles, not wall time: a loaded machine can stall the loop for longer than a few cycles
        assert _wait(lambda: sum(r.t > chunk.t_end for r in reports) >= 3, 5.0)
    during = [r for r in reports if submitted <= r.t <= chunk.t_end]
    after = [r for r in reports if r.t > chunk.t_end]
    assert len(during) > 20 and all(r.fresh and not r.command.halted for r in during)
    assert not after[0].fresh and after[1].command.halted  # the filter's stale_cycles = 2
    assert "no fresh command" in after[1].command.reasons[0]


@pytest.mark.parametrize(("override", "own"), [(0, 3), (None, 3), (3, 0)])
def test_a_newer_chunk_takes_over_after_the_committed_steps(
    emu: EmulatorProcess, override: int | None, own: int
) -> None:
    """Chunk A moves +x, chunk B (from a later image) -x. Without commitment B's waypoints take over at once;
    with 3 committed steps (the chunks' own, or the driver's override) the arm follows A until 3 of A's steps
    have run, then B."""
    commit_steps = own if override is None else override
    reports: list[CycleReport] = []
    with running_driver(
        emu, enable_actuation=False, on_cycle=reports.append, commit_steps=override
    ) as driver:
        time.sleep(0.3)  # measured poses to integrate the chunks from
        now = time.monotonic()
        a = _chunk(now - 0.15, step=(0.008, 0.0, 0.0), commit_steps=own)  # starts at its step 1
        driver.submit(a)
        assert _wait(lambda: any(r.t > now for r in reports), 2.0)
        driver.submit(_chunk(time.monotonic() - 0.01, step=(-0.008, 0.0, 0.0), commit_steps=own))
        switched = a.t0 + 0.4  # A started at its step 1: steps 1, 2, 3 are committed
        assert _wait(lambda: any(r.t > switched + 0.4 for r in reports), 3.0)
    x = {r.t: r.pose[0] for r in reports}
    at = lambda t: x[min(x, key=lambda s: abs(s - t))]  # noqa: E731
    if commit_steps:
        assert at(switched - 0.02) > at(switched - 0.15) + 0.005  # still going +x with A
        assert at(switched + 0.35) < at(switched) - 0.005  # then -x with B (braking first)
    else:
        assert at(switched - 0.02) < at(switched - 0.15) - 0.005  # B at once


def test_stalled_driver_trips_the_watchdog_and_the_arm_stops(emu: EmulatorProcess) -> None:
    gate = threading.Event()
    gate.set()

    def clock() -> float:  # the control thread blocks here while the gate is closed: a stalled driver
        gate.wait()
        return time.monotonic()

    with running_driver(emu, clock=clock) as driver:
        p0 = _tcp(emu)
        driver.submit(_chunk(time.monotonic(), n=20))
        time.sleep(0.4)
        gate.clear()
        assert _wait(lambda: emu.state()["runtime_state"] == RUNTIME_STOPPED, 1.0 / WATCHDOG_HZ + 1.0)
        assert any("watchdog" in r["message"] and "tripped" in r["message"] for r in emu.logs("ERROR"))
        time.sleep(0.3)  # the program stop's deceleration
        p1 = _tcp(emu)
        time.sleep(0.3)
        assert p1[0] - p0[0] > 0.01  # it was moving
        np.testing.assert_allclose(_tcp(emu), p1, atol=1e-6)
        gate.set()
        assert _wait(lambda: driver.status().state is DriverState.FAULT, 2.0)
        assert "control script stopped" in driver.status().reason
        np.testing.assert_allclose(_tcp(emu), p1, atol=1e-6)
        ok, message = driver.rearm()
        assert ok, message
        assert emu.state()["runtime_state"] == RUNTIME_PLAYING and emu.state()["watchdog_hz"] == WATCHDOG_HZ
        time.sleep(0.2)
        np.testing.assert_allclose(_tcp(emu), p1, atol=1e-6)  # the restarted script replays no old servoL


def test_protective_stop_faults_until_cleared_and_rearmed(emu: EmulatorProcess) -> None:
    with running_driver(emu) as driver:
        driver.submit(_chunk(time.monotonic(), n=20))
        time.sleep(0.3)
        emu.protective_stop("test: collision")
        assert _wait(lambda: driver.status().reason == "protective stop", 2.0), driver.status()
        assert driver.status().state is DriverState.FAULT
        p1 = _tcp(emu)
        with pytest.raises(ChunkRefused, match="FAULT"):
            driver.submit(_chunk(time.monotonic(), step=(0.0, 0.0, 0.005)))
        ok, message = driver.rearm()
        assert not ok and "fault still active: protective stop" in message
        with DashboardHooks(emu.host) as dash:
            assert dash.send("unlock protective stop") == "Protective stop releasing"
        assert _wait(lambda: emu.state()["safety_mode"] == 1, 2.0)
        with pytest.raises(ChunkRefused, match="FAULT"):  # cleared on the robot, but not re-armed
            driver.submit(_chunk(time.monotonic(), step=(0.0, 0.0, 0.005)))
        time.sleep(0.3)
        np.testing.assert_allclose(_tcp(emu), p1, atol=1e-9)
        ok, message = driver.rearm()
        assert ok, message
        assert (
            driver.status().state is DriverState.RUNNING and emu.state()["runtime_state"] == RUNTIME_PLAYING
        )
        time.sleep(0.2)
        np.testing.assert_allclose(_tcp(emu), p1, atol=1e-6)  # re-arming alone does not move the arm
        driver.submit(_chunk(time.monotonic(), n=5, step=(0.0, 0.0, 0.005)))
        time.sleep(0.8)
        assert _tcp(emu)[2] - p1[2] > 0.015
        assert driver.status().chunks_refused == 2


def test_emergency_stop_needs_release_power_on_and_rearm(emu: EmulatorProcess) -> None:
    with running_driver(emu) as driver:
        p0 = _tcp(emu)
        emu.emergency_stop("test: e-stop pressed")
        assert _wait(lambda: driver.status().reason == "emergency stop", 2.0), driver.status()
        assert driver.status().state is DriverState.FAULT
        ok, message = driver.rearm()
        assert not ok and "emergency stop" in message
        emu.release_emergency_stop()  # the arm stays powered off, as a real one does
        answers: list[tuple[bool, str]] = []

        def refused_for_power() -> bool:  # once the receive stream shows the release
            answers.append(driver.rearm())
            return "POWER_OFF" in answers[-1][1]

        assert _wait(refused_for_power, 2.0), answers
        assert not any(ok for ok, _ in answers)
        emu.power_on()
        assert _wait(lambda: driver.rearm()[0], 2.0)
        assert driver.status().state is DriverState.RUNNING
        time.sleep(0.2)
    np.testing.assert_allclose(_tcp(emu), p0, atol=1e-6)


def test_reconnects_after_controller_restart_and_waits_for_fresh_chunks(emu: EmulatorProcess) -> None:
    with running_driver(emu) as driver:
        t_old = time.monotonic()
        driver.submit(_chunk(t_old, n=40, step=(0.003, 0.0, 0.0)))  # 4 s of slow motion
        time.sleep(0.2)
        emu.restart_controller(downtime_s=1.0)
        assert _wait(lambda: driver.status().state is DriverState.RECONNECTING, 2.0)
        t_lost = time.monotonic()
        assert _wait(lambda: driver.status().state is DriverState.RUNNING, 10.0), driver.status()
        p1 = _tcp(emu)
        time.sleep(0.4)
        np.testing.assert_allclose(_tcp(emu), p1, atol=1e-9)  # the old chunk is gone: holding
        assert driver.status().halted and emu.state()["runtime_state"] == RUNTIME_PLAYING
        # its image predates the reconnection (too old by now, or no pose of its instant since reconnecting)
        with pytest.raises(ChunkRefused, match="no measured TCP pose|max_command_age"):
            driver.submit(_chunk(t_lost))
        driver.submit(_chunk(time.monotonic(), n=5, step=(0.0, 0.005, 0.0)))
        time.sleep(0.8)
        assert _tcp(emu)[1] - p1[1] > 0.015


def test_nan_and_out_of_limit_chunks_are_refused_without_motion(emu: EmulatorProcess) -> None:
    with running_driver(emu) as driver:
        p0 = _tcp(emu)
        now = time.monotonic()
        nan = _chunk(now)
        nan.actions[3, 1] = np.nan
        with pytest.raises(UnsafeChunkError, match="NaN"):
            driver.submit(nan)
        with pytest.raises(UnsafeChunkError, match="translates"):
            driver.submit(_chunk(now, step=(0.2, 0.0, 0.0)))
        with pytest.raises(ChunkRefused, match="ahead of the driver clock"):
            driver.submit(_chunk(now + 1.0))
        time.sleep(0.3)
        status = driver.status()
    np.testing.assert_allclose(_tcp(emu), p0, atol=1e-9)
    assert status.chunks_refused == 3 and status.chunks_accepted == 0 and "ahead" in status.last_refusal
    targets = np.array([c["doubles"][:3] for c in emu.commands(kind="command", name="servoL")])
    np.testing.assert_allclose(targets, np.broadcast_to(p0[:3], targets.shape), atol=1e-9)  # only "hold here"


def test_a_crash_of_the_client_library_is_a_reconnection_without_motion(emu: EmulatorProcess) -> None:
    """SIGSEGV in the RTDE client process (as ur_rtde crashed after controller restarts): RECONNECTING, the
    arm stops (the controller's watchdog ends the orphaned script), a new client process connects, chunks
    from images before it are refused, new ones move the arm."""
    with running_driver(emu) as driver:
        p0 = _tcp(emu)
        driver.submit(_chunk(time.monotonic(), n=20, step=(0.004, 0.0, 0.0)))
        time.sleep(0.3)
        t_crash, first = time.monotonic(), driver.pid
        os.kill(first, signal.SIGSEGV)
        assert _wait(lambda: driver.status().state is DriverState.RECONNECTING, 2.0), driver.status()
        assert "SIGSEGV" in driver.status().reason and driver.status().halted
        with pytest.raises(ChunkRefused, match="RECONNECTING"):
            driver.submit(_chunk(time.monotonic()))
        assert _wait(lambda: emu.state()["runtime_state"] == RUNTIME_STOPPED, 1.0 / WATCHDOG_HZ + 1.0)
        p1 = _tcp(emu)
        assert p1[0] - p0[0] > 0.005  # it was moving
        assert _wait(lambda: driver.status().state is DriverState.RUNNING, 30.0), driver.status()
        assert driver.pid != first and driver.restarts == 1
        time.sleep(0.3)
        np.testing.assert_allclose(_tcp(emu), p1, atol=1e-6)  # the old chunk died with the old process
        with pytest.raises(ChunkRefused, match="no measured TCP pose"):
            driver.submit(_chunk(t_crash))
        driver.submit(_chunk(time.monotonic(), n=5, step=(0.0, 0.005, 0.0)))
        time.sleep(0.8)
        assert _tcp(emu)[1] - p1[1] > 0.015


def test_a_hung_client_process_is_replaced(emu: EmulatorProcess) -> None:
    with running_driver(emu) as driver:
        first = driver.pid
        os.kill(first, signal.SIGSTOP)  # a hang: alive, silent
        assert _wait(lambda: "hung" in driver.status().reason, 5.0), driver.status()
        assert driver.status().state is DriverState.RECONNECTING
        assert _wait(lambda: driver.status().state is DriverState.RUNNING, 30.0), driver.status()
        assert driver.pid != first


def test_delayed_robot_state_faults_until_fresh_and_rearmed(emu: EmulatorProcess) -> None:
    """RTDE packets 0.2 s late for 2 s: FAULT at once (the driver would integrate commands from stale poses),
    no motion, re-arm refused while late, granted once the state is fresh again."""
    with running_driver(emu) as driver:
        driver.submit(_chunk(time.monotonic(), n=30, step=(0.003, 0.0, 0.0)))
        time.sleep(0.3)
        emu.delay_packets(0.2, duration_s=2.0)
        assert _wait(lambda: driver.status().state is DriverState.FAULT, 1.0), driver.status()
        assert "robot state" in driver.status().reason and "late" in driver.status().reason
        time.sleep(0.5)  # the servo settles on the last target (0.3 s old state shows it still moving)
        p1 = _tcp(emu)
        ok, message = driver.rearm()
        assert not ok and "late" in message
        time.sleep(0.5)
        np.testing.assert_allclose(_tcp(emu), p1, atol=1e-6)
        assert _wait(lambda: driver.rearm()[0], 5.0)
        assert driver.status().state is DriverState.RUNNING
        time.sleep(0.3)
    np.testing.assert_allclose(_tcp(emu), p1, atol=1e-6)


def test_the_newest_chunk_too_old_halts_at_once(emu: EmulatorProcess) -> None:
    """max_command_age: a 2 s chunk whose image is 0.3 s old halts the arm the first cycle after, not when
    the chunk ends; a chunk from an older image is refused."""
    reports: list[CycleReport] = []
    with running_driver(emu, enable_actuation=False, on_cycle=reports.append, max_command_age=0.3) as driver:
        time.sleep(0.2)
        t0 = time.monotonic()
        with pytest.raises(ChunkRefused, match="max_command_age"):
            driver.submit(_chunk(t0 - 0.35, n=20))
        driver.submit(_chunk(t0, n=20))
        assert _wait(lambda: any(r.t > t0 + 0.4 for r in reports), 3.0)
    during = [r for r in reports if t0 + 0.05 < r.t < t0 + 0.29]
    after = [r for r in reports if r.t > t0 + 0.3]
    assert during and all(not r.command.halted for r in during)
    assert after and all(r.command.halted for r in after)
    assert "max_command_age" in after[0].command.reasons[0]


# ------------------------------------------------------------------------------------------------------------
def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_config_file_holds_the_node_defaults() -> None:
    from pixelvla_ros.nodes.ur_driver_node import PARAMETERS

    shipped = _flatten(
        yaml.safe_load((ROOT / "config" / "ur_driver.yaml").read_text())["ur_driver"]["ros__parameters"]
    )
    assert shipped == {p.name: p.default for p in PARAMETERS}
    for p in PARAMETERS:  # the YAML types must be the declared ones (rclpy refuses 1 for a double)
        assert type(shipped[p.name]) is type(p.default), p.name


def test_node_executes_chunks_and_reports_over_ros(emu: EmulatorProcess, ros_domain: int) -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped, Vector3
    from pixelvla_ros.msg import ActionChunk
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64
    from std_srvs.srv import Trigger

    exe = Path(sys.prefix) / "lib" / "pixelvla_ros" / "ur_driver"
    assert exe.is_file(), f"{exe} missing: run `make build`"
    proc = subprocess.Popen(
        [str(exe), "--ros-args", "-p", f"robot_ip:={emu.host}", "-p", "enable_actuation:=true"]
        + ["-p", f"watchdog_min_frequency:={WATCHDOG_HZ}", "-p", f"max_state_age:={STATE_AGE_S}"]
        + ["-p", f"max_command_age:={COMMAND_AGE_S}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    got: dict[str, list] = {"pose": [], "diag": [], "joints": [], "gripper": []}
    context = rclpy.Context()
    try:
        rclpy.init(context=context)
        node = rclpy.create_node("ur_driver_test", context=context)
        node.create_subscription(PoseStamped, "/pixelvla/tcp_pose", got["pose"].append, 10)
        node.create_subscription(DiagnosticArray, "/diagnostics", got["diag"].append, 10)
        node.create_subscription(JointState, "/joint_states", got["joints"].append, 10)
        node.create_subscription(Float64, "/pixelvla/gripper_command", got["gripper"].append, 10)
        pub = node.create_publisher(ActionChunk, "/pixelvla/action_chunk", 10)
        rearm = node.create_client(Trigger, "/ur_driver/rearm")
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)

        def spin_until(pred: Callable[[], bool], timeout: float) -> bool:
            t_end = time.monotonic() + timeout
            while time.monotonic() < t_end and not pred():
                assert proc.poll() is None, proc.stdout.read()
                executor.spin_once(timeout_sec=0.05)
            return pred()

        def values() -> dict[str, str]:
            return {kv.key: kv.value for kv in got["diag"][-1].status[0].values}

        assert spin_until(lambda: got["diag"] and values()["state"] == "RUNNING", 30.0)
        assert spin_until(lambda: pub.get_subscription_count() > 0 and len(got["pose"]) > 0, 10.0)
        z0 = got["pose"][-1].pose.position.z

        def chunk_msg(n: int) -> ActionChunk:
            msg = ActionChunk(dt=0.1, source_image_stamp=node.get_clock().now().to_msg())
            msg.header.frame_id = "base"
            msg.translation = [Vector3(z=0.01) for _ in range(n)]
            msg.rotation = [Vector3() for _ in range(n)]
            msg.gripper = [1.0] * n
            return msg

        bad = chunk_msg(5)
        bad.rotation = bad.rotation[:2]

        def refused() -> bool:  # the first messages after discovery can be lost: repeat the harmless one
            pub.publish(bad)
            return spin_until(lambda: values()["chunks_refused"] != "0", 0.6)

        assert spin_until(refused, 10.0)
        pub.publish(chunk_msg(10))  # 0.1 m in 1 s; a loaded machine may deliver it late, with steps past
        assert spin_until(lambda: got["pose"][-1].pose.position.z - z0 > 0.05, 5.0), values()
        assert spin_until(lambda: values()["chunks_accepted"] == "1", 3.0)
        diag = got["diag"][-1].status[0]
        assert diag.level == b"\x00" and diag.message.startswith("RUNNING") and values()["dry_run"] == "False"
        assert "rotations" in values()["last_refusal"] and float(values()["cycle_period_p99_ms"]) > 1.0
        # The gripper command closes at the rate limit (2.5/s at the nominal cycle; a loaded loop is slower).
        assert spin_until(lambda: got["joints"][-1].position[-1] > 0.5, 2.0)
        joints = got["joints"][-1]
        assert len(joints.position) == 7 and joints.name[-1] == "gripper"
        assert got["gripper"][-1].data == pytest.approx(joints.position[-1])
        assert got["pose"][-1].header.frame_id == "base"
        assert rearm.wait_for_service(timeout_sec=5.0)
        future = rearm.call_async(Trigger.Request())
        assert spin_until(future.done, 10.0)
        assert future.result().success and future.result().message == "already running"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=15.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        rclpy.try_shutdown(context=context)
        print(out)  # the node's log, shown when the test fails
    assert proc.returncode == 0, out
    assert emu.commands(kind="command", name="stopScript"), out  # a clean shutdown ends the control script
