"""Gym-like tabletop environment: the simulated robot that the demo, the ROS driver and evaluation drive.

    env = TabletopEnv(TaskConfig(family="pick_named"), seed=episode_seed("eval", 0), split="eval")
    obs = env.reset()                       # Observation: images, proprioception, instruction
    res = env.step(np.zeros(7))             # StepResult(observation, success, done, reason, info)
    cam = env.camera_info("scene", 96)      # pixelvla_ros.camera.CameraModel (CameraInfo + base->camera)

Actions follow pixelvla_ros.action_space (base-frame EE delta, rotation vector, gripper 0 open / 1 closed),
one per control period (ActionSpace.control_rate_hz, 10 Hz by default; physics at 500 Hz).
World frame = robot base frame. Rendering is off-screen (MUJOCO_GL=egl by default, CPU is fine).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from pixelvla_ros import ur5e  # noqa: E402
from pixelvla_ros.camera import CameraModel  # noqa: E402
from pixelvla_ros.sim import scene as S  # noqa: E402
from pixelvla_ros.sim.controller import (  # noqa: E402
    CartesianServo,
    Plan,
    finger_to_gripper_state,
    gripper_command_to_finger,
)
from pixelvla_ros.sim.seeds import check_seed  # noqa: E402
from pixelvla_ros.sim.tasks import SuccessState, TaskConfig, TaskSpec, evaluate_success, sample_episode  # noqa: E402

SETTLE_STEPS = 100  # physics steps after reset for objects to come to rest
_UNSTABLE_WARNINGS = (
    mujoco.mjtWarning.mjWARN_BADQACC,
    mujoco.mjtWarning.mjWARN_BADQPOS,
    mujoco.mjtWarning.mjWARN_BADQVEL,
)
MAX_OBJECT_SPEED = 5.0  # m/s; faster means the simulation misbehaved


def rot6d(R: np.ndarray) -> np.ndarray:
    """Continuous 6-D rotation encoding: the first two columns of R, [r00, r10, r20, r01, r11, r21]."""
    return np.concatenate([R[:, 0], R[:, 1]])


@dataclass
class Observation:
    images: dict[str, np.ndarray]  # "{camera}_{size}" -> (size, size, 3) uint8 RGB
    ee_pos: np.ndarray  # (3,) TCP position in the base frame, m
    ee_rotmat: np.ndarray  # (3, 3) TCP orientation in the base frame
    gripper: float  # measured closure: 0 = open, 1 = closed
    gripper_cmd: float  # last accepted gripper command
    joint_pos: np.ndarray  # (6,) rad
    instruction: str
    step: int

    @property
    def ee_rotvec(self) -> np.ndarray:
        return ur5e.matrix_to_rotvec(self.ee_rotmat)

    def proprio(self) -> np.ndarray:
        """(10,) float32: ee_pos (3), rot6d(ee_rotmat) (6), gripper (1)."""
        return np.concatenate([self.ee_pos, rot6d(self.ee_rotmat), [self.gripper]]).astype(np.float32)


@dataclass
class StepResult:
    observation: Observation
    success: bool
    done: bool  # success or the step budget is spent
    reason: str = ""  # why the action was not executed as given ("" = executed as given)
    info: dict[str, Any] = field(default_factory=dict)


class TabletopEnv:
    def __init__(self, config: TaskConfig | None = None, seed: int = 0, split: str | None = None) -> None:
        self.config = config or TaskConfig()
        self.split = split
        self.seed = int(check_seed(seed, split) if split else seed)
        self.model: mujoco.MjModel | None = None
        self.data: mujoco.MjData | None = None
        self._renderers: dict[int, mujoco.Renderer] = {}
        self.servo = CartesianServo(self.config.action_space.dt)
        self.scene: S.SceneSpec | None = None
        self.task: TaskSpec | None = None
        self.steps = 0
        self.last_success = SuccessState(False, "not started", False, 0.0)

    # ------------------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> Observation:
        if seed is not None:
            self.seed = int(check_seed(seed, self.split) if self.split else seed)
        self.scene, self.task = sample_episode(self.config, self.seed)
        self._close_renderers()
        offscreen = max(640, *self.config.image_sizes)
        xml = S.build_mjcf(self.scene, offscreen_size=offscreen)
        xml = xml.replace("<quality ", f'<quality offsamples="{int(self.config.offsamples)}" ', 1)
        self.model = m = mujoco.MjModel.from_xml_string(xml)
        self.data = d = mujoco.MjData(m)
        self._arm_qadr = np.array([m.joint(n).qposadr[0] for n in ur5e.JOINT_NAMES])
        self._arm_dadr = np.array([m.joint(n).dofadr[0] for n in ur5e.JOINT_NAMES])
        self._finger_qadr = np.array([m.joint(f"finger_{s}").qposadr[0] for s in ("left", "right")])
        self._tcp = m.site("tcp").id
        self._left = {m.geom("finger_left").id, m.geom("pad_left").id}
        self._right = {m.geom("finger_right").id, m.geom("pad_right").id}
        self.entities: list[str] = [o.name for o in self.scene.objects] + [
            c.name for c in self.scene.containers
        ]
        self.descriptions = {o.name: o.description for o in self.scene.objects}
        self.descriptions.update({c.name: c.description for c in self.scene.containers})
        self._obj_body = {o.name: m.body(o.name).id for o in self.scene.objects}
        self._obj_geom = {o.name: m.geom(o.name).id for o in self.scene.objects}
        self._obj_dadr = {o.name: m.joint(f"{o.name}_joint").dofadr[0] for o in self.scene.objects}
        # Segmentation: geom id -> entity index (-1 for robot, table, background).
        self._geom_entity = np.full(m.ngeom + 1, -1, dtype=np.int32)
        for k, name in enumerate(self.entities):
            bid = m.body(name).id
            self._geom_entity[np.flatnonzero(m.geom_bodyid == bid)] = k
        q0 = np.array(self.scene.q_init)
        d.qpos[self._arm_qadr] = q0
        d.qpos[self._finger_qadr] = S.FINGER_TRAVEL
        d.ctrl[:6] = q0
        d.ctrl[6:8] = S.FINGER_TRAVEL
        mujoco.mj_forward(m, d)
        mujoco.mj_step(m, d, nstep=SETTLE_STEPS)
        self.servo.reset(q0, 0.0)
        self.initial_positions = self.object_positions()
        self.steps = 0
        self.last_success = self._evaluate()
        return self._observe()

    def close(self) -> None:
        self._close_renderers()

    def __del__(self) -> None:  # renderers own GL contexts
        try:
            self._close_renderers()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _close_renderers(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers = {}

    # ------------------------------------------------------------------------------------------------
    def step(self, action: Any) -> StepResult:
        if self.model is None:
            raise RuntimeError("call reset() before step()")
        m, d = self.model, self.data
        plan = self.servo.plan(action, self.joint_positions())
        reason = plan.reason
        if not plan.accepted:  # hold: the arm does not move, time still passes
            hold = self.servo.q_cmd.copy()
            plan = Plan(False, hold, hold, gripper_command_to_finger(self.servo.gripper_cmd), plan.reason)
        saved = self._save_state()
        warn_before = sum(int(d.warning[w].number) for w in _UNSTABLE_WARNINGS)
        n = self.config.substeps
        for k in range(n):
            d.ctrl[:6] = self.servo.setpoint(plan, (k + 1) / n)
            d.ctrl[6:8] = plan.finger_goal
            mujoco.mj_step(m, d)
        warn_after = sum(int(d.warning[w].number) for w in _UNSTABLE_WARNINGS)
        speeds = [np.linalg.norm(d.qvel[a : a + 3]) for a in self._obj_dadr.values()]
        if (
            warn_after > warn_before
            or not np.all(np.isfinite(d.qpos))
            or (speeds and max(speeds) > MAX_OBJECT_SPEED)
        ):
            self._restore_state(saved)
            self.servo.reset(self.joint_positions(), self.servo.gripper_cmd)
            reason = "simulation instability detected; state restored, arm held"
            plan = Plan(False, plan.q_start, plan.q_start, plan.finger_goal, reason)
        self.steps += 1
        self.last_success = self._evaluate()
        done = self.last_success.success or self.steps >= self.config.max_steps
        info = {
            "why": self.last_success.why,
            "accepted": plan.accepted,
            "notes": list(plan.notes),
            "grasped": self.last_success.grasped,
            "target_lift": self.last_success.target_lift,
            "timeout": (not self.last_success.success) and self.steps >= self.config.max_steps,
        }
        return StepResult(self._observe(), self.last_success.success, done, reason, info)

    def _save_state(self) -> tuple[np.ndarray, ...]:
        d = self.data
        return (
            d.qpos.copy(),
            d.qvel.copy(),
            d.act.copy(),
            d.ctrl.copy(),
            np.array([d.time]),
            d.qacc_warmstart.copy(),
        )

    def _restore_state(self, s: tuple[np.ndarray, ...]) -> None:
        d = self.data
        d.qpos[:], d.qvel[:], d.act[:], d.ctrl[:] = s[0], s[1], s[2], s[3]
        d.time = float(s[4][0])
        d.qacc_warmstart[:] = s[5]
        mujoco.mj_forward(self.model, d)

    # ------------------------------------------------------------------------------------------------
    def joint_positions(self) -> np.ndarray:
        return self.data.qpos[self._arm_qadr].copy()

    def tcp_pose(self) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3] = self.data.site_xmat[self._tcp].reshape(3, 3)
        T[:3, 3] = self.data.site_xpos[self._tcp]
        return T

    def gripper_state(self) -> float:
        return finger_to_gripper_state(float(np.mean(self.data.qpos[self._finger_qadr])))

    def object_positions(self) -> dict[str, np.ndarray]:
        return {n: self.data.xpos[b].copy() for n, b in self._obj_body.items()}

    def object_pose(self, name: str) -> np.ndarray:
        """4x4 pose of an object or container body in the base frame."""
        bid = self.model.body(name).id
        T = np.eye(4)
        T[:3, :3] = self.data.xmat[bid].reshape(3, 3)
        T[:3, 3] = self.data.xpos[bid]
        return T

    def grasped(self) -> dict[str, bool]:
        """Per object: touched by both fingers (finger or pad geoms)."""
        d = self.data
        touch = {n: [False, False] for n in self._obj_geom}
        by_geom = {g: n for n, g in self._obj_geom.items()}
        for i in range(d.ncon):
            g1, g2 = int(d.contact.geom1[i]), int(d.contact.geom2[i])
            for a, b in ((g1, g2), (g2, g1)):
                if a in by_geom:
                    if b in self._left:
                        touch[by_geom[a]][0] = True
                    elif b in self._right:
                        touch[by_geom[a]][1] = True
        return {n: t[0] and t[1] for n, t in touch.items()}

    def _evaluate(self) -> SuccessState:
        return evaluate_success(
            self.config,
            self.task,
            positions=self.object_positions(),
            initial_positions=self.initial_positions,
            grasped=self.grasped(),
            containers={c.name: c for c in self.scene.containers},
            half_heights={o.name: o.half for o in self.scene.objects},
        )

    # ------------------------------------------------------------------------------------------------
    def _renderer(self, size: int) -> mujoco.Renderer:
        r = self._renderers.get(size)
        if r is None:
            r = self._renderers[size] = mujoco.Renderer(self.model, size, size)
        return r

    def render(self, camera: str = "scene", size: int | None = None) -> np.ndarray:
        """(size, size, 3) uint8 RGB from a camera ("scene" or "wrist")."""
        size = size or self.config.image_sizes[0]
        r = self._renderer(size)
        r.update_scene(self.data, camera)
        return r.render().copy()

    def segmentation(self, camera: str = "scene", size: int | None = None) -> np.ndarray:
        """(size, size) int32: index into ``self.entities`` per pixel, -1 for robot, table and background."""
        size = size or self.config.image_sizes[0]
        r = self._renderer(size)
        r.enable_segmentation_rendering()
        try:
            r.update_scene(self.data, camera)
            seg = r.render()
        finally:
            r.disable_segmentation_rendering()
        geom = seg[..., 0]
        is_geom = seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM)
        out = np.where(is_geom & (geom >= 0), self._geom_entity[np.clip(geom, 0, None)], -1)
        return out.astype(np.int32)

    def camera_info(self, camera: str = "scene", size: int | None = None) -> CameraModel:
        """Intrinsics (CameraInfo-equivalent) and current base->optical-frame pose of a camera."""
        size = size or self.config.image_sizes[0]
        m, d = self.model, self.data
        cid = m.camera(camera).id
        R_mj = d.cam_xmat[cid].reshape(3, 3)  # MuJoCo camera: x right, y up, looking along -z
        T = np.eye(4)
        T[:3, :3] = R_mj @ np.diag([1.0, -1.0, -1.0])  # optical: x right, y down, z forward
        T[:3, 3] = d.cam_xpos[cid]
        return CameraModel.from_fovy(
            size, size, float(m.cam_fovy[cid]), T, frame_id=f"{camera}_camera_optical_frame"
        )

    def _observe(self) -> Observation:
        images = {
            f"{cam}_{size}": self.render(cam, size)
            for cam in self.config.cameras
            for size in self.config.image_sizes
        }
        T = self.tcp_pose()
        return Observation(
            images=images,
            ee_pos=T[:3, 3].copy(),
            ee_rotmat=T[:3, :3].copy(),
            gripper=self.gripper_state(),
            gripper_cmd=self.servo.gripper_cmd,
            joint_pos=self.joint_positions(),
            instruction=self.task.instruction,
            step=self.steps,
        )

    def prompt_point(self, name: str, camera: str, size: int) -> tuple[float, float]:
        """The entity's projected centre (u, v), clipped into the image: a centre just past the edge still
        marks the object, and a point prompt must lie inside the image."""
        u, v = self.prompt(name, camera, size)["point"]
        return float(np.clip(u, -0.5, size - 0.5)), float(np.clip(v, -0.5, size - 0.5))

    def prompt(
        self, name: str | None = None, camera: str = "scene", size: int | None = None
    ) -> dict[str, Any]:
        """Ground-truth visual prompt for an entity (default: the task target) in the current frame:
        ``point`` (projected centre, u v), ``box`` (u0 v0 u1 v1 from the segmentation), ``visible`` pixels."""
        name = name or self.task.target
        cam = self.camera_info(camera, size)
        uv, front = cam.project(self.object_pose(name)[:3, 3])
        seg = self.segmentation(camera, size)
        ys, xs = np.nonzero(seg == self.entities.index(name))
        box = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())] if len(xs) else None
        return {
            "entity": name,
            "point": uv[0].tolist(),
            "in_front": bool(front[0]),
            "box": box,
            "visible": int(len(xs)),
        }
