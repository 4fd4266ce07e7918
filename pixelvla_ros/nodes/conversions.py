"""ROS messages <-> the core's types. Every function that reads a message validates it and raises
`MessageError` saying what was wrong and what was expected; nodes log that reason and refuse the input.

Images: ROS 2's cv_bridge is used where it is installed (apt / rosdep on a ROS install). It is not on PyPI:
PyPI's `cv-bridge` is the ROS 1 module, whose `cv2_to_imgmsg` calls `ndarray.tostring()` (removed in
NumPy 2) and which knows only ROS 1 message classes. Where ROS 2's cv_bridge is missing, the few encodings
a camera driver publishes are converted with NumPy here. Both paths go through the same checks first.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped, Vector3
from sensor_msgs.msg import CameraInfo, Image, JointState

from pixelvla_ros.camera import CameraModel
from pixelvla_ros.chunk_timeline import TimedChunk
from pixelvla_ros.msg import ActionChunk
from pixelvla_ros.msg import VisualPrompt as VisualPromptMsg
from pixelvla_ros.prompts import BOX, LINE, MASK, POINT, PixelVLAInputError, VisualPrompt
from pixelvla_ros.ur5e import JOINT_NAMES, matrix_to_quaternion

try:  # ROS 2's cv_bridge (see the module docstring for why it is optional)
    from cv_bridge import CvBridge

    _BRIDGE: CvBridge | None = CvBridge()
except ImportError:
    _BRIDGE = None

# encoding -> (channels, dtype, order of the channels)
IMAGE_ENCODINGS = {
    "rgb8": (3, np.uint8, "rgb"),
    "bgr8": (3, np.uint8, "bgr"),
    "rgba8": (4, np.uint8, "rgb"),
    "bgra8": (4, np.uint8, "bgr"),
    "mono8": (1, np.uint8, "mono"),
}


class MessageError(ValueError):
    """A message is malformed or cannot be used; the text says what was wrong and what was expected."""


def stamp_to_sec(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(t: float) -> Time:
    sec = int(np.floor(t))
    return Time(sec=sec, nanosec=min(int(round((t - sec) * 1e9)), 999_999_999))


# ---------------------------------------------------------------------------------------------------------
# Images and camera models
# ---------------------------------------------------------------------------------------------------------
def check_image(msg: Image) -> None:
    """Raise MessageError unless `msg` is an image this package can read."""
    if msg.encoding not in IMAGE_ENCODINGS:
        raise MessageError(
            f"image encoding {msg.encoding!r} is not supported; expected one of {sorted(IMAGE_ENCODINGS)}"
        )
    channels = IMAGE_ENCODINGS[msg.encoding][0]
    if msg.width == 0 or msg.height == 0:
        raise MessageError(f"image is empty ({msg.width}x{msg.height})")
    if msg.step < msg.width * channels:
        raise MessageError(f"image step {msg.step} is smaller than width x channels = {msg.width * channels}")
    if len(msg.data) != msg.step * msg.height:
        raise MessageError(
            f"image data has {len(msg.data)} bytes, expected step x height = {msg.step * msg.height}"
        )


def image_to_rgb(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB copy of a sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8 or mono8)."""
    check_image(msg)
    if _BRIDGE is not None:
        return np.ascontiguousarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    channels, dtype, order = IMAGE_ENCODINGS[msg.encoding]
    rows = np.frombuffer(bytes(msg.data), dtype=dtype).reshape(msg.height, msg.step)
    pixels = rows[:, : msg.width * channels].reshape(msg.height, msg.width, channels)
    if order == "mono":
        return np.repeat(pixels, 3, axis=2)
    rgb = pixels[:, :, :3]
    return (rgb[:, :, ::-1] if order == "bgr" else rgb).copy()  # frombuffer memory is read-only


