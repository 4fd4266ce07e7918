"""prompt_node: RViz and rqt_image_view clicks -> pixelvla_ros/VisualPrompt, prompt markers and an overlay.

    ros2 run pixelvla_ros prompt_node --ros-args \\
        --params-file config/prompt_node.yaml --params-file config/camera.yaml

Subscribes
  <image_topic> (sensor_msgs/Image, sensor QoS)           the newest valid frame is the one prompted
  <camera_info_topic> (sensor_msgs/CameraInfo, sensor QoS) intrinsics of that camera
  /clicked_point (geometry_msgs/PointStamped)             RViz "Publish Point": a 3D point in the fixed frame
  <image_topic>_mouse_left (geometry_msgs/Point)          rqt_image_view click: x = column, y = row
  /pixelvla/action_chunk (pixelvla_ros/ActionChunk)       the overlay's commanded motion
  /pixelvla/tcp_pose (geometry_msgs/PoseStamped)          where that motion starts
Publishes
  /pixelvla/prompt (pixelvla_ros/VisualPrompt)            one per accepted click: a positive point, or with
                                                          click_to_mask the mask segmented from the click;
                                                          header = the prompted image's stamp and frame
  /pixelvla/prompt_markers (visualization_msgs/MarkerArray) the click in the base frame (sphere + text; the
                                                          pixel's viewing ray for rqt clicks)
  /pixelvla/overlay (sensor_msgs/Image, rgb8)             newest image + prompt + commanded TCP path + status
  /diagnostics (diagnostic_msgs/DiagnosticArray, 1 Hz)    input health, click counts, last refusal
Service
  ~/clear (std_srvs/Trigger)                              forget the prompt, delete its markers

Each click replaces the prompt. Clearing publishes no message, because a VisualPrompt cannot say "no
prompt" (every type needs points or a mask): ~/clear forgets the prompt here, and a consumer drops the
last prompt it holds once that prompt is older than its own maximum prompt age.

Camera pose (needed to project RViz clicks): tf (base_frame <- the image's frame at the image's stamp)
when `use_tf` is true and tf2_ros is installed (it is not on PyPI); otherwise `camera_pose_in_base`.
Refused inputs (a malformed Image or CameraInfo; a click with no image, a stale image, in an unknown
frame, behind the camera, off the image, or an RViz click outside the click volume `click_volume_min` ..
`click_volume_max`, the box around the work surface) are logged with the reason and counted in
/diagnostics; the node keeps running and uses the next good input.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PointStamped, PoseStamped
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.time import Time as RosTime
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from pixelvla_ros.action_space import FRAME_BASE
from pixelvla_ros.camera import CameraModel
from pixelvla_ros.chunk_timeline import TimedChunk
from pixelvla_ros.click_projection import (
    UNKNOWN_FRAME,
    ClickRejected,
    ClickVolume,
    check_camera_matches,
    check_image_age,
    click_region,
    pixel_click,
    point_in_base,
    pose_to_matrix,
    project_click,
    ray_points,
)
from pixelvla_ros.msg import ActionChunk
from pixelvla_ros.msg import VisualPrompt as VisualPromptMsg
from pixelvla_ros.nodes.conversions import (
    MessageError,
    camera_info_to_model,
    chunk_from_msg,
    image_to_rgb,
    prompt_to_msg,
    rgb_to_image,
    stamp_to_sec,
)
from pixelvla_ros.nodes.params import declare
from pixelvla_ros.nodes.run import run_node
from pixelvla_ros.overlay import commanded_path, render_overlay
from pixelvla_ros.prompts import MASK, VisualPrompt
from pixelvla_ros.segmentation import ColourRegionSegmenter

try:  # tf2_ros comes with a ROS install, not from PyPI
    from tf2_ros import Buffer, TransformException, TransformListener
except ImportError:
    Buffer = TransformListener = None
    TransformException = Exception

CHUNK_DISPLAY_HOLD_S = 1.0  # s a chunk stays drawn after its last step, so a stopped policy's plan fades
RAY_MARKER_LENGTH_M = 1.5  # an rqt click has no depth: its marker is the viewing ray up to this length
LOG_THROTTLE_S = 5.0  # repeated warnings about streamed input (chunks, poses): one line per period
MARKER_NS = "pixelvla_prompt"


@dataclasses.dataclass(frozen=True)
class _Frame:
    rgb: np.ndarray  # (H, W, 3) uint8
    stamp: Time
    frame_id: str


class PromptNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("prompt_node", **kwargs)
        image_topic = declare(
            self,
            "image_topic",
            "/camera/image_raw",
            "camera image the prompts are drawn on; rqt_image_view clicks arrive on <image_topic>_mouse_left",
            read_only=True,
        )
        info_topic = declare(
            self, "camera_info_topic", "/camera/camera_info", "CameraInfo of that image", read_only=True
        )
        self.base_frame = declare(
            self,
            "base_frame",
            FRAME_BASE,
            "robot base frame: RViz's fixed frame, the frame of clicks, markers and the camera pose",
            read_only=True,
        )
        use_tf = declare(
            self,
            "use_tf",
            False,
            "look the camera pose up in tf (base_frame <- image frame at the image stamp) where tf2_ros is "
            "installed; otherwise camera_pose_in_base is used",
            read_only=True,
        )
        pose = declare(
            self,
            "camera_pose_in_base",
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
            "pose of the camera optical frame in base_frame, [x, y, z, qx, qy, qz, qw] (m, unit quaternion); "
            "used without tf",
            read_only=True,
        )
        default_volume = ClickVolume.default()
        volume_min = declare(
            self,
            "click_volume_min",
            default_volume.lo.tolist(),
            "lower corner [x, y, z] of the box in base_frame (m) an RViz click must lie in; a point beyond "
            "it (the floor, a wall behind the table) projects onto the object in front of it. Default: the "
            "drivers' TCP workspace box, down to 5 cm below the table top",
            read_only=True,
        )
        volume_max = declare(
            self,
            "click_volume_max",
            default_volume.hi.tolist(),
            "upper corner [x, y, z] of that box, m",
            read_only=True,
        )
        self.click_volume = ClickVolume(volume_min, volume_max)  # ValueError says what is wrong: exit 2
        self.max_image_age = declare(
            self,
            "max_image_age",
            0.5,
            "refuse clicks while the newest image is older than this (node clock), s",
            floating=(0.01, 60.0),
            read_only=True,
        )
        click_to_mask = declare(
            self,
            "click_to_mask",
            False,
            "publish the mask segmented from the click (the annotation pipeline's colour region growing) "
            "instead of the point",
            read_only=True,
        )
        self.mask_region_fraction = declare(
            self,
            "mask_region_fraction",
            0.35,
            "side of the square around the click searched for the object, fraction of the image's short side",
            floating=(0.05, 1.0),
            read_only=True,
        )
        overlay_rate = declare(
            self,
            "overlay_rate",
            10.0,
            "most overlay images per second (one per new camera image or prompt change)",
            floating=(0.1, 60.0),
            read_only=True,
        )
        self.overlay_min_size = declare(
            self,
            "overlay_min_size",
            384,
            "upscale the overlay by an integer factor until its smaller side has at least this many pixels",
            integer=(0, 4096),
            read_only=True,
        )
        self._static_pose = pose_to_matrix(pose)  # validated even when tf is used: a typo must not wait
        self._tf_buffer = None
        if use_tf and Buffer is None:
            self.get_logger().warning(
                "use_tf is true but tf2_ros is not installed: using camera_pose_in_base"
            )
        elif use_tf:
            self._tf_buffer = Buffer()
            self._tf_listener = TransformListener(self._tf_buffer, self)
        self._segmenter = ColourRegionSegmenter() if click_to_mask else None

        self._frame: _Frame | None = None
        self._camera: CameraModel | None = None  # intrinsics only; the pose is attached per image
        self._prompt: VisualPrompt | None = None
        self._prompt_hw: tuple[int, int] = (0, 0)
        self._chunk: TimedChunk | None = None
        self._tcp: np.ndarray | None = None
        self._accepted = self._rejected = self._images_rejected = self._infos_rejected = 0
        self._last_rejection = ""
        self._last_click_rejected = False
        self._cleared = False
        self._image_error = self._info_error = ""
        self._overlay_dirty = False

        self._prompt_pub = self.create_publisher(VisualPromptMsg, "/pixelvla/prompt", 10)
        self._marker_pub = self.create_publisher(MarkerArray, "/pixelvla/prompt_markers", 10)
        self._overlay_pub = self.create_publisher(Image, "/pixelvla/overlay", 1)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(Image, image_topic, self._on_image, qos_profile_sensor_data)
        self.create_subscription(CameraInfo, info_topic, self._on_camera_info, qos_profile_sensor_data)
        self.create_subscription(PointStamped, "/clicked_point", self._on_clicked_point, 10)
        self.create_subscription(Point, f"{image_topic}_mouse_left", self._on_image_click, 10)
        self.create_subscription(ActionChunk, "/pixelvla/action_chunk", self._on_chunk, 10)
        self.create_subscription(PoseStamped, "/pixelvla/tcp_pose", self._on_tcp_pose, 10)
        self.create_service(Trigger, "~/clear", self._on_clear)
        self.create_timer(1.0 / overlay_rate, self._publish_overlay)
        self.create_timer(1.0, self._publish_diagnostics)
        source = "tf" if self._tf_buffer is not None else "camera_pose_in_base"
        self.get_logger().info(
            f"clicks on /clicked_point ({self.base_frame}) and {image_topic}_mouse_left -> /pixelvla/prompt; "
            f"camera pose from {source}{', click_to_mask' if self._segmenter else ''}"
        )

    # ------------------------------------------------------------------------------------------ inputs
    def _on_image(self, msg: Image) -> None:
        try:
            if not msg.header.frame_id:
                raise MessageError("image header.frame_id is empty; expected the camera optical frame")
            rgb = image_to_rgb(msg)
        except MessageError as e:
            self._images_rejected += 1
            if (
                f"image refused: {e}" != self._image_error
            ):  # bad frames come at the camera's rate: log changes
                self._image_error = f"image refused: {e}"
                self.get_logger().error(self._image_error)
            return
        self._image_error = ""
        self._frame = _Frame(rgb, msg.header.stamp, msg.header.frame_id)
        self._overlay_dirty = True

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            camera = camera_info_to_model(msg)  # the core refuses NaN, zero focal lengths, bad matrices
        except MessageError as e:
            self._infos_rejected += 1
            if f"CameraInfo refused: {e}" != self._info_error:
                self._info_error = f"CameraInfo refused: {e}"
                self.get_logger().error(self._info_error)
            return
        self._info_error = ""
        self._camera = camera

    def _on_chunk(self, msg: ActionChunk) -> None:
        try:
            if msg.header.frame_id != self.base_frame:
                raise MessageError(f"chunk is in frame {msg.header.frame_id!r}, expected {self.base_frame!r}")
            self._chunk = chunk_from_msg(msg)
        except MessageError as e:
            self.get_logger().warning(f"action chunk not drawn: {e}", throttle_duration_sec=LOG_THROTTLE_S)
            return
        self._overlay_dirty = True

    def _on_tcp_pose(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        if msg.header.frame_id != self.base_frame or not np.all(np.isfinite([p.x, p.y, p.z])):
            self.get_logger().warning(
                f"TCP pose in frame {msg.header.frame_id!r} at {[p.x, p.y, p.z]} ignored; expected finite, "
                f"in {self.base_frame!r}",
                throttle_duration_sec=LOG_THROTTLE_S,
            )
            return
        self._tcp = np.array([p.x, p.y, p.z])

    # ------------------------------------------------------------------------------------------ clicks
    def _on_clicked_point(self, msg: PointStamped) -> None:
        try:
            frame = self._click_frame()
            camera = self._camera_for(frame)
            frames = {camera.frame_id: camera.T_base_camera}
            src = msg.header.frame_id
            if self._tf_buffer is not None and src and src not in (self.base_frame, camera.frame_id):
                frames[src] = self._pose_from_tf(src, RosTime())  # latest: RViz stamps clicks "now"
            p = point_in_base([msg.point.x, msg.point.y, msg.point.z], src, self.base_frame, frames)
            uv = project_click(p, camera, self.click_volume)
        except ClickRejected as e:
            self._reject(e, "RViz click")
            return
        self._accept(frame, uv, self._point_markers(p, uv))

    def _on_image_click(self, msg: Point) -> None:
        try:
            frame = self._click_frame()
            height, width = frame.rgb.shape[:2]
            uv = pixel_click(msg.x, msg.y, width, height)
        except ClickRejected as e:
            self._reject(e, "image click")
            return
        try:  # the prompt needs only the pixel; the ray marker needs the camera model and pose too
            markers = self._ray_markers(self._camera_for(frame), uv)
        except ClickRejected as e:
            self.get_logger().info(f"no marker for the image click: {e}")
            markers = []
        self._accept(frame, uv, markers)

    def _click_frame(self) -> _Frame:
        check_image_age(self._image_age(), self.max_image_age)
        return self._frame

    def _image_age(self) -> float | None:
        if self._frame is None:
            return None
        return self.get_clock().now().nanoseconds * 1e-9 - stamp_to_sec(self._frame.stamp)

    def _camera_for(self, frame: _Frame) -> CameraModel:
        """The camera model of ``frame`` with the optical frame's pose in the base frame attached."""
        height, width = frame.rgb.shape[:2]
        check_camera_matches(self._camera, width, height)
        if self._tf_buffer is not None:
            T = self._pose_from_tf(frame.frame_id, RosTime.from_msg(frame.stamp))
        else:
            T = self._static_pose
        return dataclasses.replace(
            self._camera, T_base_camera=T, base_frame_id=self.base_frame, frame_id=frame.frame_id
        )

    def _pose_from_tf(self, frame_id: str, when: RosTime) -> np.ndarray:
        try:
            tf = self._tf_buffer.lookup_transform(self.base_frame, frame_id, when).transform
        except TransformException as e:
            raise ClickRejected(UNKNOWN_FRAME, f"no transform {self.base_frame} <- {frame_id}: {e}") from None
        t, q = tf.translation, tf.rotation
        return pose_to_matrix([t.x, t.y, t.z, q.x, q.y, q.z, q.w])

    def _accept(self, frame: _Frame, uv: np.ndarray, markers: list[Marker]) -> None:
        height, width = frame.rgb.shape[:2]
        prompt = VisualPrompt.point([uv])
        if self._segmenter is not None:
            prompt = self._mask_prompt(frame.rgb, uv) or prompt
        self._prompt_pub.publish(prompt_to_msg(prompt, frame.stamp, frame.frame_id, width, height))
        self._prompt, self._prompt_hw = prompt, (height, width)
        self._accepted += 1
        self._last_click_rejected = self._cleared = False
        self._overlay_dirty = True
        self._marker_pub.publish(MarkerArray(markers=[self._delete_all(), *markers]))
        self.get_logger().info(
            f"prompt: {self._describe(prompt)} on the image of {stamp_to_sec(frame.stamp):.3f}"
        )

    def _reject(self, e: ClickRejected, source: str) -> None:
        self._rejected += 1
        self._last_rejection = str(e)
        self._last_click_rejected = True
        self.get_logger().warning(f"{source} refused: {e}")

    def _mask_prompt(self, rgb: np.ndarray, uv: np.ndarray) -> VisualPrompt | None:
        height, width = rgb.shape[:2]
        region = click_region(uv, width, height, self.mask_region_fraction)
        mask, _, _ = self._segmenter.segment(rgb, region, (float(uv[0]), float(uv[1])), "")
        u, v = int(round(uv[0])), int(round(uv[1]))
        if not mask[max(v - 1, 0) : v + 2, max(u - 1, 0) : u + 2].any():  # the object must be under the click
            self.get_logger().warning(
                f"no object segmented under the click at ({u}, {v}); publishing the point"
            )
            return None
        return VisualPrompt.from_mask(mask)

    def _on_clear(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success = True
        response.message = "prompt cleared" if self._prompt is not None else "no prompt to clear"
        self._prompt, self._cleared = None, True
        self._last_click_rejected = False
        self._overlay_dirty = True
        self._marker_pub.publish(MarkerArray(markers=[self._delete_all()]))
        self.get_logger().info(response.message)
        return response

    # ------------------------------------------------------------------------------------------ markers
    def _marker(self, marker_id: int, kind: int) -> Marker:
        m = Marker(ns=MARKER_NS, id=marker_id, type=kind, action=Marker.ADD)
        m.header.frame_id, m.header.stamp = self.base_frame, self.get_clock().now().to_msg()
        m.pose.orientation.w = 1.0
        m.color.r, m.color.g, m.color.b, m.color.a = 0.15, 0.85, 0.25, 1.0
        return m

    def _delete_all(self) -> Marker:
        m = self._marker(0, Marker.SPHERE)
        m.action = Marker.DELETEALL
        return m

    def _label(self, position: np.ndarray, uv: np.ndarray) -> Marker:
        text = self._marker(1, Marker.TEXT_VIEW_FACING)
        text.pose.position.x, text.pose.position.y, text.pose.position.z = (float(c) for c in position)
        text.scale.z = 0.04
        text.color.r = text.color.g = text.color.b = 1.0
        text.text = f"prompt ({uv[0]:.0f}, {uv[1]:.0f})"
        return text

    def _point_markers(self, p: np.ndarray, uv: np.ndarray) -> list[Marker]:
        sphere = self._marker(0, Marker.SPHERE)
        sphere.pose.position.x, sphere.pose.position.y, sphere.pose.position.z = (float(c) for c in p)
        sphere.scale.x = sphere.scale.y = sphere.scale.z = 0.03
        return [sphere, self._label(p + [0.0, 0.0, 0.05], uv)]

    def _ray_markers(self, camera: CameraModel, uv: np.ndarray) -> list[Marker]:
        ends = ray_points(uv, camera, RAY_MARKER_LENGTH_M)
        arrow = self._marker(0, Marker.ARROW)
        arrow.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in ends]
        arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.005, 0.015, 0.03  # shaft, head diameter, head length
        return [arrow, self._label(ends[1], uv)]

    # ------------------------------------------------------------------------------------------ outputs
    def _describe(self, prompt: VisualPrompt | None) -> str:
        if prompt is None:
            return "cleared" if self._cleared else "none"
        if prompt.kind == MASK:
            return f"mask of {int(prompt.mask.sum())} px"
        return f"point ({prompt.points[0, 0]:.1f}, {prompt.points[0, 1]:.1f})"

    def _publish_overlay(self) -> None:
        frame = self._frame
        if not self._overlay_dirty or frame is None or self._overlay_pub.get_subscription_count() == 0:
            return  # nothing new, or nobody watching: drawing costs CPU the robot PC may need
        self._overlay_dirty = False
        height, width = frame.rgb.shape[:2]
        prompt = self._prompt if self._prompt_hw == (height, width) else None  # drawn on another resolution
        camera = path = None
        now = self.get_clock().now().nanoseconds * 1e-9
        if (
            self._chunk is not None
            and self._tcp is not None
            and now <= self._chunk.t_end + CHUNK_DISPLAY_HOLD_S
        ):
            try:
                camera = self._camera_for(frame)
                path = commanded_path(self._tcp, self._chunk.actions)
            except ClickRejected as e:
                self.get_logger().warning(
                    f"commanded motion not drawn: {e}", throttle_duration_sec=LOG_THROTTLE_S
                )
        status = (
            f"prompt: {self._describe(self._prompt)} | clicks {self._accepted} ok, {self._rejected} refused"
        )
        if self._last_click_rejected:
            status += f" (last: {self._last_rejection.split(':', 1)[0]})"
        out = render_overlay(frame.rgb, prompt, camera, path, status, self.overlay_min_size)
        self._overlay_pub.publish(rgb_to_image(out, frame.stamp, frame.frame_id))

    def _health(self, age: float | None) -> tuple[bytes, str]:
        if self._image_error or self._info_error:
            return DiagnosticStatus.ERROR, self._image_error or self._info_error
        if age is None:
            return DiagnosticStatus.WARN, "no camera image yet"
        if self._camera is None:
            return DiagnosticStatus.WARN, "no CameraInfo yet"
        if age > self.max_image_age:
            return (
                DiagnosticStatus.WARN,
                f"newest image is {age:.2f} s old (max_image_age {self.max_image_age} s)",
            )
        if self._last_click_rejected:
            return DiagnosticStatus.WARN, f"last click refused: {self._last_rejection}"
        return DiagnosticStatus.OK, f"prompt: {self._describe(self._prompt)}"

    def _publish_diagnostics(self) -> None:
        age = self._image_age()
        level, message = self._health(age)
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_name()}: click prompts",
            message=message,
            hardware_id=self._frame.frame_id if self._frame else "",
        )
        values = {
            "image": "refused" if self._image_error else ("ok" if self._frame else "none"),
            "camera_info": "refused" if self._info_error else ("ok" if self._camera else "none"),
            "clicks_accepted": self._accepted,
            "clicks_rejected": self._rejected,
            "last_rejection": self._last_rejection or "none",
            "images_rejected": self._images_rejected,
            "camera_infos_rejected": self._infos_rejected,
            "image_age_s": "none" if age is None else f"{age:.3f}",
            "camera_pose_source": "tf" if self._tf_buffer is not None else "camera_pose_in_base",
            "click_volume": f"min {self.click_volume.lo.tolist()} max {self.click_volume.hi.tolist()}",
            "prompt": self._describe(self._prompt),
        }
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    # a parameter the node cannot use: say which and stop
    return run_node(PromptNode, "prompt_node", 1, (ValueError, ParameterException), args)


if __name__ == "__main__":
    sys.exit(main())
