"""Evaluation executes chunks as the robot does: the same chunks through evaluate's episode loop (a chunk
computed when the one in control has run its committed steps) and through the simulator driver's core (a
chunk every period, as the policy node sends them, carrying the checkpoint's commit_steps) give the same
executed actions."""

from __future__ import annotations

import numpy as np
import pytest

from learning.evaluation.evaluate import MODES, run_episode
from pixelvla_ros.chunk_timeline import ChunkRules, ChunkTimeline, TimedChunk
from pixelvla_ros.drivers.sim_driver import SimDriver
from pixelvla_ros.policy import ActionChunkResult
from pixelvla_ros.safety import SafetyLimits
from pixelvla_ros.sim.env import TabletopEnv
from pixelvla_ros.sim.seeds import episode_seed
from pixelvla_ros.sim.tasks import TaskConfig

STEPS, CHUNK = 14, 8
DT = TaskConfig().action_space.dt
SEED = episode_seed("eval", 5)


def chunk_of(n: int) -> np.ndarray:
    """(CHUNK, 7) the chunk computed from control step n's frame: each action tells (n, k) apart."""
    a = np.zeros((CHUNK, 7))
    a[:, 0] = 0.002 + 2e-4 * n  # m
    a[:, 1] = 1e-3 * (np.arange(CHUNK) - CHUNK / 2)
    a[:, 5] = 0.01 * n / STEPS  # rad about the base z axis
    return a


class ScheduledAgent:
    """Answers the query at control step n with chunk_of(n), as a policy would from that step's frame."""

    chunk_size = CHUNK

    def reset(self, env: TabletopEnv) -> None:
        self.env = env

    def query(self, obs: object, image: np.ndarray, inp: object) -> ActionChunkResult:
        return ActionChunkResult(chunk_of(self.env.steps), DT * np.arange(CHUNK), 0.0, 0.0, True)


@pytest.mark.parametrize("commit_steps", [1, 3, 4, CHUNK])
def test_evaluation_and_the_sim_driver_execute_the_same_actions(commit_steps: int) -> None:
    env = TabletopEnv(TaskConfig(family="pick_named", image_sizes=(64,)).with_(max_steps=STEPS), SEED, "eval")
    by_evaluation: list[np.ndarray] = []
    step = env.step
    env.step = lambda action: (by_evaluation.append(np.array(action)), step(action))[1]  # type: ignore[method-assign]
    try:
        report = run_episode(
            env, ScheduledAgent(), ChunkTimeline(commit_steps=commit_steps), MODES["text"], SEED, "scene", 64
        )
    finally:
        env.close()
    assert report["queries"] == len(range(0, STEPS, commit_steps)) and report["hold_steps"] == 0

    limits = SafetyLimits(max_linear_speed=0.5, max_linear_acceleration=10.0, max_gripper_rate=20.0)
    driver = SimDriver(TaskConfig(family="pick_named"), SEED, "eval", limits, 64, ChunkRules())
    driver.reset()
    by_driver = []
    try:
        for n in range(STEPS):
            t = n * DT
            driver.add_chunk(TimedChunk(t, DT, chunk_of(n), commit_steps=commit_steps), t + 0.03)
            report = driver.step(t)
            assert not report.halted and not report.reasons
            by_driver.append(report.action)
    finally:
        driver.env.close()
    np.testing.assert_allclose(np.array(by_evaluation), np.array(by_driver), atol=1e-12)
