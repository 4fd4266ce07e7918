"""End-to-end latency of the simulated stack: camera image stamp -> the ActionChunk computed from it.

    python -m pixelvla_ros.bench.e2e_latency [--seconds 30] [--checkpoint DIR]

Starts the nodes of the demo (sim_driver, prompt_node, policy_node: separate processes over DDS), runs a
task, and for every chunk takes: end to end = the chunk's publication (its header stamp, set by the policy
node when it publishes) - the source image's stamp, on the one clock of the machine; the policy call = the
chunk's model_latency (preprocessing + forward + postprocessing + safety check, measured in the policy
node); everything else = the difference (image transport, pairing the arm state, message conversion). Also
shown: the chunk's delivery to this process (published -> here, context: it includes this process's
executor). This process takes nothing from the stack while it is timed but the chunks: its subscribers woke
with every frame, on the same 2 cores, and delayed the policy node's image by 0.5 ms.

Floor, measured first in the same run on the idle machine: the same image (size, encoding) from a publisher
process to a subscriber on the policy node's kind of executor (stamp -> callback): what Python rclpy over
this DDS takes for the image alone. Prints median and p99 of each, the ratio of everything else to the policy
call (target: <= 10 %) and to the floor, and the end-to-end p99 (target with `tiny`: <= 50 ms).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from pixelvla_ros.action import RunTask
from pixelvla_ros.demo import sim_stack, start_nodes, stop_nodes
from pixelvla_ros.msg import ActionChunk
from pixelvla_ros.nodes.conversions import rgb_to_image, stamp_to_sec
from pixelvla_ros.nodes.policy_node import sensor_executor


class ChunkClock(Node):
    def __init__(self) -> None:
        super().__init__("pixelvla_latency_bench")
        # (stamp -> chunk published, policy call, published -> arrival here), s
        self.samples: list[tuple[float, float, float]] = []
        self.overlay_seen = threading.Event()  # the prompt node is up (the last node to start spinning)
        self.create_subscription(ActionChunk, "/pixelvla/action_chunk", self.on_chunk, 10)
        self.overlay_sub = self.create_subscription(
            Image, "/pixelvla/overlay", self.on_overlay, qos_profile_sensor_data
        )
        self.run_task = ActionClient(self, RunTask, "/pixelvla/run_task")

    def on_overlay(self, _msg: Image) -> None:
        self.overlay_seen.set()
        self.destroy_subscription(self.overlay_sub)  # one is enough: the overlays are 384 px at 10 Hz

    def on_chunk(self, msg: ActionChunk) -> None:
        arrival = self.get_clock().now().nanoseconds * 1e-9
        source, published = stamp_to_sec(msg.source_image_stamp), stamp_to_sec(msg.header.stamp)
        self.samples.append((published - source, msg.model_latency, arrival - published))


FLOOR_TOPIC = "/pixelvla_latency_bench/floor_image"


def _floor_publisher(seconds: float, size: int) -> None:
    """A camera-like publisher in its own process: an rgb8 image of `size` px at 10 Hz, stamped now."""
    rclpy.init()
    node = rclpy.create_node("pixelvla_latency_floor_camera")
    publisher = node.create_publisher(Image, FLOOR_TOPIC, qos_profile_sensor_data)
    rgb = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        stamp = node.get_clock().now().to_msg()
        publisher.publish(rgb_to_image(rgb, stamp, "camera"))
        time.sleep(0.1)
    node.destroy_node()
    rclpy.try_shutdown()


def transport_floor(seconds: float, size: int) -> np.ndarray:
    """Image stamp -> callback (ms) from a publisher process to a subscriber here on the executor the policy
    node takes its camera with, on the idle machine (call it before the stack starts)."""
    import multiprocessing

    ages: list[float] = []
    node = rclpy.create_node("pixelvla_latency_floor")
    node.create_subscription(
        Image,
        FLOOR_TOPIC,
        lambda msg: ages.append(node.get_clock().now().nanoseconds * 1e-9 - stamp_to_sec(msg.header.stamp)),
        qos_profile_sensor_data,
    )
    executor = sensor_executor(node.context)
    executor.add_node(node)
    camera = multiprocessing.get_context("spawn").Process(target=_floor_publisher, args=(seconds, size))
    camera.start()
    while camera.is_alive():
        executor.spin_once(timeout_sec=0.1)
    camera.join()
    executor.shutdown()
    node.destroy_node()
    return np.asarray(ages[5:]) * 1e3  # the first ones include discovery


def row(name: str, ms: np.ndarray) -> str:
    return f"  {name:<28} median {np.median(ms):7.2f} ms   p99 {np.percentile(ms, 99):7.2f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the timed task")
    parser.add_argument("--checkpoint", default="", help="default: the packaged tiny checkpoint")
    parser.add_argument("--warmup", type=int, default=20, help="chunks left out at the start")
    parser.add_argument("--floor-seconds", type=float, default=8.0, help="length of the floor measurement")
    parser.add_argument("--image-size", type=int, default=96, help="the floor's image (sim_driver's default)")
    parser.add_argument(
        "--policy-param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="extra policy_node parameter beyond config/policy_node.yaml (repeatable), e.g. cpu_threads:=2",
    )
    args = parser.parse_args(argv)

    logs = Path(tempfile.mkdtemp(prefix="pixelvla_latency_"))
    stack = sim_stack("pick_named", 0, args.checkpoint)
    for param in args.policy_param:
        stack[-1][1].extend(["-p", param])  # policy_node is the stack's last node
    rclpy.init()
    floor = transport_floor(args.floor_seconds, args.image_size)
    procs = start_nodes(stack, logs)
    bench = ChunkClock()
    executor = SingleThreadedExecutor()  # a multi-threaded one busies a whole core here
    executor.add_node(bench)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        # Start timing once every node spins: their start-up (imports, model, renderer) loads both cores.
        if not (bench.run_task.wait_for_server(timeout_sec=120) and bench.overlay_seen.wait(timeout=60)):
            print(f"the stack did not come up; logs in {logs}")
            return 1
        goal = bench.run_task.send_goal_async(
            RunTask.Goal(instruction="pick up the object", timeout_s=args.seconds)
        )
        while not goal.done():
            time.sleep(0.05)
        result = goal.result().get_result_async()
        while not result.done():
            time.sleep(0.1)
    finally:
        stop_nodes(procs)
        executor.shutdown(timeout_sec=2.0)
        bench.destroy_node()
        rclpy.try_shutdown()
    samples = np.asarray(bench.samples[args.warmup :]) * 1e3
    if len(samples) < 10:
        print(f"only {len(samples)} chunks arrived; logs in {logs}")
        return 1
    e2e, policy, chunk_transport = samples[:, 0], samples[:, 1], samples[:, 2]
    rest = e2e - policy
    extra = f", policy_node {' '.join(args.policy_param)}" if args.policy_param else ""
    print(f"end-to-end latency of the simulated stack, {len(samples)} chunks{extra}")
    print(row("image stamp -> chunk published", e2e))
    print(row("policy call (in the node)", policy))
    print(row("everything else", rest))
    print(row("chunk published -> here", chunk_transport))
    print(row("floor: the image alone", floor))
    ratio = np.median(rest) / np.median(policy)
    print(f"  everything else / policy call (medians): {100 * ratio:.1f} % (target <= 10 %)")
    print(f"  everything else / floor (medians): {np.median(rest) / np.median(floor):.1f}")
    print(f"  end-to-end p99 {np.percentile(e2e, 99):.1f} ms (target <= 50 ms with tiny)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