def rgb_to_image(rgb: np.ndarray, stamp: Time, frame_id: str) -> Image:
    """sensor_msgs/Image (rgb8) from an (H, W, 3) uint8 array."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise MessageError(f"expected an (H, W, 3) uint8 RGB array, got shape {rgb.shape}")
    msg = Image(
        height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", is_bigendian=0, step=rgb.shape[1] * 3
    )
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = rgb.tobytes()
    return msg


def camera_info_to_model(
    msg: CameraInfo, T_base_camera: np.ndarray | None = None, base_frame_id: str = "base"
) -> CameraModel:
    """CameraModel from CameraInfo (+ the camera optical frame's pose in the base frame, when known)."""
    try:
        return CameraModel(
            width=int(msg.width),
            height=int(msg.height),
            K=np.asarray(msg.k, dtype=float).reshape(3, 3),
            D=np.asarray(msg.d, dtype=float),
            R=np.asarray(msg.r, dtype=float).reshape(3, 3) if np.any(msg.r) else np.eye(3),
            P=np.asarray(msg.p, dtype=float).reshape(3, 4) if np.any(msg.p) else None,
            distortion_model=msg.distortion_model or "plumb_bob",
            frame_id=msg.header.frame_id,
            T_base_camera=np.eye(4) if T_base_camera is None else T_base_camera,
            base_frame_id=base_frame_id,
        )
    except ValueError as e:
        raise MessageError(f"unusable CameraInfo: {e}") from None


def model_to_camera_info(model: CameraModel, stamp: Time) -> CameraInfo:
    info = model.to_camera_info_dict()
    msg = CameraInfo(
        width=info["width"],
        height=info["height"],
        distortion_model=info["distortion_model"],
        d=[float(x) for x in info["d"]],
        k=[float(x) for x in info["k"]],
        r=[float(x) for x in info["r"]],
        p=[float(x) for x in info["p"]],
    )
    msg.header.stamp, msg.header.frame_id = stamp, model.frame_id
    return msg


def pose_msg(T: np.ndarray, stamp: Time, frame_id: str) -> PoseStamped:
    """PoseStamped of a 4x4 homogeneous transform (the pose of a frame in `frame_id`)."""
    msg = PoseStamped()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in T[:3, 3])
    o = msg.pose.orientation
    o.x, o.y, o.z, o.w = matrix_to_quaternion(T[:3, :3])
    return msg


def joint_state_msg(q: np.ndarray, gripper: float, stamp: Time) -> JointState:
    """JointState of the six UR joint positions (rad) and the gripper command (0 open .. 1 closed)."""
    msg = JointState(name=[*JOINT_NAMES, "gripper"], position=[*(float(v) for v in q), float(gripper)])
    msg.header.stamp = stamp
    return msg


# ---------------------------------------------------------------------------------------------------------
# Visual prompts
# ---------------------------------------------------------------------------------------------------------
_PROMPT_KIND = {
    VisualPromptMsg.TYPE_POINT: POINT,
    VisualPromptMsg.TYPE_LINE: LINE,
    VisualPromptMsg.TYPE_BOX: BOX,
    VisualPromptMsg.TYPE_MASK: MASK,
}
_PROMPT_TYPE = {kind: code for code, kind in _PROMPT_KIND.items()}


def _check_box_corners(points: np.ndarray) -> None:
    """Raise MessageError unless a box message's 2 corners are top-left then bottom-right (u0 < u1 and
    v0 < v1), as VisualPrompt.msg defines it. The core would reorder other corners; a message whose corners
    are in another order was drawn by a sender that reads the message differently: refused, not guessed at."""
    if points.shape != (2, 2):
        raise MessageError(f"box prompt needs exactly 2 corners (u, v), got {len(points)}")
    (u0, v0), (u1, v1) = points.tolist()
    if not (u0 < u1 and v0 < v1):
        raise MessageError(
            f"box prompt corners must be top-left then bottom-right (u0 < u1, v0 < v1), got ({u0}, {v0}) "
            f"then ({u1}, {v1})"
        )


