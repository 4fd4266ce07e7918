"""Malformed messages over DDS against the running simulated stack (sim_driver, prompt_node, policy_node).

The stack runs as in `demo` (one process per node, config/<node>.yaml), except that the policy node reads the
camera from /reliability/* topics that this suite relays from the simulator, so that it can stop the
camera and send bad frames alone. A text-only RunTask goal keeps the policy acting on every good frame.
Each kind of bad input is sent `per_kind` times while the relay is off and the arm has halted, then:

- crashes: a node process that exited;
- unexpected motion: the simulated TCP moving more than MOTION_TOLERANCE_M while bad input alone arrives,
  a chunk from the policy for a bad frame, a prompt from prompt_node for a bad click, a bad prompt held by
  the policy node (its diagnostics), or a chunk the simulator accepted from the bad ones;
- survived: good input afterwards works again (a chunk from the policy, accepted by the simulator; a prompt
  for a good click).

A flood (1 kHz of malformed VGA images for FLOOD_S beside the relayed 10 Hz camera) checks that the policy
node sheds load: it goes on acting on at least FLOOD_MIN_CHUNK_RATE_HZ of the good frames meanwhile, and
acts within FLOOD_RECOVERY_S once the flood stops.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, PointStamped, PoseStamped, Vector3
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import String

from pixelvla_ros.action import RunTask
from pixelvla_ros.demo import start_nodes, stop_nodes
from pixelvla_ros.msg import ActionChunk
from pixelvla_ros.msg import VisualPrompt as VisualPromptMsg
from pixelvla_ros.nodes.conversions import sec_to_stamp, stamp_to_sec
from pixelvla_ros.reliability.report import DrillRow

MOTION_TOLERANCE_M = 1e-3
SETTLE_S = 0.8  # after the relay stops: max_command_age (0.25 s), then the halted arm's ringing
FLOOD_S = 2.0
FLOOD_RATE_HZ = 1000.0
FLOOD_RECOVERY_S = 1.0
FLOOD_MIN_CHUNK_RATE_HZ = 5.0
RELAYED = "/reliability/image_raw", "/reliability/camera_info"
STACK = [
    ("sim_driver", ["-p", "family:=pick_named", "-p", "episode:=0"]),
    ("prompt_node", []),
    ("policy_node", ["-r", f"/camera/image_raw:={RELAYED[0]}", "-r", f"/camera/camera_info:={RELAYED[1]}"]),
]


@dataclass(frozen=True)
class Kind:
    """One kind of bad input: `make(suite)` returns the (publisher, message) pairs to send once."""

    target: str  # "policy" (frames), "prompt", "arm" (arm state), "driver" (chunks) or "clicks"
    name: str
    make: Callable[[StackProbe], list[tuple[object, object]]]


class StackProbe:
    """The suite's side of the DDS graph: relays the camera, publishes bad input, watches every output."""

    def __init__(self, context: rclpy.context.Context) -> None:
        self.node = rclpy.create_node("pixelvla_reliability", context=context)
        n = self.node
        self.lock = threading.Lock()
        self.relay = True
        self.image: Image | None = None  # the newest simulator frame and its CameraInfo
        self.info: CameraInfo | None = None
        self.relayed_stamp = 0.0
        self.tcp: np.ndarray | None = None
        self.policy_chunks = 0  # chunks the policy published (model_latency >= 0; the suite's are < 0)
        self.prompts = 0
        self.task: dict | None = None
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.diagnostic_times: dict[str, float] = {}
        sensor = qos_profile_sensor_data
        n.create_subscription(Image, "/camera/image_raw", self.on_image, sensor)
        n.create_subscription(CameraInfo, "/camera/camera_info", self.on_info, sensor)
        n.create_subscription(PoseStamped, "/pixelvla/tcp_pose", self.on_tcp, 10)
        n.create_subscription(ActionChunk, "/pixelvla/action_chunk", self.on_chunk, 10)
        n.create_subscription(VisualPromptMsg, "/pixelvla/prompt", self.on_prompt, 10)
        n.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 50)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        n.create_subscription(
            String, "/sim/task", lambda m: setattr(self, "task", json.loads(m.data)), latched
        )
        self.pub_image = n.create_publisher(Image, RELAYED[0], sensor)
        self.pub_info = n.create_publisher(CameraInfo, RELAYED[1], sensor)
        self.pub_chunk = n.create_publisher(ActionChunk, "/pixelvla/action_chunk", 10)
        self.pub_prompt = n.create_publisher(VisualPromptMsg, "/pixelvla/prompt", 10)
        self.pub_tcp = n.create_publisher(PoseStamped, "/pixelvla/tcp_pose", 10)
        self.pub_joints = n.create_publisher(JointState, "/joint_states", 10)
        self.pub_instruction = n.create_publisher(String, "/pixelvla/instruction", 10)
        self.pub_click = n.create_publisher(PointStamped, "/clicked_point", 10)
        self.pub_pixel_click = n.create_publisher(Point, "/camera/image_raw_mouse_left", 10)
        self.run_task = ActionClient(n, RunTask, "/pixelvla/run_task")

    # -- callbacks (executor thread) --------------------------------------------------------------------
    def on_image(self, msg: Image) -> None:
        with self.lock:
            self.image = msg
            relay, info = self.relay, self.info
        if relay:
            if info is not None:
                self.pub_info.publish(info)
            self.pub_image.publish(msg)
            self.relayed_stamp = stamp_to_sec(msg.header.stamp)

    def on_info(self, msg: CameraInfo) -> None:
        with self.lock:
            self.info = msg

    def on_tcp(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        if msg.header.frame_id == "base" and all(map(math.isfinite, (p.x, p.y, p.z))):  # not the suite's own
            self.tcp = np.array([p.x, p.y, p.z])

    def on_chunk(self, msg: ActionChunk) -> None:
        if msg.model_latency >= 0.0:
            self.policy_chunks += 1

    def on_prompt(self, _msg: VisualPromptMsg) -> None:
        self.prompts += 1

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            values["message"] = status.message
            self.diagnostics[status.name] = values
            self.diagnostic_times[status.name] = time.monotonic()

    # -- helpers ---------------------------------------------------------------------------------------
    def now(self) -> Time:
        return self.node.get_clock().now().to_msg()

    def now_s(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def good_frame(self, stamp: Time | None = None) -> tuple[Image, CameraInfo]:
        """The newest simulator frame and CameraInfo, restamped (now by default)."""
        with self.lock:
            image, info = copy.deepcopy(self.image), copy.deepcopy(self.info)
        image.header.stamp = info.header.stamp = stamp or self.now()
        return image, info

    def sim_value(self, key: str) -> str:
        return self.diagnostics.get("pixelvla_ros: sim_driver", {}).get(key, "")

    def policy_value(self, key: str) -> str:
        return self.diagnostics.get("pixelvla_ros: policy_node", {}).get(key, "")


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# ---------------------------------------------------------------------------------------------------------
# The kinds of bad input
# ---------------------------------------------------------------------------------------------------------
def _image(p: StackProbe, **change: object) -> list[tuple[object, object]]:
    image, info = p.good_frame()
    for key, value in change.items():
        if key == "age":
            image.header.stamp = sec_to_stamp(p.now_s() - float(value))
        else:
            setattr(image, key, value)
    return [(p.pub_info, info), (p.pub_image, image)]


def _info(p: StackProbe, **change: object) -> list[tuple[object, object]]:
    image, info = p.good_frame()
    for key, value in change.items():
        setattr(info, key, value)
    return [(p.pub_info, info), (p.pub_image, image)]


def _arm(p: StackProbe, tcp: PoseStamped | None = None, joints: JointState | None = None) -> list:
    """Bad arm state, stamped now (the policy node must drop it: the `arm` kinds check its count)."""
    if tcp is not None:
        tcp.header.stamp = p.now()
        return [(p.pub_tcp, tcp)]
    joints.header.stamp = p.now()
    return [(p.pub_joints, joints)]


def _nan_pose() -> PoseStamped:
    msg = PoseStamped()
    msg.header.frame_id = "base_nan"  # the suite's own TCP watch ignores it
    msg.pose.position.x = float("nan")
    msg.pose.orientation.w = 1.0
    return msg


def _prompt(p: StackProbe, **change: object) -> list[tuple[object, object]]:
    """A point prompt on the last relayed frame (which the policy node holds), changed."""
    image, _ = p.good_frame()
    msg = VisualPromptMsg(type=VisualPromptMsg.TYPE_POINT, image_width=image.width, image_height=image.height)
    msg.header.stamp, msg.header.frame_id = sec_to_stamp(p.relayed_stamp), image.header.frame_id
    msg.u, msg.v, msg.labels = [image.width / 2.0], [image.height / 2.0], [1]
    for key, value in change.items():
        setattr(msg, key, value)
    return [(p.pub_prompt, msg)]


def _mask_prompt(p: StackProbe, encoding: str, shrink: int) -> list[tuple[object, object]]:
    image, _ = p.good_frame()
    msg = _prompt(p, type=VisualPromptMsg.TYPE_MASK, u=[], v=[])[0][1]
    w, h = image.width - shrink, image.height
    msg.mask = Image(width=w, height=h, encoding=encoding, step=w, data=bytes(w * h))
    return [(p.pub_prompt, msg)]


def _chunk(
    p: StackProbe, n: int = 5, stamp_offset: float = 0.0, frame: str = "base", **change: object
) -> list:
    a = np.zeros((n, 7))
    a[:, 0] = 0.01
    for key, value in change.items():  # "t0x" = translation x of step 2, ...
        a[2, {"tx": 0, "rx": 3, "g": 6}[key]] = value
    msg = ActionChunk(dt=0.1, model_latency=-1.0, source_image_stamp=sec_to_stamp(p.now_s() + stamp_offset))
    msg.header.stamp, msg.header.frame_id = p.now(), frame
    msg.translation = [Vector3(x=float(r[0]), y=float(r[1]), z=float(r[2])) for r in a]
    msg.rotation = [Vector3(x=float(r[3]), y=float(r[4]), z=float(r[5])) for r in a]
    msg.gripper = [float(r[6]) for r in a]
    return [(p.pub_chunk, msg)]


def _chunk_with(p: StackProbe, edit: Callable[[ActionChunk], None]) -> list[tuple[object, object]]:
    pairs = _chunk(p)
    edit(pairs[0][1])
    return pairs


def _click(
    p: StackProbe, xyz: tuple[float, float, float], frame: str = "base"
) -> list[tuple[object, object]]:
    msg = PointStamped()
    msg.header.stamp, msg.header.frame_id = p.now(), frame
    msg.point.x, msg.point.y, msg.point.z = xyz
    return [(p.pub_click, msg)]


def _beyond_target(p: StackProbe, distance: float, below: float) -> tuple[float, float, float]:
    """A point on the camera's ray through the target `distance` m past it, or where that ray is `below` m
    under the table: both project onto the target's pixel."""
    target = np.asarray(p.task["entities"][p.task["target"]])
    camera = np.array([1.05, 0.42, 0.4])  # the simulator's nominal camera (config/prompt_node.yaml)
    ray = (target - camera) / np.linalg.norm(target - camera)
    if below:
        s = (camera[2] + below) / -ray[2]
        return tuple(float(v) for v in camera + s * ray)
    return tuple(float(v) for v in target + distance * ray)


def _set(field: str, value: object) -> Callable[[ActionChunk], None]:
    return lambda m: setattr(m, field, value)


def kinds() -> list[Kind]:
    nan, inf = float("nan"), float("inf")
    return [
        # camera frames to the policy node
        Kind("policy", "image: unknown encoding", lambda p: _image(p, encoding="yuv422")),
        Kind("policy", "image: 0x0", lambda p: _image(p, width=0, height=0, step=0, data=b"")),
        Kind("policy", "image: step < width x 3", lambda p: _image(p, step=10)),
        Kind("policy", "image: data too short", lambda p: _image(p, data=b"\0" * 100)),
        Kind("policy", "image: claims 100000x100000", lambda p: _image(p, width=100_000, height=100_000)),
        Kind("policy", "image: stamped 2 s old", lambda p: _image(p, age=2.0)),
        Kind("policy", "image: stamped 1 s ahead", lambda p: _image(p, age=-1.0)),
        Kind("policy", "image: stamped 0", lambda p: _image(p, age=p.now_s())),
        # camera calibration
        Kind("policy", "camera_info: NaN in K", lambda p: _info(p, k=[nan, *list(p.info.k)[1:]])),
        Kind("policy", "camera_info: zero focal length", lambda p: _info(p, k=[0.0] * 9)),
        Kind("policy", "camera_info: inf in D", lambda p: _info(p, d=[inf] * 5)),
        Kind("policy", "camera_info: other size", lambda p: _info(p, width=10, height=10)),
        # arm state
        Kind("arm", "tcp_pose: NaN", lambda p: _arm(p, tcp=_nan_pose())),
        Kind(
            "arm",
            "joint_states: gripper NaN",
            lambda p: _arm(p, joints=JointState(name=["gripper"], position=[nan])),
        ),
        Kind(
            "arm",
            "joint_states: names != positions",
            lambda p: _arm(p, joints=JointState(name=["a", "gripper"], position=[0.0])),
        ),
        # visual prompts (the policy node must not hold any)
        Kind("prompt", "prompt: unknown type", lambda p: _prompt(p, type=9)),
        Kind("prompt", "prompt: point outside the image", lambda p: _prompt(p, u=[1e6], v=[-5.0])),
        Kind("prompt", "prompt: NaN point", lambda p: _prompt(p, u=[nan], v=[1.0])),
        Kind("prompt", "prompt: u and v lengths differ", lambda p: _prompt(p, u=[1.0, 2.0], v=[1.0])),
        Kind(
            "prompt",
            "prompt: box corners swapped",
            lambda p: _prompt(p, type=VisualPromptMsg.TYPE_BOX, u=[30.0, 10.0], v=[40.0, 12.0], labels=[1]),
        ),
        Kind("prompt", "prompt: mask not mono8", lambda p: _mask_prompt(p, "rgb8", 0)),
        Kind("prompt", "prompt: mask of another size", lambda p: _mask_prompt(p, "mono8", 7)),
        Kind("prompt", "prompt: image size 0", lambda p: _prompt(p, image_width=0)),
        Kind("prompt", "prompt: for an unknown image", lambda p: _prompt(p, header=_header(p, -100.0))),
        # action chunks to the simulator driver
        Kind("driver", "chunk: no steps", lambda p: _chunk(p, n=0)),
        Kind("driver", "chunk: lengths differ", lambda p: _chunk_with(p, _set("gripper", [0.0]))),
        Kind("driver", "chunk: NaN translation", lambda p: _chunk(p, tx=nan)),
        Kind("driver", "chunk: inf rotation", lambda p: _chunk(p, rx=inf)),
        Kind("driver", "chunk: gripper 2", lambda p: _chunk(p, g=2.0)),
        Kind("driver", "chunk: 0.2 m step", lambda p: _chunk(p, tx=0.2)),
        Kind("driver", "chunk: 1 rad step", lambda p: _chunk(p, rx=1.0)),
        Kind("driver", "chunk: dt 0", lambda p: _chunk_with(p, _set("dt", 0.0))),
        Kind("driver", "chunk: dt NaN", lambda p: _chunk_with(p, _set("dt", nan))),
        Kind("driver", "chunk: dt negative", lambda p: _chunk_with(p, _set("dt", -0.1))),
        Kind("driver", "chunk: camera frame", lambda p: _chunk(p, frame="camera_optical")),
        Kind("driver", "chunk: image 1 s ahead", lambda p: _chunk(p, stamp_offset=1.0)),
        Kind("driver", "chunk: image 10^6 s ahead", lambda p: _chunk(p, stamp_offset=1e6)),
        Kind("driver", "chunk: image 10 s old", lambda p: _chunk(p, stamp_offset=-10.0)),
        Kind("driver", "chunk: 100000 steps", lambda p: _chunk(p, n=100_000, g=nan)),
        # clicks to the prompt node
        Kind("clicks", "click: NaN", lambda p: _click(p, (nan, 0.0, 0.0))),
        Kind("clicks", "click: 10 m beyond the target", lambda p: _click(p, _beyond_target(p, 10.0, 0.0))),
        Kind("clicks", "click: 0.8 m under the table", lambda p: _click(p, _beyond_target(p, 0.0, 0.8))),
        Kind("clicks", "click: unknown frame", lambda p: _click(p, (0.5, 0.0, 0.02), frame="map")),
        Kind("clicks", "image click: NaN", lambda p: [(p.pub_pixel_click, Point(x=nan, y=1.0))]),
        Kind("clicks", "image click: outside", lambda p: [(p.pub_pixel_click, Point(x=-5.0, y=1e6))]),
    ]


def _header(p: StackProbe, age: float):  # noqa: ANN202 - std_msgs/Header
    image, _ = p.good_frame()
    header = copy.deepcopy(image.header)
    header.stamp = sec_to_stamp(p.now_s() + age)
    return header


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------
def _fresh_diagnostics(p: StackProbe, name: str) -> None:
    """Wait for the next /diagnostics of `name` (published at 1 Hz)."""
    seen = time.monotonic()
    _wait(lambda: p.diagnostic_times.get(f"pixelvla_ros: {name}", 0.0) > seen, 2.5)


def _try_kind(p: StackProbe, kind: Kind, per_kind: int, alive: Callable[[], list[str]]) -> DrillRow:
    with p.lock:
        p.relay = False  # the policy node's camera stops: the arm halts; prompt_node keeps its own camera
    time.sleep(SETTLE_S)
    watched = {"driver": "sim_driver", "prompt": "policy_node", "arm": "policy_node"}.get(kind.target)
    if watched:  # the diagnostics are published at 1 Hz: read a count from after the settling
        _fresh_diagnostics(p, watched)
    tcp0, chunks0, prompts0 = p.tcp.copy(), p.policy_chunks, p.prompts
    accepted0, refused_arm0 = p.sim_value("chunks_accepted"), p.policy_value("arm_states_refused")
    for _ in range(per_kind):
        for publisher, message in kind.make(p):
            publisher.publish(message)
        time.sleep(0.1)
    time.sleep(0.5)  # what the bad input may have set off
    if watched:
        _fresh_diagnostics(p, watched)
    moved = float(np.linalg.norm(p.tcp - tcp0))
    wrong = []
    if moved > MOTION_TOLERANCE_M:
        wrong.append(f"TCP moved {moved * 1e3:.1f} mm")
    if p.policy_chunks != chunks0:
        wrong.append(f"{p.policy_chunks - chunks0} chunks from the policy")
    if kind.target == "clicks" and p.prompts != prompts0:
        wrong.append(f"{p.prompts - prompts0} prompts published")
    if kind.target == "prompt" and p.policy_value("active_prompt") != "none":
        wrong.append(f"policy holds prompt {p.policy_value('active_prompt')}")
    if kind.target == "arm" and p.policy_value("arm_states_refused") == refused_arm0:
        wrong.append("the policy node did not drop the bad arm state")
    if kind.target == "driver" and p.sim_value("chunks_accepted") != accepted0:
        wrong.append("the simulator accepted a bad chunk")
    dead = alive()
    survived = not dead and _recovers(p, kind)
    note = "; ".join(wrong + dead) or ("no motion, recovered" if survived else "did not recover")
    return DrillRow("malformed", kind.name, per_kind, len(dead), len(wrong), survived, note)


def _recovers(p: StackProbe, kind: Kind) -> bool:
    """Good input after the bad: the policy acts and the simulator accepts; a good click makes a prompt."""
    with p.lock:
        p.relay = True
    if kind.target == "clicks":
        prompts = p.prompts
        target = p.task["entities"][p.task["target"]]
        for publisher, message in _click(p, tuple(target)):
            publisher.publish(message)
        return _wait(lambda: p.prompts > prompts, 3.0)
    chunks, accepted = p.policy_chunks, p.sim_value("chunks_accepted")
    return _wait(lambda: p.policy_chunks > chunks, 5.0) and _wait(
        lambda: p.sim_value("chunks_accepted") != accepted, 3.0
    )


def _flood(p: StackProbe, alive: Callable[[], list[str]]) -> DrillRow:
    """1 kHz of malformed images beside the relayed camera for FLOOD_S, then FLOOD_RECOVERY_S to act."""
    with p.lock:
        p.relay = True
    good, _ = p.good_frame()
    # VGA-sized, as a camera publishes them: each one costs the subscriber a copy and a check
    bad = Image(width=640, height=480, encoding="yuv422", step=1280, data=bytes(1280 * 480))
    bad.header.frame_id = good.header.frame_id
    chunks0, sent = p.policy_chunks, 0
    end = time.monotonic() + FLOOD_S
    next_send = time.monotonic()
    while time.monotonic() < end:
        bad.header.stamp = p.now()
        p.pub_image.publish(bad)
        sent += 1
        next_send += 1.0 / FLOOD_RATE_HZ
        time.sleep(max(0.0, next_send - time.monotonic()))
    during = p.policy_chunks - chunks0
    after = p.policy_chunks
    recovered = _wait(lambda: p.policy_chunks > after, FLOOD_RECOVERY_S)
    dead = alive()
    rate = during / FLOOD_S
    note = f"{sent / FLOOD_S:.0f} bad images/s: {rate:.1f} chunks/s from the relayed camera during the flood"
    note += "" if recovered else f"; no chunk within {FLOOD_RECOVERY_S:g} s after it"
    survived = recovered and rate >= FLOOD_MIN_CHUNK_RATE_HZ and not dead
    return DrillRow("malformed", "flood: 1 kHz bad VGA images", sent, len(dead), 0, survived, note)


def run(log: Callable[[str], None] = print, per_kind: int = 3) -> list[DrillRow]:
    """Start the stack, send every kind, the flood; the rows of the table."""
    log_dir = Path(tempfile.mkdtemp(prefix="pixelvla_reliability_"))
    procs = start_nodes(STACK, log_dir)
    names = [name for name, _ in STACK]

    def alive() -> list[str]:
        return [
            f"{n} exited ({p.returncode})" for n, p in zip(names, procs, strict=True) if p.poll() is not None
        ]

    context = rclpy.Context()
    rclpy.init(context=context)
    probe = StackProbe(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe.node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    rows: list[DrillRow] = []
    try:
        ready = _wait(
            lambda: probe.task is not None and probe.tcp is not None and probe.info is not None, 120.0
        ) and probe.run_task.wait_for_server(timeout_sec=120.0)
        if not ready:
            raise RuntimeError(f"the stack did not come up (node logs in {log_dir}): {alive()}")
        goal = RunTask.Goal(instruction=probe.task["instruction"], require_prompt=False)
        future = probe.run_task.send_goal_async(goal)
        if not _wait(future.done, 10.0) or not future.result().accepted:
            raise RuntimeError("the policy node did not accept the RunTask goal")
        if not _wait(lambda: probe.policy_chunks > 3, 30.0):
            raise RuntimeError(f"the policy publishes no chunks (node logs in {log_dir})")
        log(f"stack up (logs in {log_dir}); {len(kinds())} kinds of malformed input, {per_kind} each")
        for kind in kinds():
            row = _try_kind(probe, kind, per_kind, alive)
            rows.append(row)
            log(f"  {kind.name}: {row.note}")
        rows.append(_flood(probe, alive))
        log(f"  {rows[-1].kind}: {rows[-1].note}")
        future.result().cancel_goal_async()
    finally:
        stop_nodes(procs)
        executor.shutdown(timeout_sec=2.0)
        probe.node.destroy_node()
        rclpy.try_shutdown(context=context)
    return rows
