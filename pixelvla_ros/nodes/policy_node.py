"""`ros2 run pixelvla_ros policy_node`: camera + visual prompt + instruction -> PixelVLA -> action chunks.

Thin shell around pixelvla_ros.policy.Policy (the checkpoint's own preprocessing and the safety check).
Inference runs on its own thread, which also takes the camera and the arm state (through a node of its own,
`policy_node_sensors`), always on the newest frame, so a slow model drops frames instead of queueing them.
A task runs while a RunTask goal is active.

Topics (remappable): in /camera/image_raw, /camera/camera_info (sensor QoS), /pixelvla/prompt,
/pixelvla/instruction (std_msgs/String), /pixelvla/tcp_pose, /joint_states (proprioception: TCP position
and the `gripper` joint); out /pixelvla/action_chunk, /pixelvla/twist (geometry_msgs/TwistStamped, the
chunk's first step as a velocity, for MoveIt Servo), /diagnostics. Action /pixelvla/run_task (RunTask).

Any doubt publishes nothing (the drivers halt when chunks stop): a frame older than max_image_age or stamped
ahead of the clock by more than max_stamp_lead, a malformed image or CameraInfo, a required prompt missing or
drawn on an image this node never held, stale proprioception, a model error, NaN or an out-of-limit step.
The reason goes to the log, the status and the action feedback, and the node goes on with the next frame.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, TwistStamped
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.task import Future
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String

from pixelvla_ros.action import RunTask
from pixelvla_ros.camera import CameraModel
from pixelvla_ros.click_projection import pose_to_matrix
from pixelvla_ros.inference.engine import BACKENDS
from pixelvla_ros.inference.remote import RemotePolicy
from pixelvla_ros.inference.wire import TOKEN_ENV, read_token
from pixelvla_ros.msg import ActionChunk
from pixelvla_ros.msg import VisualPrompt as VisualPromptMsg
from pixelvla_ros.nodes.conversions import (
    MessageError,
    camera_info_to_model,
    check_image,
    chunk_to_msg,
    image_to_rgb,
    prompt_from_msg,
    stamp_to_sec,
)
from pixelvla_ros.nodes.params import declare, package_share
from pixelvla_ros.nodes.run import run_node
from pixelvla_ros.policy import Policy
from pixelvla_ros.preprocessing import state_proprio
from pixelvla_ros.prompts import VisualPrompt, describe_prompts

FRAME_HISTORY_S = 30.0  # prompts may refer to any frame this recent (a user takes seconds to click)
STATE_HISTORY_S = 2.0  # arm states kept to find the one taken with a frame
FEEDBACK_PERIOD_S = 0.2  # RunTask feedback
STATE_WAIT_S = 0.02  # how long a frame waits for the arm state of its own instant (a separate topic)
# Python hands the GIL to a waiting thread only every switch interval (5 ms by default): the inference
# thread must not wait that long behind the executor's callbacks (prompts, the task action's feedback).
GIL_SWITCH_INTERVAL_S = 0.0002


def sensor_executor(context: rclpy.context.Context) -> Executor:
    """The executor of the sensor node, spun by the inference thread: rclpy's EventsExecutor (C++, in
    rclpy.experimental since Kilted) where it exists, its spin_once costs far less than the Python executor's.
    The action server's coroutines stay on the main executor: the EventsExecutor did not resume them."""
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:  # ROS 2 before Kilted
        return SingleThreadedExecutor(context=context)
    return EventsExecutor(context=context)


class StampedHistory:
    """The last seconds of a stamped signal (arm state), to pair a frame with the state of its instant:
    the newest state would be a later one when the camera lags, and the model was trained on pairs."""

    def __init__(self, seconds: float = STATE_HISTORY_S) -> None:
        self.seconds = seconds
        self.samples: deque[tuple[float, object]] = deque()

    def add(self, stamp: float, value: object) -> None:
        self.samples.append((stamp, value))
        while self.samples and self.samples[0][0] < stamp - self.seconds:
            self.samples.popleft()

    def newest_stamp(self) -> float:
        return self.samples[-1][0] if self.samples else float("-inf")

    def nearest(self, stamp: float) -> tuple[float, object] | None:
        """The sample closest in time to `stamp` (None when empty)."""
        return min(self.samples, key=lambda s: abs(s[0] - stamp), default=None)


