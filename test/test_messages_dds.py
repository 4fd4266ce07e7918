"""Each custom message round-trips between two nodes in two processes over real DDS (Fast DDS)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

rclpy = pytest.importorskip("rclpy")
from pixelvla_ros.msg import ActionChunk, VisualPrompt  # noqa: E402

# The peer publishes one filled-in message of each type until killed.
PUBLISHER = textwrap.dedent(
    """
    import numpy as np, rclpy
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import Vector3
    from pixelvla_ros.msg import ActionChunk, VisualPrompt
    rclpy.init()
    node = rclpy.create_node("roundtrip_publisher")
    chunk_pub = node.create_publisher(ActionChunk, "chunk", 10)
    prompt_pub = node.create_publisher(VisualPrompt, "prompt", 10)
    chunk = ActionChunk()
    chunk.header.frame_id = "base_link"
    chunk.header.stamp = Time(sec=12, nanosec=500)
    chunk.source_image_stamp = Time(sec=11, nanosec=900_000_000)
    chunk.dt = 0.1
    chunk.commit_steps = 4
    chunk.translation = [Vector3(x=0.01 * k, y=-0.02, z=0.003) for k in range(8)]
    chunk.rotation = [Vector3(x=0.0, y=0.0, z=0.05 * k) for k in range(8)]
    chunk.gripper = [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    chunk.model_latency = 0.0123
    prompt = VisualPrompt()
    prompt.header.frame_id = "camera_color_optical_frame"
    prompt.header.stamp = Time(sec=11, nanosec=900_000_000)
    prompt.type = VisualPrompt.TYPE_MASK
    prompt.labels = [VisualPrompt.LABEL_POSITIVE]
    prompt.image_width, prompt.image_height = 4, 3
    prompt.mask.encoding = "mono8"
    prompt.mask.width, prompt.mask.height, prompt.mask.step = 4, 3, 4
    prompt.mask.data = bytes([0, 255, 255, 0] * 3)
    prompt.text = "the red cube"
    while rclpy.ok():
        chunk_pub.publish(chunk)
        prompt_pub.publish(prompt)
        rclpy.spin_once(node, timeout_sec=0.05)
    """
)


def test_custom_messages_round_trip_between_processes(ros_domain: int) -> None:
    peer = subprocess.Popen([sys.executable, "-c", PUBLISHER])
    received: dict[str, object] = {}
    context = rclpy.Context()
    try:
        rclpy.init(context=context)
        node = rclpy.create_node("roundtrip_subscriber", context=context)
        node.create_subscription(ActionChunk, "chunk", lambda m: received.setdefault("chunk", m), 10)
        node.create_subscription(VisualPrompt, "prompt", lambda m: received.setdefault("prompt", m), 10)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + 30.0
        while len(received) < 2 and time.monotonic() < deadline:
            assert peer.poll() is None, "the publisher process died"
            executor.spin_once(timeout_sec=0.1)
    finally:
        peer.kill()
        peer.wait()
        rclpy.try_shutdown(context=context)

    assert set(received) == {"chunk", "prompt"}, f"received only {sorted(received)}"
    chunk = received["chunk"]
    assert chunk.header.frame_id == "base_link"
    assert (chunk.source_image_stamp.sec, chunk.source_image_stamp.nanosec) == (11, 900_000_000)
    assert chunk.dt == pytest.approx(0.1) and chunk.commit_steps == 4
    assert len(chunk.translation) == len(chunk.rotation) == len(chunk.gripper) == 8
    assert chunk.translation[3].x == pytest.approx(0.03)
    assert chunk.rotation[7].z == pytest.approx(0.35)
    assert list(chunk.gripper) == [0.0] * 4 + [1.0] * 4
    assert chunk.model_latency == pytest.approx(0.0123)

    prompt = received["prompt"]
    assert prompt.header.frame_id == "camera_color_optical_frame"
    assert prompt.type == VisualPrompt.TYPE_MASK
    assert list(prompt.labels) == [VisualPrompt.LABEL_POSITIVE]
    assert (prompt.mask.width, prompt.mask.height, prompt.mask.encoding) == (4, 3, "mono8")
    assert bytes(prompt.mask.data) == bytes([0, 255, 255, 0] * 3)
    assert prompt.text == "the red cube"
