"""`velocity`: how unusual an object's motion is, from the frame's dense optical flow.

Per box: the flow vectors inside it whose speed exceeds `MOVING_PX` (frame pixels per frame, the
DIS noise floor) are split into `BINS` orientation bins; each bin holds the mean speed of its pixels
(0 for an empty bin). Speeds are in percent of the frame height per frame (the same camera at another
resolution gives the same values). One more value, log(box height / frame height), lets the density
tell a walker's size from a vehicle's. Two more (`BIN_MEAN_BULK`, since this lpgb's fits): the object's
bulk motion, |median flow| along x and along y over the foreground pixels under the box (the motion
stage's mask, `lpgb.runtime.foreground`) in this frame and the `HISTORY_FRAMES` - 1 before it (the box's
moving pixels where the masks hold none), so an object whose limbs move as a walker's but whose body
drifts the wrong way, or slower than the 0.5 px noise floor, differs from one walking on. Density: k-NN
against the training boxes (`KnnBank`).

Bin rule: mean speed per bin (`BIN_MEAN`, since config version 4) scored Ped2 test 01-06 micro 0.934
alone / 0.926 with `shape`, against 0.922 / 0.911 for the earlier rule (each bin = its summed speed /
all moving pixels, `BIN_SHARE`), synthetic equal within 0.004 (docs/decisions.md, "Flow quality").
The bulk columns (`BIN_MEAN_BULK`) lifted micro AUC on all four sets measured, velocity + shape
(`python -m lpgb.benchmarks.terms DATA --out DIR --terms velocity,shape`, docs/decisions.md, "Bulk
motion"): synthetic seeds 0 / 1 / 2 0.891 / 0.875 / 0.864 -> 0.907 / 0.933 / 0.897, Ped2 01-06 0.932 ->
0.940 (this frame alone: 0.903 / 0.886 / 0.891 / 0.937). The rule is saved with the fitted bank, so a
bank fitted with an earlier rule is served with it.

Measured on Ped2 test 01-06 with motion proposals (`python -m lpgb.benchmarks.terms`, docs/decisions.md):
dividing speeds by the box height (a perspective correction) and adding the box's position and aspect
ratio both scored lower, because boxes cut by the frame border look like small, fast, oddly placed
objects.
"""

from __future__ import annotations

import numpy as np

from lpgb.runtime.errors import LpgbError
from lpgb.runtime.flow import MOVING_PX, FlowField
from lpgb.runtime.foreground import ForegroundField, mask_window
from lpgb.runtime.geometry import box_window
from lpgb.runtime.terms.base import BoxEvidence, ScoreTerm
from lpgb.runtime.terms.knn import DensityTerm

__all__ = ["VelocityTerm", "velocity_features", "bulk_motion", "BINS", "MOVING_PX", "BIN_MEAN", "BIN_SHARE",
           "BIN_MEAN_BULK"]

BINS = 8
# bin = summed speed / all moving pixels (banks without a rule) | mean speed of the bin | mean speed of the
# bin, then the object's bulk motion over its last HISTORY_FRAMES frames (2 more columns, needs the masks)
BIN_SHARE, BIN_MEAN, BIN_MEAN_BULK = 0, 1, 2
BIN_RULES = (BIN_SHARE, BIN_MEAN, BIN_MEAN_BULK)
# grid points per frame the bulk median reads in a box (a larger box is sampled with a stride): the median of
# every pixel over 8 frames cost 3.5 ms per Ped2 frame (lpgb-bench's `term velocity` row); on this grid micro
# AUC moved by at most 0.001 on the four sets measured (docs/decisions.md, "Bulk motion")
BULK_SAMPLES = 256


