"""Pinhole camera model equivalent to sensor_msgs/CameraInfo, plus the camera's pose in the robot base frame.

ROS-free; the prompt node converts CameraInfo messages with :meth:`CameraModel.from_camera_info_dict`.

Conventions
-----------
- Optical frame (REP 103): z forward, x right, y down.
- Pixels follow the ROS/OpenCV convention: the centre of the top-left pixel is (u, v) = (0, 0); u grows to
  the right (columns), v downwards (rows). An ideal camera of width W has cx = (W - 1) / 2.
- ``T_base_camera`` is the pose of the optical frame in the base frame: p_base = T_base_camera @ p_camera.
- Distortion: ``plumb_bob`` (k1, k2, p1, p2, k3, as OpenCV) or none (all zero / empty D). ``project`` maps
  to raw (distorted) image pixels through K and D, like ``cv2.projectPoints``; ``pixel_to_ray``
  undistorts iteratively (as ``cv2.undistortPoints``). R and P are carried for CameraInfo fidelity
  (rectification); :meth:`project_rectified` uses P.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PLUMB_BOB = "plumb_bob"


def _as_matrix(x: Any, shape: tuple[int, int]) -> np.ndarray:
    return np.asarray(x, dtype=float).reshape(shape)


@dataclass(frozen=True)
class CameraModel:
    width: int
    height: int
    K: np.ndarray  # 3x3
    D: np.ndarray = field(default_factory=lambda: np.zeros(5))  # plumb_bob: k1 k2 p1 p2 k3
    R: np.ndarray = field(default_factory=lambda: np.eye(3))  # rectification rotation
    P: np.ndarray | None = None  # 3x4 projection; default [K | 0]
    distortion_model: str = PLUMB_BOB
    frame_id: str = "camera_optical_frame"
    T_base_camera: np.ndarray = field(default_factory=lambda: np.eye(4))  # optical frame pose in base
    base_frame_id: str = "base"

    def __post_init__(self) -> None:
        """Validate and normalise the fields; ValueError says which one is unusable and why."""
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "K", _as_matrix(self.K, (3, 3)))
        D = np.asarray(self.D, dtype=float).reshape(-1)
        if self.distortion_model != PLUMB_BOB and np.any(D != 0):
            raise ValueError(f"unsupported distortion model {self.distortion_model!r} with non-zero D")
        if D.size not in (0, 4, 5, 8):
            raise ValueError(f"D must have 0, 4, 5 or 8 coefficients, got {D.size}")
        object.__setattr__(self, "D", D)
        object.__setattr__(self, "R", _as_matrix(self.R, (3, 3)))
        P = np.hstack([self.K, np.zeros((3, 1))]) if self.P is None else _as_matrix(self.P, (3, 4))
        object.__setattr__(self, "P", P)
        T = _as_matrix(self.T_base_camera, (4, 4))
        # Before the other checks: NaN compares false, so "fx <= 0" lets a NaN focal length through.
        for name, value in (("K", self.K), ("D", D), ("R", self.R), ("P", P), ("T_base_camera", T)):
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{name} contains NaN or inf: {value.tolist()}")
        Rb = T[:3, :3]
        if not np.allclose(Rb @ Rb.T, np.eye(3), atol=1e-6) or not np.isclose(
            np.linalg.det(Rb), 1.0, atol=1e-6
        ):
            raise ValueError("T_base_camera rotation is not a proper rotation matrix")
        object.__setattr__(self, "T_base_camera", T)
        if self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            raise ValueError("focal lengths must be positive")

    # ------------------------------------------------------------------------------------------------
    @classmethod
    def from_fovy(
        cls, width: int, height: int, fovy_deg: float, T_base_camera: np.ndarray, **kw: Any
    ) -> CameraModel:
        """Ideal pinhole (square pixels, centred principal point) with vertical field of view ``fovy_deg``."""
        f = (height / 2.0) / math.tan(math.radians(fovy_deg) / 2.0)
        K = np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
        return cls(width=width, height=height, K=K, D=np.zeros(5), T_base_camera=T_base_camera, **kw)

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def T_camera_base(self) -> np.ndarray:
        T = np.eye(4)
        R = self.T_base_camera[:3, :3]
        T[:3, :3] = R.T
        T[:3, 3] = -R.T @ self.T_base_camera[:3, 3]
        return T

    def scaled(self, width: int, height: int) -> CameraModel:
        """The same camera resampled to another image size (continuous pixel edges are preserved)."""
        sx, sy = width / self.width, height / self.height
        S = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
        K = S @ self.K
        P = S @ self.P
        return CameraModel(
            width=width,
            height=height,
            K=K,
            D=self.D.copy(),
            R=self.R.copy(),
            P=P,
            distortion_model=self.distortion_model,
            frame_id=self.frame_id,
            T_base_camera=self.T_base_camera.copy(),
            base_frame_id=self.base_frame_id,
        )

    def shifted(self, dx: float, dy: float) -> CameraModel:
        """The camera of this image's content moved dx pixels right and dy down (principal point moved)."""
        T = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
        return dataclasses.replace(self, K=T @ self.K, P=T @ self.P)

    # ------------------------------------------------------------------------------------------------
    def _distort(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        D = np.zeros(5)
        D[: min(5, self.D.size)] = self.D[:5]
        if not np.any(D):
            return x, y
        k1, k2, p1, p2, k3 = D
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return xd, yd

    def _undistort(
        self, xd: np.ndarray, yd: np.ndarray, iterations: int = 20
    ) -> tuple[np.ndarray, np.ndarray]:
        if not np.any(self.D):
            return xd, yd
        x, y = xd.copy(), yd.copy()
        for _ in range(iterations):
            xx, yy = self._distort(x, y)
            x = x - (xx - xd)
            y = y - (yy - yd)
        return x, y

    def project_camera(
        self, points_cam: np.ndarray, min_depth: float = 1e-6
    ) -> tuple[np.ndarray, np.ndarray]:
        """Points in the optical frame (N,3) -> raw pixels (N,2) and ``in_front`` (N,) bool.

        Points with depth <= ``min_depth`` are behind the camera: their pixels are NaN.
        """
        pc = np.atleast_2d(np.asarray(points_cam, dtype=float))
        z = pc[:, 2]
        in_front = z > min_depth
        safe_z = np.where(in_front, z, 1.0)
        x, y = pc[:, 0] / safe_z, pc[:, 1] / safe_z
        xd, yd = self._distort(x, y)
        u = self.fx * xd + self.K[0, 1] * yd + self.cx
        v = self.fy * yd + self.cy
        uv = np.stack([u, v], axis=1)
        uv[~in_front] = np.nan
        return uv, in_front

    def project(self, points_base: np.ndarray, min_depth: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
        """Base-frame points (N,3) or (3,) -> raw pixels (N,2), ``in_front`` (N,) (NaN pixels if behind)."""
        pb = np.atleast_2d(np.asarray(points_base, dtype=float))
        Tcb = self.T_camera_base
        pc = pb @ Tcb[:3, :3].T + Tcb[:3, 3]
        return self.project_camera(pc, min_depth)

    def project_rectified(self, points_base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Base-frame points -> rectified pixels through P (as image_geometry's project3dToPixel)."""
        pb = np.atleast_2d(np.asarray(points_base, dtype=float))
        Tcb = self.T_camera_base
        pc = pb @ Tcb[:3, :3].T + Tcb[:3, 3]
        h = np.hstack([pc, np.ones((len(pc), 1))]) @ self.P.T
        in_front = h[:, 2] > 1e-9
        uv = h[:, :2] / np.where(in_front, h[:, 2], 1.0)[:, None]
        uv[~in_front] = np.nan
        return uv, in_front

    def in_image(self, uv: np.ndarray) -> np.ndarray:
        """Whether pixels lie inside the image (pixel edges at -0.5 and W - 0.5)."""
        uv = np.atleast_2d(uv)
        return (
            np.isfinite(uv).all(axis=1)
            & (uv[:, 0] >= -0.5)
            & (uv[:, 0] < self.width - 0.5)
            & (uv[:, 1] >= -0.5)
            & (uv[:, 1] < self.height - 0.5)
        )

    def pixel_to_ray_camera(self, uv: np.ndarray) -> np.ndarray:
        """Raw pixels (N,2) -> unit ray directions (N,3) in the optical frame."""
        uv = np.atleast_2d(np.asarray(uv, dtype=float))
        yd = (uv[:, 1] - self.cy) / self.fy
        xd = (uv[:, 0] - self.cx - self.K[0, 1] * yd) / self.fx
        x, y = self._undistort(xd, yd)
        d = np.stack([x, y, np.ones_like(x)], axis=1)
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    def pixel_to_ray(self, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw pixels (N,2) -> (origin (3,), unit directions (N,3)) in the base frame."""
        d_cam = self.pixel_to_ray_camera(uv)
        R = self.T_base_camera[:3, :3]
        return self.T_base_camera[:3, 3].copy(), d_cam @ R.T

    def pixel_to_plane(
        self, uv: np.ndarray, plane_point: np.ndarray, plane_normal: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Intersect pixel rays with a base-frame plane: (points (N,3), valid (N,)); invalid rows are NaN."""
        o, d = self.pixel_to_ray(uv)
        n = np.asarray(plane_normal, dtype=float)
        denom = d @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((np.asarray(plane_point, dtype=float) - o) @ n) / denom
        valid = np.isfinite(t) & (t > 0) & (np.abs(denom) > 1e-12)
        pts = o + t[:, None] * d
        pts[~valid] = np.nan
        return pts, valid

    # ------------------------------------------------------------------------------------------------
    def to_camera_info_dict(self) -> dict[str, Any]:
        """The fields of sensor_msgs/CameraInfo (ROS 2 names), plus the base->camera transform."""
        return {
            "header": {"frame_id": self.frame_id},
            "width": int(self.width),
            "height": int(self.height),
            "distortion_model": self.distortion_model,
            "d": self.D.tolist(),
            "k": self.K.reshape(-1).tolist(),
            "r": self.R.reshape(-1).tolist(),
            "p": self.P.reshape(-1).tolist(),
            "binning_x": 0,
            "binning_y": 0,
            "roi": {"x_offset": 0, "y_offset": 0, "height": 0, "width": 0, "do_rectify": False},
            "T_base_camera": self.T_base_camera.tolist(),
            "base_frame_id": self.base_frame_id,
        }

    @classmethod
    def from_camera_info_dict(
        cls, info: dict[str, Any], T_base_camera: np.ndarray | None = None
    ) -> CameraModel:
        T = info.get("T_base_camera") if T_base_camera is None else T_base_camera
        return cls(
            width=int(info["width"]),
            height=int(info["height"]),
            K=np.asarray(info["k"], dtype=float).reshape(3, 3),
            D=np.asarray(info.get("d", []), dtype=float),
            R=np.asarray(info.get("r", np.eye(3).reshape(-1)), dtype=float).reshape(3, 3),
            P=np.asarray(info["p"], dtype=float).reshape(3, 4) if info.get("p") else None,
            distortion_model=info.get("distortion_model", PLUMB_BOB) or PLUMB_BOB,
            frame_id=info.get("header", {}).get("frame_id", "camera_optical_frame"),
            T_base_camera=np.eye(4) if T is None else np.asarray(T, dtype=float),
            base_frame_id=info.get("base_frame_id", "base"),
        )
