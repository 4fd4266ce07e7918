"""Fixtures shared by the test suite."""

from __future__ import annotations

import os
import random

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture
def ros_domain(monkeypatch: pytest.MonkeyPatch) -> int:
    """A DDS domain of the test's own (inherited by child processes), so parallel runs do not cross-talk."""
    domain = random.randint(1, 100)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return domain
