"""Reader for the simulator's demonstrations (format "pixelvla_sim_demos", see pixelvla_ros.sim.record)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from pixelvla_ros.camera import CameraModel

from .conventions import PIXELVLA, convert_actions
from .episode import CorruptEpisodeError, Episode

SIM_FORMAT = "pixelvla_sim_demos"


class SimDemoSource:
    """Episodes of one sim demo folder. ``image_key`` = "{camera}_{size}" (default: largest scene stream)."""

    name = "sim"

    def __init__(self, root: str | Path, image_key: str | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"sim demo folder {self.root} does not exist")
        fmt = self.root / "format.json"
        if fmt.exists():
            got = json.loads(fmt.read_text()).get("format")
            if got != SIM_FORMAT:
                raise ValueError(f"{self.root}: format.json says {got!r}, expected {SIM_FORMAT!r}")
        self.image_key = image_key

    def keys(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _pick_key(self, steps_files: list[str]) -> str:
        if self.image_key:
            return self.image_key
        keys = [f[len("image_") :] for f in steps_files if f.startswith("image_")]
        if not keys:
            raise CorruptEpisodeError("steps.npz has no image_* stream")
        return max(keys, key=lambda k: (k.startswith("scene"), int(k.rsplit("_", 1)[-1])))

    def load(self, key: str) -> Episode:
        path = self.root / key
        try:
            meta: dict[str, Any] = json.loads((path / "episode.json").read_text())
            with np.load(path / "steps.npz") as s:
                ikey = self._pick_key(s.files)
                if f"image_{ikey}" not in s.files:
                    raise CorruptEpisodeError(f"{key}: no image stream {ikey!r} (has {s.files})")
                images = s[f"image_{ikey}"]
                raw = {
                    k: s[k] for k in ("action", "ee_pos", "ee_rotmat", "gripper", "proprio") if k in s.files
                }
        except CorruptEpisodeError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
            raise CorruptEpisodeError(f"{key}: cannot read sim episode ({type(e).__name__}: {e})") from e
        if "action" not in raw:
            raise CorruptEpisodeError(f"{key}: steps.npz has no 'action'")
        cam = None
        info = meta.get("cameras", {}).get(ikey)
        if info is not None:
            cam = CameraModel.from_camera_info_dict(info)
        return Episode(
            episode_id=key,
            source=f"sim:{path}",
            images=images,
            actions=convert_actions(raw["action"], PIXELVLA),
            instruction=str(meta.get("instruction", "")),
            action_convention=PIXELVLA,
            ee_pos=raw.get("ee_pos"),
            ee_rotmat=raw.get("ee_rotmat"),
            gripper_state=raw.get("gripper"),
            proprio=raw.get("proprio"),
            camera=cam,
            image_key=ikey,
            fps=meta.get("control_rate_hz"),
            extras={"family": meta.get("family"), "target": meta.get("target"), "sim_dir": str(path)},
        )


def load_ground_truth(episode_dir: str | Path, image_key: str) -> tuple[dict[str, Any], np.ndarray]:
    """(episode.json, (E, H, W) bool entity masks of the first frame) of one sim episode."""
    episode_dir = Path(episode_dir)
    meta = json.loads((episode_dir / "episode.json").read_text())
    with np.load(episode_dir / "masks.npz") as m:
        return meta, m[f"masks_{image_key}"]
