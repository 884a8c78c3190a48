"""`velocity`: how unusual an object's motion is, from the frame's dense optical flow.

Per box: the flow vectors inside it whose speed exceeds `MOVING_PX` (frame pixels per frame, the
DIS noise floor) are split into `BINS` orientation bins; each bin holds the mean speed of its pixels
(0 for an empty bin). Speeds are in percent of the frame height per frame (the same camera at another
resolution gives the same values). One more value, log(box height / frame height), lets the density
tell a walker's size from a vehicle's. Density: k-NN against the training boxes (`KnnBank`).

Bin rule: mean speed per bin (`BIN_MEAN`, since config version 4) scored Ped2 test 01-06 micro 0.934
alone / 0.926 with `shape`, against 0.922 / 0.911 for the earlier rule (each bin = its summed speed /
all moving pixels, `BIN_SHARE`), synthetic equal within 0.004 (docs/decisions.md, "Flow quality").
The rule is saved with the fitted bank, so a bank fitted with the earlier rule is served with it.

Measured on Ped2 test 01-06 with motion proposals (`python -m lpgb.benchmarks.terms`, docs/decisions.md):
dividing speeds by the box height (a perspective correction) and adding the box's position and aspect
ratio both scored lower, because boxes cut by the frame border look like small, fast, oddly placed
objects.
"""

from __future__ import annotations

import numpy as np

from lpgb.runtime.errors import LpgbError
from lpgb.runtime.flow import MOVING_PX
from lpgb.runtime.terms.base import BoxEvidence, ScoreTerm
from lpgb.runtime.terms.knn import DensityTerm

__all__ = ["VelocityTerm", "velocity_features", "BINS", "MOVING_PX", "BIN_MEAN", "BIN_SHARE"]

BINS = 8
BIN_SHARE, BIN_MEAN = 0, 1  # bin = summed speed / all moving pixels (banks without a rule) | mean speed of the bin


def velocity_features(evidence: BoxEvidence, bin_rule: int = BIN_MEAN) -> np.ndarray:
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
            summed = np.bincount(b, weights=speed[moving], minlength=BINS)
            count = np.bincount(b, minlength=BINS) if bin_rule == BIN_MEAN else np.full(BINS, moving.sum())
            out[i, :BINS] = summed / np.maximum(count, 1) * (100.0 / frame_h)
        out[i, BINS] = np.log(max(float(box[3] - box[1]), 1.0) / frame_h)
    return out


class VelocityTerm(DensityTerm, ScoreTerm):
    name = "velocity"
    needs = frozenset({"flow"})

    bin_rule = BIN_MEAN

    def features(self, evidence: BoxEvidence) -> np.ndarray:
        return velocity_features(evidence, self.bin_rule)

    def state(self) -> dict[str, np.ndarray]:
        return {**super().state(), "bin_rule": np.asarray(self.bin_rule, np.int64)}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        arrays = dict(arrays)
        rule = int(arrays.pop("bin_rule", BIN_SHARE))
        if rule not in (BIN_SHARE, BIN_MEAN):
            raise LpgbError(f"velocity bank has an unknown bin rule {rule}: made by a newer lpgb?")
        self.bin_rule = rule
        super().load_state(arrays)
