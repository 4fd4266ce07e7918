"""The annotated dataset format ("pixelvla_annotated", version 1): WebDataset-style tar shards.

Why: training streams far more data than fits in RAM and runs on many ranks and data-loader workers. Tar
shards are read strictly sequentially (fast on disks, object stores and over HTTP), are split between
ranks/workers by file with no index server, can be shuffled by shard + buffer, and are opened by the Python
standard library, `tar`, or the `webdataset` package (members sharing a key form one sample). Inside a sample
everything is a standard container: JSON, NumPy .npz (no pickle) and COCO RLE masks (pycocotools), so the
dataset is readable without this package. Parquet was the alternative: good for columns of scalars, poor for
(T, H, W, 3) image stacks and masks of varying size; a tar of per-episode files keeps an episode together.

Layout
------
OUT/
  format.json                     {"format": "pixelvla_annotated", "version": 1, layout notes}
  shards/{prefix}-{seq:06d}.tar   complete shards (written to a temp name, then renamed: never partial)
    {key}.json                    the annotation (below)
    {key}.steps.npz               images (T, H, W, 3) uint8 RGB, actions (T, 7) float32 (project convention:
                                  base-frame EE delta, rotation vector, gripper 0 = open / 1 = closed), and
                                  when known ee_pos (T, 3), gripper_state (T,)
    {key}.frame0.png              the annotated (initial) frame, for humans and quick previews
  staging/{key}.tar               finished samples not yet packed into a shard (same members; a crashed run
                                  leaves them here and the next run packs them)
  journal/{prefix}.jsonl          one line per finished episode (accepted or rejected, reason, stage times):
                                  the resume record; a truncated last line is ignored
  provenance.json, report.json, contact_sheet.png, evaluation.json (from `evaluate`)

{key}.json:
  format, version, key, episode_id, source, instruction, phrase, text (the paper's template),
  action_convention (the converter that produced the actions), num_steps, image_size [H, W],
  frame_index (0: masks and prompts are drawn on the initial frame and held for the episode),
  grasp_step (first gripper-close step), region_box [x0, y0, x1, y1], tcp_uv [u, v] | null,
  detection {box, score, method}, mask {"size": [H, W], "counts": str} (COCO RLE, pycocotools),
  mask_area, prompts [{kind: point|line|box|mask, points [[x, y], ...] | null, labels [...]}] (the mask prompt
  is the RLE mask above), camera (sensor_msgs/CameraInfo fields + T_base_camera) | null, extras.
Pixel convention: x = column, y = row, integer coordinates are pixel centres (OpenCV, sensor_msgs/CameraInfo);
a point is inside an image of width W when -0.5 <= x <= W - 0.5; boxes are pixel-edge boxes
[x0 - 0.5, y0 - 0.5, x1 + 0.5, y1 + 0.5] around the mask's pixels.

Reading: :func:`iter_samples` streams samples shard by shard, the shards split between ``rank`` /
``world_size`` and data-loader workers (``worker_id`` / ``num_workers``, taken from
torch.utils.data.get_worker_info() when not given), so each sample is read by exactly one consumer.
"""

from __future__ import annotations

import io
import json
import os
import random
import tarfile
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

FORMAT = "pixelvla_annotated"
VERSION = 1


# --------------------------------------------------------------------------------------------- RLE
def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool -> COCO RLE {"size": [H, W], "counts": str} (JSON-able)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    with warnings.catch_warnings():  # pycocotools' Cython triggers a NumPy 2 copy-keyword deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


# ---------------------------------------------------------------------------------------- atomic IO
def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=1, default=_json_default).encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sample_members(
    key: str, annotation: dict[str, Any], arrays: dict[str, np.ndarray], frame0_png: bytes
) -> dict[str, bytes]:
    npz = io.BytesIO()
    np.savez_compressed(npz, **arrays)
    return {
        f"{key}.json": json.dumps(annotation, default=_json_default).encode(),
        f"{key}.steps.npz": npz.getvalue(),
        f"{key}.frame0.png": frame0_png,
    }


