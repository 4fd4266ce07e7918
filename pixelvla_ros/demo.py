"""`ros2 run pixelvla_ros demo` (`make demo`): the whole stack on the simulated robot, clicked like a user.

Starts the nodes of launch/sim.launch.py (sim_driver, prompt_node, policy_node with the packaged tiny
checkpoint) as separate processes talking over DDS, then plays the user: reads the scene from /sim/task,
publishes a click on the target exactly as RViz's "Publish Point" tool does (geometry_msgs/PointStamped on
/clicked_point, in the fixed frame), waits for the prompt node's VisualPrompt, sends a RunTask goal to the
policy node and watches the simulator until the object is picked or the time limit passes. Writes
OUT/demo.gif (the overlay: camera image, prompt, commanded motion), OUT/overlay_*.png and OUT/result.json
(outcome, clicked object, the TCP's closest approach to each object), prints the outcome, exits 0 on success.

    demo [--episode N] [--family pick_prompted] [--out runs/demo] [--timeout 40] [--checkpoint DIR]
         [--click NAME]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import rclpy
from geometry_msgs.msg import PointStamped, PoseStamped
from rclpy.action import ActionClient
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import String

from pixelvla_ros.action import RunTask
from pixelvla_ros.msg import VisualPrompt as VisualPromptMsg
from pixelvla_ros.nodes.conversions import image_to_rgb
from pixelvla_ros.nodes.params import package_share
from pixelvla_ros.sim.tasks import TaskConfig

print = functools.partial(print, flush=True)  # noqa: A001 - progress lines of a long-running command


# Parameter files shared by several nodes (launch/*.launch.py pass the same): the camera calibration. They
# hold `/**` sections and come after the node's own file: rcl applies the sections of the merged files in
# the order their node names first appear, so a `/**` section first would let the node's own file override
# what comes after it (launch arguments, -p).
SHARED_CONFIG = {"prompt_node": ("camera.yaml",), "policy_node": ("camera.yaml",)}

# An eval-split pick_prompted scene (held out from training) with two look-alikes: only the click names the
# target. test/test_sim_stack.py checks the scene.
DEFAULT_EPISODE = 6


def sim_stack(family: str, episode: int, checkpoint: str) -> list[tuple[str, list[str]]]:
    """launch/sim.launch.py's nodes and their arguments beyond config/<node>.yaml."""
    return [
        ("sim_driver", ["-p", f"family:={family}", "-p", f"episode:={episode}"]),
        ("prompt_node", []),
        ("policy_node", ["-p", f"checkpoint:={checkpoint}"] if checkpoint else []),
    ]


def config_files(name: str) -> list[str]:
    """The node's parameter files in config/, in the launch files' order: <name>.yaml, then shared ones."""
    return [f"{name}.yaml", *SHARED_CONFIG.get(name, ())]


