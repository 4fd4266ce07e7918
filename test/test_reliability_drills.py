"""The reliability suite's fault drills: the real ur_driver node against the UR controller emulator."""

from __future__ import annotations

import pytest

pytest.importorskip("rtde_control")

from pixelvla_ros.reliability import drills  # noqa: E402
from pixelvla_ros.reliability.report import format_table  # noqa: E402


def test_every_fault_drill_is_survived_without_crash_or_motion(ros_domain: int) -> None:
    rows = drills.run()
    print(format_table(rows))
    assert [r.kind for r in rows] == [kind for kind, _ in drills.DRILLS] and len(rows) == 9
    failed = [r for r in rows if not r.ok]
    assert not failed, format_table(failed)
    assert all(r.suite == "drill" and r.tried == 1 for r in rows)
