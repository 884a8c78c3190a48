"""Motion proposals: OpenCV MOG2 background subtraction + connected components (docs/ARCHITECTURE.md stage 1).

Class-agnostic boxes for moving things, used alone (`ProposalConfig.source == "motion"`) or
united with the RPN's boxes. Torch-free.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Iterable

import cv2
import numpy as np

from lpgb.runtime.config import ProposalConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.geometry import empty_boxes, empty_scores, iou_matrix

__all__ = ["MotionProposer", "motion_boxes_for_video", "foreground_blobs", "clean_mask"]


@functools.lru_cache(maxsize=None)
def _ellipse(size: int) -> np.ndarray | None:
    """Elliptic structuring element (built once per size: clean_mask runs on every frame)."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)) if size > 1 else None


def clean_mask(mask: np.ndarray, cfg: ProposalConfig) -> np.ndarray:
    """Binary foreground mask `(H, W)` uint8 0/255 -> opened (noise), closed (holes), dilated.

    Kernel sizes are `cfg.motion_open`, `cfg.motion_close`, `cfg.motion_dilate` (elliptic; 0 or 1
    skips the step). Closing mends a person split by low contrast; a wide closing or a dilation
    also joins neighbouring people into one blob (docs/decisions.md, Proposals).
    """
    for op, size in ((cv2.MORPH_OPEN, cfg.motion_open), (cv2.MORPH_CLOSE, cfg.motion_close)):
        kernel = _ellipse(int(size))
        if kernel is not None:
            mask = cv2.morphologyEx(mask, op, kernel)
    kernel = _ellipse(int(cfg.motion_dilate))
    return mask if kernel is None else cv2.dilate(mask, kernel)