def bulk_motion(box: np.ndarray, window: tuple[slice, slice], flow: FlowField, foreground: ForegroundField,
                fallback: np.ndarray) -> np.ndarray:
    """|median flow| along x and y `(2,)` in frame pixels per frame over the foreground pixels under `box` in
    this frame and the ones before it (`flow.past` with `foreground.past`, up to HISTORY_FRAMES frames), on a
    grid of about BULK_SAMPLES points per frame; `window` = `box_window(box, *flow grid, flow.scale)`;
    `fallback` `(n, 2)` (this frame's moving pixels in the box) where the masks hold none."""
    shape = flow.flow.shape[:2]
    rows, cols = window
    step = max(1, int(((rows.stop - rows.start) * (cols.stop - cols.start) / BULK_SAMPLES) ** 0.5))
    grid = (slice(rows.start, rows.stop, step), slice(cols.start, cols.stop, step))
    parts = []
    for f, mask in zip((flow.flow, *flow.past), (foreground.mask, *foreground.past)):
        on_object = mask[grid] if mask.shape == shape else mask_window(mask, box, shape, flow.scale)[::step, ::step]
        parts.append(f[grid][on_object])  # (n, 2)
    body = np.concatenate(parts)
    if not len(body):
        return np.abs(np.median(fallback, axis=0))
    return np.abs(np.median(body, axis=0)) / np.float32(flow.scale)


def velocity_features(evidence: BoxEvidence, bin_rule: int = BIN_MEAN_BULK) -> np.ndarray:
    """`(K, BINS + 1)` float32: orientation-binned speeds (% of frame height per frame), log relative height;
    with `BIN_MEAN_BULK` `(K, BINS + 3)`: then the object's bulk motion (`bulk_motion`, % of frame height
    per frame)."""
    flow: FlowField = evidence.require("flow", "velocity")
    bulk = bin_rule == BIN_MEAN_BULK
    foreground: ForegroundField = evidence.require("foreground", "velocity") if bulk else None
    boxes = np.asarray(evidence.boxes, np.float32).reshape(-1, 4)
    frame_h = float(evidence.frame_shape[0])
    out = np.zeros((len(boxes), BINS + (3 if bulk else 1)), np.float32)
    for i, box in enumerate(boxes):
        rows, cols = box_window(box, *flow.flow.shape[:2], scale=flow.scale)
        v = flow.flow[rows, cols].reshape(-1, 2) / np.float32(flow.scale)  # (n, 2) frame pixels per frame
        speed = np.hypot(v[:, 0], v[:, 1])
        moving = speed > MOVING_PX
        if moving.any():
            angle = np.arctan2(v[moving, 1], v[moving, 0])  # [-pi, pi]
            b = np.minimum(((angle + np.pi) / (2 * np.pi) * BINS).astype(np.int64), BINS - 1)
            summed = np.bincount(b, weights=speed[moving], minlength=BINS)
            count = np.full(BINS, moving.sum()) if bin_rule == BIN_SHARE else np.bincount(b, minlength=BINS)
            out[i, :BINS] = summed / np.maximum(count, 1) * (100.0 / frame_h)
            if bulk:
                out[i, BINS + 1:] = bulk_motion(box, (rows, cols), flow, foreground, v[moving]) * (100.0 / frame_h)
        out[i, BINS] = np.log(max(float(box[3] - box[1]), 1.0) / frame_h)
    return out


class VelocityTerm(DensityTerm, ScoreTerm):
    name = "velocity"
    needs = frozenset({"flow", "foreground"})  # what a new fit reads; a loaded bank may read less (`needs_of`)

    bin_rule = BIN_MEAN_BULK

    @staticmethod
    def needs_of(bin_rule: int) -> frozenset[str]:
        """Evidence the features of `bin_rule` read: the foreground mask only for the bulk columns."""
        return frozenset({"flow", "foreground"}) if bin_rule == BIN_MEAN_BULK else frozenset({"flow"})

    def features(self, evidence: BoxEvidence) -> np.ndarray:
        return velocity_features(evidence, self.bin_rule)

    def state(self) -> dict[str, np.ndarray]:
        return {**super().state(), "bin_rule": np.asarray(self.bin_rule, np.int64)}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        arrays = dict(arrays)
        rule = int(arrays.pop("bin_rule", BIN_SHARE))
        if rule not in BIN_RULES:
            raise LpgbError(f"velocity bank has an unknown bin rule {rule}: made by a newer lpgb?")
        self.bin_rule, self.needs = rule, self.needs_of(rule)
        super().load_state(arrays)
