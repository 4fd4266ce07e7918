"""ChunkTimeline, the one chunk executor: which action covers a time, dropping the past, newest chunk wins
(once a started one has run its committed steps, the chunk's own or the timeline's override); when evaluation
computes a new chunk (`due`), and that it executes what a driver fed every period does; TCP waypoints."""

from __future__ import annotations

import numpy as np
import pytest

from pixelvla_ros.chunk_timeline import ChunkRefused, ChunkRules, ChunkTimeline, TimedChunk, commit_override
from pixelvla_ros.safety import UnsafeChunkError
from pixelvla_ros.ur5e import matrix_to_rotvec, rotvec_to_matrix


def chunk(t0: float, n: int = 4, dx: float = 0.01, gripper: float = 0.0, dt: float = 0.1) -> TimedChunk:
    a = np.zeros((n, 7))
    a[:, 0] = dx
    a[:, 6] = gripper
    a[:, 1] = np.arange(n) * 1e-3  # step index, to tell steps apart
    return TimedChunk(t0, dt, a)


def test_action_covering_a_time_and_past_dropped() -> None:
    tl = ChunkTimeline()
    tl.add(chunk(10.0), 10.0)
    assert tl.action_at(9.99) is None  # before the image: nothing
    assert tl.action_at(10.0)[1] == pytest.approx(0.0)
    assert tl.action_at(10.25)[1] == pytest.approx(2e-3)
    assert tl.action_at(10.4) is None  # the interval [t0, t0 + 4 dt) has passed
    assert tl.newest() is None  # and the chunk is gone


def test_newest_chunk_wins_where_chunks_overlap() -> None:
    tl = ChunkTimeline()
    tl.add(chunk(10.0, dx=0.01), 10.0)
    tl.add(chunk(10.1, dx=0.02), 10.1)
    assert tl.action_at(10.05)[0] == pytest.approx(0.01)  # only the old chunk covers 10.05
    assert tl.action_at(10.15)[0] == pytest.approx(0.02)
    assert tl.action_at(10.15)[1] == pytest.approx(0.0)  # step 0 of the newer chunk


def test_a_started_chunk_keeps_control_for_its_committed_steps() -> None:
    """commit_steps=3, a new chunk every period (as the policy node publishes them): the arm executes steps
    0, 1, 2 of one chunk, then steps 0, 1, 2 of the newest, like evaluate --execute-steps 3."""
    tl = ChunkTimeline(commit_steps=3)
    executed = []
    for n in range(7):
        t = 10.0 + 0.1 * n
        tl.add(chunk(t, n=8, dx=0.001 * (n + 1)), t)
        executed.append(tl.action_at(t + 0.05))  # the actuation delay after the frame
    source = [round(a[0] * 1000) - 1 for a in executed]  # index of the frame whose chunk acted
    steps = [round(a[1] * 1000) for a in executed]
    assert source == [0, 0, 0, 3, 3, 3, 6]
    assert steps == [0, 1, 2, 0, 1, 2, 0]
    assert tl.newest().t0 == pytest.approx(10.6)  # liveness is judged on the newest chunk regardless


def test_commitment_ends_with_the_chunk_and_on_clear() -> None:
    tl = ChunkTimeline(commit_steps=4)
    tl.add(chunk(10.0, n=2, dx=0.01), 10.0)
    assert tl.action_at(10.05)[0] == pytest.approx(0.01)
    tl.add(chunk(10.1, n=4, dx=0.02), 10.1)
    assert tl.action_at(10.15)[0] == pytest.approx(0.01)  # step 1 of the started chunk
    assert tl.action_at(10.25)[0] == pytest.approx(0.02)  # it has run out: the newer chunk's step 1
    assert tl.action_at(10.25)[1] == pytest.approx(1e-3)
    tl.clear()
    assert tl.action_at(10.3) is None
    tl.add(chunk(10.3, dx=0.03), 10.3)
    assert tl.action_at(10.35)[0] == pytest.approx(0.03)
    with pytest.raises(ValueError, match="commit_steps"):
        ChunkTimeline(commit_steps=-1)
    with pytest.raises(ValueError, match="commit_steps"):
        TimedChunk(10.0, 0.1, np.zeros((2, 7)), commit_steps=-1)


