"""Offline captioner: action, appearance, place and objects measured with OpenCV, no weights.

Per tube (K, L+1, S, S, 3), each crop downscaled to at most 64 px:
- foreground: pixels whose colour differs from the median colour of the crop's border ring (the
  tube region is the box enlarged by 25%, so the border is mostly background) by more than
  max(`fg_threshold`, Otsu); the largest connected component is the subject.
- motion: least-squares velocity of the foreground centroid over the frames, in crop sides per
  frame; quantised: < still_speed "standing" (or "lying down" when the foreground is wider than
  tall by `lying_aspect`), < slow_speed "walking slowly", < run_speed "walking <dir>", else
  "running <dir>"; dir = left / right / towards the camera (down) / away from the camera (up).
- appearance: dominant colour of the foreground in HSV (low saturation -> black/grey/white,
  else the hue histogram's peak) -> "<colour> clothes".
- place: the box centre's cell in a 3x3 grid over the frame -> e.g. "near the top of the scene".
- objects: the box covers more than `large_fraction` of the frame -> "a large object"; else the
  number of other boxes whose centre lies within `near_factor` box sides -> "nobody nearby",
  "another person nearby", "a few people nearby", "a crowd of people".

Every word is in the packaged vocabulary, and everything is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from lpgb.trainer.captioners.base import Captions, check_inputs

WORK_SIZE = 64
PLACES = (
    ("in the top left of the scene", "near the top of the scene", "in the top right of the scene"),
    ("on the left of the scene", "in the middle of the scene", "on the right of the scene"),
    ("in the bottom left of the scene", "near the bottom of the scene", "in the bottom right of the scene"),
)
COLOURS = ("black", "white", "grey", "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown")


@dataclass(frozen=True)
class Measurement:
    """What the captioner measured for one tube (exposed for tests and debugging)."""

    speed: float  # crop sides per frame
    vx: float
    vy: float
    aspect: float  # foreground width / height
    colour: str


class AttributesCaptioner:
    """Deterministic OpenCV attributes -> vocabulary words -> template sentences."""

    def __init__(self, still_speed: float = 0.008, slow_speed: float = 0.025, run_speed: float = 0.06,
                 lying_aspect: float = 1.3, fg_threshold: float = 30.0, large_fraction: float = 0.1,
                 near_factor: float = 1.5) -> None:
        self.still_speed = still_speed
        self.slow_speed = slow_speed
        self.run_speed = run_speed
        self.lying_aspect = lying_aspect
        self.fg_threshold = fg_threshold
        self.large_fraction = large_fraction
        self.near_factor = near_factor

    # -- measurements --------------------------------------------------------------------------
    def _foreground(self, img: np.ndarray) -> np.ndarray:
        """uint8 {0,1} mask of the largest component differing from the border colour."""
        blur = cv2.GaussianBlur(img, (3, 3), 0).astype(np.int16)  # (s, s, 3)
        ring = np.concatenate([blur[:2].reshape(-1, 3), blur[-2:].reshape(-1, 3),
                               blur[:, :2].reshape(-1, 3), blur[:, -2:].reshape(-1, 3)])
        bg = np.median(ring, axis=0).astype(np.int16)  # (3,)
        dist = np.abs(blur - bg).max(axis=-1).astype(np.uint8)  # (s, s)
        otsu, _ = cv2.threshold(dist, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        mask = (dist > max(self.fg_threshold, otsu)).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if n <= 1:
            return mask
        best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        return (labels == best).astype(np.uint8)

    def measure(self, tube: np.ndarray) -> Measurement:
        """tube: uint8 (L+1, S, S, 3) BGR."""
        side = tube.shape[1]
        small = [cv2.resize(f, (WORK_SIZE, WORK_SIZE), interpolation=cv2.INTER_AREA) if side > WORK_SIZE else f
                 for f in tube]
        s = small[0].shape[0]
        ts, xs, ys = [], [], []
        masks = []
        for t, img in enumerate(small):
            mask = self._foreground(img)
            masks.append(mask)
            m = cv2.moments(mask, binaryImage=True)
            if m["m00"] > 0:
                ts.append(t)
                xs.append(m["m10"] / m["m00"] / s)
                ys.append(m["m01"] / m["m00"] / s)
        vx = vy = 0.0
        if len(ts) >= 2:
            vx = float(np.polyfit(ts, xs, 1)[0])
            vy = float(np.polyfit(ts, ys, 1)[0])
        last = masks[-1]
        aspect = 1.0
        if last.any():
            _, _, w, h = cv2.boundingRect(last)
            aspect = w / max(h, 1)
        colour = self._colour(small[-1], last)
        return Measurement(speed=float(np.hypot(vx, vy)), vx=vx, vy=vy, aspect=aspect, colour=colour)

    @staticmethod
    def _colour(img: np.ndarray, mask: np.ndarray) -> str:
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)  # H 0..179, S, V 0..255
        if mask.sum() < 4:
            c = img.shape[0] // 4
            pix = hsv[c:-c, c:-c].reshape(-1, 3)
        else:
            pix = hsv[mask.astype(bool)]
        sat, val = np.median(pix[:, 1]), np.median(pix[:, 2])
        if sat < 50:
            return "black" if val < 70 else ("white" if val > 180 else "grey")
        hues = pix[pix[:, 1] >= 50, 0]
        hist = np.bincount(hues // 5, minlength=36)
        hue = int(np.argmax(hist)) * 5 + 2
        if hue < 8 or hue >= 170:
            return "red"
        if hue < 20:
            return "brown" if val < 150 else "orange"
        if hue < 34:
            return "yellow"
        if hue < 85:
            return "green"
        if hue < 130:
            return "blue"
        if hue < 155:
            return "purple"
        return "pink"

    # -- quantisation --------------------------------------------------------------------------
    def action_word(self, m: Measurement) -> str:
        if m.speed < self.still_speed:
            return "lying down" if m.aspect > self.lying_aspect else "standing"
        if m.speed < self.slow_speed:
            return "lying down" if m.aspect > self.lying_aspect else "walking slowly"
        if abs(m.vx) >= abs(m.vy):
            direction = "left" if m.vx < 0 else "right"
        else:
            direction = "towards the camera" if m.vy > 0 else "away from the camera"
        return f"{'running' if m.speed >= self.run_speed else 'walking'} {direction}"

    @staticmethod
    def place_word(box: np.ndarray, frame_shape: Sequence[int]) -> str:
        h, w = frame_shape[0], frame_shape[1]
        cx = (box[0] + box[2]) / 2 / max(w, 1)
        cy = (box[1] + box[3]) / 2 / max(h, 1)
        col = min(2, max(0, int(cx * 3)))
        row = min(2, max(0, int(cy * 3)))
        return PLACES[row][col]

    def objects_word(self, k: int, boxes: np.ndarray, frame_shape: Sequence[int]) -> str:
        h, w = frame_shape[0], frame_shape[1]
        box = boxes[k]
        bw, bh = box[2] - box[0], box[3] - box[1]
        if bw * bh > self.large_fraction * h * w:
            return "a large object"
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # (K, 2)
        dist = np.hypot(*(centres - centres[k]).T)  # (K,)
        near = int(np.sum(dist <= self.near_factor * max(bw, bh))) - 1
        if near <= 0:
            return "nobody nearby"
        if near == 1:
            return "another person nearby"
        if near <= 3:
            return "a few people nearby"
        return "a crowd of people"

    # -- Captioner -----------------------------------------------------------------------------
    def caption(self, crops: np.ndarray, boxes: np.ndarray, frame_shape: Sequence[int],
                keys: Sequence[str] | None = None) -> list[Captions]:
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        check_inputs(crops, boxes)
        out = []
        for k in range(crops.shape[0]):
            m = self.measure(crops[k])
            out.append(Captions.from_words(
                action=self.action_word(m),
                appearance=f"{m.colour} clothes",
                place=self.place_word(boxes[k], frame_shape),
                objects=self.objects_word(k, boxes, frame_shape),
            ))
        return out


__all__ = ["AttributesCaptioner", "Measurement", "PLACES", "COLOURS"]