class PolicyNode(Node):
    def __init__(self, policy: Policy | RemotePolicy | None = None) -> None:
        """`policy`: an already loaded Policy (tests); by default the `checkpoint` parameter's."""
        super().__init__("policy_node")
        self.thread: threading.Thread | None = None  # started last; a failed start has none to stop
        self.sensor_node: Node | None = None  # made after the checkpoint loads; a failed start has none
        checkpoint = declare(
            self, "checkpoint", "", "checkpoint folder; empty = the packaged tiny checkpoint", read_only=True
        )
        device = declare(self, "device", "auto", "torch device: auto (cuda when present), cpu, cuda:N")
        dtype = declare(
            self,
            "dtype",
            "auto",
            "weights' dtype: auto (bfloat16 on a GPU, float16 on one without bfloat16, float32 on the CPU), "
            "float32, bfloat16 or float16; one the device cannot run stops the start",
            read_only=True,
        )
        self.max_image_age = declare(
            self,
            "max_image_age",
            0.3,
            "refuse frames older than this when inference starts, s",
            floating=(0.01, 10.0),
        )
        self.max_stamp_lead = declare(
            self,
            "max_stamp_lead",
            0.05,
            "refuse frames stamped further ahead of this node's clock, s (a camera on another clock: its "
            "chunks would carry the future stamp to the driver)",
            floating=(0.0, 1.0),
        )
        self.max_state_skew = declare(
            self,
            "max_state_skew",
            0.2,
            "max |state stamp - image stamp| for proprioception, s",
            floating=(0.0, 5.0),
        )
        self.require_camera_info = declare(
            self, "require_camera_info", True, "refuse frames without a valid CameraInfo of the same size"
        )
        pose = declare(
            self,
            "camera_pose_in_base",
            [0.0],
            "pose of the camera optical frame in base_frame, [x, y, z, qx, qy, qz, qw] (m, unit quaternion), "
            "for a checkpoint with the prompt anchor (the prompt cast onto the work plane); [0.0]: not "
            "calibrated, such a checkpoint then acts from pixels alone",
            read_only=True,
        )
        # a typo must stop the start, not wait for the first prompt (ValueError says what is wrong)
        self.camera_pose = None if list(pose) == [0.0] else pose_to_matrix(pose)
        self.instruction = declare(
            self, "instruction", "", "instruction used when the goal and topic give none"
        )
        self.base_frame = declare(self, "base_frame", "base", "frame of the actions (the robot base)")
        cpu_threads = declare(
            self,
            "cpu_threads",
            0,
            "torch CPU threads for inference (0: torch's default, one per core); on a small machine shared "
            "with the simulator or drivers, fewer threads than cores avoid stalls behind descheduled threads",
            integer=(0, 256),
            read_only=True,
        )
        if cpu_threads:
            torch.set_num_threads(cpu_threads)

        backend = declare(
            self,
            "backend",
            "eager",
            f"inference backend, one of {', '.join(BACKENDS)} (pixelvla_ros/inference/engine.py); one that "
            "cannot run here stops the start, naming the alternatives",
            read_only=True,
        )
        server_url = declare(
            self,
            "server_url",
            "",
            "backend remote: the policy server's ws:// or wss:// address (policy_server on the GPU machine)",
            read_only=True,
        )
        server_token_file = declare(
            self,
            "server_token_file",
            "",
            f"backend remote: file holding the server's token (empty: the {TOKEN_ENV} environment variable)",
            read_only=True,
        )
        if policy is None and backend == "remote":
            # the model runs on the server; a lost server gives invalid chunks: no motion, reconnection
            policy = RemotePolicy.connect(server_url, read_token(server_token_file or None))
        elif policy is None:
            path = Path(checkpoint) if checkpoint else package_share() / "checkpoints" / "tiny"
            torch_device = None if device == "auto" else device
            # errors say what is wrong; the backend is warmed up before the node reports anything
            policy = Policy.from_checkpoint(path, device=torch_device, dtype=dtype, backend=backend)
        self.policy = policy
        warm = f", warmed up in {policy.warm_up_s:.1f} s" if policy.warm_up_s is not None else ""
        self.get_logger().info(
            f"PixelVLA from {policy.checkpoint} on {policy.device} in {policy.dtype}, backend "
            f"{policy.backend}{warm}: chunks of {policy.chunk_size} x "
            f"{policy.chunk_times()[1] - policy.chunk_times()[0]:.3f} s, {policy.commit_steps} steps each "
            "before a newer one takes over (the checkpoint's commit_steps, sent with every chunk)"
        )

        self.lock = threading.Lock()
        self.frame_fresh = False  # a frame came that inference has not taken yet (inference thread only)
        self.frame: Image | None = None
        self.frame_history: deque[tuple[float, int, int]] = deque()  # (stamp, width, height)
        self.camera_info: CameraInfo | None = None
        self.prompt: VisualPrompt | None = None
        self.prompt_stamp = 0.0
        self.pending_prompt: VisualPromptMsg | None = None  # a prompt newer than every frame held
        self.tcp_positions = StampedHistory()  # (3,) arrays
        self.grippers = StampedHistory()  # closure in [0, 1]
        self.topic_instruction = ""
        self.arm_states_refused = 0
        self.last_arm_state_refusal = ""

        self.task_active = False
        self.task_instruction = ""
        self.require_prompt = False
        self.state = "idle"
        self.published = self.refused = 0
        self.latencies: deque[float] = deque(maxlen=200)  # model time, s
        self.publish_times: deque[float] = deque(maxlen=50)
        self.last_image_age = float("nan")

        # The camera and the arm state are taken by the inference thread itself, through a node of its own
        # that holds nothing else (`<name>_sensors`, no parameters: they are this node's). Handing each frame
        # over from this node's executor cost a thread wake-up and the executor's pass over every other entity
        # (parameter and action services): everything besides the model fell from 3.7-4.6 ms to 2.0-2.2 ms
        # (bench.e2e_latency), with what queued during a model call taken after it (inference_loop).
        sensors_name = f"{self.get_name()}_sensors"
        self.sensor_node = rclpy.create_node(
            sensors_name,
            # its own name first: a launch file's `name=` (a process-wide __node remap) would rename it too
            cli_args=["--ros-args", "-r", f"__node:={sensors_name}"],
            namespace=self.get_namespace(),
            context=self.context,
            start_parameter_services=False,
        )
        sensor = qos_profile_sensor_data
        self.sensor_node.create_subscription(Image, "/camera/image_raw", self.on_image, sensor)
        self.sensor_node.create_subscription(CameraInfo, "/camera/camera_info", self.on_camera_info, sensor)
        self.sensor_node.create_subscription(PoseStamped, "/pixelvla/tcp_pose", self.on_tcp_pose, 10)
        self.sensor_node.create_subscription(JointState, "/joint_states", self.on_joint_state, 10)
        self.sensor_messages = 0  # sensor callbacks run so far (inference thread only)
        self.sensor_executor = sensor_executor(self.context)
        self.sensor_executor.add_node(self.sensor_node)
        self.create_subscription(VisualPromptMsg, "/pixelvla/prompt", self.on_prompt, 10)
        self.create_subscription(String, "/pixelvla/instruction", self.on_instruction, 10)
        self.pub_chunk = self.create_publisher(ActionChunk, "/pixelvla/action_chunk", 10)
        self.pub_twist = self.create_publisher(TwistStamped, "/pixelvla/twist", 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self.publish_diagnostics)
        ActionServer(
            self,
            RunTask,
            "/pixelvla/run_task",
            execute_callback=self.execute_task,
            goal_callback=self.on_goal,
            cancel_callback=lambda _goal: CancelResponse.ACCEPT,
        )
        self.running = True
        self.thread = threading.Thread(target=self.inference_loop, name="pixelvla_inference", daemon=True)
        self.thread.start()

    # ------------------------------------------------------------------------------------------ inputs
    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def on_image(self, msg: Image) -> None:
        self.sensor_messages += 1
        stamp = stamp_to_sec(msg.header.stamp)
        with self.lock:
            self.frame = msg
            self.frame_history.append((stamp, msg.width, msg.height))
            while self.frame_history and self.frame_history[0][0] < stamp - FRAME_HISTORY_S:
                self.frame_history.popleft()
            pending, self.pending_prompt = self.pending_prompt, None
        if pending is not None:
            self.on_prompt(pending)  # its image may have come now
        self.frame_fresh = True

    def on_camera_info(self, msg: CameraInfo) -> None:
        self.sensor_messages += 1
        self.camera_info = msg

    def on_instruction(self, msg: String) -> None:
        self.topic_instruction = msg.data

    def on_tcp_pose(self, msg: PoseStamped) -> None:
        self.sensor_messages += 1
        p = msg.pose.position
        position = np.array([p.x, p.y, p.z])
        if not np.all(np.isfinite(position)):
            self.refuse_arm_state(f"tcp_pose position {position.tolist()} is not finite")
            return
        self.tcp_positions.add(stamp_to_sec(msg.header.stamp), position)

    def on_joint_state(self, msg: JointState) -> None:
        self.sensor_messages += 1
        if "gripper" not in msg.name:
            return  # another publisher's joints (e.g. the arm alone)
        if len(msg.position) != len(msg.name):
            self.refuse_arm_state(f"joint_states has {len(msg.name)} names, {len(msg.position)} positions")
            return
        gripper = float(msg.position[msg.name.index("gripper")])
        if not np.isfinite(gripper):
            self.refuse_arm_state(f"gripper joint position {gripper} is not finite")
            return
        self.grippers.add(stamp_to_sec(msg.header.stamp), gripper)

    def refuse_arm_state(self, reason: str) -> None:
        """A malformed arm state is dropped (the frames pair with the valid states around it, or are refused
        as too far from any): logged, counted in the diagnostics."""
        self.arm_states_refused += 1
        self.last_arm_state_refusal = reason
        self.get_logger().error(f"arm state refused: {reason}", throttle_duration_sec=1.0)

    def on_prompt(self, msg: VisualPromptMsg) -> None:
        stamp = stamp_to_sec(msg.header.stamp)
        try:
            prompt = prompt_from_msg(msg)
            with self.lock:
                held = [(w, h) for s, w, h in self.frame_history if s == stamp]
                newest = self.frame_history[-1][0] if self.frame_history else float("-inf")
                if not held and stamp > newest:
                    # The prompt overtook its image (two topics, two paths): decide when the next frame comes.
                    self.pending_prompt = msg
                    return
            if not held:
                raise MessageError(
                    f"prompt was drawn on the image of stamp {stamp:.3f}, which this node does not hold "
                    f"(stale or unknown image; frames of the last {FRAME_HISTORY_S:.0f} s are held)"
                )
            if held[0] != (msg.image_width, msg.image_height):
                raise MessageError(
                    f"prompt is for a {msg.image_width}x{msg.image_height} image, the frame is {held[0]}"
                )
        except MessageError as e:
            self.get_logger().error(f"visual prompt refused: {e}")
            self.state = f"refusing: prompt: {e}"
            return
        with self.lock:
            self.prompt, self.prompt_stamp = prompt, stamp
        self.get_logger().info(f"visual prompt: {prompt.kind} on the image of {stamp:.3f}")

    # ------------------------------------------------------------------------------------------ inference
    def inference_loop(self) -> None:
        try:
            self._inference_loop()
        except ExternalShutdownException:
            pass  # the context shut down (SIGINT) while the thread waited for a sensor message: a normal stop

    def _inference_loop(self) -> None:
        while self.running and self.context.ok():
            if not self.frame_fresh:
                # One sensor message per call, run here: a frame is acted on as soon as it is taken (it is
                # the newest, as what queued during the last model call was taken after it).
                self.sensor_executor.spin_once(timeout_sec=0.1)
                continue
            self.frame_fresh = False
            if not self.task_active:
                continue
            with self.lock:
                frame, prompt = self.frame, self.prompt
            try:
                reason = self.act_on(frame, prompt)
            except Exception as e:  # noqa: BLE001 - the thread must outlive any one frame; no chunk = no motion
                if not rclpy.ok():
                    break  # shutting down: publishers are gone
                reason = f"refusing: {type(e).__name__}: {e}"
            if reason:
                self.refused += 1
                if reason != self.state:
                    self.get_logger().warning(f"no chunk: {reason}")
                self.state = reason
            else:
                self.state = "running"
            self.take_waiting_sensor_messages()

    def take_waiting_sensor_messages(self) -> None:
        """Run the callbacks of every sensor message already waiting: the frames that came during a model call
        all enter the frame history (prompts are checked against it) and only the newest is acted on. Called
        between frames: each spin_once, even with nothing to take, costs 0.1 ms."""
        taken = -1
        while taken != self.sensor_messages:
            taken = self.sensor_messages
            self.sensor_executor.spin_once(timeout_sec=0.0)

    def act_on(self, frame: Image, prompt: VisualPrompt | None) -> str:
        """Publish one chunk from `frame`; returns "" or why nothing was published."""
        stamp = stamp_to_sec(frame.header.stamp)
        self.last_image_age = age = self.now() - stamp
        if age > self.max_image_age:
            return f"refusing: stale image ({age:.3f} s old, max {self.max_image_age} s)"
        if -age > self.max_stamp_lead:
            return (
                f"refusing: image stamped {-age:.3f} s ahead of this node's clock (max "
                f"{self.max_stamp_lead} s; do the camera and this node use the same clock?)"
            )
        try:
            check_image(frame)
            camera = self.frame_camera(frame)
            rgb = image_to_rgb(frame)
        except MessageError as e:
            return f"refusing: {e}"
        if self.require_prompt and prompt is None:
            return "waiting for prompt"
        proprio = None
        if self.policy.proprio_dim:
            proprio, why = self.proprio_at(stamp)
            if proprio is None:
                return f"refusing: {why}"
        instruction = self.task_instruction or self.topic_instruction or self.instruction or None
        result = self.policy.predict_chunk(
            rgb, instruction, [prompt] if prompt else [], None, proprio, camera
        )
        if not result.valid:
            return f"refusing: policy: {result.reason}"
        now_msg = self.get_clock().now().to_msg()
        self.pub_chunk.publish(
            chunk_to_msg(
                result.actions,
                frame.header.stamp,
                result.dt,
                self.base_frame,
                now_msg,
                result.total_s,
                self.policy.commit_steps,
            )
        )
        twist = TwistStamped()
        twist.header.stamp, twist.header.frame_id = now_msg, self.base_frame
        v, w = result.actions[0, 0:3] / result.dt, result.actions[0, 3:6] / result.dt
        twist.twist.linear.x, twist.twist.linear.y, twist.twist.linear.z = (float(x) for x in v)
        twist.twist.angular.x, twist.twist.angular.y, twist.twist.angular.z = (float(x) for x in w)
        self.pub_twist.publish(twist)
        self.published += 1
        self.latencies.append(result.latency_s)
        self.publish_times.append(time.monotonic())
        return ""

    def anchor_state(self) -> str:
        """For the diagnostics: whether the prompt anchor reaches the model."""
        if not self.policy.preprocess_config.prompt_anchor:
            return "not used by this checkpoint"
        return "off (camera_pose_in_base not set)" if self.camera_pose is None else "on"

    def frame_camera(self, frame: Image) -> CameraModel | None:
        """The frame's camera model, posed by camera_pose_in_base, for the prompt anchor (None without the
        pose). With require_camera_info, a missing, unusable or mismatched CameraInfo raises MessageError;
        one conversion per frame serves both the check and the anchor."""
        info = self.camera_info
        if info is None:
            if self.require_camera_info:
                raise MessageError("no CameraInfo received yet")
            return None
        if not self.require_camera_info and self.camera_pose is None:
            return None
        camera = camera_info_to_model(
            info, self.camera_pose, self.base_frame
        )  # zero focal length, bad matrices
        if self.require_camera_info and (info.width, info.height) != (frame.width, frame.height):
            raise MessageError(
                f"CameraInfo is {info.width}x{info.height}, the image {frame.width}x{frame.height}"
            )
        return camera if self.camera_pose is not None else None

    def proprio_at(self, stamp: float) -> tuple[np.ndarray | None, str]:
        """The arm state taken closest to the frame's stamp; waits briefly for it when it is still on its
        way (it travels on other topics than the image, taken here on the inference thread)."""
        deadline = time.monotonic() + STATE_WAIT_S
        while min(self.tcp_positions.newest_stamp(), self.grippers.newest_stamp()) < stamp:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sensor_executor.spin_once(timeout_sec=remaining)
        tcp, gripper = self.tcp_positions.nearest(stamp), self.grippers.nearest(stamp)
        if tcp is None or gripper is None:
            return None, "no arm state yet (/pixelvla/tcp_pose and the gripper joint of /joint_states)"
        skew = max(abs(tcp[0] - stamp), abs(gripper[0] - stamp))
        if skew > self.max_state_skew:
            return None, f"arm state is {skew:.3f} s away from the image (max {self.max_state_skew} s)"
        return state_proprio(tcp[1], gripper[1]), ""

    # ------------------------------------------------------------------------------------------ task action
    def on_goal(self, _goal: RunTask.Goal) -> GoalResponse:
        if self.task_active:
            self.get_logger().warn("RunTask goal rejected: a task is already running (cancel it first)")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    async def sleep(self, seconds: float) -> None:
        """Wait without holding the executor: the node spins on one thread (main)."""
        woken = Future()
        timer = self.create_timer(seconds, lambda: woken.done() or woken.set_result(None))
        try:
            await woken
        finally:
            self.destroy_timer(timer)

    async def execute_task(self, goal_handle) -> RunTask.Result:  # noqa: ANN001 - rclpy ServerGoalHandle
        goal = goal_handle.request
        self.task_instruction, self.require_prompt = goal.instruction, goal.require_prompt
        self.published = self.refused = 0
        self.state = "waiting for image"
        self.task_active = True
        self.get_logger().info(f"task started: {goal.instruction!r} (prompt required: {goal.require_prompt})")
        start = time.monotonic()
        result = RunTask.Result()
        try:
            while rclpy.ok():
                elapsed = time.monotonic() - start
                if goal_handle.is_cancel_requested:
                    result.reason = "cancelled"
                    goal_handle.canceled()
                    break
                if goal.timeout_s > 0 and elapsed > goal.timeout_s:
                    result.reason = "timeout"
                    goal_handle.abort()
                    break
                feedback = RunTask.Feedback(
                    elapsed_s=elapsed,
                    chunks_published=self.published,
                    chunks_refused=self.refused,
                    state=self.state,
                    last_model_latency_s=self.latencies[-1] if self.latencies else 0.0,
                )
                goal_handle.publish_feedback(feedback)
                await self.sleep(FEEDBACK_PERIOD_S)
        finally:
            self.task_active = False
            with self.lock:
                self.prompt = None  # a prompt belongs to one task
            self.state = "idle"
        result.chunks_published, result.chunks_refused = self.published, self.refused
        self.get_logger().info(
            f"task ended ({result.reason}): {self.published} chunks, {self.refused} refused"
        )
        return result

    # ------------------------------------------------------------------------------------------ status
    def publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name="pixelvla_ros: policy_node", hardware_id=str(self.policy.device))
        state = self.state
        if state.startswith("refusing"):
            status.level = DiagnosticStatus.ERROR
        elif state in ("running", "idle"):
            status.level = DiagnosticStatus.OK
        else:
            status.level = DiagnosticStatus.WARN
        status.message = state
        lat = np.array(self.latencies) * 1e3
        times = np.array(self.publish_times)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        prompt = self.prompt
        status.values = [
            KeyValue(key="model_latency_median_ms", value=f"{np.median(lat):.1f}" if len(lat) else "n/a"),
            KeyValue(
                key="model_latency_p99_ms", value=f"{np.percentile(lat, 99):.1f}" if len(lat) else "n/a"
            ),
            KeyValue(key="chunk_rate_hz", value=f"{rate:.2f}"),
            KeyValue(key="image_age_s", value=f"{self.last_image_age:.3f}"),
            KeyValue(key="active_prompt", value=", ".join(describe_prompts([prompt])) if prompt else "none"),
            KeyValue(key="task_active", value=str(self.task_active)),
            KeyValue(key="chunks_published", value=str(self.published)),
            KeyValue(key="chunks_refused", value=str(self.refused)),
            KeyValue(key="arm_states_refused", value=str(self.arm_states_refused)),
            KeyValue(key="last_arm_state_refusal", value=self.last_arm_state_refusal),
            KeyValue(key="checkpoint", value=str(self.policy.checkpoint)),
            KeyValue(key="backend", value=self.policy.backend),
            KeyValue(
                key="warm_up_s", value=f"{self.policy.warm_up_s:.2f}" if self.policy.warm_up_s else "n/a"
            ),
            KeyValue(key="prompt_anchor", value=self.anchor_state()),
        ]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(msg)

    def destroy_node(self) -> None:
        self.running = False
        if self.thread is not None and self.thread.is_alive():
            self.thread.join(timeout=2.0)
        if self.sensor_node is not None:
            self.sensor_executor.shutdown()
            self.sensor_node.destroy_node()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    # Any startup failure (e.g. CheckpointError) is reported with its reason rather than a traceback.
    # One executor thread: nothing here blocks (inference has its own thread and takes the sensors itself,
    # the task action awaits).
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    return run_node(PolicyNode, "policy_node", 1, (Exception,), args)
