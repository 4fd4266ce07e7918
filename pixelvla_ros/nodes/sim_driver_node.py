"""`ros2 run pixelvla_ros sim_driver`: the MuJoCo tabletop as a robot cell: publishes the camera like a
camera driver (Image + CameraInfo), the arm state (tcp_pose, joint_states) and the task, and executes
ActionChunk messages through the shared safety filter (pixelvla_ros.drivers.sim_driver).

Topics (remappable): out /camera/image_raw, /camera/camera_info, /pixelvla/tcp_pose, /joint_states,
/sim/task (std_msgs/String, JSON, latched: instruction, target, entity positions, success), /diagnostics;
in /pixelvla/action_chunk. Service ~/reset (std_srvs/Trigger): restart the episode.
"""

from __future__ import annotations

import json
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String
from std_srvs.srv import Trigger

from pixelvla_ros.chunk_timeline import ChunkRules, commit_override
from pixelvla_ros.drivers.sim_driver import SimArmState, SimDriver
from pixelvla_ros.msg import ActionChunk
from pixelvla_ros.nodes.conversions import (
    chunk_from_msg,
    joint_state_msg,
    model_to_camera_info,
    pose_msg,
    rgb_to_image,
    sec_to_stamp,
)
from pixelvla_ros.nodes.params import declare
from pixelvla_ros.nodes.run import run_node
from pixelvla_ros.safety import SafetyLimits
from pixelvla_ros.sim.seeds import episode_seed
from pixelvla_ros.sim.tasks import FAMILIES, TaskConfig

