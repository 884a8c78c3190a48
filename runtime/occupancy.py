"""Foreground occupancy: how long each pixel has been part of a foreground blob (for the `dwell` term).

Per frame, the motion stage's cleaned MOG2 foreground mask (`lpgb.runtime.motion`, the same blobs the
motion proposals come from) enters an exponential moving average with a time constant of
`DWELL_FRAMES` frames. A walker passing through covers a pixel for about its width / speed; someone
circling one spot, or a person lying where they fell, keeps it covered for as long as they stay.
Torch-free; one instance per video, fed every frame in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from lpgb.runtime.foreground import ForegroundField
from lpgb.runtime.geometry import box_window

__all__ = ["OccupancyField", "OccupancyEstimator", "DWELL_FRAMES"]

DWELL_FRAMES = 32  # frames; a walker covers a pixel for ~10-30 frames at Ped2 and synthetic speeds


@dataclass(frozen=True)
class OccupancyField:
    """occupancy `(H, W)` float32 in [0, 1], frame pixels: the moving average of the foreground mask."""

    occupancy: np.ndarray

    def region(self, box: np.ndarray) -> np.ndarray:
        """Occupancy values inside one frame-pixel box `(x1, y1, x2, y2)`: `(n,)` float32, n >= 1."""
        rows, cols = box_window(box, *self.occupancy.shape)
        return self.occupancy[rows, cols].reshape(-1)


class OccupancyEstimator:
    """Stateful per-video occupancy, fed each frame's foreground in order (`lpgb.runtime.foreground`)."""

    def __init__(self) -> None:
        self._occupancy: Optional[np.ndarray] = None

    def add(self, foreground: ForegroundField) -> OccupancyField:
        """This frame's foreground -> the occupancy up to and including it."""
        mask = foreground.mask
        if self._occupancy is None or self._occupancy.shape != mask.shape:
            self._occupancy = np.zeros(mask.shape, np.float32)
        self._occupancy *= np.float32(1.0 - 1.0 / DWELL_FRAMES)
        self._occupancy[mask] += np.float32(1.0 / DWELL_FRAMES)
        return OccupancyField(self._occupancy.copy())
