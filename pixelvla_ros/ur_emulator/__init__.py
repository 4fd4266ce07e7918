"""Loopback UR controller emulator for driving the real ur_rtde client in tests.

Tested with ur-rtde **1.6.5** (pinned in requirements.txt) and controller versions 5.11.1 (500 Hz) and 3.15
(CB3, 125 Hz). It emulates RTDE (30004), the dashboard server (29999) and the script ports (30001-30003)
including ur_rtde's ``rtde_control`` script command protocol; motion uses :mod:`pixelvla_ros.ur5e`.

Start it with ``python -m pixelvla_ros.ur_emulator --host 127.0.0.1 --version 5.11.1`` (``main``), in-process
with :class:`Emulator`, or in its own process with :class:`EmulatorProcess` (tests; fault-injection hooks are
its methods, see :mod:`pixelvla_ros.ur_emulator.faults`).
Protocol notes: /work/shared/notes/ur-rtde-protocol.md.
"""

from pixelvla_ros.ur_emulator.cli import main
from pixelvla_ros.ur_emulator.emulator import Emulator, EmulatorConfig
from pixelvla_ros.ur_emulator.process import EmulatorProcess, free_loopback_host

UR_RTDE_TESTED_VERSION = "1.6.5"

__all__ = [
    "Emulator",
    "EmulatorConfig",
    "EmulatorProcess",
    "free_loopback_host",
    "main",
    "UR_RTDE_TESTED_VERSION",
]
