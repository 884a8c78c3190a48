"""Proposal post-processing (docs/ARCHITECTURE.md stage 1): RPN letterboxing, source selection, NMS, top-K.

Torch-free. Zero proposals flow through everything as `(0, 4)` boxes and `(0,)` scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from lpgb.runtime.config import ProposalConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.geometry import as_boxes, as_scores, clip_boxes, empty_boxes, empty_scores

if TYPE_CHECKING:
    from lpgb.runtime.motion import MotionProposer

__all__ = ["Letterbox", "rpn_letterbox", "nms", "combine_proposals", "frame_proposals", "FILL_FLOOR"]

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


def _select(rpn: Proposals | None, motion: Proposals | None, cfg: ProposalConfig,
            rpn_fill: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pick the boxes `cfg.source` asks for (RPN boxes under `cfg.score_threshold` dropped; for `union` a
    missing source counts as empty, a source required alone but missing is an LpgbError), plus a bool `(K,)` marking the motion boxes and a float `(K,)` fill per box
    (the RPN boxes' `rpn_fill`, NaN where unknown and for motion boxes)."""
    if cfg.source not in ("rpn", "motion", "union"):
        raise LpgbError(f"unknown proposal source {cfg.source!r}; choose rpn, motion or union")
    if cfg.source == "rpn" and rpn is None:
        raise LpgbError("proposal source is 'rpn' but no RPN proposals were given (model without rpn.onnx?)")
    if cfg.source == "motion" and motion is None:
        raise LpgbError("proposal source is 'motion' but no motion proposals were given")
    rpn_boxes, rpn_scores = _checked(rpn)
    fill = np.full(len(rpn_boxes), np.nan, np.float32)
    if rpn_fill is not None:
        fill = np.asarray(rpn_fill, np.float32).reshape(-1)
        if len(fill) != len(rpn_boxes):
            raise LpgbError(f"rpn_fill has {len(fill)} values for {len(rpn_boxes)} RPN boxes")
    keep = rpn_scores >= cfg.score_threshold
    rpn_boxes, rpn_scores, fill = rpn_boxes[keep], rpn_scores[keep], fill[keep]
    if cfg.source == "rpn":
        return rpn_boxes, rpn_scores, np.zeros(len(rpn_boxes), bool), fill
    motion_boxes, motion_scores = _checked(motion)
    if cfg.source == "motion":
        return motion_boxes, motion_scores, np.ones(len(motion_boxes), bool), np.full(len(motion_boxes), np.nan, np.float32)
    is_motion = np.concatenate([np.zeros(len(rpn_boxes), bool), np.ones(len(motion_boxes), bool)])
    fill = np.concatenate([fill, np.full(len(motion_boxes), np.nan, np.float32)])
    return (np.concatenate([rpn_boxes, motion_boxes]), np.concatenate([rpn_scores, motion_scores]), is_motion, fill)


FILL_FLOOR = 0.05  # keeps RPN boxes on still objects (fill 0) rankable among themselves


def combine_proposals(
    rpn: Proposals | None, motion: Proposals | None, frame_shape: tuple[int, ...], cfg: ProposalConfig,
    rpn_fill: np.ndarray | None = None,
) -> Proposals:
    """Final per-frame proposals: source selection -> clip to frame `(H, W, ...)` -> drop boxes with
    a side under `cfg.min_box_size` -> NMS at `cfg.nms_iou` -> best `cfg.top_k`.

    `rpn_fill` `(K_rpn,)`: the foreground fraction of each RPN box in the motion mask
    (`MotionProposer.box_fill`), or None. With it and `cfg.rpn_fill_power > 0`, the RPN boxes are
    first de-duplicated among themselves (NMS, top-K) ranked by
    `score * (FILL_FLOOR + fill) ** rpn_fill_power`: of two overlapping RPN boxes the one that
    the moving object fills wins, not the looser one with the higher objectness.

    For `union` with `cfg.union_priority == "motion"`, NMS and top-K rank every motion box before
    every RPN box (each source by its own score): a moving object keeps its pixel-tight motion box
    and the RPN adds what motion misses (still or overlapping objects, the warm-up frames). With
    `"score"` both sources compete on score alone.

    Returns boxes `(K, 4)` float32 in frame pixels and scores `(K,)` float32, in NMS rank order.
    """
    boxes, scores, is_motion, fill = _select(rpn, motion, cfg, rpn_fill)
    boxes = clip_boxes(boxes, frame_shape)
    size_ok = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= cfg.min_box_size
    boxes, scores, is_motion, fill = boxes[size_ok], scores[size_ok], is_motion[size_ok], fill[size_ok]
    if cfg.union_priority not in ("score", "motion"):
        raise LpgbError(f"unknown union_priority {cfg.union_priority!r}; choose score or motion")
    if not cfg.rpn_fill_power >= 0:
        raise LpgbError(f"rpn_fill_power must be >= 0 (0 = off), got {cfg.rpn_fill_power}")
    top_k = max(int(cfg.top_k), 0)
    ranked_by_fill = ~is_motion & np.isfinite(fill)
    if cfg.rpn_fill_power > 0 and ranked_by_fill.any():
        idx = np.flatnonzero(ranked_by_fill)
        rank = scores[idx] * (np.float32(FILL_FLOOR) + fill[idx]) ** np.float32(cfg.rpn_fill_power)
        survivors = idx[nms(boxes[idx], rank, cfg.nms_iou)[:top_k]]
        keep = np.concatenate([survivors, np.flatnonzero(~ranked_by_fill)])
        boxes, scores, is_motion = boxes[keep], scores[keep], is_motion[keep]
    rank = scores
    if cfg.source == "union" and cfg.union_priority == "motion":
        rank = scores + np.where(is_motion, np.float32(2.0), np.float32(0.0))  # scores are in [0, 1]
    keep = nms(boxes, rank, cfg.nms_iou)[:top_k]
    return boxes[keep].reshape(-1, 4), scores[keep].reshape(-1)


def frame_proposals(frame: np.ndarray, rpn: Proposals | None, motion: "MotionProposer | None",
                    cfg: ProposalConfig) -> Proposals:
    """One frame's proposals, shared by serving and training: feed `frame` `(H, W, 3)` to the motion
    proposer (if any), measure the RPN boxes' fill in its mask, `combine_proposals`.

    `rpn`: the RPN's boxes `(K, 4)` in frame pixels and scores `(K,)`, or None.
    """
    motion_out = motion.update(frame) if motion is not None else None
    fill = None
    if motion is not None and rpn is not None and cfg.rpn_fill_power > 0:
        fill = motion.box_fill(rpn[0])
    return combine_proposals(rpn, motion_out, frame.shape[:2], cfg, fill)