def test_a_chunk_runs_its_own_commit_steps_unless_the_timeline_overrides_them() -> None:
    """The policy node sends the checkpoint's commit_steps with each chunk; a driver parameter overrides."""

    def executed(timeline: ChunkTimeline, own: int) -> list[int]:
        frames = []
        for n in range(5):
            t = 10.0 + 0.1 * n
            c = chunk(t, n=8, dx=0.001 * (n + 1))
            timeline.add(TimedChunk(c.t0, c.dt, c.actions, commit_steps=own), t)
            frames.append(round(timeline.action_at(t + 0.05)[0] * 1000) - 1)  # the frame whose chunk acts
        return frames

    assert executed(ChunkTimeline(), own=2) == [0, 0, 2, 2, 4]
    assert executed(ChunkTimeline(commit_steps=3), own=2) == [0, 0, 0, 3, 3]
    assert executed(ChunkTimeline(commit_steps=0), own=2) == [0, 1, 2, 3, 4]
    c = TimedChunk(0.0, 0.1, np.zeros((2, 7)), commit_steps=4)
    assert commit_override(None, c) is None and commit_override(4, c) is None
    assert "commit_steps 1 overrides the chunks' own 4" in commit_override(1, c)


def test_evaluation_asks_for_a_new_chunk_when_the_one_in_control_has_run_its_steps() -> None:
    """Evaluation: control step n is time n * dt; a chunk is computed when `due`, from the step it is for."""
    tl = ChunkTimeline(commit_steps=3)
    assert tl.due(0.0)
    tl.add(chunk(0.0, dx=0.01), 0.0)
    got = []
    for n in range(3):
        assert not tl.due(0.1 * n)
        got.append(round(tl.action_at(0.1 * n)[1] * 1000))
    assert got == [0, 1, 2]
    assert tl.due(0.1 * 3)
    tl.add(chunk(0.1 * 3, dx=0.02), 0.1 * 3)
    assert [tl.action_at(0.1 * n)[0] for n in (3, 4, 5)] == pytest.approx([0.02] * 3)


def test_a_failed_query_leaves_the_chunk_in_control_running_and_is_repeated() -> None:
    """No valid chunk at a due step: the chunk in control goes on while it covers the steps, a new one is
    asked for every step (as the live policy node keeps publishing), and no chunk at all means no motion."""
    tl = ChunkTimeline(commit_steps=2)
    tl.add(chunk(0.0), 0.0)
    assert round(tl.action_at(0.0)[1] * 1000) == 0
    assert not tl.due(0.1) and round(tl.action_at(0.1)[1] * 1000) == 1
    assert tl.due(0.2)  # the query at step 2 gives no valid chunk: nothing added
    assert round(tl.action_at(0.2)[1] * 1000) == 2
    assert tl.due(0.1 * 3) and round(tl.action_at(0.1 * 3)[1] * 1000) == 3
    assert tl.due(0.1 * 4) and tl.action_at(0.1 * 4) is None  # nothing left: the caller holds still


@pytest.mark.parametrize("commit_steps", range(9))
def test_evaluation_and_a_driver_fed_every_period_execute_the_same_actions(commit_steps: int) -> None:
    """The same chunks (the one of step n computed from step n's frame): evaluation computes one only when
    `due`; a driver receives one every period and acts an actuation delay after its frame."""
    dt, steps = 0.1, 30

    def chunk_of(n: int) -> TimedChunk:
        a = np.zeros((8, 7))
        a[:, 0], a[:, 1] = n * 1e-3, np.arange(8) * 1e-3  # (frame, step) of each action, mm
        return TimedChunk(n * dt, dt, a, commit_steps=commit_steps)

    evaluation, queries, by_evaluation = ChunkTimeline(), [], []
    for n in range(steps):
        if evaluation.due(n * dt):
            queries.append(n)
            evaluation.add(chunk_of(n), n * dt)
        by_evaluation.append(tuple(np.round(evaluation.action_at(n * dt)[:2] * 1000)))
    driver, by_driver = ChunkTimeline(), []
    for n in range(steps):
        driver.add(chunk_of(n), n * dt + 0.03)  # arrives after inference
        by_driver.append(tuple(np.round(driver.action_at(n * dt + 0.05)[:2] * 1000)))
    assert by_evaluation == by_driver
    assert queries == list(range(0, steps, max(commit_steps, 1)))


