"""`shape`: how unusual an object's box shape is for its size: a cart or a fallen person is wider than a
walker, a vehicle larger. Features: log(box height / frame height), log(width / height), and whether the
box touches the frame border (a box cut by the border is compared with the training boxes that were
cut too, not read as an odd shape). Density: k-NN against the training boxes (`KnnBank`)."""

from __future__ import annotations

import numpy as np

from lpgb.runtime.terms.base import BoxEvidence, ScoreTerm
from lpgb.runtime.terms.knn import DensityTerm

__all__ = ["ShapeTerm", "shape_features", "BORDER_PX"]

BORDER_PX = 2.0  # a box edge this close to the frame edge counts as cut by the border


def shape_features(evidence: BoxEvidence) -> np.ndarray:
    """`(K, 3)` float32: log relative height, log aspect (w/h), touches the border (0/1)."""
    boxes = np.asarray(evidence.boxes, np.float32).reshape(-1, 4)
    frame_h, frame_w = (float(v) for v in evidence.frame_shape[:2])
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 1.0)
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 1.0)
    border = ((boxes[:, 0] <= BORDER_PX) | (boxes[:, 1] <= BORDER_PX) | (boxes[:, 2] >= frame_w - BORDER_PX)
              | (boxes[:, 3] >= frame_h - BORDER_PX))
    return np.stack([np.log(h / frame_h), np.log(w / h), border.astype(np.float32)], axis=1).astype(np.float32)


class ShapeTerm(DensityTerm, ScoreTerm):
    name = "shape"
    needs = frozenset()

    def features(self, evidence: BoxEvidence) -> np.ndarray:
        return shape_features(evidence)