def prompt_from_msg(msg: VisualPromptMsg) -> VisualPrompt:
    """Core VisualPrompt (pixels of the image of msg.header.stamp); raises MessageError for a malformed
    prompt (unknown type, sizes that do not match, a box whose corners are not top-left then bottom-right,
    points outside the image)."""
    if msg.type not in _PROMPT_KIND:
        raise MessageError(f"prompt type {msg.type} is unknown; expected 0 (point) to 3 (mask)")
    kind = _PROMPT_KIND[msg.type]
    if msg.image_width == 0 or msg.image_height == 0:
        raise MessageError("prompt image_width and image_height must be the size of the prompted image")
    try:
        if kind == MASK:
            if msg.mask.encoding != "mono8" or (msg.mask.width, msg.mask.height) != (
                msg.image_width,
                msg.image_height,
            ):
                raise MessageError(
                    f"mask prompt needs a mono8 mask of {msg.image_width}x{msg.image_height}, got "
                    f"{msg.mask.encoding!r} {msg.mask.width}x{msg.mask.height}"
                )
            check_image(msg.mask)
            rows = np.frombuffer(bytes(msg.mask.data), np.uint8).reshape(msg.mask.height, msg.mask.step)
            prompt = VisualPrompt(MASK, mask=rows[:, : msg.mask.width] > 0, labels=list(msg.labels) or [1])
        else:
            if len(msg.u) != len(msg.v):
                raise MessageError(f"prompt has {len(msg.u)} u and {len(msg.v)} v coordinates")
            points = np.stack([np.asarray(msg.u, float), np.asarray(msg.v, float)], axis=1)
            if kind == BOX:
                _check_box_corners(points)
            labels = list(msg.labels) or [1] * (len(points) if kind == POINT else 1)
            prompt = VisualPrompt(kind, points=points, labels=labels)
        prompt.check_inside(int(msg.image_height), int(msg.image_width))
    except PixelVLAInputError as e:
        raise MessageError(str(e)) from None
    return prompt


def prompt_to_msg(
    prompt: VisualPrompt, stamp: Time, frame_id: str, width: int, height: int, text: str = ""
) -> VisualPromptMsg:
    msg = VisualPromptMsg(
        type=_PROMPT_TYPE[prompt.kind], image_width=int(width), image_height=int(height), text=text
    )
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.labels = [int(x) for x in prompt.labels]
    if prompt.kind == MASK:
        mask = (np.asarray(prompt.mask, bool) * 255).astype(np.uint8)
        msg.mask = Image(
            height=mask.shape[0],
            width=mask.shape[1],
            encoding="mono8",
            step=mask.shape[1],
            data=mask.tobytes(),
        )
        msg.mask.header = msg.header
    else:
        msg.u = [float(x) for x in prompt.points[:, 0]]
        msg.v = [float(x) for x in prompt.points[:, 1]]
    return msg


# ---------------------------------------------------------------------------------------------------------
# Action chunks
# ---------------------------------------------------------------------------------------------------------
def chunk_to_msg(
    actions: np.ndarray,
    source_stamp: Time,
    dt: float,
    frame_id: str,
    stamp: Time,
    model_latency: float,
    commit_steps: int = 0,
) -> ActionChunk:
    """ActionChunk of (N, 7) actions; commit_steps: the checkpoint's (0: a newer chunk takes over at once)."""
    a = np.asarray(actions, dtype=np.float64)
    msg = ActionChunk(
        source_image_stamp=source_stamp,
        dt=float(dt),
        commit_steps=int(commit_steps),
        model_latency=float(model_latency),
    )
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.translation = [Vector3(x=float(x), y=float(y), z=float(z)) for x, y, z in a[:, 0:3]]
    msg.rotation = [Vector3(x=float(x), y=float(y), z=float(z)) for x, y, z in a[:, 3:6]]
    msg.gripper = [float(g) for g in a[:, 6]]
    return msg


def chunk_from_msg(msg: ActionChunk) -> TimedChunk:
    """TimedChunk on the clock of the source image stamp, in header.frame_id; raises MessageError for a
    malformed chunk (frame, stamps and safety limits are checked when it enters a driver's ChunkTimeline)."""
    n = len(msg.translation)
    if n == 0 or len(msg.rotation) != n or len(msg.gripper) != n:
        raise MessageError(
            f"action chunk needs equal, non-zero numbers of steps, got {n} translations, "
            f"{len(msg.rotation)} rotations, {len(msg.gripper)} gripper commands"
        )
    actions = np.array(
        [
            [t.x, t.y, t.z, r.x, r.y, r.z, g]
            for t, r, g in zip(msg.translation, msg.rotation, msg.gripper, strict=True)
        ],
        dtype=np.float64,
    )
    try:
        return TimedChunk(
            stamp_to_sec(msg.source_image_stamp),
            float(msg.dt),
            actions,
            msg.header.frame_id,
            int(msg.commit_steps),
        )
    except ValueError as e:
        raise MessageError(str(e)) from None