def test_control_steps_on_chunk_step_boundaries_despite_rounding() -> None:
    """n * dt and t0 + k * dt differ by rounding errors; the step is still n - m, never one early."""
    for m in range(0, 200, 7):
        c = TimedChunk(m * 0.1, 0.1, np.zeros((8, 7)))
        assert [c.step_at(n * 0.1) for n in range(m - 1, m + 9)] == [None, *range(8), None]


def test_without_commitment_a_newer_chunk_takes_over_mid_step() -> None:
    """commit_steps=0 (the UR driver at 500 Hz can use it): a chunk arriving mid-step acts at once."""
    tl = ChunkTimeline()
    tl.add(chunk(10.0, dx=0.01), 10.0)
    assert tl.action_at(10.12)[0] == pytest.approx(0.01)
    tl.add(chunk(10.1, dx=0.02), 10.1)
    assert tl.action_at(10.13)[0] == pytest.approx(0.02)


def test_refuses_unsafe_and_out_of_order_chunks() -> None:
    tl = ChunkTimeline()
    bad = chunk(10.0).actions.copy()
    bad[2, 0] = np.nan
    with pytest.raises(UnsafeChunkError, match="step 2"):
        tl.add(TimedChunk(10.0, 0.1, bad), 10.0)
    far = chunk(10.0, dx=0.5)
    with pytest.raises(UnsafeChunkError, match="translates"):
        tl.add(far, 10.0)
    tl.add(chunk(11.0), 11.0)
    with pytest.raises(ChunkRefused, match="older"):
        tl.add(chunk(10.9), 11.0)
    with pytest.raises(ValueError, match="dt > 0"):
        TimedChunk(1.0, 0.0, np.zeros((2, 7)))


def test_the_admission_rule_every_driver_applies() -> None:
    """ChunkRules: the frame, an image stamp ahead of the clock or older than max_command_age; a refused
    chunk leaves the timeline as it was."""
    tl = ChunkTimeline(rules=ChunkRules(base_frame="base_link", max_stamp_lead=0.05, max_command_age=0.3))
    with pytest.raises(ChunkRefused, match="'base' is not the driver's base frame 'base_link'"):
        tl.add(chunk(10.0), 10.0)
    ok = lambda t0: TimedChunk(t0, 0.1, chunk(t0).actions, "base_link")  # noqa: E731
    with pytest.raises(ChunkRefused, match="0.100 s ahead"):
        tl.add(ok(10.1), 10.0)
    with pytest.raises(ChunkRefused, match="ahead"):
        tl.add(ok(1e6), 10.0)
    with pytest.raises(ChunkRefused, match="0.310 s old"):
        tl.add(ok(9.69), 10.0)
    assert tl.newest() is None
    tl.add(ok(10.04), 10.0)  # within max_stamp_lead
    assert tl.stale_reason(10.3) is None
    assert "0.310 s old" in tl.stale_reason(10.35)
    with pytest.raises(ValueError, match="base_frame"):
        ChunkRules(base_frame="")
    with pytest.raises(ValueError, match="max_command_age"):
        ChunkRules(max_command_age=float("nan"))


def test_waypoints_integrate_deltas_and_interpolate() -> None:
    a = np.zeros((4, 7))
    a[:, 0] = 0.01
    a[:, 5] = 0.1  # yaw 0.1 rad per step about the base z axis
    a[2:, 6] = 1.0
    R0 = rotvec_to_matrix(np.array([np.pi, 0.0, 0.0]))  # tool pointing down
    wp = TimedChunk(5.0, 0.1, a).waypoints(np.array([0.5, 0.0, 0.3]), R0, 0.0)
    pos, R, grip = wp.sample(5.4)
    assert pos == pytest.approx([0.54, 0.0, 0.3])
    assert matrix_to_rotvec(R @ R0.T) == pytest.approx([0, 0, 0.4], abs=1e-9)  # base-frame increments
    assert grip == 1.0
    pos, R, _ = wp.sample(5.05)  # half-way through step 0
    assert pos == pytest.approx([0.505, 0.0, 0.3])
    assert matrix_to_rotvec(R @ R0.T) == pytest.approx([0, 0, 0.05], abs=1e-9)
    assert wp.sample(4.9) is None and wp.sample(5.5) is None
