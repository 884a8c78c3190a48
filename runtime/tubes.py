"""Tubes (docs/ARCHITECTURE.md stage 2): the SAME square region cropped from the last L+1 frames.

Shared by training and serving: `TubeBuilder.push(frame, boxes, scores) -> TubeBatch`.
Torch-free.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from lpgb.runtime.config import LpgbConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.geometry import crop_region, group_boxes

__all__ = ["TubeBatch", "TubeBuilder"]


@dataclass(frozen=True)
class TubeBatch:
    """The tubes of one frame t.

    boxes   `(K, 4)` float32: grouped (merged) boxes in frame pixels.
    scores  `(K,)` float32: grouped proposal scores (max over each group).
    regions `(K, 4)` int64: square enlarged crop regions, x2/y2 exclusive, may leave the frame.
    crops   `(K, L+1, S, S, 3)` uint8 BGR, frames t-L..t (oldest first), zero outside the frame.
    """

    boxes: np.ndarray
    scores: np.ndarray
    regions: np.ndarray
    crops: np.ndarray

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


class TubeBuilder:
    """Ring buffer of the last L+1 frames (L = `cfg.smm.window`) that cuts tubes for new boxes.

    Until L+1 frames have been pushed, the oldest buffered frame is repeated to fill the tube
    (`ready` tells when the buffer is full). Use one builder per video.
    """

    def __init__(self, cfg: LpgbConfig) -> None:
        if cfg.smm.window < 1:
            raise LpgbError(f"smm.window must be >= 1, got {cfg.smm.window}")
        self.cfg = cfg
        self.length = cfg.smm.window + 1
        self.size = cfg.spatial.image_size
        self._frames: deque[np.ndarray] = deque(maxlen=self.length)
        self._pushed = 0  # frames pushed since the last reset; the newest buffered frame is index _pushed - 1

    @property
    def ready(self) -> bool:
        """True once L+1 frames are buffered (tubes no longer repeat the oldest frame)."""
        return len(self._frames) == self.length

    @property
    def buffered(self) -> int:
        """Number of frames currently in the buffer (0..L+1)."""
        return len(self._frames)

    def reset(self) -> None:
        """Forget all buffered frames (start of a new video); frame indices restart at 0."""
        self._frames.clear()
        self._pushed = 0

    def window_indices(self) -> np.ndarray:
        """Frame indices `(L+1,)` int64 of the tube frames t-L..t (oldest first, the oldest repeated while
        filling), counted from 0 since the last reset: what `crop` cuts, as `crop_indexed` keys."""
        if not self._frames:
            raise LpgbError("no frames buffered yet: push a frame before cropping")
        first = self._pushed - len(self._frames)
        return np.array([first] * (self.length - len(self._frames)) + list(range(first, self._pushed)), np.int64)

    def crop_indexed(self, frame_indices: np.ndarray, regions: np.ndarray) -> np.ndarray:
        """Crop region `regions[i]` `(M, 4)` int from buffered frame `frame_indices[i]` `(M,)` ->
        `(M, S, S, 3)` uint8, cut exactly as `crop` cuts them."""
        first = self._pushed - len(self._frames)
        crops = np.zeros((len(regions), self.size, self.size, 3), np.uint8)
        for i, (index, region) in enumerate(zip(frame_indices, regions)):
            if not first <= int(index) < self._pushed:
                raise LpgbError(f"frame {int(index)} is not buffered (frames {first}..{self._pushed - 1} are)")
            crops[i] = crop_region(self._frames[int(index) - first], region, self.size)
        return crops

    def push(self, frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray, crop: bool = True) -> TubeBatch:
        """Append frame `(H, W, 3)` uint8 BGR; group boxes `(K, 4)` / scores `(K,)` and crop tubes
        (`crop=False`: no crops, `(K, 0, S, S, 3)`, for terms that need no tube features)."""
        self._check(frame)
        self._frames.append(frame)
        self._pushed += 1
        boxes, scores, regions = group_boxes(boxes, scores, frame.shape, self.cfg.proposals)
        crops = self.crop(regions) if crop else np.zeros((len(regions), 0, self.size, self.size, 3), np.uint8)
        return TubeBatch(boxes=boxes, scores=scores, regions=regions, crops=crops)

    def crop(self, regions: np.ndarray) -> np.ndarray:
        """Crop integer regions `(K, 4)` from the buffered frames -> `(K, L+1, S, S, 3)` uint8."""
        frames = self._window()
        crops = np.zeros((len(regions), self.length, self.size, self.size, 3), np.uint8)
        for k, region in enumerate(regions):
            for j, frame in enumerate(frames):
                crops[k, j] = crop_region(frame, region, self.size)
        return crops

    def _window(self) -> list[np.ndarray]:
        """The L+1 frames of the tube, oldest first; the oldest is repeated while filling."""
        frames = list(self._frames)
        if not frames:
            raise LpgbError("no frames buffered yet: push a frame before cropping")
        return [frames[0]] * (self.length - len(frames)) + frames

    def _check(self, frame: np.ndarray) -> None:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise LpgbError(f"frames must be uint8 BGR (H, W, 3); got {frame.dtype} {frame.shape}")
        if self._frames and self._frames[-1].shape != frame.shape:
            raise LpgbError(
                f"frame size changed from {self._frames[-1].shape[:2]} to {frame.shape[:2]}; reset() between videos"
            )
