"""Which pixels belong to an object: the motion stage's foreground mask as score-term evidence.

The mask is the cleaned MOG2 mask the motion proposals are cut from (`lpgb.runtime.motion`), so a box's
foreground pixels are the pixels of the blob(s) that made it. The `velocity` term reads the median flow
over them (the object's bulk motion, even when it moves slower than the flow's noise floor); the
occupancy estimator averages the mask over time (`dwell`). Torch-free; one estimator per video, fed
every frame in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from lpgb.runtime.config import ProposalConfig
from lpgb.runtime.motion import MotionProposer

__all__ = ["ForegroundField", "ForegroundEstimator"]


@dataclass(frozen=True)
class ForegroundField:
    """mask `(H, W)` bool, frame pixels: True where this frame's cleaned foreground is. All False while
    the background model is still warming up."""

    mask: np.ndarray

    def resized(self, shape: tuple[int, int]) -> np.ndarray:
        """The mask at another `(h, w)` (e.g. the flow's working size), nearest neighbour: `(h, w)` bool."""
        h, w = int(shape[0]), int(shape[1])
        if self.mask.shape == (h, w):
            return self.mask
        return cv2.resize(self.mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0


class ForegroundEstimator:
    """Stateful per-video foreground. With `motion` (the proposer's own MOG2 stage, already updated with
    this frame) its mask is reused; without, the estimator runs its own MOG2 with the same settings, so
    the masks are the same either way (MOG2 is deterministic)."""

    def __init__(self, cfg: ProposalConfig, motion: Optional[MotionProposer] = None) -> None:
        self._shared = motion is not None
        self._motion = motion if motion is not None else MotionProposer(cfg)

    def update(self, frame: np.ndarray) -> ForegroundField:
        """frame `(H, W, 3)` uint8 BGR (this video's next frame) -> its foreground."""
        if not self._shared:
            self._motion.update(frame)
        mask = self._motion.mask  # None while the background is still being learned
        if mask is None:
            return ForegroundField(np.zeros(frame.shape[:2], bool))
        return ForegroundField(mask > 0)
