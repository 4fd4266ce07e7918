"""The simulated arm driver (ROS-free core): executes timestamped chunks through the safety filter, admits
them by the same rule as the UR driver, halts as soon as commands go stale, never moves on a refused chunk."""

from __future__ import annotations

import numpy as np
import pytest

from pixelvla_ros.chunk_timeline import ChunkRefused, ChunkRules, TimedChunk
from pixelvla_ros.drivers.sim_driver import SimDriver
from pixelvla_ros.safety import SafetyLimits, UnsafeChunkError
from pixelvla_ros.sim.seeds import episode_seed
from pixelvla_ros.sim.tasks import TaskConfig

LIMITS = SafetyLimits(max_linear_speed=0.5, max_linear_acceleration=10.0, max_gripper_rate=20.0)
RULES = ChunkRules(base_frame="base", max_stamp_lead=0.05, max_command_age=0.25)


@pytest.fixture
def driver() -> SimDriver:
    d = SimDriver(TaskConfig(family="pick_named"), episode_seed("eval", 3), "eval", LIMITS, 64, RULES)
    d.reset()
    return d


def moving_chunk(t0: float, dx: float = 0.02, n: int = 8) -> TimedChunk:
    a = np.zeros((n, 7))
    a[:, 0] = dx
    return TimedChunk(t0, 0.1, a)


def tcp_x(d: SimDriver) -> float:
    return float(d.env.tcp_pose()[0, 3])


def test_capture_is_a_camera_frame_with_its_model(driver: SimDriver) -> None:
    s = driver.capture()
    assert s.rgb.shape == (64, 64, 3) and s.rgb.dtype == np.uint8
    assert (s.camera.width, s.camera.height) == (64, 64)
    assert s.tcp_pose.shape == (4, 4)


def test_calibrated_camera_is_the_same_in_every_episode() -> None:
    poses = []
    for i in (0, 1):
        d = SimDriver(TaskConfig(family="pick_prompted"), episode_seed("eval", i), "eval", LIMITS, 64, RULES)
        d.reset()
        poses.append(d.capture().camera.T_base_camera)
    assert np.allclose(poses[0], poses[1])


def test_executes_the_action_covering_each_period(driver: SimDriver) -> None:
    x0 = tcp_x(driver)
    driver.add_chunk(moving_chunk(0.0), 0.05)
    for n in range(3):  # at 0.3 the chunk's image is older than max_command_age
        report = driver.step(0.1 * n)
        assert not report.halted
        assert report.action[0] == pytest.approx(0.02)
    assert tcp_x(driver) - x0 == pytest.approx(0.06, abs=0.01)


def test_stale_commands_halt_in_the_first_stale_period_and_the_arm_is_still_soon_after(
    driver: SimDriver,
) -> None:
    """The newest chunk's image is older than max_command_age (0.25 s) from t = 0.3: halted there, not one
    period later. The simulated arm, stopped from 0.3 m/s, rings for a period (its joint servos), then is
    still (< 0.1 mm per period) from the period that starts 0.5 s after the image."""
    driver.add_chunk(moving_chunk(0.0, dx=0.03), 0.05)  # covers 0.8 s, at 0.3 m/s
    x = [tcp_x(driver)]
    reports = []
    for n in range(8):
        reports.append(driver.step(0.1 * n))
        x.append(tcp_x(driver))
    moving = [not r.halted and abs(r.action[0]) > 0 for r in reports]
    assert moving[:3] == [True, True, True]
    assert all(r.halted and np.all(r.action[:6] == 0) for r in reports[3:])
    assert "max_command_age" in reports[3].reasons[0]
    motion = np.abs(np.diff(x))  # motion[n]: during the period that started at 0.1 n
    assert motion[2] > 0.02
    assert motion[3] < 2e-3 and motion[4] < 1e-3, motion  # the halt's ringing: x 0.3 mm, then 0.2 mm
    assert np.all(motion[5:] < 1e-4), motion


def test_chunks_are_admitted_by_the_shared_rule(driver: SimDriver) -> None:
    """Frame, image stamps ahead of the clock or too old, order: refused with no motion; a chunk stamped far
    in the future does not block the valid ones after it."""
    x = tcp_x(driver)
    wrong_frame = TimedChunk(1.0, 0.1, moving_chunk(1.0).actions, frame_id="camera")
    with pytest.raises(ChunkRefused, match="not the driver's base frame"):
        driver.add_chunk(wrong_frame, 1.0)
    with pytest.raises(ChunkRefused, match="ahead of the driver clock"):
        driver.add_chunk(moving_chunk(2.0), 1.0)
    with pytest.raises(ChunkRefused, match="ahead of the driver clock"):
        driver.add_chunk(moving_chunk(1.0e6), 1.0)
    with pytest.raises(ChunkRefused, match="max_command_age"):
        driver.add_chunk(moving_chunk(0.5), 1.0)
    for n in range(3):
        assert np.all(driver.step(1.0 + 0.1 * n).action[:6] == 0)
    assert tcp_x(driver) == pytest.approx(x, abs=1e-4)
    driver.add_chunk(moving_chunk(1.3), 1.32)  # valid, after the refused future ones
    assert not driver.step(1.3).halted
    with pytest.raises(ChunkRefused, match="older than"):
        driver.add_chunk(moving_chunk(1.25), 1.33)


def test_refused_chunk_causes_no_motion(driver: SimDriver) -> None:
    bad = moving_chunk(0.0).actions.copy()
    bad[0, 0] = np.inf
    with pytest.raises(UnsafeChunkError):
        driver.add_chunk(TimedChunk(0.0, 0.1, bad), 0.0)
    x = tcp_x(driver)
    for n in range(3):
        assert driver.step(0.1 * n).halted or np.all(driver.step(0.1 * n).action[:6] == 0)
    assert tcp_x(driver) == pytest.approx(x, abs=1e-3)


def test_a_late_chunk_does_not_execute_its_past_steps(driver: SimDriver) -> None:
    a = np.zeros((8, 7))
    a[0, 0] = 0.03  # step 0 covers [0, 0.1): already past when the driver is at 0.1
    a[1:, 0] = 0.01
    driver.add_chunk(TimedChunk(0.0, 0.1, a), 0.05)
    assert driver.step(0.1).action[0] == pytest.approx(0.01)
