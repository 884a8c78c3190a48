"""Proposal post-processing (DESIGN step 2): RPN letterboxing, source selection, NMS, top-K.

Torch-free. Zero proposals flow through everything as `(0, 4)` boxes and `(0,)` scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lpgb.runtime.config import ProposalConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.geometry import as_boxes, as_scores, clip_boxes, empty_boxes, empty_scores

__all__ = ["Letterbox", "rpn_letterbox", "nms", "select_source", "combine_proposals"]

Proposals = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Letterbox:
    """How a frame was placed into the RPN input: input = frame * scale + (pad_x, pad_y)."""

    scale: float
    pad_x: int
    pad_y: int

    def to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes `(K, 4)` in RPN-input pixels -> float32 `(K, 4)` in frame pixels (not clipped)."""
        boxes = as_boxes(boxes)
        offset = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], np.float32)
        return ((boxes - offset) / np.float32(self.scale)).astype(np.float32)

    def to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Inverse of `to_frame`: frame pixels -> RPN-input pixels, float32 `(K, 4)`."""
        boxes = as_boxes(boxes)
        offset = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], np.float32)
        return (boxes * np.float32(self.scale) + offset).astype(np.float32)


def rpn_letterbox(frame: np.ndarray, cfg: ProposalConfig) -> tuple[np.ndarray, Letterbox]:
    """Frame `(H, W, 3)` uint8 BGR -> RPN input float32 `(1, 3, Hi, Wi)` RGB in 0..1 and its Letterbox.

    `(Hi, Wi) = cfg.rpn_input_size`. The frame is resized keeping its aspect ratio and centred;
    the rest is zero.
    """
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise LpgbError(f"frames must be BGR (H, W, 3); got {frame.shape}")
    in_h, in_w = (int(v) for v in cfg.rpn_input_size)
    h, w = frame.shape[:2]
    scale = min(in_h / h, in_w / w)
    new_w, new_h = min(in_w, max(1, round(w * scale))), min(in_h, max(1, round(h * scale)))
    pad_x, pad_y = (in_w - new_w) // 2, (in_h - new_h) // 2
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = frame if (new_w, new_h) == (w, h) else cv2.resize(frame, (new_w, new_h), interpolation=interp)
    canvas = np.zeros((in_h, in_w, 3), np.float32)
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized[:, :, ::-1] * np.float32(1 / 255)
    image = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None])
    return image, Letterbox(scale=float(scale), pad_x=int(pad_x), pad_y=int(pad_y))


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS via `cv2.dnn.NMSBoxes`: boxes `(K, 4)`, scores `(K,)` -> kept indices int64 `(M,)`,
    highest score first."""
    boxes = as_boxes(boxes)
    scores = as_scores(scores, len(boxes))
    if len(boxes) == 0:
        return np.zeros((0,), np.int64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    shifted = scores - scores.min() + 1.0  # NMSBoxes needs a threshold >= 0 and keeps scores > it
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), shifted.tolist(), 0.0, float(iou))
    return np.asarray(keep, np.int64).reshape(-1)


def _checked(proposals: Proposals | None) -> Proposals:
    if proposals is None:
        return empty_boxes(), empty_scores()
    boxes = as_boxes(proposals[0])
    return boxes, as_scores(proposals[1], len(boxes))


def select_source(rpn: Proposals | None, motion: Proposals | None, cfg: ProposalConfig) -> Proposals:
    """Pick the boxes `cfg.source` asks for; RPN boxes under `cfg.score_threshold` are dropped.

    `rpn` / `motion` are `(boxes (K,4), scores (K,))` or None (not computed). A source that is
    required alone but missing is an LpgbError; for `union` a missing source counts as empty.
    """
    boxes, scores, _ = _select(rpn, motion, cfg)
    return boxes, scores


def _select(rpn: Proposals | None, motion: Proposals | None, cfg: ProposalConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`select_source` plus a bool `(K,)` marking the motion boxes."""
    if cfg.source not in ("rpn", "motion", "union"):
        raise LpgbError(f"unknown proposal source {cfg.source!r}; choose rpn, motion or union")
    if cfg.source == "rpn" and rpn is None:
        raise LpgbError("proposal source is 'rpn' but no RPN proposals were given (model without rpn.onnx?)")
    if cfg.source == "motion" and motion is None:
        raise LpgbError("proposal source is 'motion' but no motion proposals were given")
    rpn_boxes, rpn_scores = _checked(rpn)
    keep = rpn_scores >= cfg.score_threshold
    rpn_boxes, rpn_scores = rpn_boxes[keep], rpn_scores[keep]
    if cfg.source == "rpn":
        return rpn_boxes, rpn_scores, np.zeros(len(rpn_boxes), bool)
    motion_boxes, motion_scores = _checked(motion)
    if cfg.source == "motion":
        return motion_boxes, motion_scores, np.ones(len(motion_boxes), bool)
    is_motion = np.concatenate([np.zeros(len(rpn_boxes), bool), np.ones(len(motion_boxes), bool)])
    return np.concatenate([rpn_boxes, motion_boxes]), np.concatenate([rpn_scores, motion_scores]), is_motion


def combine_proposals(
    rpn: Proposals | None, motion: Proposals | None, frame_shape: tuple[int, ...], cfg: ProposalConfig
) -> Proposals:
    """Final per-frame proposals: source selection -> clip to frame `(H, W, ...)` -> drop boxes with
    a side under `cfg.min_box_size` -> NMS at `cfg.nms_iou` -> best `cfg.top_k`.

    For `union` with `cfg.union_priority == "motion"`, NMS and top-K rank every motion box before
    every RPN box (each source by its own score): a moving object keeps its pixel-tight motion box
    and the RPN adds what motion misses (still or overlapping objects, the warm-up frames). With
    `"score"` both sources compete on score alone.

    Returns boxes `(K, 4)` float32 in frame pixels and scores `(K,)` float32, in NMS rank order.
    """
    boxes, scores, is_motion = _select(rpn, motion, cfg)
    boxes = clip_boxes(boxes, frame_shape)
    size_ok = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= cfg.min_box_size
    boxes, scores, is_motion = boxes[size_ok], scores[size_ok], is_motion[size_ok]
    if cfg.union_priority not in ("score", "motion"):
        raise LpgbError(f"unknown union_priority {cfg.union_priority!r}; choose score or motion")
    rank = scores
    if cfg.source == "union" and cfg.union_priority == "motion":
        rank = scores + np.where(is_motion, np.float32(2.0), np.float32(0.0))  # scores are in [0, 1]
    keep = nms(boxes, rank, cfg.nms_iou)[: max(int(cfg.top_k), 0)]
    return boxes[keep].reshape(-1, 4), scores[keep].reshape(-1)
