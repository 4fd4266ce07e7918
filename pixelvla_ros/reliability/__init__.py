"""The reliability suite: bad input and faults thrown at the running stack.

    python -m pixelvla_ros.reliability

Three parts, each returning `DrillRow`s for one table: malformed messages over DDS against the simulated
stack (`malformed`), fault drills against the UR controller emulator with the real ur_rtde client
(`drills`), and the safety-filter fuzz (`filter_fuzz`).
"""