def start_nodes(stack: list[tuple[str, list[str]]], log_dir: Path) -> list[subprocess.Popen]:
    """One process per node, each with its config files (config_files) then `extra` ROS arguments, as launch
    does."""
    share = package_share()
    lib = share.parent.parent / "lib" / "pixelvla_ros"
    procs = []
    for name, extra in stack:
        params = [arg for f in config_files(name) for arg in ("--params-file", str(share / "config" / f))]
        cmd = [str(lib / name), "--ros-args", *params, *extra]
        log = open(log_dir / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return procs


def stop_nodes(procs: list[subprocess.Popen]) -> None:
    """SIGINT as launch does, then SIGTERM (a shell's background jobs ignore SIGINT), then SIGKILL."""
    for sig, grace in ((signal.SIGINT, 5.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        alive = [p for p in procs if p.poll() is None]
        for p in alive:
            os.killpg(p.pid, sig)
        end = time.monotonic() + grace
        while any(p.poll() is None for p in alive) and time.monotonic() < end:
            time.sleep(0.05)


class DemoUser(Node):
    """What a person at RViz does: look at the scene, click the object, start the task, watch."""

    def __init__(self) -> None:
        super().__init__("pixelvla_demo_user")
        self.task: dict | None = None
        self.initial_entities: dict | None = None  # object positions when the episode began
        self.prompt: VisualPromptMsg | None = None
        self.overlays: list[np.ndarray] = []
        self.images = 0
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(String, "/sim/task", self.on_task, latched)
        self.create_subscription(VisualPromptMsg, "/pixelvla/prompt", self.on_prompt, 10)
        self.create_subscription(Image, "/pixelvla/overlay", self.on_overlay, 10)
        self.create_subscription(Image, "/camera/image_raw", self.on_image, qos_profile_sensor_data)
        self.tcp: list[np.ndarray] = []  # measured TCP positions, base frame
        self.create_subscription(PoseStamped, "/pixelvla/tcp_pose", self.on_tcp, 10)
        self.clicks = self.create_publisher(PointStamped, "/clicked_point", 10)
        self.run_task = ActionClient(self, RunTask, "/pixelvla/run_task")

    def on_task(self, msg: String) -> None:
        self.task = json.loads(msg.data)
        if self.initial_entities is None:
            self.initial_entities = self.task["entities"]

    def on_prompt(self, msg: VisualPromptMsg) -> None:
        self.prompt = msg

    def on_overlay(self, msg: Image) -> None:
        self.overlays.append(image_to_rgb(msg))

    def on_tcp(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        self.tcp.append(np.array([p.x, p.y, p.z]))

    def on_image(self, _msg: Image) -> None:
        self.images += 1

    def click(self, xyz: list[float], frame: str) -> None:
        """A PointStamped as RViz 2's Publish Point tool sends it: the point in the fixed frame, now."""
        msg = PointStamped()
        msg.header.stamp, msg.header.frame_id = self.get_clock().now().to_msg(), frame
        msg.point.x, msg.point.y, msg.point.z = (float(v) for v in xyz)
        self.clicks.publish(msg)


def wait_for(what: str, condition, timeout: float) -> None:  # noqa: ANN001 - a callable returning bool
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def run_demo(user: DemoUser, timeout: float, click: str) -> tuple[bool, str, str]:
    """Click `click` ("target": the task's target), run the task; (task success, message, clicked name)."""
    wait_for("the simulator's task (/sim/task)", lambda: user.task is not None, 60)
    wait_for("camera images (/camera/image_raw)", lambda: user.images > 3, 30)
    wait_for("the policy node's RunTask action", lambda: user.run_task.wait_for_server(timeout_sec=0.1), 120)
    task = user.task
    target = task["target"]
    clicked = target if click == "target" else click
    if clicked not in task["entities"]:
        return False, f"no object {clicked!r} in the scene ({sorted(task['entities'])})", clicked
    print(f"scene: {task['family']} seed {task['seed']}, instruction {task['instruction']!r}")
    print(f"clicking {clicked} at {task['entities'][clicked]} ({task['base_frame']} frame), as RViz does")
    for _ in range(3):  # a click can land between discovery and the first match on a busy machine
        user.click(task["entities"][clicked], task["base_frame"])
        try:
            wait_for("the prompt node's VisualPrompt", lambda: user.prompt is not None, 5)
            break
        except TimeoutError:
            continue
    if user.prompt is None:
        return False, "no VisualPrompt came back for the click (see prompt_node.log)", clicked
    print(f"prompt: pixel ({user.prompt.u[0]:.1f}, {user.prompt.v[0]:.1f}) of the image of the click")

    goal = RunTask.Goal(instruction=task["instruction"], timeout_s=float(timeout), require_prompt=True)
    states: list[str] = []
    future = user.run_task.send_goal_async(goal, feedback_callback=lambda f: states.append(f.feedback.state))
    wait_for("the goal to be accepted", future.done, 10)
    handle = future.result()
    if not handle.accepted:
        return False, "the policy node rejected the RunTask goal", clicked
    result = handle.get_result_async()
    start = last_click = time.monotonic()
    z0 = task["entities"][clicked][2]

    def picked() -> bool:
        """The simulator's success for the task's target; for another clicked object, the same lift."""
        if clicked == target:
            return bool(user.task["success"])
        return user.task["entities"][clicked][2] - z0 >= TaskConfig().lift_height

    while not picked() and not result.done():
        # The policy node can miss the first prompt (DDS discovery on a busy machine): click again.
        if states and states[-1] == "waiting for prompt" and time.monotonic() - last_click > 2.0:
            user.click(task["entities"][clicked], task["base_frame"])
            last_click = time.monotonic()
        time.sleep(0.05)
    elapsed = time.monotonic() - start
    if picked():
        handle.cancel_goal_async()
        wait_for("the task to end", result.done, 10)
        return True, f"picked {clicked} {elapsed:.1f} s after the goal was sent", clicked
    return False, f"{clicked} not picked within {timeout:.0f} s ({result.result().result.reason})", clicked


def horizontal_distances(user: DemoUser) -> tuple[dict[str, float], dict[str, float]]:
    """Per object, the horizontal distance of the measured TCP to the object's initial position: at the
    start, and the smallest over the run, m."""
    if not user.tcp or user.initial_entities is None:
        return {}, {}
    tcp = np.stack(user.tcp)[:, :2]
    d = {
        name: np.linalg.norm(tcp - np.asarray(xyz)[:2], axis=1) for name, xyz in user.initial_entities.items()
    }
    return {n: round(float(v[0]), 4) for n, v in d.items()}, {
        n: round(float(v.min()), 4) for n, v in d.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--family", default="pick_prompted")
    parser.add_argument("--episode", type=int, default=DEFAULT_EPISODE, help="eval-split scene index")
    parser.add_argument("--checkpoint", default="", help="default: the packaged tiny checkpoint")
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--timeout", type=float, default=40.0, help="s for the task")
    parser.add_argument("--click", default="target", help="object to click: target (default) or a name")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    stack = sim_stack(args.family, args.episode, args.checkpoint)
    procs = start_nodes(stack, out)
    rclpy.init()
    user = DemoUser()
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(user)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        ok, message, clicked = run_demo(user, args.timeout, args.click)
    except TimeoutError as e:
        ok, message, clicked = False, str(e), args.click
    finally:
        time.sleep(0.5)  # the last overlays
        stop_nodes(procs)
        executor.shutdown(timeout_sec=2.0)
        user.destroy_node()
        rclpy.try_shutdown()
    dead = [
        f"{name} exited with {p.returncode}"
        for (name, _), p in zip(stack, procs, strict=True)
        if p.returncode not in (0, -2, -15, None)  # exit codes of SIGINT/SIGTERM are a clean stop
    ]
    frames = list(user.overlays)
    if frames:
        iio.imwrite(
            out / "demo.gif",
            np.stack(frames),  # the overlay is already enlarged for viewing
            duration=100,
            loop=0,
        )
        for k in (0, len(frames) // 2, len(frames) - 1):
            iio.imwrite(out / f"overlay_{k:04d}.png", frames[k])
    start, approach = horizontal_distances(user)
    result = {
        "success": ok,
        "message": message,
        "clicked": clicked,
        "start_distance_m": start,
        "closest_approach_m": approach,
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(f"{'SUCCESS' if ok else 'FAILED'}: {message}")
    if approach:
        print(
            "TCP to each object (m), start -> closest: "
            + ", ".join(f"{k} {start[k]:.3f} -> {v:.3f}" for k, v in approach.items())
        )
    print(f"wrote {out}/demo.gif ({len(frames)} overlay frames), overlay_*.png, node logs {out}/*.log")
    if dead:
        print("nodes that failed: " + "; ".join(dead))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
