"""Reader for the LeRobotDataset v3 on-disk layout (no lerobot install needed: pyarrow + OpenCV).

    ROOT/meta/info.json                            codebase_version "v3.0", fps, features, data_path and
                                                   video_path templates
    ROOT/meta/tasks.parquet                        task_index -> task string
    ROOT/meta/episodes/chunk-XXX/file-XXX.parquet  one row per episode: episode_index, tasks, length,
                                                   data/chunk_index, data/file_index, dataset_from_index,
                                                   dataset_to_index, videos/<key>/{chunk_index, file_index,
                                                   from_timestamp, to_timestamp}
    ROOT/data/chunk-XXX/file-XXX.parquet           one row per frame (many episodes per file)
    ROOT/videos/<key>/chunk-XXX/file-XXX.mp4       many episodes per file, cut by timestamps

Not in the LeRobot format and optional: ``meta/camera_info.json`` = {video_key: sensor_msgs/CameraInfo fields
+ T_base_camera}; without it (or ``camera_info`` in the config) episodes carry no camera model.
:func:`write_lerobot_v3` writes a small dataset in this layout (tests, conversions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pixelvla_ros.camera import CameraModel

from .conventions import PIXELVLA, convert_actions
from .episode import CorruptEpisodeError, Episode


@dataclass
class LeRobotConfig:
    image_key: str | None = None  # video feature, default: the first one
    action_key: str = "action"
    action_convention: str = PIXELVLA
    state_key: str = "observation.state"
    ee_pos_slice: tuple[int, int] | None = None  # columns of state holding the TCP position (base frame)
    gripper_state_index: int | None = None  # column of state holding gripper closure (0 open, 1 closed)
    camera_info: dict[str, Any] | None = (
        None  # CameraInfo dict (+ T_base_camera) overriding meta/camera_info.json
    )


def _pq():
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover
        raise ImportError("reading LeRobot v3 needs pyarrow: pip install pyarrow") from e
    return pq


class LeRobotV3Source:
    name = "lerobot"

    def __init__(self, root: str | Path, config: LeRobotConfig | None = None) -> None:
        self.root = Path(root)
        self.cfg = config or LeRobotConfig()
        info_path = self.root / "meta" / "info.json"
        if not info_path.exists():
            raise FileNotFoundError(f"{info_path} not found: not a LeRobotDataset v3 folder")
        self.info = json.loads(info_path.read_text())
        ver = str(self.info.get("codebase_version", ""))
        if not ver.startswith("v3"):
            raise ValueError(f"{self.root}: codebase_version {ver!r}, this reader reads v3.x")
        self.fps = float(self.info["fps"])
        feats = self.info.get("features", {})
        vids = [k for k, v in feats.items() if v.get("dtype") == "video"]
        self.video_key = self.cfg.image_key or (vids[0] if vids else None)
        if self.video_key is None or self.video_key not in vids:
            raise ValueError(f"{self.root}: no video feature {self.cfg.image_key!r} (have {vids})")
        pq = _pq()
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise FileNotFoundError(f"{self.root}/meta/episodes has no parquet files")
        self.episodes: dict[int, dict[str, Any]] = {}
        for f in files:
            for row in pq.read_table(f).to_pylist():
                self.episodes[int(row["episode_index"])] = row
        self.tasks: dict[int, str] = {}
        tp = self.root / "meta" / "tasks.parquet"
        if tp.exists():
            for row in pq.read_table(tp).to_pylist():
                task = row.get("task", row.get("__index_level_0__"))
                self.tasks[int(row["task_index"])] = str(task)
        cam_path = self.root / "meta" / "camera_info.json"
        info = self.cfg.camera_info
        if info is None and cam_path.exists():
            info = json.loads(cam_path.read_text()).get(self.video_key)
        self.camera = CameraModel.from_camera_info_dict(info) if info else None
        self._table_cache: tuple[Path, Any] | None = None

    def keys(self) -> list[str]:
        return [f"episode_{i:06d}" for i in sorted(self.episodes)]

    def _table(self, path: Path):
        if self._table_cache is None or self._table_cache[0] != path:
            self._table_cache = (path, _pq().read_table(path))
        return self._table_cache[1]

    def _frames(self, ep: dict[str, Any], n: int) -> np.ndarray:
        vk = self.video_key
        rel = self.info["video_path"].format(
            video_key=vk,
            chunk_index=int(ep[f"videos/{vk}/chunk_index"]),
            file_index=int(ep[f"videos/{vk}/file_index"]),
        )
        path = self.root / rel
        if not path.exists():
            raise CorruptEpisodeError(f"video {path} is missing")
        start = int(round(float(ep[f"videos/{vk}/from_timestamp"]) * self.fps))
        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                raise CorruptEpisodeError(f"OpenCV cannot open {path}")
            if start:
                cap.set(cv2.CAP_PROP_POS_FRAMES, start)
            frames = []
            for _ in range(n):
                ok, bgr = cap.read()
                if not ok:
                    break
                frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        finally:
            cap.release()
        if len(frames) != n:
            raise CorruptEpisodeError(
                f"{path}: decoded {len(frames)} frames from frame {start}, expected {n}"
            )
        return np.stack(frames)

    def load(self, key: str) -> Episode:
        try:
            idx = int(key.rsplit("_", 1)[-1])
            ep = self.episodes[idx]
        except (ValueError, KeyError) as e:
            raise CorruptEpisodeError(f"unknown LeRobot episode {key!r}") from e
        try:
            rel = self.info["data_path"].format(
                chunk_index=int(ep["data/chunk_index"]), file_index=int(ep["data/file_index"])
            )
            table = self._table(self.root / rel)
            ep_col = np.asarray(table.column("episode_index").to_numpy())
            rows = np.flatnonzero(ep_col == idx)
            if len(rows) == 0:
                raise CorruptEpisodeError(f"{key}: no rows in {rel}")
            order = np.argsort(np.asarray(table.column("frame_index").to_numpy())[rows])
            rows = rows[order]
            sub = table.take(rows)
            actions = np.asarray(sub.column(self.cfg.action_key).to_pylist(), dtype=np.float64)
            state = (
                np.asarray(sub.column(self.cfg.state_key).to_pylist(), dtype=np.float64)
                if self.cfg.state_key in sub.column_names
                else None
            )
            frames = self._frames(ep, len(rows))
        except CorruptEpisodeError:
            raise
        except Exception as e:  # pyarrow / OSError / decode errors: the episode is unreadable
            raise CorruptEpisodeError(f"{key}: cannot read LeRobot episode ({type(e).__name__}: {e})") from e
        tasks = ep.get("tasks") or []
        if not tasks and "task_index" in sub.column_names:
            tasks = [self.tasks.get(int(sub.column("task_index")[0].as_py()), "")]
        ee = gs = None
        if state is not None and self.cfg.ee_pos_slice is not None:
            a, b = self.cfg.ee_pos_slice
            ee = state[:, a:b]
        if state is not None and self.cfg.gripper_state_index is not None:
            gs = state[:, self.cfg.gripper_state_index]
        return Episode(
            episode_id=key,
            source=f"lerobot:{self.root}#{idx}",
            images=frames,
            actions=convert_actions(actions, self.cfg.action_convention),
            instruction=str(tasks[0]) if tasks else "",
            action_convention=self.cfg.action_convention,
            ee_pos=ee,
            gripper_state=gs,
            proprio=state,
            camera=self.camera,
            image_key=self.video_key,
            fps=self.fps,
        )


def write_lerobot_v3(
    root: str | Path,
    episodes: list[dict[str, Any]],
    fps: float = 10.0,
    video_key: str = "observation.images.scene",
    camera_info: dict[str, Any] | None = None,
) -> Path:
    """Write a small LeRobotDataset v3 (one data file, one video file) from dicts with keys
    images (T,H,W,3) uint8, actions (T,A), state (T,S), task str. Returns the root."""
    import pyarrow as pa

    pq = _pq()
    root = Path(root)
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    (root / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
    vdir = root / "videos" / video_key / "chunk-000"
    vdir.mkdir(parents=True, exist_ok=True)
    H, W = episodes[0]["images"].shape[1:3]
    tasks = list(dict.fromkeys(e["task"] for e in episodes))
    writer = cv2.VideoWriter(str(vdir / "file-000.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    cols: dict[str, list] = {
        k: []
        for k in (
            "action",
            "observation.state",
            "timestamp",
            "frame_index",
            "episode_index",
            "index",
            "task_index",
        )
    }
    ep_rows, gidx, t0 = [], 0, 0
    for i, e in enumerate(episodes):
        T = len(e["images"])
        for t in range(T):
            writer.write(cv2.cvtColor(e["images"][t], cv2.COLOR_RGB2BGR))
            cols["action"].append(np.asarray(e["actions"][t], np.float32).tolist())
            cols["observation.state"].append(np.asarray(e["state"][t], np.float32).tolist())
            cols["timestamp"].append(t / fps)
            cols["frame_index"].append(t)
            cols["episode_index"].append(i)
            cols["index"].append(gidx + t)
            cols["task_index"].append(tasks.index(e["task"]))
        ep_rows.append(
            {
                "episode_index": i,
                "tasks": [e["task"]],
                "length": T,
                "data/chunk_index": 0,
                "data/file_index": 0,
                "dataset_from_index": gidx,
                "dataset_to_index": gidx + T,
                f"videos/{video_key}/chunk_index": 0,
                f"videos/{video_key}/file_index": 0,
                f"videos/{video_key}/from_timestamp": t0 / fps,
                f"videos/{video_key}/to_timestamp": (t0 + T) / fps,
            }
        )
        gidx += T
        t0 += T
    writer.release()
    pq.write_table(pa.table(cols), root / "data" / "chunk-000" / "file-000.parquet")
    pq.write_table(
        pa.Table.from_pylist(ep_rows), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    )
    pq.write_table(
        pa.table({"task_index": list(range(len(tasks))), "task": tasks}), root / "meta" / "tasks.parquet"
    )
    A, S = len(episodes[0]["actions"][0]), len(episodes[0]["state"][0])
    info = {
        "codebase_version": "v3.0",
        "fps": fps,
        "total_episodes": len(episodes),
        "total_frames": gidx,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": {
            video_key: {"dtype": "video", "shape": [H, W, 3], "names": ["height", "width", "channels"]},
            "action": {"dtype": "float32", "shape": [A]},
            "observation.state": {"dtype": "float32", "shape": [S]},
            "timestamp": {"dtype": "float32", "shape": [1]},
            "frame_index": {"dtype": "int64", "shape": [1]},
            "episode_index": {"dtype": "int64", "shape": [1]},
            "index": {"dtype": "int64", "shape": [1]},
            "task_index": {"dtype": "int64", "shape": [1]},
        },
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=1))
    if camera_info is not None:
        (root / "meta" / "camera_info.json").write_text(json.dumps({video_key: camera_info}, indent=1))
    return root
