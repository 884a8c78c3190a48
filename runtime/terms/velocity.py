"""`velocity`: how unusual an object's motion is, from the frame's dense optical flow.

Per box: the flow vectors inside it whose speed exceeds `MOVING_PX` (frame pixels per frame, the
DIS noise floor) are split into `BINS` orientation bins; each bin holds the moving pixels' summed
speed / their count, so the bins add up to the mean moving speed. Speeds are in percent of the frame
height per frame (the same camera at another resolution gives the same values). One more value,
log(box height / frame height), lets the density tell a walker's size from a vehicle's.
Density: k-NN against the training boxes (`KnnBank`).

Measured on Ped2 test 01-06 with motion proposals (`python -m lpgb.benchmarks.terms`, docs/decisions.md):
dividing speeds by the box height (a perspective correction) and adding the box's position and aspect
ratio both scored lower, because boxes cut by the frame border look like small, fast, oddly placed
objects.
"""

from __future__ import annotations

import numpy as np

from lpgb.runtime.terms.base import BoxEvidence, ScoreTerm
from lpgb.runtime.terms.knn import DensityTerm

__all__ = ["VelocityTerm", "velocity_features", "BINS", "MOVING_PX"]

BINS = 8
MOVING_PX = 0.5


def velocity_features(evidence: BoxEvidence) -> np.ndarray:
    """`(K, BINS + 1)` float32: orientation-binned speeds (% of frame height per frame), log relative height."""
    flow = evidence.require("flow", "velocity")
    boxes = np.asarray(evidence.boxes, np.float32).reshape(-1, 4)
    frame_h = float(evidence.frame_shape[0])
    out = np.zeros((len(boxes), BINS + 1), np.float32)
    for i, box in enumerate(boxes):
        v = flow.region(box)  # (n, 2) frame pixels per frame
        speed = np.hypot(v[:, 0], v[:, 1])
        moving = speed > MOVING_PX
        if moving.any():
            angle = np.arctan2(v[moving, 1], v[moving, 0])  # [-pi, pi]
            b = np.minimum(((angle + np.pi) / (2 * np.pi) * BINS).astype(np.int64), BINS - 1)
            out[i, :BINS] = np.bincount(b, weights=speed[moving], minlength=BINS) / moving.sum() * (100.0 / frame_h)
        out[i, BINS] = np.log(max(float(box[3] - box[1]), 1.0) / frame_h)
    return out


class VelocityTerm(DensityTerm, ScoreTerm):
    name = "velocity"
    needs = frozenset({"flow"})

    def features(self, evidence: BoxEvidence) -> np.ndarray:
        return velocity_features(evidence)
