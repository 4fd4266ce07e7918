"""Click geometry for the prompt node: an RViz 3D click or an rqt_image_view pixel click -> a pixel of the
current camera image. ROS-free.

RViz's "Publish Point" tool sends a geometry_msgs/PointStamped in RViz's fixed frame: a point on the
surface under the cursor. It becomes a prompt pixel by projecting it through the camera model, which needs
the camera optical frame's pose in the base frame (from tf, or a static parameter parsed by
:func:`pose_to_matrix`). rqt_image_view sends the clicked pixel itself (geometry_msgs/Point, x = column,
y = row of the displayed image); :func:`pixel_click` only checks it.

A 3D click must also lie in a :class:`ClickVolume`, a box in the base frame around the work surface: RViz puts
the point on whatever is under the cursor, the floor or a wall beyond the table too (RViz shows no table on a
robot), and such a point projects onto the pixel of the object in front of it. A pixel click has no depth
and cannot be checked this way.

Every refusal raises :class:`ClickRejected` with a reason code (the constants below, counted in the node's
diagnostics) and a sentence saying what was wrong.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pixelvla_ros.camera import CameraModel
from pixelvla_ros.safety import SafetyLimits

# Reason codes of ClickRejected.
NO_IMAGE = "no_image"
NO_CAMERA_INFO = "no_camera_info"
STALE_IMAGE = "stale_image"
CAMERA_INFO_MISMATCH = "camera_info_mismatch"
UNKNOWN_FRAME = "unknown_frame"
NON_FINITE = "non_finite"
BEHIND_CAMERA = "behind_camera"
OUTSIDE_IMAGE = "outside_image"
OUTSIDE_VOLUME = "outside_click_volume"

QUATERNION_NORM_TOLERANCE = 1e-3  # a hand-typed quaternion with 4 decimals still passes; a typo does not
# The default click volume reaches this far below the table top (z = 0): RViz's depth-buffer point and a
# camera calibration err by a few cm, while the floor (0.7-0.9 m below a table) stays out.
BELOW_TABLE_M = 0.05


class ClickRejected(ValueError):
    """A click cannot become a prompt; ``reason`` is one of this module's reason codes."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class ClickVolume:
    """The box in the base frame (m) a 3D click must lie in: ``lo`` and ``hi`` are its [x, y, z] corners.

    Raises ValueError unless both are 3 finite numbers with lo < hi on every axis.
    """

    lo: np.ndarray
    hi: np.ndarray

    def __post_init__(self) -> None:
        lo = np.asarray(self.lo, dtype=float).reshape(-1)
        hi = np.asarray(self.hi, dtype=float).reshape(-1)
        if lo.size != 3 or hi.size != 3:
            raise ValueError(
                "click volume corners are [x, y, z] (3 numbers each), "
                f"got min {lo.tolist()} max {hi.tolist()}"
            )
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ValueError(f"click volume contains NaN or inf: min {lo.tolist()} max {hi.tolist()}")
        if not np.all(lo < hi):
            raise ValueError(
                f"click volume min must be below max on x, y and z, got min {lo.tolist()} max {hi.tolist()}"
            )
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    @classmethod
    def default(cls) -> ClickVolume:
        """Where the arm can act on the table: the drivers' TCP workspace box (SafetyLimits' defaults),
        extended down to BELOW_TABLE_M below the table top."""
        limits = SafetyLimits()
        return cls((*limits.workspace_min[:2], -BELOW_TABLE_M), limits.workspace_max)

    def check(self, point_base: np.ndarray) -> None:
        """Raise ClickRejected (OUTSIDE_VOLUME) naming the point, the box and the coordinates outside it."""
        p = np.asarray(point_base, dtype=float).reshape(-1)
        outside = ~((p >= self.lo) & (p <= self.hi))  # NaN is outside too
        if outside.any():
            axes = ", ".join(
                f"{'xyz'[i]} = {p[i]:.3f} not in [{self.lo[i]:g}, {self.hi[i]:g}]"
                for i in np.flatnonzero(outside)
            )
            raise ClickRejected(
                OUTSIDE_VOLUME,
                f"the point {p.round(3).tolist()} is outside the click volume min {self.lo.tolist()} max "
                f"{self.hi.tolist()} (base frame, m; {axes}): not on the work surface the arm reaches",
            )


