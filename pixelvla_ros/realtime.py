"""Real-time scheduling for the threads that keep a period (the UR controller emulator's tick, the UR
driver's servo loop, a jitter measurement's receiver), as a UR controller and ur_robot_driver do.

Best effort: SCHED_FIFO needs CAP_SYS_NICE (root, or an rtprio limit in /etc/security/limits.conf); without
it the thread keeps the normal scheduler and its period follows the machine's load. The kernel's RT
throttling (sched_rt_runtime_us) still leaves the other threads 5 % of each CPU.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def make_thread_realtime(priority: int) -> bool:
    """Put the calling thread under SCHED_FIFO at ``priority`` (1-99; 0 = leave it alone).

    Returns whether it is real-time now; a refusal is logged once per call with the reason, not raised."""
    if priority <= 0:
        return False
    if not 1 <= priority <= 99:
        raise ValueError(f"real-time priority must be in [1, 99], got {priority}")
    if not hasattr(os, "sched_setscheduler"):  # not Linux
        log.warning("real-time priority %d not available on this OS; normal scheduling", priority)
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))  # 0: this thread (Linux)
    except OSError as e:
        log.warning(
            "real-time priority %d refused (%s): normal scheduling; the period will follow the machine's "
            "load (grant CAP_SYS_NICE or an rtprio limit to fix)",
            priority,
            e.strerror or e,
        )
        return False
    return True
