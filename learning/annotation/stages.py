"""Pixel-160K stages: A (gripper-aware region proposal), B (target phrase, detection, segmentation).

Embedded defaults need no weights:
  phrase     rule-based parser ("put the blue cylinder in the green bowl" -> "blue cylinder")
  region     first gripper-close step (gripper command, else measured closure); the TCP position there is
             projected through the camera model; the projection of a cube of ``gripper_half_extent_m``
             around it is the gripper's box, expanded ``region_expand`` times -> the region on the initial
             frame. Without a camera model the episode is skipped ("missing_camera_model") unless an
             open-vocabulary detector is configured, which then looks for "robot gripper" in that frame.
  segment    colour region growing (pixelvla_ros.segmentation): seeded at the projected grasp point,
             restricted to the region, colour from the phrase's colour word (HSV ranges) or, without one,
             the seed component's own colour against the table colour (estimated on the region's border ring).
Model-based (configured with local paths, transformers, local_files_only): LLM phrase parser, OWLv2 detector,
SAM segmenter. Every stage returns its result or raises :class:`Reject` with a reason code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from pixelvla_ros.segmentation import COLOUR_WORDS, box_slices

from ..datasets.episode import Episode

# Reason codes of the quality filter (report.json counts them).
NO_GRIPPER_CLOSE = "no_gripper_close"
MISSING_CAMERA_MODEL = "missing_camera_model"
MISSING_TCP_POSE = "missing_tcp_pose"
REGION_OUTSIDE_IMAGE = "region_outside_image"
PHRASE_NOT_FOUND = "phrase_not_found"
NO_DETECTION = "no_detection"
LOW_CONFIDENCE = "detection_confidence_too_low"
EMPTY_MASK = "empty_mask"
TINY_MASK = "tiny_mask"
HUGE_MASK = "huge_mask"
CORRUPT_EPISODE = "corrupt_episode"
REASONS = (
    NO_GRIPPER_CLOSE,
    MISSING_CAMERA_MODEL,
    MISSING_TCP_POSE,
    REGION_OUTSIDE_IMAGE,
    PHRASE_NOT_FOUND,
    NO_DETECTION,
    LOW_CONFIDENCE,
    EMPTY_MASK,
    TINY_MASK,
    HUGE_MASK,
    CORRUPT_EPISODE,
)


class Reject(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


# ============================================================================ Stage A: region proposal
@dataclass
class RegionProposal:
    grasp_step: int
    close_source: str  # "command" | "state"
    tcp_uv: tuple[float, float] | None  # projected TCP at the grasp step (pixels, x = col, y = row)
    gripper_box: tuple[float, float, float, float]  # in the grasp frame
    region_box: tuple[float, float, float, float]  # expanded, clipped to the image, applied to frame 0
    method: str


def first_close_step(ep: Episode, threshold: float = 0.5) -> tuple[int, str] | None:
    """The first step whose gripper command closes (else whose measured closure rises past threshold)."""
    cmd = ep.gripper_command
    closed = cmd >= threshold
    edges = np.flatnonzero(closed[1:] & ~closed[:-1]) + 1  # open -> closed transitions
    if len(edges):
        return int(edges[0]), "command"
    if ep.gripper_state is not None:
        g = ep.gripper_state
        rise = np.flatnonzero(g - np.minimum.accumulate(g) >= 0.4 * threshold)
        if len(rise):
            return int(rise[0]), "state"
    return None


def _clip_box(b: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.array([max(b[0], -0.5), max(b[1], -0.5), min(b[2], w - 0.5), min(b[3], h - 0.5)])


def expand_box(box: np.ndarray, factor: float, min_size: float = 0.0) -> np.ndarray:
    c = (box[:2] + box[2:]) / 2
    half = np.maximum((box[2:] - box[:2]) * factor / 2, min_size / 2)
    return np.concatenate([c - half, c + half])


def propose_region(ep: Episode, cfg: Any, detector: Any = None) -> RegionProposal:
    found = first_close_step(ep, cfg.close_threshold)
    if found is None:
        raise Reject(NO_GRIPPER_CLOSE, "the gripper never closes (command and measured state)")
    step, src = found
    H, W = ep.image_hw
    tcp_uv = None
    if ep.camera is not None and ep.ee_pos is not None:
        p = ep.ee_pos[step]
        e = cfg.gripper_half_extent_m
        corners = p + np.array([[x, y, z] for x in (-e, e) for y in (-e, e) for z in (-e, 2 * e)])
        uv, front = ep.camera.project(np.vstack([p, corners]))
        if not front[0] or not np.all(front):
            raise Reject(REGION_OUTSIDE_IMAGE, "the TCP is behind the camera at the grasp step")
        tcp_uv = (float(uv[0, 0]), float(uv[0, 1]))
        gbox = np.concatenate([uv[1:].min(0), uv[1:].max(0)])
        method = "tcp_projection"
    elif detector is not None:
        det = detector.detect(ep.images[step], np.array([-0.5, -0.5, W - 0.5, H - 0.5]), cfg.gripper_query)
        if det is None or det[1] < cfg.min_detection_score:
            raise Reject(NO_DETECTION, f"no '{cfg.gripper_query}' detected in the grasp frame")
        gbox = np.asarray(det[0], dtype=float)
        method = f"detector:{cfg.gripper_query}"
    elif ep.camera is None:
        raise Reject(MISSING_CAMERA_MODEL, "no camera model to project the TCP and no detector configured")
    else:
        raise Reject(MISSING_TCP_POSE, "no TCP position (ee_pos) to project and no detector configured")
    region = _clip_box(expand_box(gbox, cfg.region_expand, cfg.min_region_px), W, H)
    if region[2] - region[0] < 2 or region[3] - region[1] < 2:
        raise Reject(
            REGION_OUTSIDE_IMAGE, f"region {np.round(region, 1).tolist()} is outside the {W}x{H} image"
        )
    if tcp_uv is not None and not (-0.5 <= tcp_uv[0] <= W - 0.5 and -0.5 <= tcp_uv[1] <= H - 0.5):
        raise Reject(REGION_OUTSIDE_IMAGE, f"grasp point {np.round(tcp_uv, 1).tolist()} is outside the image")
    return RegionProposal(
        step, src, tcp_uv, tuple(float(v) for v in gbox), tuple(float(v) for v in region), method
    )


# ============================================================================ Stage B1: target phrase
_VERBS = (
    "pick up",
    "pick",
    "lift up",
    "lift",
    "grasp",
    "grab",
    "take",
    "put",
    "place",
    "move",
    "push",
    "get",
    "fetch",
    "bring",
    "hand me",
    "give me",
    "open",
    "close",
    "knock over",
    "knock",
    "slide",
    "stack",
    "drop",
    "hold",
    "raise",
    "set",
    "turn",
    "flip",
    "wipe",
)
_CUT = (
    " and ",
    " in ",
    " into ",
    " inside ",
    " on ",
    " onto ",
    " on top of ",
    " to ",
    " from ",
    " at ",
    " near ",
    " next to ",
    " under ",
    " above ",
    " towards ",
    " toward ",
    " off ",
    " out of ",
    " then ",
    " so that ",
    " which ",
    " that ",
    " with ",
)
_DETERMINERS = {"the", "a", "an", "this", "that", "these", "those", "some", "one", "please", "my", "your"}
_NOT_OBJECTS = {
    "it",
    "them",
    "up",
    "down",
    "left",
    "right",
    "forward",
    "backward",
    "back",
    "there",
    "here",
    "something",
    "anything",
    "everything",
    "nothing",
    "around",
    "away",
    "object",
    "thing",
    "stuff",
    "arm",
    "robot",
    "gripper",
    "yourself",
    "do",
    "now",
    "go",
    "stop",
    "wait",
    "again",
    "slowly",
    "quickly",
    "carefully",
    "then",
    "first",
    "next",
}


def rule_based_phrase(instruction: str) -> str | None:
    """The object grasped first, from the instruction: "pick up the red cube" -> "red cube"."""
    s = " " + re.sub(r"[^a-z0-9 ]+", " ", instruction.lower()) + " "
    s = re.sub(r"\s+", " ", s)
    hits = [(m.start(), -len(v), m.end()) for v in _VERBS for m in [re.search(rf" {v} ", s)] if m]
    if hits:  # the first verb of the instruction (the longest one at that position)
        s = " " + s[min(hits)[2] :]
    cut = min((i for i in (s.find(c, 1) for c in _CUT) if i > 0), default=len(s))
    words = [w for w in s[:cut].split() if w not in _DETERMINERS]
    while words and words[-1] in ("up", "it", "down"):
        words.pop()
    if not words or all(w in _NOT_OBJECTS or w in COLOUR_WORDS for w in words):
        return None
    return " ".join(words)


class LLMPhraseParser:
    """A local causal LM (transformers, local_files_only) names the object grasped first; its answer is
    kept only when it is a phrase of the instruction (else the rule-based parser answers)."""

    PROMPT = (
        "Name the object that the robot grasps first, using words of the instruction.\n"
        "Instruction: pick vessel and place it on the blue cloth\nObject: vessel\n"
        "Instruction: {instruction}\nObject:"
    )

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int = 8) -> None:
        self.model, self.tokenizer, self.max_new_tokens = model.eval(), tokenizer, max_new_tokens
        self.name = getattr(model.config, "_name_or_path", "") or type(model).__name__

    @classmethod
    def from_pretrained(cls, path: str) -> LLMPhraseParser:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return cls(AutoModelForCausalLM.from_pretrained(path, local_files_only=True), tok)

    def __call__(self, instruction: str) -> tuple[str | None, str]:
        import torch

        enc = self.tokenizer(self.PROMPT.format(instruction=instruction), return_tensors="pt")
        with torch.no_grad():
            out = self.model.generate(
                **enc,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=getattr(self.tokenizer, "pad_token_id", None) or 0,
            )
        text = self.tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        ans = re.sub(r"[^a-z0-9 ]+", " ", text.lower().split("\n")[0]).strip()
        ans = " ".join(w for w in ans.split() if w not in _DETERMINERS)
        if (
            ans
            and f" {ans} " in f" {re.sub(r'[^a-z0-9 ]+', ' ', instruction.lower())} "
            and ans not in _NOT_OBJECTS
        ):
            return ans, "llm"
        return rule_based_phrase(instruction), "rule_based(llm answer rejected)"


# ============================================================================ Stage B2: segmentation
# The embedded segmenter (colour region growing) is in the core, pixelvla_ros.segmentation: prompt_node
# uses it too, and the runtime never imports learning/.


def box_of_mask(mask: np.ndarray) -> np.ndarray:
    """Pixel-edge box [x0 - .5, y0 - .5, x1 + .5, y1 + .5] around the mask's pixels."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5], dtype=float)


