"""Dense optical flow, computed once per frame and shared by every score term that reads motion.

OpenCV DIS (`FlowConfig.preset`) on a grey image no wider than `FlowConfig.max_width`; the flow is
returned at the working size with its scale so terms can pool it in frame-pixel boxes. Torch-free.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from lpgb.runtime.config import FlowConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.geometry import box_window

DIS_PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
FLOW_MIN_SIDE = 16  # DIS needs a side of at least 12 px; smaller images get zero flow
MOVING_PX = 0.5  # frame pixels per frame: the DIS noise floor; slower flow vectors count as still
# frames of flow a FlowField carries (its own and the ones before it): the velocity term's bulk motion is the
# median over an object's last HISTORY_FRAMES frames (docs/decisions.md, "Bulk motion")
HISTORY_FRAMES = 8

__all__ = ["FlowField", "FlowEstimator", "DIS_PRESETS", "MOVING_PX", "HISTORY_FRAMES"]


@dataclass(frozen=True)
class FlowField:
    """Flow from the previous frame to this one.

    flow  `(h, w, 2)` float32 (dx, dy) in working pixels; `scale` = working / frame pixels, so a box
    `(x1, y1, x2, y2)` in frame pixels covers `box * scale` here and a displacement of `d` working
    pixels is `d / scale` frame pixels. The first frame of a video has zero flow. `past`: the flows into
    the frames before this one, newest first (at most HISTORY_FRAMES - 1, each `(h, w, 2)`).
    """

    flow: np.ndarray
    scale: float
    past: tuple[np.ndarray, ...] = ()

    def region(self, box: np.ndarray) -> np.ndarray:
        """Flow vectors inside one frame-pixel box, in frame pixels per frame: `(n, 2)` float32."""
        rows, cols = box_window(box, *self.flow.shape[:2], scale=self.scale)
        return self.flow[rows, cols].reshape(-1, 2) / np.float32(self.scale)


class FlowEstimator:
    """Stateful per-video flow: `update(frame)` -> FlowField from the previous frame (zeros at first)."""

    def __init__(self, cfg: FlowConfig) -> None:
        self.max_width = int(cfg.max_width)
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[cfg.preset])
        self._prev: np.ndarray | None = None
        self._past: deque[np.ndarray] = deque(maxlen=HISTORY_FRAMES - 1)

    def reset(self) -> None:
        self._prev = None
        self._past.clear()

    def update(self, frame: np.ndarray) -> FlowField:
        """frame `(H, W, 3)` uint8 BGR -> flow from the previous frame of this video."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise LpgbError(f"frames must be uint8 BGR (H, W, 3); got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        scale = min(1.0, self.max_width / w)
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        if scale < 1.0:
            grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        if self._prev is None or self._prev.shape != grey.shape or min(grey.shape) < FLOW_MIN_SIDE:
            flow = np.zeros((*grey.shape, 2), np.float32)
            self._past.clear()
        else:
            flow = self._dis.calc(self._prev, grey, None)  # a new array each call: the history holds references
        self._prev = grey
        field = FlowField(flow=flow, scale=float(scale), past=tuple(self._past))
        self._past.appendleft(flow)
        return field