def pose_to_matrix(pose: Sequence[float]) -> np.ndarray:
    """[x, y, z, qx, qy, qz, qw] (a frame's pose in the base frame, metres, unit quaternion) -> 4x4 matrix.

    Raises ValueError for a wrong length, non-finite numbers or a quaternion that is not unit length
    (within QUATERNION_NORM_TOLERANCE; it is then normalised).
    """
    p = np.asarray(pose, dtype=float).reshape(-1)
    if p.size != 7:
        raise ValueError(f"a pose is [x, y, z, qx, qy, qz, qw] (7 numbers), got {p.size}: {p.tolist()}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"pose contains NaN or inf: {p.tolist()}")
    q = p[3:]
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise ValueError(f"pose quaternion [qx, qy, qz, qw] = {q.tolist()} has norm {norm:.6f}, expected 1")
    x, y, z, w = q / norm
    T = np.eye(4)
    T[:3, :3] = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    T[:3, 3] = p[:3]
    return T


def check_image_age(age_s: float | None, max_age_s: float) -> None:
    """Refuse a click when there is no image (age None) or the newest one is older than ``max_age_s``.

    An image stamped more than ``max_age_s`` in the future is refused too: the camera's clock and this
    node's clock disagree, so the age cannot be trusted.
    """
    if age_s is None:
        raise ClickRejected(NO_IMAGE, "no valid camera image received yet")
    if age_s > max_age_s:
        raise ClickRejected(
            STALE_IMAGE, f"the newest image is {age_s:.3f} s old (max_image_age {max_age_s} s)"
        )
    if age_s < -max_age_s:
        raise ClickRejected(
            STALE_IMAGE,
            f"the newest image is stamped {-age_s:.3f} s in the future: camera and node clocks differ",
        )


def check_camera_matches(camera: CameraModel | None, width: int, height: int) -> None:
    """Refuse a click when no CameraInfo is known or it describes an image of another size."""
    if camera is None:
        raise ClickRejected(NO_CAMERA_INFO, "no valid CameraInfo received yet")
    if (camera.width, camera.height) != (width, height):
        raise ClickRejected(
            CAMERA_INFO_MISMATCH,
            f"CameraInfo is for {camera.width}x{camera.height} images but the image is {width}x{height}",
        )


def point_in_base(
    point: Sequence[float], frame_id: str, base_frame: str, frames: Mapping[str, np.ndarray]
) -> np.ndarray:
    """A clicked point in ``frame_id`` -> (3,) in the base frame.

    ``frames`` maps the other frames this caller can transform to their 4x4 pose in the base frame (the
    camera optical frame at least); a point in any other frame is refused.
    """
    p = np.asarray(point, dtype=float).reshape(-1)
    if p.size != 3 or not np.all(np.isfinite(p)):
        raise ClickRejected(NON_FINITE, f"the clicked point must be 3 finite numbers, got {p.tolist()}")
    if frame_id == base_frame:
        return p
    if frame_id in frames:
        T = np.asarray(frames[frame_id], dtype=float)
        return T[:3, :3] @ p + T[:3, 3]
    known = sorted({base_frame, *frames})
    raise ClickRejected(
        UNKNOWN_FRAME,
        f"the click is in frame {frame_id!r}, which cannot be transformed to {base_frame!r}; "
        f"expected one of {known} (set RViz's fixed frame to the base frame)",
    )


def project_click(point_base: np.ndarray, camera: CameraModel, volume: ClickVolume) -> np.ndarray:
    """A base-frame point -> (2,) pixel (u, v) of the camera image; refuses points behind the camera, off the
    image or outside ``volume`` (required: a point on the floor beyond the object has the object's pixel)."""
    p = np.asarray(point_base, dtype=float).reshape(-1)
    if p.size != 3 or not np.all(np.isfinite(p)):
        raise ClickRejected(NON_FINITE, f"the clicked point must be 3 finite numbers, got {p.tolist()}")
    uv, in_front = camera.project(p)
    if not in_front[0]:
        depth = float((camera.T_camera_base[:3, :3] @ p + camera.T_camera_base[:3, 3])[2])
        raise ClickRejected(
            BEHIND_CAMERA, f"the point {p.round(3).tolist()} is {depth:.3f} m along the view axis"
        )
    if not camera.in_image(uv)[0]:
        raise ClickRejected(
            OUTSIDE_IMAGE,
            f"the point {p.round(3).tolist()} projects to pixel {uv[0].round(1).tolist()}, outside the "
            f"{camera.width}x{camera.height} image",
        )
    volume.check(p)  # after the image checks: a point behind the camera is refused as such
    return uv[0]


def pixel_click(u: float, v: float, width: int, height: int) -> np.ndarray:
    """An image click (u = column, v = row) -> (2,) pixel, refused unless finite and inside the image."""
    uv = np.array([u, v], dtype=float)
    if not np.all(np.isfinite(uv)):
        raise ClickRejected(NON_FINITE, f"the clicked pixel must be finite, got {uv.tolist()}")
    if not (-0.5 <= uv[0] < width - 0.5 and -0.5 <= uv[1] < height - 0.5):
        raise ClickRejected(OUTSIDE_IMAGE, f"pixel {uv.tolist()} is outside the {width}x{height} image")
    return uv


def click_region(uv: np.ndarray, width: int, height: int, fraction: float) -> np.ndarray:
    """A square region [u0, v0, u1, v1] (pixel edges) centred on a click, side ``fraction`` of the image's
    smaller side, clipped to the image: where a segmenter seeded by the click looks for the object."""
    half = 0.5 * max(3.0, fraction * min(width, height))
    u, v = float(uv[0]), float(uv[1])
    return np.array(
        [max(u - half, -0.5), max(v - half, -0.5), min(u + half, width - 0.5), min(v + half, height - 0.5)]
    )


def ray_points(uv: np.ndarray, camera: CameraModel, length: float) -> np.ndarray:
    """(2, 3) base-frame start and end of the pixel's viewing ray, ``length`` metres long (a marker for
    pixel clicks, which carry no depth)."""
    if not math.isfinite(length) or length <= 0:
        raise ValueError(f"ray length must be positive, got {length}")
    origin, d = camera.pixel_to_ray(np.asarray(uv, dtype=float).reshape(1, 2))
    return np.stack([origin, origin + length * d[0]])
