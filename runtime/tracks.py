"""Box tracks across frames: each frame's grouped boxes joined to the previous frames' by overlap.

The trajectory score term reads where each box's object has been (`Tracker.update` returns, per box,
its recent centre trail). Association is one-to-one by IoU (scipy's Hungarian solver), a track
survives `MAX_GAP` frames without a box, and the trail keeps the last `TRAIL_FRAMES` frames. Frame
indices are passed in, so serving (every frame) and term fitting (only frames with boxes) build the
same tracks. Torch-free.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from lpgb.runtime.geometry import iou_matrix

__all__ = ["Tracker", "Trail", "TRAIL_FRAMES", "MAX_GAP", "MIN_IOU"]

TRAIL_FRAMES = 30  # frames of history per track (3 s at Ped2's 10 frames/s)
MAX_GAP = 5  # frames a track may go without a matching box before it ends
MIN_IOU = 0.1  # a box continues a track only if it overlaps the track's last box at least this much


@dataclass
class _Track:
    box: np.ndarray
    last: int
    trail: deque = field(default_factory=lambda: deque(maxlen=TRAIL_FRAMES))


@dataclass(frozen=True)
class Trail:
    """Per box of one frame: `frames (K, T)` int frame indices and `centres (K, T, 2)` float32 frame
    pixels of its track's last T <= TRAIL_FRAMES observations, oldest first, padded at the front
    with the oldest observation (`length (K,)` int = observations actually held)."""

    frames: np.ndarray
    centres: np.ndarray
    length: np.ndarray


class Tracker:
    """Per-video tracker. `update(frame_index, boxes)` -> Trail for those boxes, in their order."""

    def __init__(self) -> None:
        self._tracks: list[_Track] = []

    def update(self, frame_index: int, boxes: np.ndarray) -> Trail:
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        self._tracks = [t for t in self._tracks if frame_index - t.last <= MAX_GAP]
        owner = [-1] * len(boxes)
        if self._tracks and len(boxes):
            iou = iou_matrix(boxes, np.stack([t.box for t in self._tracks]))
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols):
                if iou[r, c] >= MIN_IOU:
                    owner[r] = int(c)
        for i, box in enumerate(boxes):
            if owner[i] < 0:
                self._tracks.append(_Track(box, frame_index))
                owner[i] = len(self._tracks) - 1
            track = self._tracks[owner[i]]
            track.box, track.last = box, frame_index
            track.trail.append((frame_index, 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])))
        frames = np.zeros((len(boxes), TRAIL_FRAMES), np.int64)
        centres = np.zeros((len(boxes), TRAIL_FRAMES, 2), np.float32)
        length = np.zeros(len(boxes), np.int64)
        for i, k in enumerate(owner):
            trail = np.asarray(self._tracks[k].trail, np.float64)  # (n, 3): frame, cx, cy
            n = len(trail)
            padded = np.concatenate([np.repeat(trail[:1], TRAIL_FRAMES - n, axis=0), trail])
            frames[i], centres[i], length[i] = padded[:, 0].astype(np.int64), padded[:, 1:], n
        return Trail(frames, centres, length)
