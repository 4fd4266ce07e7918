"""The simulated arm driver (ROS-free core): executes timestamped chunks through the safety filter, halts
within two periods when commands go stale, never moves on a refused chunk."""

from __future__ import annotations

import numpy as np
import pytest

from pixelvla_ros.chunk_timeline import TimedChunk
from pixelvla_ros.drivers.sim_driver import SimDriver
from pixelvla_ros.safety import SafetyLimits, UnsafeChunkError
from pixelvla_ros.sim.seeds import episode_seed
from pixelvla_ros.sim.tasks import TaskConfig

LIMITS = SafetyLimits(max_linear_speed=0.5, max_linear_acceleration=10.0, max_gripper_rate=20.0)


@pytest.fixture
def driver() -> SimDriver:
    d = SimDriver(TaskConfig(family="pick_named"), episode_seed("eval", 3), "eval", LIMITS, 64, 0.25)
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
        d = SimDriver(TaskConfig(family="pick_prompted"), episode_seed("eval", i), "eval", LIMITS, 64, 0.25)
        d.reset()
        poses.append(d.capture().camera.T_base_camera)
    assert np.allclose(poses[0], poses[1])


def test_executes_the_action_covering_each_period(driver: SimDriver) -> None:
    x0 = tcp_x(driver)
    driver.add_chunk(moving_chunk(0.0))
    for n in range(4):
        report = driver.step(0.1 * n)
        assert not report.halted
        assert report.action[0] == pytest.approx(0.02)
    assert tcp_x(driver) - x0 == pytest.approx(0.08, abs=0.01)


def test_stale_commands_halt_within_two_periods(driver: SimDriver) -> None:
    driver.add_chunk(moving_chunk(0.0))  # covers 0.8 s, but its image is older than 0.25 s after t = 0.25
    reports = [driver.step(0.1 * n) for n in range(8)]
    moving = [not r.halted and abs(r.action[0]) > 0 for r in reports]
    assert moving[:3] == [True, True, True]
    assert all(r.halted and np.all(r.action[:6] == 0) for r in reports[4:])  # stale from t = 0.3: 2nd period
    x = tcp_x(driver)
    driver.step(0.8)
    assert tcp_x(driver) == pytest.approx(x, abs=1e-3)


def test_refused_chunk_causes_no_motion(driver: SimDriver) -> None:
    bad = moving_chunk(0.0).actions.copy()
    bad[0, 0] = np.inf
    with pytest.raises(UnsafeChunkError):
        driver.add_chunk(TimedChunk(0.0, 0.1, bad))
    x = tcp_x(driver)
    for n in range(3):
        assert driver.step(0.1 * n).halted or np.all(driver.step(0.1 * n).action[:6] == 0)
    assert tcp_x(driver) == pytest.approx(x, abs=1e-3)


def test_a_late_chunk_does_not_execute_its_past_steps(driver: SimDriver) -> None:
    a = np.zeros((8, 7))
    a[0, 0] = 0.03  # step 0 covers [0, 0.1): already past when the driver is at 0.1
    a[1:, 0] = 0.01
    driver.add_chunk(TimedChunk(0.0, 0.1, a))
    assert driver.step(0.1).action[0] == pytest.approx(0.01)
