"""The reliability suite's malformed-message barrage and safety-filter fuzz (pixelvla_ros.reliability), at the
sizes the issue asks for: every kind of bad input leaves every node alive, moves nothing, and good input
works again afterwards. The fault drills against the UR emulator are in test_reliability_drills.py."""

from __future__ import annotations

from pixelvla_ros.reliability import filter_fuzz, malformed
from pixelvla_ros.reliability.report import format_table


def test_malformed_messages_over_dds_move_nothing_and_crash_nothing(ros_domain: int) -> None:
    rows = malformed.run()
    print(format_table(rows))
    assert len(rows) >= 31  # at least 30 kinds of malformed message, and the flood
    assert {row.suite for row in rows} == {"malformed"}
    assert [row for row in rows if not row.ok] == []


def test_a_million_safety_filter_inputs_stay_within_the_limits() -> None:
    rows = filter_fuzz.run(inputs=1_000_000)
    print(format_table(rows))
    assert sum(row.tried for row in rows) >= 1_000_000
    assert [row for row in rows if not row.ok] == []
