"""Which pixels belong to an object: the motion stage's foreground mask as score-term evidence.

The mask is the cleaned MOG2 mask the motion proposals are cut from (`lpgb.runtime.motion`), so a box's
foreground pixels are the pixels of the blob(s) that made it. The `velocity` term reads the median flow
over them in the object's last frames (its bulk motion, even when it moves slower than the flow's noise
floor); the occupancy estimator averages the mask over time (`dwell`). Torch-free; one estimator per
video, fed every frame in order.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from lpgb.runtime.config import ProposalConfig
from lpgb.runtime.flow import HISTORY_FRAMES
from lpgb.runtime.geometry import box_window
from lpgb.runtime.motion import MotionProposer

__all__ = ["ForegroundField", "ForegroundEstimator", "mask_window"]


@dataclass(frozen=True)
class ForegroundField:
    """mask `(H, W)` bool, frame pixels: True where this frame's cleaned foreground is; all False while the
    background model is still warming up. `past`: the masks of the frames before, newest first (at most
    HISTORY_FRAMES - 1, in step with `FlowField.past`)."""

    mask: np.ndarray
    past: tuple[np.ndarray, ...] = ()


def mask_window(mask: np.ndarray, box: np.ndarray, shape: tuple[int, int], scale: float = 1.0) -> np.ndarray:
    """The part of a frame-pixel mask `(H, W)` bool under one box, on the grid of an array of `shape` that
    covers the frame at `scale` (e.g. the flow's working grid): a bool array shaped like that array's
    `geometry.box_window(box, *shape, scale)`."""
    rows, cols = box_window(box, int(shape[0]), int(shape[1]), scale=scale)
    if mask.shape == tuple(shape[:2]):
        return mask[rows, cols]
    frame_rows, frame_cols = box_window(box, *mask.shape)
    part = mask[frame_rows, frame_cols].astype(np.uint8)
    size = (cols.stop - cols.start, rows.stop - rows.start)
    return cv2.resize(part, size, interpolation=cv2.INTER_NEAREST) > 0


class ForegroundEstimator:
    """Stateful per-video foreground. With `motion` (the proposer's own MOG2 stage, already updated with
    this frame) its mask is reused; without, the estimator runs its own MOG2 with the same settings, so
    the masks are the same either way (MOG2 is deterministic)."""

    def __init__(self, cfg: ProposalConfig, motion: Optional[MotionProposer] = None) -> None:
        self._shared = motion is not None
        self._motion = motion if motion is not None else MotionProposer(cfg)
        self._past: deque[np.ndarray] = deque(maxlen=HISTORY_FRAMES - 1)

    def update(self, frame: np.ndarray) -> ForegroundField:
        """frame `(H, W, 3)` uint8 BGR (this video's next frame) -> its foreground."""
        if not self._shared:
            self._motion.update(frame)
        mask = self._motion.mask  # None while the background is still being learned
        current = np.zeros(frame.shape[:2], bool) if mask is None else mask > 0
        field = ForegroundField(current, tuple(self._past))
        self._past.appendleft(current)
        return field