# ------------------------------------------------------------------------- model-based (transformers)
_CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
_CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])


class Owlv2Detector:
    """OWLv2 open-vocabulary detection in a region: the highest-scoring box for the phrase.

    ``tokenizer(text) -> {"input_ids", "attention_mask"}`` (the checkpoint's CLIP tokenizer when loaded with
    :meth:`from_pretrained`). Pre/post-processing is done here (pad to square, resize, CLIP normalisation;
    boxes are (cx, cy, w, h) normalised to the padded square)."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.size = int(model.config.vision_config.image_size)
        self.name = "owlv2:" + (getattr(model.config, "_name_or_path", "") or "random")

    @classmethod
    def from_pretrained(cls, path: str) -> Owlv2Detector:
        from transformers import AutoTokenizer, Owlv2ForObjectDetection

        return cls(
            Owlv2ForObjectDetection.from_pretrained(path, local_files_only=True),
            AutoTokenizer.from_pretrained(path, local_files_only=True),
        )

    def detect(self, image: np.ndarray, region: np.ndarray, phrase: str) -> tuple[np.ndarray, float] | None:
        import torch

        H, W = image.shape[:2]
        ys, xs = box_slices(np.asarray(region), W, H)
        crop = image[ys, xs]
        h, w = crop.shape[:2]
        side = max(h, w)
        sq = np.full((side, side, 3), 128, np.uint8)
        sq[:h, :w] = crop
        x = cv2.resize(sq, (self.size, self.size), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
        x = torch.from_numpy(((x - _CLIP_MEAN) / _CLIP_STD).astype(np.float32)).permute(2, 0, 1)[None]
        tok = self.tokenizer(f"a photo of a {phrase}")
        ids = torch.as_tensor(tok["input_ids"]).reshape(1, -1)
        att = torch.as_tensor(tok.get("attention_mask", torch.ones_like(ids))).reshape(1, -1)
        with torch.no_grad():
            out = self.model(input_ids=ids, attention_mask=att, pixel_values=x)
        scores = torch.sigmoid(out.logits[0, :, 0])  # (num_patches,)
        k = int(torch.argmax(scores))
        cx, cy, bw, bh = (out.pred_boxes[0, k] * side).tolist()
        box = np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]) + [xs.start, ys.start] * 2 - 0.5
        box = _clip_box(box, W, H)
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            return None
        return box, float(scores[k])


class SamSegmenter:
    """SAM (transformers SamModel) prompted with a box (+ the seed as a positive point)."""

    def __init__(self, model: Any) -> None:
        self.model = model.eval()
        self.size = int(model.config.vision_config.image_size)
        self.name = "sam:" + (getattr(model.config, "_name_or_path", "") or "random")

    @classmethod
    def from_pretrained(cls, path: str) -> SamSegmenter:
        from transformers import SamModel

        return cls(SamModel.from_pretrained(path, local_files_only=True))

    def segment(
        self, image: np.ndarray, box: np.ndarray, seed: tuple[float, float] | None, phrase: str
    ) -> tuple[np.ndarray, float, dict[str, Any]]:
        import torch
        import torch.nn.functional as F

        H, W = image.shape[:2]
        s = self.size / max(H, W)
        nh, nw = int(round(H * s)), int(round(W * s))
        x = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR).astype(np.float32)
        x = (x - np.array([123.675, 116.28, 103.53])) / np.array([58.395, 57.12, 57.375])
        pad = np.zeros((self.size, self.size, 3), np.float32)
        pad[:nh, :nw] = x
        pv = torch.from_numpy(pad).permute(2, 0, 1)[None]
        b = (np.asarray(box, dtype=np.float64) + 0.5) * s  # pixel edges -> continuous coords, scaled
        kw: dict[str, Any] = {"input_boxes": torch.tensor(b, dtype=torch.float32).reshape(1, 1, 4)}
        with torch.no_grad():
            out = self.model(pixel_values=pv, multimask_output=False, **kw)
        low = out.pred_masks[0, 0, :1]  # (1, h, w) logits
        up = F.interpolate(low[None], size=(self.size, self.size), mode="bilinear", align_corners=False)
        up = up[0, 0, :nh, :nw][None, None]
        m = F.interpolate(up, size=(H, W), mode="bilinear", align_corners=False)[0, 0] > 0
        score = float(out.iou_scores[0, 0, 0])
        return m.numpy(), score, {"sam_iou_score": score}
