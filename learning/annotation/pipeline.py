"""The annotation pipeline: episode -> (stage A region, stage B phrase/detection/mask, prompts, filter) ->
annotated sample; and the resumable, shardable run over an input folder."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pixelvla_ros.segmentation import ColourRegionSegmenter

from ..datasets.episode import CorruptEpisodeError, Episode, EpisodeSource
from .config import AnnotationConfig
from .format import FORMAT, VERSION, ShardWriter, atomic_write_json, encode_rle, sample_members
from .sampling import build_text, prompts_to_json, sample_prompts
from .stages import (
    CORRUPT_EPISODE,
    EMPTY_MASK,
    HUGE_MASK,
    LOW_CONFIDENCE,
    NO_DETECTION,
    PHRASE_NOT_FOUND,
    TINY_MASK,
    LLMPhraseParser,
    Owlv2Detector,
    Reject,
    SamSegmenter,
    expand_box,
    propose_region,
    rule_based_phrase,
)

STAGES = ("load", "region", "phrase", "detect", "segment", "prompts", "write")


@dataclass
class AnnotationResult:
    key: str
    accepted: bool
    reason: str = ""
    detail: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    num_steps: int = 0
    annotation: dict[str, Any] | None = None
    members: dict[str, bytes] | None = None

    def journal_line(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "accepted": self.accepted,
            "reason": self.reason,
            "detail": self.detail,
            "num_steps": self.num_steps,
            "timings": {k: round(v, 5) for k, v in self.timings.items()},
        }


class Annotator:
    """Annotates one episode. Components default to the embedded no-weight implementations."""

    def __init__(
        self,
        cfg: AnnotationConfig | None = None,
        phrase_parser: Callable | None = None,
        detector: Any = None,
        segmenter: Any = None,
    ) -> None:
        self.cfg = cfg or AnnotationConfig()
        self.phrase_parser = phrase_parser
        self.detector = detector
        self.segmenter = segmenter or ColourRegionSegmenter()

    @classmethod
    def from_config(cls, cfg: AnnotationConfig) -> Annotator:
        llm = LLMPhraseParser.from_pretrained(cfg.llm_path) if cfg.llm_path else None
        det = Owlv2Detector.from_pretrained(cfg.detector_path) if cfg.detector_path else None
        seg = SamSegmenter.from_pretrained(cfg.sam_path) if cfg.sam_path else None
        return cls(cfg, llm, det, seg)

    def models(self) -> dict[str, str]:
        return {
            "phrase": getattr(self.phrase_parser, "name", "rule_based")
            if self.phrase_parser
            else "rule_based",
            "detector": getattr(self.detector, "name", "none")
            if self.detector
            else "none (grasp point seeds)",
            "segmenter": getattr(self.segmenter, "name", type(self.segmenter).__name__),
        }

    def phrase(self, instruction: str) -> tuple[str | None, str]:
        if self.phrase_parser is not None:
            return self.phrase_parser(instruction)
        return rule_based_phrase(instruction), "rule_based"

    def annotate(self, ep: Episode, timings: dict[str, float] | None = None) -> AnnotationResult:
        cfg = self.cfg
        tm = timings if timings is not None else {}
        res = AnnotationResult(key=ep.episode_id, accepted=False, timings=tm, num_steps=ep.num_steps)
        try:
            t = time.perf_counter()
            region = propose_region(ep, cfg, self.detector)
            tm["region"] = time.perf_counter() - t
            t = time.perf_counter()
            phrase, phrase_method = self.phrase(ep.instruction)
            tm["phrase"] = time.perf_counter() - t
            if not phrase:
                raise Reject(PHRASE_NOT_FOUND, f"no object phrase in instruction {ep.instruction!r}")
            frame = ep.images[0]
            H, W = frame.shape[:2]
            rbox = np.asarray(region.region_box)
            seed = region.tcp_uv
            det_box, det_score, det_method = rbox, None, "none"
            t = time.perf_counter()
            if self.detector is not None:
                det = self.detector.detect(frame, rbox, phrase)
                if det is None:
                    raise Reject(NO_DETECTION, f"no '{phrase}' detected in the region")
                det_box, det_score = det
                det_method = self.detector.name
                if det_score < cfg.min_detection_score:
                    raise Reject(
                        LOW_CONFIDENCE,
                        f"best '{phrase}' box score {det_score:.3f} < {cfg.min_detection_score}",
                    )
                c = ((det_box[0] + det_box[2]) / 2, (det_box[1] + det_box[3]) / 2)
                inside = (
                    seed is not None
                    and det_box[0] <= seed[0] <= det_box[2]
                    and det_box[1] <= seed[1] <= det_box[3]
                )
                seed = seed if inside else c
            tm["detect"] = time.perf_counter() - t
            t = time.perf_counter()
            seg_box = (
                det_box
                if isinstance(self.segmenter, SamSegmenter)
                else (expand_box(np.asarray(det_box), 1.3) if self.detector is not None else rbox)
            )
            mask, seg_score, seg_info = self.segmenter.segment(frame, np.asarray(seg_box), seed, phrase)
            tm["segment"] = time.perf_counter() - t
            area = int(mask.sum())
            region_area = max(1.0, (rbox[2] - rbox[0]) * (rbox[3] - rbox[1]))
            if area == 0:
                raise Reject(EMPTY_MASK, f"no '{phrase}' pixels found in the region")
            if area < max(cfg.min_mask_px, cfg.min_mask_frac * H * W):
                raise Reject(TINY_MASK, f"mask of {area} px")
            if area > cfg.max_mask_frac * H * W or (
                self.detector is None and area > cfg.max_region_frac * region_area
            ):
                raise Reject(HUGE_MASK, f"mask of {area} px ({area / (H * W):.1%} of the image)")
            if seg_score < cfg.min_segment_score:
                raise Reject(LOW_CONFIDENCE, f"segmentation score {seg_score:.3f} < {cfg.min_segment_score}")
            t = time.perf_counter()
            rng = np.random.default_rng([cfg.seed, zlib.crc32(ep.episode_id.encode())])
            prompts = sample_prompts(mask, rng, cfg.sampling)
            text = build_text(ep.instruction, phrase, prompts)
            tm["prompts"] = time.perf_counter() - t
        except Reject as r:
            res.reason, res.detail = r.reason, r.detail
            return res
        ann = {
            "format": FORMAT,
            "version": VERSION,
            "key": ep.episode_id,
            "episode_id": ep.episode_id,
            "source": ep.source,
            "instruction": ep.instruction,
            "phrase": phrase,
            "phrase_method": phrase_method,
            "text": text,
            "action_convention": ep.action_convention,
            "num_steps": ep.num_steps,
            "image_size": [H, W],
            "image_key": ep.image_key,
            "fps": ep.fps,
            "frame_index": 0,
            "grasp_step": region.grasp_step,
            "close_source": region.close_source,
            "region_method": region.method,
            "region_box": list(region.region_box),
            "gripper_box": list(region.gripper_box),
            "tcp_uv": None if region.tcp_uv is None else list(region.tcp_uv),
            "detection": {"box": [float(v) for v in det_box], "score": det_score, "method": det_method},
            "segmentation": {"method": getattr(self.segmenter, "name", ""), "score": seg_score, **seg_info},
            "mask": encode_rle(mask),
            "mask_area": area,
            "prompts": prompts_to_json(prompts),
            "camera": None if ep.camera is None else ep.camera.to_camera_info_dict(),
            "extras": ep.extras,
        }
        arrays: dict[str, np.ndarray] = {"images": ep.images, "actions": ep.actions.astype(np.float32)}
        if ep.ee_pos is not None:
            arrays["ee_pos"] = ep.ee_pos.astype(np.float32)
        if ep.gripper_state is not None:
            arrays["gripper_state"] = ep.gripper_state.astype(np.float32)
        ok, png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        res.accepted, res.annotation = True, ann
        res.members = sample_members(ep.episode_id, ann, arrays, png.tobytes())
        return res


# ============================================================================================ the run
def shard_of(key: str, n: int) -> int:
    return zlib.crc32(key.encode()) % n


def read_journals(out: Path) -> dict[str, dict[str, Any]]:
    """Finished episodes of every journal in OUT (all shards); malformed (truncated) lines are ignored."""
    done: dict[str, dict[str, Any]] = {}
    for j in sorted((out / "journal").glob("*.jsonl")):
        for line in j.read_text().splitlines():
            try:
                rec = json.loads(line)
                done[rec["key"]] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return done


def _append_journal(path: Path, rec: dict[str, Any]) -> None:
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:  # a crash may have left a partial last line: start a fresh line
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write((json.dumps(rec) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__}
    for mod in ("torch", "transformers", "pycocotools", "rosbags", "pyarrow"):
        try:
            out[mod] = getattr(__import__(mod), "__version__", "unknown")
        except ImportError:
            out[mod] = "not installed"
    return out


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        r = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if r.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return r.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def run_annotation(
    source: EpisodeSource,
    out: str | Path,
    cfg: AnnotationConfig | None = None,
    shard: tuple[int, int] = (0, 1),
    annotator: Annotator | None = None,
    progress: bool = True,
    limit: int | None = None,
    input_path: str = "",
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """Annotate the episodes of ``source`` that belong to ``shard`` and are not yet in OUT's journals.

    Resumable: each finished episode is recorded (sample file first, then its journal line, both atomic /
    fsynced); a rerun skips recorded episodes. Returns the report (also written to OUT/report.json)."""
    from tqdm import tqdm

    from .report import build_report, write_contact_sheet

    cfg = cfg or AnnotationConfig()
    annotator = annotator or Annotator.from_config(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    i, n = shard
    prefix = f"part{i:03d}of{n:03d}"
    writer = ShardWriter(out, prefix=prefix, shard_size=cfg.shard_size)
    (out / "journal").mkdir(exist_ok=True)
    journal = out / "journal" / f"{prefix}.jsonl"
    done = read_journals(out)
    keys = [k for k in source.keys() if shard_of(k, n) == i]
    todo = [k for k in keys if k not in done]
    if limit is not None:
        todo = todo[:limit]
    prov_path = out / "provenance.json"
    prov = json.loads(prov_path.read_text()) if prov_path.exists() else {"format": FORMAT, "runs": []}
    prov["runs"].append(
        {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "argv": argv if argv is not None else sys.argv,
            "input": {"path": input_path, "format": source.name},
            "shard": f"{i}/{n}",
            "models": annotator.models(),
            "config": cfg.to_dict(),
            "versions": _versions(),
            "git_commit": _git_commit(),
            "host": platform.node(),
            "episodes_in_shard": len(keys),
            "already_done": len(keys) - len(todo),
        }
    )
    atomic_write_json(prov_path, prov)
    bar = tqdm(todo, desc=f"annotate {prefix}", unit="ep", disable=not progress, dynamic_ncols=True)
    kept = rejected = 0
    for key in bar:
        timings: dict[str, float] = {}
        t = time.perf_counter()
        try:
            ep = source.load(key)
            timings["load"] = time.perf_counter() - t
            res = annotator.annotate(ep, timings)
        except CorruptEpisodeError as e:
            res = AnnotationResult(
                key=key, accepted=False, reason=CORRUPT_EPISODE, detail=str(e), timings=timings
            )
        if res.accepted:
            t = time.perf_counter()
            writer.write(key, res.members)
            timings["write"] = time.perf_counter() - t
            kept += 1
        else:
            rejected += 1
        _append_journal(journal, res.journal_line())
        writer.maybe_flush()
        bar.set_postfix(kept=kept, rejected=rejected)
    writer.flush()
    report = build_report(out)
    write_contact_sheet(out)
    return report