LATCHED = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class SimDriverNode(Node):
    def __init__(self) -> None:
        super().__init__("sim_driver")
        self.thread: threading.Thread | None = None  # started last; a failed start has none to stop
        family = declare(self, "family", "pick_prompted", f"task family, one of {FAMILIES}")
        episode = declare(
            self, "episode", 0, "episode index in the split (its seed: sim.seeds)", integer=(0, 10**6)
        )
        split = declare(self, "split", "eval", "seed split: eval (scenes held out from training) or train")
        size = declare(self, "image_size", 96, "published camera image size, px", integer=(32, 1024))
        self.base_frame = declare(self, "base_frame", "base", "frame of tcp_pose and of the actions")
        self.delay = declare(
            self,
            "actuation_delay",
            0.05,
            "s after a frame when its period's action is taken",
            floating=(0.0, 0.1),
        )
        rules = ChunkRules(
            base_frame=self.base_frame,
            max_stamp_lead=declare(
                self,
                "max_stamp_lead",
                0.05,
                "refuse chunks whose image stamp leads this node's clock by more, s",
                floating=(0.0, 1.0),
            ),
            max_command_age=declare(
                self,
                "max_command_age",
                0.25,
                "refuse chunks from older images, and halt once the newest chunk's image is older, s",
                floating=(0.05, 2.0),
            ),
        )
        commit_steps = declare(
            self,
            "commit_steps",
            -1,
            "steps a started chunk keeps control before the newest takes over (0: newest wins); "
            "-1: the chunk's own, how the checkpoint was evaluated",
            integer=(-1, 64),
        )
        limits = SafetyLimits(
            max_linear_speed=declare(self, "safety.max_linear_speed", 0.5, "m/s", floating=(0.01, 2.0)),
            max_linear_acceleration=declare(
                self, "safety.max_linear_acceleration", 10.0, "m/s^2", floating=(0.1, 50.0)
            ),
            max_angular_speed=declare(self, "safety.max_angular_speed", 3.5, "rad/s", floating=(0.01, 10.0)),
            max_angular_acceleration=declare(
                self, "safety.max_angular_acceleration", 40.0, "rad/s^2", floating=(0.1, 100.0)
            ),
            max_gripper_rate=declare(
                self, "safety.max_gripper_rate", 20.0, "closure per s", floating=(0.1, 100.0)
            ),
            stale_cycles=declare(
                self, "safety.stale_cycles", 2, "halt after this many stale periods", integer=(1, 10)
            ),
        )
        if family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
        if split not in ("eval", "train"):
            raise ValueError(f"split must be eval or train, got {split!r}")
        self.seed = episode_seed(split, episode)
        override = None if commit_steps < 0 else commit_steps
        self.driver = SimDriver(TaskConfig(family=family), self.seed, split, limits, size, rules, override)
        self.reset_requested = threading.Event()  # the control thread owns the simulator and its GL context
        self.reset_requested.set()
        self.lock = threading.Lock()
        self.chunks_accepted = self.chunks_refused = 0
        self.last_refusal = ""
        self.last_report = None

        # Reliable, depth 1, like most camera drivers: reaches best-effort (sensor QoS) subscribers and RViz.
        self.pub_image = self.create_publisher(Image, "/camera/image_raw", 1)
        self.pub_info = self.create_publisher(CameraInfo, "/camera/camera_info", 1)
        self.pub_pose = self.create_publisher(PoseStamped, "/pixelvla/tcp_pose", 10)
        self.pub_joints = self.create_publisher(JointState, "/joint_states", 10)
        self.pub_task = self.create_publisher(String, "/sim/task", LATCHED)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(ActionChunk, "/pixelvla/action_chunk", self.on_chunk, 10)
        self.create_service(Trigger, "~/reset", self.on_reset)
        self.create_timer(1.0, self.publish_diagnostics)
        self.running = True
        self.thread = threading.Thread(target=self.control_loop, name="sim_control", daemon=True)
        self.thread.start()
        self.get_logger().info(f"simulated {family} scene, {split} episode {episode} (seed {self.seed})")

    # ---------------------------------------------------------------------------------------------
    def on_chunk(self, msg: ActionChunk) -> None:
        try:
            chunk = chunk_from_msg(msg)
            note = commit_override(self.driver.timeline.commit_steps, chunk)
            if note:
                self.get_logger().warn(note, once=True)
            with self.lock:
                self.driver.add_chunk(chunk, self.get_clock().now().nanoseconds * 1e-9)
            self.chunks_accepted += 1
        except ValueError as e:  # MessageError, ChunkRefused, UnsafeChunkError
            self.chunks_refused += 1
            self.last_refusal = str(e)
            self.get_logger().error(
                f"action chunk refused, no motion from it: {e}", throttle_duration_sec=1.0
            )

    def on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.reset_requested.set()
        response.success, response.message = True, "the episode restarts at the next control period"
        return response

    def publish_task(self) -> None:
        env = self.driver.env
        task = env.task
        state = {
            "family": task.family,
            "seed": self.seed,
            "instruction": task.instruction,
            "target": task.target,
            "prompted": list(task.prompted),
            "text_ambiguous": task.text_ambiguous,
            "base_frame": self.base_frame,
            "entities": {name: env.object_pose(name)[:3, 3].round(4).tolist() for name in env.entities},
            "steps": self.driver.steps,
            "success": bool(self.driver.success),
        }
        self.pub_task.publish(String(data=json.dumps(state)))

    # ---------------------------------------------------------------------------------------------
    def control_loop(self) -> None:
        """One control period per iteration on the ROS clock; never inside a callback."""
        try:
            self.run_periods()
        except Exception:
            if rclpy.ok():  # a real failure, not the context going away at shutdown
                raise
        finally:
            self.driver.env.close()  # GL contexts belong to this thread

    def run_periods(self) -> None:
        """Period n: at t_n publish the frame and arm state of t_n, at t_n + actuation_delay execute the
        period's action, then render the frame of t_(n+1). That state is final once period n is stepped, so
        the frame is rendered ahead and published on time: the simulated camera has no readout latency, and
        its render time does not count in the stack's latency (a real camera's readout is its own)."""
        period = self.driver.period
        next_tick = time.monotonic()
        state = None
        while self.running and rclpy.ok():
            if self.reset_requested.is_set() or state is None:
                self.reset_requested.clear()
                with self.lock:
                    self.driver.reset(self.seed)
                state = self.driver.capture()
                self.publish_task()
                self.get_logger().info(f"episode started: {self.driver.task.instruction!r}")
                next_tick = time.monotonic()
            time.sleep(max(0.0, next_tick - time.monotonic()))
            t = self.get_clock().now().nanoseconds * 1e-9
            self.publish_state(state, t)
            time.sleep(max(0.0, next_tick + self.delay - time.monotonic()))
            with self.lock:
                was_success = self.driver.success
                self.last_report = self.driver.step(t)
            state = self.driver.capture()  # on_chunk only touches the timeline: no lock while rendering
            if self.driver.success != was_success or self.driver.steps % 10 == 0:
                self.publish_task()
            next_tick += period
            late = time.monotonic() - next_tick
            if late > period:  # overran a whole period (machine overloaded): do not try to catch up
                self.get_logger().warning(f"control loop {late:.3f} s late; skipping ahead")
                next_tick = time.monotonic()

    def publish_state(self, s: SimArmState, t: float) -> None:
        stamp = sec_to_stamp(t)
        # The image first, the arm state next, CameraInfo last: latency is counted from the image's stamp and
        # every message published before it delays it, and queues ahead of it in each subscriber's executor.
        # The policy waits for the state of the image's stamp (its inference thread, woken by the image,
        # finds it arrived); for CameraInfo it takes the newest. The image reached the policy 1 ms sooner.
        self.pub_image.publish(rgb_to_image(s.rgb, stamp, s.camera.frame_id))
        self.pub_pose.publish(pose_msg(s.tcp_pose, stamp, self.base_frame))
        self.pub_joints.publish(joint_state_msg(s.joint_positions, s.gripper, stamp))
        self.pub_info.publish(model_to_camera_info(s.camera, stamp))

    def publish_diagnostics(self) -> None:
        report = self.last_report
        status = DiagnosticStatus(name="pixelvla_ros: sim_driver", hardware_id="mujoco")
        if report is None or not report.halted:
            status.level, status.message = DiagnosticStatus.OK, "running"
        else:
            status.level, status.message = DiagnosticStatus.WARN, "halted: " + "; ".join(report.reasons)
        status.values = [
            KeyValue(key="steps", value=str(self.driver.steps)),
            KeyValue(key="success", value=str(self.driver.success)),
            KeyValue(key="chunks_accepted", value=str(self.chunks_accepted)),
            KeyValue(key="chunks_refused", value=str(self.chunks_refused)),
            KeyValue(key="last_refusal", value=self.last_refusal),
        ]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(msg)

    def destroy_node(self) -> None:
        self.running = False
        if self.thread is not None and self.thread.is_alive():
            self.thread.join(timeout=2.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    return run_node(SimDriverNode, "sim_driver", 1, (ValueError,), args)  # no callback blocks