# ------------------------------------------------------------------------------------------- writer
class ShardWriter:
    """Atomic, resumable writer: each sample is first written as staging/{key}.tar (atomic), then groups of
    ``shard_size`` are packed into shards/{prefix}-{seq}.tar (atomic) and their staging files removed."""

    def __init__(self, out: str | Path, prefix: str = "shard", shard_size: int = 64) -> None:
        self.out = Path(out)
        self.prefix = prefix
        self.shard_size = int(shard_size)
        self.staging = self.out / "staging"
        self.shards = self.out / "shards"
        self.staging.mkdir(parents=True, exist_ok=True)
        self.shards.mkdir(parents=True, exist_ok=True)
        fmt = self.out / "format.json"
        if not fmt.exists():
            atomic_write_json(
                fmt, {"format": FORMAT, "version": VERSION, "layout": "see learning/annotation/format.py"}
            )
        self._recover()

    def _staged(self) -> list[Path]:
        return sorted(p for p in self.staging.glob(f"{self.prefix}--*.tar"))

    def _recover(self) -> None:
        """Drop staging files already packed (a crash between shard rename and staging cleanup)."""
        staged = self._staged()
        if not staged:
            return
        packed: set[str] = set()
        for shard in self.shards.glob(f"{self.prefix}-*.tar"):
            with tarfile.open(shard) as tar:
                packed.update(m.name.split(".", 1)[0] for m in tar.getmembers())
        for p in staged:
            if p.stem.split("--", 1)[1] in packed:
                p.unlink()

    def _next_seq(self) -> int:
        seqs = [int(p.stem.rsplit("-", 1)[1]) for p in self.shards.glob(f"{self.prefix}-*.tar")]
        return max(seqs, default=-1) + 1

    def write(self, key: str, members: dict[str, bytes]) -> None:
        """Stage one sample atomically (call :meth:`maybe_flush` after recording it as done)."""
        atomic_write_bytes(self.staging / f"{self.prefix}--{key}.tar", _tar_bytes(members))

    def maybe_flush(self) -> None:
        if len(self._staged()) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Pack every staged sample into new shards (a final partial shard included)."""
        staged = self._staged()
        for i in range(0, len(staged), self.shard_size):
            group = staged[i : i + self.shard_size]
            members: dict[str, bytes] = {}
            for p in group:
                with tarfile.open(p) as tar:
                    for m in tar.getmembers():
                        members[m.name] = tar.extractfile(m).read()
            atomic_write_bytes(self.shards / f"{self.prefix}-{self._next_seq():06d}.tar", _tar_bytes(members))
            for p in group:
                p.unlink()


# ------------------------------------------------------------------------------------------- reader
def list_shards(root: str | Path | list[str | Path]) -> list[Path]:
    """The shard files of a dataset folder (or a shard file, or a list of either), in order."""
    if isinstance(root, list):
        return [shard for r in root for shard in list_shards(r)]
    root = Path(root)
    if root.is_file():
        return [root]
    return (
        sorted((root / "shards").glob("*.tar")) if (root / "shards").is_dir() else sorted(root.glob("*.tar"))
    )


def decode_sample(members: dict[str, bytes]) -> dict[str, Any]:
    """Members of one sample (suffix -> bytes) -> {"annotation", "images", "actions", ..., "mask"}."""
    ann = json.loads(members["json"])
    out: dict[str, Any] = {"annotation": ann, "key": ann["key"]}
    with np.load(io.BytesIO(members["steps.npz"])) as z:
        out.update({k: z[k] for k in z.files})
    out["mask"] = decode_rle(ann["mask"])
    return out


def _iter_tar(path: Path) -> Iterator[dict[str, bytes]]:
    """Group consecutive members sharing a key (WebDataset convention: key = name up to the first '.')."""
    cur_key, cur = None, {}
    with tarfile.open(path, mode="r|") as tar:  # streaming mode: no seeking
        for m in tar:
            if not m.isfile():
                continue
            key, suffix = m.name.split(".", 1)
            if key != cur_key and cur:
                yield cur
                cur = {}
            cur_key = key
            cur[suffix] = tar.extractfile(m).read()
    if cur:
        yield cur


def iter_samples(
    root: str | Path | list[Path],
    rank: int = 0,
    world_size: int = 1,
    worker_id: int | None = None,
    num_workers: int | None = None,
    shuffle_shards: bool = False,
    seed: int = 0,
    decode: bool = True,
) -> Iterator[dict[str, Any]]:
    """Stream samples; shard k goes to consumer rank * num_workers + worker_id == k mod (world * workers)."""
    shards = list(root) if isinstance(root, list) else list_shards(root)
    if worker_id is None or num_workers is None:
        worker_id, num_workers = 0, 1
        try:
            import torch.utils.data as tud

            wi = tud.get_worker_info()
            if wi is not None:
                worker_id, num_workers = wi.id, wi.num_workers
        except ImportError:  # pragma: no cover
            pass
    if shuffle_shards:
        random.Random(seed).shuffle(shards)
    consumer, consumers = rank * num_workers + worker_id, world_size * num_workers
    for k, shard in enumerate(shards):
        if k % consumers != consumer:
            continue
        for members in _iter_tar(shard):
            yield decode_sample(members) if decode else members
