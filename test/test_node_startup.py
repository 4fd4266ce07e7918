"""Every node's executable refuses an unusable configuration at startup: exit code 2 and the reason in one
log line, no traceback, nothing left running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

LIB = Path(sys.prefix) / "lib" / "pixelvla_ros"


@pytest.mark.parametrize(
    "node, params, reason",
    [
        ("policy_node", ["checkpoint:=/nonexistent"], "checkpoint folder '/nonexistent' does not exist"),
        ("prompt_node", ["camera_pose_in_base:=[1.0, 2.0]"], "(7 numbers), got 2"),
        ("policy_node", ["camera_pose_in_base:=[1.0, 2.0]"], "(7 numbers), got 2"),
        ("sim_driver", ["family:=bogus"], "family must be one of"),
        (
            "ur_driver",
            ["reconnect.backoff_min:=5.0", "reconnect.backoff_max:=1.0"],
            "reconnect_backoff_max must be within",
        ),
    ],
)
def test_bad_configuration_exits_2_with_the_reason(
    ros_domain: int, node: str, params: list[str], reason: str
) -> None:
    exe = LIB / node
    assert exe.exists(), f"{exe} is missing: run `make build`"
    args = [str(exe), "--ros-args"] + [a for p in params for a in ("-p", p)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "cannot start" in output and reason in output, output
    assert "Traceback" not in output, output
