"""`trajectory`: how unusual an object's path over the last seconds is (loitering, pacing, stopping).

Per box, from its track's centre trail (`lpgb.runtime.tracks`, the last `TRAIL_FRAMES` frames): the
path speed (length of the centre path, after a 3-frame moving average that removes box jitter, per
elapsed frame) and the net speed (straight-line displacement per elapsed frame), both in percent of
the frame height per frame, plus log(box height / frame height). A walker crossing the scene has
path ~ net; a loiterer circling one spot has a long path and a short net displacement; a standing
person has both near 0. A track younger than two observations gets zeros. Density: k-NN against the
training boxes (`KnnBank`).
"""

from __future__ import annotations

import numpy as np

from lpgb.runtime.terms.base import BoxEvidence, ScoreTerm
from lpgb.runtime.terms.knn import DensityTerm

__all__ = ["TrajectoryTerm", "trajectory_features"]


def trajectory_features(evidence: BoxEvidence) -> np.ndarray:
    """`(K, 3)` float32: path speed, net speed (% of frame height per frame), log relative height."""
    trail = evidence.require("track", "trajectory")
    boxes = np.asarray(evidence.boxes, np.float32).reshape(-1, 4)
    frame_h = float(evidence.frame_shape[0])
    out = np.zeros((len(boxes), 3), np.float32)
    for i in range(len(boxes)):
        n = int(trail.length[i])
        frames, centres = trail.frames[i, -n:].astype(np.float64), trail.centres[i, -n:].astype(np.float64)
        if n >= 3:  # moving average of centres (and of their frame indices, so the elapsed time matches)
            kernel = np.ones(3) / 3.0
            frames = np.convolve(frames, kernel, mode="valid")
            centres = np.stack([np.convolve(centres[:, d], kernel, mode="valid") for d in (0, 1)], axis=1)
        elapsed = float(frames[-1] - frames[0]) if n >= 2 else 0.0
        if elapsed > 0:
            path = np.hypot(*np.diff(centres, axis=0).T).sum()
            net = float(np.hypot(*(centres[-1] - centres[0])))
            out[i, 0] = path / elapsed * (100.0 / frame_h)
            out[i, 1] = net / elapsed * (100.0 / frame_h)
        out[i, 2] = np.log(max(float(boxes[i, 3] - boxes[i, 1]), 1.0) / frame_h)
    return out


class TrajectoryTerm(DensityTerm, ScoreTerm):
    name = "trajectory"
    needs = frozenset({"track"})

    def features(self, evidence: BoxEvidence) -> np.ndarray:
        return trajectory_features(evidence)
