"""MJCF authoring for the tabletop scene: a UR5e-kinematics arm with a parallel gripper, a table, objects,
containers, lights and cameras. Everything is generated here; no downloaded assets.

World frame = robot base frame (DH frame 0 of :mod:`pixelvla_ros.ur5e`); the table top is the plane z = 0
and the robot stands on it at the origin. The arm's body chain is built from the DH parameters of
:mod:`pixelvla_ros.ur5e`, so MuJoCo's ``tcp`` site equals ``ur5e.fk(q, T_FLANGE_TCP)`` (tested).

Body chain from standard DH: MuJoCo body ``link{i}`` (i = 1..6) carries joint i, turning about its local z;
its frame is DH frame i-1 turned by q_i. Relative to ``link{i-1}`` it sits at Tz(d_{i-1}) Tx(a_{i-1})
Rx(alpha_{i-1}), and the ``flange`` body sits at Tz(d_6) Tx(a_6) Rx(alpha_6) in ``link6``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pixelvla_ros import ur5e

# Gripper geometry (flange frame, metres). Fingers slide along the flange y axis.
FINGER_TRAVEL = 0.045  # per finger: inner pad face at |y| = q, q in [0, FINGER_TRAVEL]
TCP_Z = 0.13  # TCP: centre between the finger pads
FINGER_BASE_Z = 0.06
FINGER_TIP_Z = 0.15
PAD_HALF_Z = 0.018
PAD_HALF_X = 0.012
T_FLANGE_TCP = np.eye(4)
T_FLANGE_TCP[2, 3] = TCP_Z

TIMESTEP = 0.002  # physics at 500 Hz

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.12, 0.30, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "orange": (0.98, 0.50, 0.05),
    "purple": (0.55, 0.20, 0.75),
    "white": (0.92, 0.92, 0.92),
    "black": (0.08, 0.08, 0.08),
}
SHAPES = ("cube", "cylinder", "sphere")
SIZES: dict[str, float] = {"small": 0.02, "large": 0.026}  # half extent (m)

ARM_KP = (3000.0, 3000.0, 3000.0, 1000.0, 1000.0, 1000.0)
ARM_KV = (150.0, 150.0, 150.0, 30.0, 30.0, 30.0)
ARM_FORCE = (150.0, 150.0, 150.0, 28.0, 28.0, 28.0)
FINGER_KP = 400.0
FINGER_KV = 8.0
FINGER_FORCE = 15.0


@dataclass(frozen=True)
class ObjectSpec:
    name: str  # MuJoCo body/geom name, e.g. "obj0"
    shape: str
    colour: str
    size: str
    x: float
    y: float
    yaw: float

    @property
    def half(self) -> float:
        return SIZES[self.size]

    @property
    def description(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def z(self) -> float:
        return self.half


@dataclass(frozen=True)
class ContainerSpec:
    name: str  # e.g. "tray0"
    colour: str
    x: float
    y: float
    inner_half: float = 0.07
    wall_height: float = 0.035
    wall_thickness: float = 0.008
    floor_thickness: float = 0.006
    kind: str = "tray"

    @property
    def description(self) -> str:
        return f"{self.colour} {self.kind}"


@dataclass(frozen=True)
class CameraSpec:
    name: str = "scene"
    pos: tuple[float, float, float] = (1.05, 0.42, 0.4)
    lookat: tuple[float, float, float] = (0.45, 0.0, 0.07)
    fovy: float = 45.0


@dataclass(frozen=True)
class SceneSpec:
    objects: tuple[ObjectSpec, ...]
    containers: tuple[ContainerSpec, ...] = ()
    camera: CameraSpec = field(default_factory=CameraSpec)
    table_texture: str = "checker"  # checker | flat | gradient
    table_rgb1: tuple[float, float, float] = (0.55, 0.45, 0.35)
    table_rgb2: tuple[float, float, float] = (0.50, 0.40, 0.30)
    light_pos: tuple[float, float, float] = (0.4, -0.6, 1.8)
    light_diffuse: float = 0.7
    ambient: float = 0.3
    shadows: bool = True
    wrist_camera: bool = True
    q_init: tuple[float, ...] = tuple(ur5e.Q_HOME)


def camera_axes(pos: np.ndarray, lookat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(right, up, forward) unit vectors of a camera at ``pos`` looking at ``lookat``, world z up."""
    f = np.asarray(lookat, float) - np.asarray(pos, float)
    f /= np.linalg.norm(f)
    r = np.cross(f, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    u = np.cross(r, f)
    return r, u, f


def _f(*v: float) -> str:
    return " ".join(f"{x:.12g}" for x in v)


def _quat_rx(a: float) -> str:
    return _f(math.cos(a / 2), math.sin(a / 2), 0.0, 0.0)


def _arm_xml(q_init: tuple[float, ...]) -> str:
    radii = (0.06, 0.054, 0.045, 0.04, 0.04, 0.04)
    masses = (3.7, 8.4, 2.3, 1.2, 1.2, 0.25)
    lines: list[str] = []
    indent = "    "
    # Base housing (static, visual).
    lines.append(
        f'{indent}<geom class="visual" type="cylinder" size="0.075 0.045" pos="0 0 0.045" '
        'rgba="0.25 0.25 0.28 1"/>'
    )
    depth = 0
    for i in range(ur5e.N_JOINTS):
        pad = indent * (depth + 1)
        if i == 0:
            pos, quat = (0.0, 0.0, 0.0), _quat_rx(0.0)
        else:
            pos, quat = (ur5e.DH_A[i - 1], 0.0, ur5e.DH_D[i - 1]), _quat_rx(ur5e.DH_ALPHA[i - 1])
        lo, hi = ur5e.Q_MIN[i], ur5e.Q_MAX[i]
        a, d = ur5e.DH_A[i], ur5e.DH_D[i]
        com = (a / 2, 0.0, d / 2)
        lines.append(f'{pad}<body name="link{i + 1}" pos="{_f(*pos)}" quat="{quat}" gravcomp="1">')
        lines.append(f'{pad}  <inertial pos="{_f(*com)}" mass="{masses[i]}" diaginertia="0.02 0.02 0.02"/>')
        lines.append(
            f'{pad}  <joint name="{ur5e.JOINT_NAMES[i]}" type="hinge" axis="0 0 1" range="{_f(lo, hi)}" '
            f'armature="0.2" damping="1" ref="0"/>'
        )
        r = radii[i]
        lines.append(
            f'{pad}  <geom class="visual" type="cylinder" size="{_f(r, r * 1.15)}" rgba="0.35 0.55 0.80 1"/>'
        )
        if abs(a) + abs(d) > 1e-9:
            lines.append(
                f'{pad}  <geom class="visual" type="capsule" size="{_f(r * 0.8)}" '
                f'fromto="{_f(0, 0, 0, a, 0, d)}" '
                f'rgba="0.78 0.80 0.82 1"/>'
            )
        depth += 1
    pad = indent * (depth + 1)
    pos = (ur5e.DH_A[5], 0.0, ur5e.DH_D[5])
    lines.append(
        f'{pad}<body name="flange" pos="{_f(*pos)}" quat="{_quat_rx(ur5e.DH_ALPHA[5])}" gravcomp="1">'
    )
    lines.append(f'{pad}  <inertial pos="0 0 0.04" mass="0.6" diaginertia="0.002 0.002 0.002"/>')
    lines.append(f'{pad}  <site name="flange" pos="0 0 0" size="0.005" group="4"/>')
    lines.append(f'{pad}  <site name="tcp" pos="0 0 {TCP_Z}" size="0.006" rgba="1 0 1 0.0" group="4"/>')
    lines.append(
        f'{pad}  <geom name="palm" type="box" size="0.03 0.065 0.025" pos="0 0 0.035" rgba="0.2 0.2 0.22 1" '
        f'contype="2" conaffinity="1"/>'
    )
    lines.append(f'{pad}  <camera name="wrist" pos="0.075 0 0.02" xyaxes="0 1 0 0.94 0 0.34" fovy="75"/>')
    for side, sgn in (("left", 1.0), ("right", -1.0)):
        half_len = (FINGER_TIP_Z - FINGER_BASE_Z) / 2
        pad_z = TCP_Z - FINGER_BASE_Z
        lines.append(f'{pad}  <body name="finger_{side}" pos="0 0 {FINGER_BASE_Z}" gravcomp="1">')
        lines.append(
            f'{pad}    <inertial pos="0 {sgn * 0.008} {half_len}" mass="0.05" diaginertia="1e-5 1e-5 1e-5"/>'
        )
        lines.append(
            f'{pad}    <joint name="finger_{side}" type="slide" axis="0 {sgn:.0f} 0" '
            f'range="0 {FINGER_TRAVEL}" '
            f'armature="0.01" damping="0.5"/>'
        )
        lines.append(
            f'{pad}    <geom name="finger_{side}" type="box" size="{_f(PAD_HALF_X, 0.006, half_len)}" '
            f'pos="{_f(0, sgn * 0.009, half_len)}" rgba="0.15 0.15 0.15 1" class="finger"/>'
        )
        lines.append(
            f'{pad}    <geom name="pad_{side}" type="box" size="{_f(PAD_HALF_X, 0.0015, PAD_HALF_Z)}" '
            f'pos="{_f(0, sgn * 0.0015, pad_z)}" rgba="0.9 0.9 0.9 1" class="pad"/>'
        )
        lines.append(f"{pad}  </body>")
    lines.append(f"{pad}</body>")
    for d in range(depth, 0, -1):
        lines.append(f"{indent * d}</body>")
    return "\n".join(lines)


def _object_xml(o: ObjectSpec) -> str:
    rgb = COLOURS[o.colour]
    h = o.half
    if o.shape == "cube":
        geom = f'type="box" size="{_f(h, h, h)}"'
        mass = 0.08
    elif o.shape == "cylinder":
        geom = f'type="cylinder" size="{_f(h, h)}"'
        mass = 0.07
    elif o.shape == "sphere":
        geom = f'type="sphere" size="{_f(h)}"'
        mass = 0.05
    else:
        raise ValueError(f"unknown shape {o.shape!r}; expected one of {SHAPES}")
    quat = _f(math.cos(o.yaw / 2), 0, 0, math.sin(o.yaw / 2))
    return (
        f'    <body name="{o.name}" pos="{_f(o.x, o.y, o.z + 0.0005)}" quat="{quat}">\n'
        f'      <freejoint name="{o.name}_joint"/>\n'
        f'      <geom name="{o.name}" {geom} mass="{mass}" rgba="{_f(*rgb, 1)}" class="object"/>\n'
        f"    </body>"
    )


def _container_xml(c: ContainerSpec) -> str:
    rgb = COLOURS[c.colour]
    t, hw, ih = c.wall_thickness / 2, c.wall_height / 2, c.inner_half
    out = ih + t
    rgba = _f(*rgb, 1)
    lines = [f'    <body name="{c.name}" pos="{_f(c.x, c.y, 0)}">']
    lines.append(
        f'      <geom name="{c.name}_floor" type="box" size="{_f(out + t, out + t, c.floor_thickness / 2)}" '
        f'pos="0 0 {c.floor_thickness / 2}" rgba="{rgba}" class="container"/>'
    )
    for k, (px, py, sx, sy) in enumerate(
        ((out, 0, t, out + t), (-out, 0, t, out + t), (0, out, out + t, t), (0, -out, out + t, t))
    ):
        lines.append(
            f'      <geom name="{c.name}_wall{k}" type="box" size="{_f(sx, sy, hw)}" pos="{_f(px, py, hw)}" '
            f'rgba="{rgba}" class="container"/>'
        )
    lines.append("    </body>")
    return "\n".join(lines)


def build_mjcf(spec: SceneSpec, offscreen_size: int = 640) -> str:
    """The scene's MJCF as a string."""
    cam = spec.camera
    r, u, _ = camera_axes(np.array(cam.pos), np.array(cam.lookat))
    amb = spec.ambient
    tex_builtin = {"checker": "checker", "flat": "flat", "gradient": "gradient"}[spec.table_texture]
    objects = "\n".join(_object_xml(o) for o in spec.objects)
    containers = "\n".join(_container_xml(c) for c in spec.containers)
    arm_act = "\n".join(
        f'    <position name="{n}" joint="{n}" kp="{ARM_KP[i]}" kv="{ARM_KV[i]}" '
        f'ctrlrange="{_f(ur5e.Q_MIN[i], ur5e.Q_MAX[i])}" forcerange="{_f(-ARM_FORCE[i], ARM_FORCE[i])}"/>'
        for i, n in enumerate(ur5e.JOINT_NAMES)
    )
    return f"""<mujoco model="pixelvla_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{TIMESTEP}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <global offwidth="{offscreen_size}" offheight="{offscreen_size}"/>
    <quality shadowsize="{1024 if spec.shadows else 0}"/>
    <headlight ambient="{_f(amb, amb, amb)}" diffuse="0.25 0.25 0.25" specular="0 0 0"/>
  </visual>
  <default>
    <default class="visual">
      <geom contype="0" conaffinity="0" group="1"/>
    </default>
    <default class="finger">
      <geom contype="2" conaffinity="1" condim="4" friction="1.2 0.02 0.001" solref="0.005 1"/>
    </default>
    <default class="pad">
      <geom contype="2" conaffinity="1" condim="6" friction="2.0 0.05 0.002" solref="0.005 1"
            solimp="0.95 0.99 0.001"/>
    </default>
    <default class="object">
      <geom contype="1" conaffinity="3" condim="6" friction="1.0 0.01 0.002" solref="0.005 1"/>
    </default>
    <default class="container">
      <geom contype="1" conaffinity="3" condim="3" friction="0.8 0.01 0.001"/>
    </default>
  </default>
  <asset>
    <texture name="table_tex" type="2d" builtin="{tex_builtin}" rgb1="{_f(*spec.table_rgb1)}"
             rgb2="{_f(*spec.table_rgb2)}" width="128" height="128"/>
    <material name="table_mat" texture="table_tex" texrepeat="6 6" reflectance="0.05"/>
    <texture name="floor_tex" type="2d" builtin="checker" rgb1="0.3 0.3 0.32" rgb2="0.25 0.25 0.27"
             width="64" height="64"/>
    <material name="floor_mat" texture="floor_tex" texrepeat="8 8"/>
  </asset>
  <worldbody>
    <light name="key" pos="{_f(*spec.light_pos)}"
           dir="{_f(*(-np.array(spec.light_pos) / np.linalg.norm(spec.light_pos)))}"
           directional="true" diffuse="{_f(spec.light_diffuse, spec.light_diffuse, spec.light_diffuse)}"
           specular="0.1 0.1 0.1" castshadow="{"true" if spec.shadows else "false"}"/>
    <geom name="floor" type="plane" size="3 3 0.1" pos="0 0 -0.75" material="floor_mat"
          contype="0" conaffinity="0"/>
    <geom name="table" type="box" size="0.55 0.7 0.025" pos="0.3 0 -0.025" material="table_mat"
          contype="1" conaffinity="3" condim="3" friction="0.8 0.01 0.001"/>
    <camera name="{cam.name}" mode="fixed" pos="{_f(*cam.pos)}" xyaxes="{_f(*r, *u)}" fovy="{cam.fovy:.6g}"/>
{_arm_xml(spec.q_init)}
{objects}
{containers}
  </worldbody>
  <actuator>
{arm_act}
    <position name="finger_left" joint="finger_left" kp="{FINGER_KP}" kv="{FINGER_KV}"
              ctrlrange="0 {FINGER_TRAVEL}"
              forcerange="{_f(-FINGER_FORCE, FINGER_FORCE)}"/>
    <position name="finger_right" joint="finger_right" kp="{FINGER_KP}" kv="{FINGER_KV}"
              ctrlrange="0 {FINGER_TRAVEL}"
              forcerange="{_f(-FINGER_FORCE, FINGER_FORCE)}"/>
  </actuator>
</mujoco>
"""
