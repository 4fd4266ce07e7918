"""Episode interface and readers: simulator demos, LeRobotDataset v3, rosbag2 (MCAP + SQLite), converters."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

from pixelvla_ros.learning.datasets import (  # noqa: E402
    CorruptEpisodeError,
    LeRobotConfig,
    LeRobotV3Source,
    Rosbag2Config,
    Rosbag2Source,
    SimDemoSource,
    convert_actions,
    write_lerobot_v3,
)
from pixelvla_ros.learning.datasets import conventions as C  # noqa: E402

from pixelvla_ros.camera import CameraModel  # noqa: E402


def sim_demos(tmp_path_factory, n: int = 6) -> Path:
    """Record (once per pytest session, shared by the test files) n demos at 96x96."""
    root = tmp_path_factory.getbasetemp() / "pixelvla_sim_demos"
    if len([p for p in root.glob("train_*")]) < n:
        from pixelvla_ros.sim import record

        assert record.main(["--out", str(root), "--episodes", str(n), "--image-size", "96"]) == 0
    return root


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    return sim_demos(tmp_path_factory)


def _camera(w: int = 48, h: int = 32) -> CameraModel:
    T = np.eye(4)
    T[:3, 3] = [0.0, 0.0, 1.0]
    T[:3, :3] = np.diag([1.0, -1.0, -1.0])  # looking down
    return CameraModel.from_fovy(w, h, 60.0, T)


# ------------------------------------------------------------------------------------------------ sim
def test_sim_reader_gives_project_convention_and_camera(demos):
    src = SimDemoSource(demos)
    keys = src.keys()
    assert len(keys) >= 6
    ep = src.load(keys[0])
    T = ep.num_steps
    assert ep.images.shape == (T, 96, 96, 3) and ep.images.dtype == np.uint8
    assert ep.actions.shape == (T, 7) and ep.action_convention == C.PIXELVLA
    assert ep.camera is not None and (ep.camera.width, ep.camera.height) == (96, 96)
    assert ep.ee_pos.shape == (T, 3) and ep.gripper_state.shape == (T,)
    assert ep.instruction and ep.image_key == "scene_96" and ep.source.startswith("sim:")


def test_sim_reader_truncated_episode_is_corrupt(demos, tmp_path):
    import shutil

    src_dir = demos / SimDemoSource(demos).keys()[0]
    bad = tmp_path / "demos" / "train_0000000"
    shutil.copytree(src_dir, bad)
    data = (bad / "steps.npz").read_bytes()
    (bad / "steps.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptEpisodeError):
        SimDemoSource(tmp_path / "demos").load("train_0000000")


# -------------------------------------------------------------------------------------------- LeRobot
def test_lerobot_v3_roundtrip_with_bridge_convention(tmp_path):
    rng = np.random.default_rng(0)
    eps = []
    for i, n in enumerate((7, 9)):
        imgs = np.zeros((n, 32, 48, 3), np.uint8)
        for t in range(n):  # big flat blocks survive mp4 compression
            imgs[t, :, :] = (40 * i + 10 * t, 100, 200 - 15 * t)
        act = rng.normal(0, 0.01, (n, 7))
        act[:, 6] = [1.0] * 3 + [0.0] * (n - 3)  # Bridge: 1 = open
        eps.append(
            {
                "images": imgs,
                "actions": act,
                "state": rng.normal(size=(n, 8)),
                "task": f"pick up the cube {i}",
            }
        )
    cam = _camera().to_camera_info_dict()
    root = write_lerobot_v3(tmp_path / "lr", eps, fps=5.0, camera_info=cam)
    assert (root / "meta" / "info.json").exists()
    assert (root / "data" / "chunk-000" / "file-000.parquet").exists()
    assert (root / "videos" / "observation.images.scene" / "chunk-000" / "file-000.mp4").exists()
    src = LeRobotV3Source(
        root,
        LeRobotConfig(action_convention=C.DELTA_EULER_XYZ_G1OPEN, ee_pos_slice=(0, 3), gripper_state_index=7),
    )
    assert src.keys() == ["episode_000000", "episode_000001"]
    for i, key in enumerate(src.keys()):
        ep = src.load(key)
        assert ep.num_steps == len(eps[i]["images"])
        assert np.abs(ep.images.astype(int) - eps[i]["images"]).mean() < 8  # lossy video, right frames
        np.testing.assert_allclose(ep.actions[:, 6], 1.0 - eps[i]["actions"][:, 6])  # gripper flipped
        np.testing.assert_allclose(ep.actions[:, :3], eps[i]["actions"][:, :3], atol=1e-6)
        assert ep.action_convention == C.DELTA_EULER_XYZ_G1OPEN
        assert ep.instruction == f"pick up the cube {i}"
        assert ep.camera is not None and ep.ee_pos.shape == (ep.num_steps, 3)


def test_lerobot_missing_video_is_corrupt(tmp_path):
    eps = [
        {
            "images": np.zeros((3, 16, 16, 3), np.uint8),
            "actions": np.zeros((3, 7)),
            "state": np.zeros((3, 2)),
            "task": "x",
        }
    ]
    root = write_lerobot_v3(tmp_path / "lr", eps)
    (root / "videos" / "observation.images.scene" / "chunk-000" / "file-000.mp4").unlink()
    with pytest.raises(CorruptEpisodeError):
        LeRobotV3Source(root).load("episode_000000")


# ------------------------------------------------------------------------------------------- rosbag2
def _write_bag(path: Path, plugin, with_action: bool = True) -> dict:
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    Image, Header, Time = (
        ts.types["sensor_msgs/msg/Image"],
        ts.types["std_msgs/msg/Header"],
        ts.types["builtin_interfaces/msg/Time"],
    )
    CameraInfo, RoI = ts.types["sensor_msgs/msg/CameraInfo"], ts.types["sensor_msgs/msg/RegionOfInterest"]
    PoseStamped, Pose = ts.types["geometry_msgs/msg/PoseStamped"], ts.types["geometry_msgs/msg/Pose"]
    Point, Quat = ts.types["geometry_msgs/msg/Point"], ts.types["geometry_msgs/msg/Quaternion"]
    F32MA, Layout = ts.types["std_msgs/msg/Float32MultiArray"], ts.types["std_msgs/msg/MultiArrayLayout"]
    F32, String = ts.types["std_msgs/msg/Float32"], ts.types["std_msgs/msg/String"]
    rng = np.random.default_rng(1)
    T, H, W = 5, 32, 48
    imgs = rng.integers(0, 255, (T, H, W, 3), dtype=np.uint8)
    acts = rng.normal(0, 0.01, (T, 7)).astype(np.float32)
    acts[:, 6] = [0, 0, 1, 1, 1]
    pos = np.cumsum(rng.normal(0, 0.01, (T, 3)), 0) + [0.4, 0.0, 0.2]
    cam = _camera(W, H)
    with Writer(path, version=9, storage_plugin=plugin) as w:
        c_img = w.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=ts)
        c_info = w.add_connection("/camera/camera_info", "sensor_msgs/msg/CameraInfo", typestore=ts)
        c_pose = w.add_connection("/tcp_pose", "geometry_msgs/msg/PoseStamped", typestore=ts)
        c_act = (
            w.add_connection("/action", "std_msgs/msg/Float32MultiArray", typestore=ts)
            if with_action
            else None
        )
        c_g = w.add_connection("/gripper", "std_msgs/msg/Float32", typestore=ts)
        c_s = w.add_connection("/instruction", "std_msgs/msg/String", typestore=ts)
        t0 = 1_000_000_000
        w.write(c_s, t0, ts.serialize_cdr(String(data="pick up the red cube"), "std_msgs/msg/String"))
        info = cam.to_camera_info_dict()
        for t in range(T):
            stamp = t0 + t * 100_000_000
            hdr = Header(
                stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="camera_optical_frame"
            )
            w.write(
                c_info,
                stamp,
                ts.serialize_cdr(
                    CameraInfo(
                        header=hdr,
                        height=H,
                        width=W,
                        distortion_model="plumb_bob",
                        d=np.zeros(5),
                        k=np.array(info["k"]),
                        r=np.array(info["r"]),
                        p=np.array(info["p"]),
                        binning_x=0,
                        binning_y=0,
                        roi=RoI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
                    ),
                    "sensor_msgs/msg/CameraInfo",
                ),
            )
            w.write(
                c_pose,
                stamp - 1000,
                ts.serialize_cdr(
                    PoseStamped(
                        header=hdr,
                        pose=Pose(
                            position=Point(x=pos[t, 0], y=pos[t, 1], z=pos[t, 2]),
                            orientation=Quat(x=0.0, y=0.0, z=0.0, w=1.0),
                        ),
                    ),
                    "geometry_msgs/msg/PoseStamped",
                ),
            )
            if c_act is not None:
                w.write(
                    c_act,
                    stamp - 1000,
                    ts.serialize_cdr(
                        F32MA(layout=Layout(dim=[], data_offset=0), data=acts[t]),
                        "std_msgs/msg/Float32MultiArray",
                    ),
                )
            w.write(c_g, stamp - 1000, ts.serialize_cdr(F32(data=float(acts[t, 6])), "std_msgs/msg/Float32"))
            w.write(
                c_img,
                stamp,
                ts.serialize_cdr(
                    Image(
                        header=hdr,
                        height=H,
                        width=W,
                        encoding="rgb8",
                        is_bigendian=0,
                        step=W * 3,
                        data=imgs[t].reshape(-1),
                    ),
                    "sensor_msgs/msg/Image",
                ),
            )
    return {"images": imgs, "actions": acts, "pos": pos, "camera": cam}


@pytest.mark.parametrize("plugin_name", ["MCAP", "SQLITE3"])
def test_rosbag2_roundtrip(tmp_path, plugin_name):
    from rosbags.rosbag2 import StoragePlugin

    truth = _write_bag(tmp_path / "bags" / "ep0", getattr(StoragePlugin, plugin_name))
    src = Rosbag2Source(
        tmp_path / "bags", Rosbag2Config(T_base_camera=truth["camera"].T_base_camera.tolist())
    )
    assert src.keys() == ["ep0"]
    ep = src.load("ep0")
    np.testing.assert_array_equal(ep.images, truth["images"])
    np.testing.assert_allclose(ep.actions, truth["actions"], atol=1e-6)
    np.testing.assert_allclose(ep.ee_pos, truth["pos"], atol=1e-9)
    assert ep.instruction == "pick up the red cube" and ep.action_convention == C.PIXELVLA
    assert ep.camera is not None
    np.testing.assert_allclose(ep.camera.K, truth["camera"].K)


def test_rosbag2_poses_only_use_the_absolute_pose_converter(tmp_path):
    from rosbags.rosbag2 import StoragePlugin

    truth = _write_bag(tmp_path / "ep1", StoragePlugin.MCAP, with_action=False)
    ep = Rosbag2Source(tmp_path / "ep1").load("ep1")
    assert ep.action_convention == C.ABS_POS_QUAT_XYZW_G0OPEN
    np.testing.assert_allclose(ep.actions[:-1, :3], np.diff(truth["pos"], axis=0), atol=1e-9)
    np.testing.assert_allclose(ep.actions[:, 6], truth["actions"][:, 6])
    assert ep.camera is None  # no T_base_camera configured and no /tf_static


def test_rosbag2_truncated_is_corrupt(tmp_path):
    from rosbags.rosbag2 import StoragePlugin

    _write_bag(tmp_path / "ep2", StoragePlugin.MCAP)
    f = next((tmp_path / "ep2").glob("*.mcap"))
    f.write_bytes(f.read_bytes()[:400])
    with pytest.raises(CorruptEpisodeError):
        Rosbag2Source(tmp_path / "ep2").load("ep2")


# ----------------------------------------------------------------------------------------- converters
def test_converters_name_their_convention_and_agree():
    rng = np.random.default_rng(0)
    eul = rng.uniform(-0.3, 0.3, (20, 3))
    a = np.concatenate([rng.normal(size=(20, 3)), eul, rng.integers(0, 2, (20, 1))], 1)
    out = convert_actions(a, C.DELTA_EULER_XYZ_G1OPEN)
    np.testing.assert_allclose(C.rotvec_to_matrix(out[:, 3:6]), C.euler_xyz_to_matrix(eul), atol=1e-6)
    np.testing.assert_allclose(out[:, 6], 1 - a[:, 6])
    np.testing.assert_allclose(convert_actions(a, C.DELTA_EULER_XYZ_G1CLOSED)[:, 6], a[:, 6])
    f = a.copy()
    f[:, 6] = np.where(a[:, 6] > 0, 1.0, -1.0)
    np.testing.assert_allclose(convert_actions(f, C.FRACTAL_RT1)[:, 6], a[:, 6])
    # absolute poses -> deltas that integrate back to the poses
    rv = rng.uniform(-1, 1, (6, 3))
    pose = np.concatenate([rng.normal(size=(6, 3)), rv, np.zeros((6, 1))], 1)
    d = convert_actions(pose, C.ABS_POS_ROTVEC_G0OPEN)
    R = C.rotvec_to_matrix(rv)
    for t in range(5):
        np.testing.assert_allclose(C.rotvec_to_matrix(d[t, 3:6]) @ R[t], R[t + 1], atol=1e-5)
    # rotation vectors near pi survive the round trip
    near_pi = np.array([[0.0, 0.0, np.pi - 1e-5], [np.pi - 1e-4, 0.0, 0.0]])
    np.testing.assert_allclose(
        C.rotvec_to_matrix(C.matrix_to_rotvec(C.rotvec_to_matrix(near_pi))),
        C.rotvec_to_matrix(near_pi),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="unknown action convention"):
        convert_actions(a, "nope")
    assert json.dumps(sorted(C.CONVERTERS))