def foreground_blobs(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of a 0/255 mask `(H, W)` -> boxes `(K, 4)` float32, fill `(K,)` float32.

    Components with fewer than `min_area` pixels are dropped. `fill` = component pixels / box area.
    """
    count, _, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
    if count <= 1:
        return empty_boxes(), empty_scores()
    stats = stats[1:]  # label 0 is the background
    stats = stats[stats[:, cv2.CC_STAT_AREA] >= min_area]
    if len(stats) == 0:
        return empty_boxes(), empty_scores()
    x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    w, h = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    boxes = np.stack([x, y, x + w, y + h], axis=1).astype(np.float32)
    fill = (stats[:, cv2.CC_STAT_AREA] / np.maximum(w * h, 1)).astype(np.float32)
    return boxes, np.clip(fill, 0.0, 1.0)


def _persistent(boxes: np.ndarray, history: Iterable[np.ndarray]) -> np.ndarray:
    """Boolean `(K,)`: each box overlaps at least one blob in EVERY earlier frame of `history`."""
    keep = np.ones(len(boxes), bool)
    for previous in history:
        if len(previous) == 0:
            return np.zeros(len(boxes), bool)
        keep &= (iou_matrix(boxes, previous) > 0).any(axis=1)
    return keep


class MotionProposer:
    """Stateful per-video motion proposer; feed every frame in order through `update`.

    MOG2 (`cfg.motion_history`, `cfg.motion_var_threshold`, no shadows) -> `clean_mask` ->
    connected components >= `cfg.motion_min_area` pixels -> persistence (a blob must overlap a
    blob in each of the previous `cfg.motion_persistence - 1` frames) -> with `cfg.motion_split`, blobs too
    wide or tall for one person at their row cut into person-sized boxes (`size_prior.split_blobs`).
    Returns nothing during the first `cfg.motion_warmup` frames while the background is still being learned.
    """

    def __init__(self, cfg: ProposalConfig) -> None:
        if cfg.motion_persistence < 1:
            raise LpgbError(f"motion_persistence must be >= 1, got {cfg.motion_persistence}")
        if cfg.motion_split and len(cfg.size_prior) != 4:
            raise LpgbError("proposals.motion_split needs proposals.size_prior, fitted on the training videos "
                            "(lpgb.runtime.size_prior.fit_size_prior)")
        self.cfg = cfg
        self._mog = cv2.createBackgroundSubtractorMOG2(
            history=int(cfg.motion_history), varThreshold=float(cfg.motion_var_threshold), detectShadows=False
        )
        self._history: deque[np.ndarray] = deque(maxlen=max(cfg.motion_persistence - 1, 0))
        self._shape: tuple[int, ...] | None = None
        self._mask: np.ndarray | None = None  # cleaned mask of the last frame, once warmed up
        self._integral: np.ndarray | None = None
        self.frames_seen = 0

    @property
    def warmed_up(self) -> bool:
        """True once `cfg.motion_warmup` frames have been learned (the next frame may get proposals)."""
        return self.frames_seen >= self.cfg.motion_warmup

    def update(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Learn from frame `(H, W, 3)` uint8 BGR -> boxes `(K, 4)` float32, scores `(K,)` float32.

        score = 0.5 + 0.5 * fill, fill = fraction of foreground pixels in the box.
        """
        self._check(frame)
        trusted = self.warmed_up  # frames 0 .. motion_warmup-1 only teach the background
        # auto rate 1/n while warming up, then the steady 1/history so that slow objects are not
        # absorbed into the background (the auto rate would still be ~1/n for n < history)
        rate = 1.0 / max(self.cfg.motion_history, 1) if trusted else -1.0
        mask = self._mog.apply(frame, learningRate=rate)
        self.frames_seen += 1
        cleaned = clean_mask(mask, self.cfg)
        self._mask, self._integral = (cleaned if trusted else None), None
        boxes, fill = foreground_blobs(cleaned, self.cfg.motion_min_area)
        keep = _persistent(boxes, self._history)
        if self._history.maxlen:
            self._history.append(boxes)
        if not trusted or len(boxes) == 0:
            return empty_boxes(), empty_scores()
        boxes, fill = boxes[keep], fill[keep]
        if self.cfg.motion_split and len(boxes):
            from lpgb.runtime.size_prior import split_blobs

            boxes, fill = split_blobs(boxes, cleaned, self.cfg)
        return boxes, (0.5 + 0.5 * fill).astype(np.float32)

    @property
    def mask(self) -> np.ndarray | None:
        """The last frame's cleaned foreground mask `(H, W)` uint8 0/255; None before the warm-up ends."""
        return self._mask

    def box_fill(self, boxes: np.ndarray) -> np.ndarray | None:
        """Foreground fraction of the last frame's cleaned mask inside each box `(K, 4)` (frame
        pixels, clipped to the frame) -> `(K,)` float32 in [0, 1]; None before the warm-up ends."""
        if self._mask is None:
            return None
        if self._integral is None:
            self._integral = cv2.integral((self._mask > 0).astype(np.uint8))  # (H+1, W+1) int32
        h, w = self._mask.shape
        b = np.asarray(boxes, np.float32).reshape(-1, 4)
        x1, x2 = (np.clip(np.round(b[:, i]), 0, w).astype(np.int64) for i in (0, 2))
        y1, y2 = (np.clip(np.round(b[:, i]), 0, h).astype(np.int64) for i in (1, 3))
        ii = self._integral
        inside = ii[y2, x2] - ii[y1, x2] - ii[y2, x1] + ii[y1, x1]
        area = np.maximum((x2 - x1) * (y2 - y1), 1)
        return (inside / area).astype(np.float32)

    def _check(self, frame: np.ndarray) -> None:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise LpgbError(f"frames must be uint8 BGR (H, W, 3); got {frame.dtype} {frame.shape}")
        if self._shape is None:
            self._shape = frame.shape
        elif frame.shape != self._shape:
            raise LpgbError(f"frame size changed from {self._shape[:2]} to {frame.shape[:2]} within one video")


def motion_boxes_for_video(frames: Iterable[np.ndarray], cfg: ProposalConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Run a fresh `MotionProposer` over all frames; one `(boxes (K,4), scores (K,))` per frame."""
    proposer = MotionProposer(cfg)
    return [proposer.update(frame) for frame in frames]
