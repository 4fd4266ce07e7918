"""The UR controller's state codes as RTDE reports them (robot_mode, safety_mode, runtime_state, joint_mode).

One table for the UR driver, which reads them, and the UR emulator, which reports them. Values and names as
in Universal Robots' RTDE guide and dashboard server.
"""

from __future__ import annotations

# robot_mode (INT32)
ROBOT_MODE_POWER_OFF = 3
ROBOT_MODE_IDLE = 5
ROBOT_MODE_RUNNING = 7
ROBOT_MODE_NAMES = {
    -1: "NO_CONTROLLER",
    0: "DISCONNECTED",
    1: "CONFIRM_SAFETY",
    2: "BOOTING",
    3: "POWER_OFF",
    4: "POWER_ON",
    5: "IDLE",
    6: "BACKDRIVE",
    7: "RUNNING",
    8: "UPDATING_FIRMWARE",
}

# safety_mode (INT32)
SAFETY_NORMAL = 1
SAFETY_REDUCED = 2
SAFETY_PROTECTIVE_STOP = 3
SAFETY_SYSTEM_EMERGENCY_STOP = 6
SAFETY_ROBOT_EMERGENCY_STOP = 7
SAFETY_MODE_NAMES = {
    1: "NORMAL",
    2: "REDUCED",
    3: "PROTECTIVE_STOP",
    4: "RECOVERY",
    5: "SAFEGUARD_STOP",
    6: "SYSTEM_EMERGENCY_STOP",
    7: "ROBOT_EMERGENCY_STOP",
    8: "VIOLATION",
    9: "FAULT",
}
# The safety modes in which the arm may be commanded.
SAFETY_MODES_OK = (SAFETY_NORMAL, SAFETY_REDUCED)

# runtime_state (UINT32): the state of the controller's program
RUNTIME_STOPPED = 1
RUNTIME_PLAYING = 2
RUNTIME_PAUSED = 4

# joint_mode (INT32, one per joint)
JOINT_MODE_POWER_OFF = 239
JOINT_MODE_IDLE = 250
JOINT_MODE_RUNNING = 253
