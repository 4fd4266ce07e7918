"""Reader for rosbag2 recordings (MCAP or SQLite 3), without a ROS install, through the `rosbags` library.

One bag (a folder with metadata.yaml) is one episode. The steps are the messages of ``image_topic``
(sensor_msgs/Image rgb8/bgr8/mono8 or sensor_msgs/CompressedImage); every other topic is sampled at each
image's receive time (latest message at or before it, else the first one):
  action_topic       std_msgs/Float32MultiArray, actions in ``action_convention``
  pose_topic         geometry_msgs/PoseStamped, TCP pose in the base frame (gives ee_pos / ee_rotmat; without
                     an action topic the actions are derived from the poses, convention
                     "absolute_ee_pos_quat_xyzw_base_g0open")
  gripper_topic      std_msgs/Float32 (or Float64), closure 0 = open, 1 = closed
  camera_info_topic  sensor_msgs/CameraInfo (+ ``T_base_camera`` from the config, or a /tf_static transform
                     base_frame -> the CameraInfo frame) gives the camera model
  instruction_topic  std_msgs/String; else ``instruction`` from the config
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pixelvla_ros.camera import CameraModel

from .conventions import ABS_POS_QUAT_XYZW_G0OPEN, PIXELVLA, convert_actions, quat_xyzw_to_matrix
from .episode import CorruptEpisodeError, Episode, safe_id


@dataclass
class Rosbag2Config:
    image_topic: str = "/camera/image_raw"
    camera_info_topic: str | None = "/camera/camera_info"
    action_topic: str | None = "/action"
    action_convention: str = PIXELVLA
    pose_topic: str | None = "/tcp_pose"
    gripper_topic: str | None = "/gripper"
    instruction_topic: str | None = "/instruction"
    instruction: str = ""
    base_frame: str = "base"
    T_base_camera: list[list[float]] | None = None


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def image_to_rgb(msg: Any, msgtype: str) -> np.ndarray:
    if msgtype.endswith("CompressedImage"):
        bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise CorruptEpisodeError("cannot decode a CompressedImage")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w, enc = int(msg.height), int(msg.width), str(msg.encoding).lower()
    ch = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}.get(enc)
    if ch is None:
        raise CorruptEpisodeError(f"unsupported image encoding {enc!r}")
    data = np.frombuffer(bytes(msg.data), np.uint8)
    if data.size < h * int(msg.step):
        raise CorruptEpisodeError(f"image data truncated: {data.size} bytes, expected {h * int(msg.step)}")
    img = data[: h * int(msg.step)].reshape(h, int(msg.step))[:, : w * ch].reshape(h, w, ch)
    if enc == "mono8":
        return np.repeat(img, 3, axis=2)
    if enc.startswith("bgr"):
        return img[..., 2::-1].copy()
    return img[..., :3].copy()


def _sample_at(times: np.ndarray, values: list[Any], at: np.ndarray) -> list[Any]:
    idx = np.clip(np.searchsorted(times, at, side="right") - 1, 0, len(values) - 1)
    return [values[i] for i in idx]


class Rosbag2Source:
    name = "rosbag2"

    def __init__(self, root: str | Path, config: Rosbag2Config | None = None) -> None:
        self.root = Path(root)
        self.cfg = config or Rosbag2Config()
        if (self.root / "metadata.yaml").exists():
            self.bags = {safe_id(self.root.name): self.root}
        else:
            self.bags = {safe_id(p.parent.name): p.parent for p in sorted(self.root.glob("*/metadata.yaml"))}
        if not self.bags:
            raise FileNotFoundError(f"{self.root}: no rosbag2 folder (metadata.yaml) found")

    def keys(self) -> list[str]:
        return sorted(self.bags)

    def load(self, key: str) -> Episode:
        from rosbags.rosbag2 import Reader

        path = self.bags[key]
        cfg = self.cfg
        ts = _typestore()
        msgs: dict[str, tuple[list[int], list[Any], str]] = {}
        try:
            with Reader(path) as reader:
                wanted = {
                    cfg.image_topic,
                    cfg.camera_info_topic,
                    cfg.action_topic,
                    cfg.pose_topic,
                    cfg.gripper_topic,
                    cfg.instruction_topic,
                    "/tf_static",
                } - {None}
                conns = [c for c in reader.connections if c.topic in wanted]
                for c in conns:
                    msgs.setdefault(c.topic, ([], [], c.msgtype))
                for conn, t, raw in reader.messages(connections=conns):
                    m = ts.deserialize_cdr(raw, conn.msgtype)
                    msgs[conn.topic][0].append(t)
                    msgs[conn.topic][1].append(m)
        except CorruptEpisodeError:
            raise
        except Exception as e:  # rosbags raises its own errors for truncated / unreadable bags
            raise CorruptEpisodeError(f"{key}: cannot read rosbag2 {path} ({type(e).__name__}: {e})") from e
        if cfg.image_topic not in msgs or not msgs[cfg.image_topic][1]:
            raise CorruptEpisodeError(f"{key}: no messages on image topic {cfg.image_topic}")
        it, im, itype = msgs[cfg.image_topic]
        order = np.argsort(it)
        at = np.asarray(it)[order]
        images = np.stack([image_to_rgb(im[i], itype) for i in order])
        T = len(at)

        def topic(name: str | None) -> list[Any] | None:
            if name is None or name not in msgs or not msgs[name][1]:
                return None
            t, v, _ = msgs[name]
            o = np.argsort(t)
            return _sample_at(np.asarray(t)[o], [v[i] for i in o], at)

        ee_pos = ee_rot = grip = None
        poses = topic(cfg.pose_topic)
        if poses is not None:
            ee_pos = np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in poses])
            quat = np.array(
                [
                    [p.pose.orientation.x, p.pose.orientation.y, p.pose.orientation.z, p.pose.orientation.w]
                    for p in poses
                ]
            )
            ee_rot = quat_xyzw_to_matrix(quat)
        g = topic(cfg.gripper_topic)
        if g is not None:
            grip = np.array([float(m.data) for m in g])
        acts = topic(cfg.action_topic)
        if acts is not None:
            raw = np.array([np.asarray(m.data, dtype=np.float64) for m in acts])
            convention = cfg.action_convention
            actions = convert_actions(raw, convention)
        elif poses is not None:
            convention = ABS_POS_QUAT_XYZW_G0OPEN
            gg = grip if grip is not None else np.zeros(T)
            actions = convert_actions(np.concatenate([ee_pos, quat, gg[:, None]], axis=1), convention)
        else:
            raise CorruptEpisodeError(
                f"{key}: neither action topic {cfg.action_topic} nor pose topic {cfg.pose_topic}"
            )
        instr = cfg.instruction
        ins = topic(cfg.instruction_topic)
        if ins is not None:
            instr = str(ins[0].data)
        cam = None
        infos = topic(cfg.camera_info_topic)
        if infos is not None:
            ci = infos[0]
            T_bc = np.asarray(cfg.T_base_camera, dtype=float) if cfg.T_base_camera is not None else None
            if T_bc is None and "/tf_static" in msgs:
                T_bc = _tf_lookup(msgs["/tf_static"][1], cfg.base_frame, str(ci.header.frame_id))
            if T_bc is not None:
                cam = CameraModel.from_camera_info_dict(
                    {
                        "width": ci.width,
                        "height": ci.height,
                        "k": list(ci.k),
                        "d": list(ci.d),
                        "r": list(ci.r),
                        "p": list(ci.p),
                        "distortion_model": ci.distortion_model,
                        "header": {"frame_id": ci.header.frame_id},
                    },
                    T_base_camera=T_bc,
                )
        return Episode(
            episode_id=key,
            source=f"rosbag2:{path}",
            images=images,
            actions=actions,
            instruction=instr,
            action_convention=convention,
            ee_pos=ee_pos,
            ee_rotmat=ee_rot,
            gripper_state=grip,
            camera=cam,
            image_key=cfg.image_topic,
            fps=float((T - 1) / max((at[-1] - at[0]) * 1e-9, 1e-9)) if T > 1 else None,
        )


def _tf_lookup(tf_msgs: list[Any], parent: str, child: str) -> np.ndarray | None:
    """A direct parent -> child transform from /tf_static messages (no chaining)."""
    for m in tf_msgs:
        for tr in m.transforms:
            if tr.header.frame_id == parent and tr.child_frame_id == child:
                q = tr.transform.rotation
                T = np.eye(4)
                T[:3, :3] = quat_xyzw_to_matrix(np.array([q.x, q.y, q.z, q.w]))
                v = tr.transform.translation
                T[:3, 3] = [v.x, v.y, v.z]
                return T
    return None
