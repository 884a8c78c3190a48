"""`dwell`: how long the spot an object occupies has been foreground (loitering, a fall, a stop).

Per box: the 90th percentile of the foreground occupancy inside it (`lpgb.runtime.occupancy`, the moving
average of the MOG2 foreground mask over about `DWELL_FRAMES` frames), so one long-covered part of the
box counts even when a passer-by's blob is merged into it. A walker passing through has covered each
pixel only while crossing it; someone circling one spot, or lying where they fell, keeps it covered.
No tracking is involved, so boxes that merge and split (which sank the `trajectory` term) do not
matter. One more value, log(box height / frame height), lets the density relate dwell to object size
(a large walker near the camera covers a pixel longer). Density: k-NN against the training boxes.
"""

from __future__ import annotations

import numpy as np

from lpgb.runtime.occupancy import OccupancyField
from lpgb.runtime.terms.base import BoxEvidence, ScoreTerm
from lpgb.runtime.terms.knn import DensityTerm

__all__ = ["DwellTerm", "dwell_features", "DWELL_PERCENTILE"]

DWELL_PERCENTILE = 90.0


def dwell_features(evidence: BoxEvidence) -> np.ndarray:
    """`(K, 2)` float32: 90th percentile of the box's foreground occupancy, log relative height."""
    occupancy: OccupancyField = evidence.require("occupancy", "dwell")
    boxes = np.asarray(evidence.boxes, np.float32).reshape(-1, 4)
    frame_h = float(evidence.frame_shape[0])
    out = np.zeros((len(boxes), 1), np.float32)
    for i, box in enumerate(boxes):
        out[i, 0] = np.percentile(occupancy.region(box), DWELL_PERCENTILE)

    return out


class DwellTerm(DensityTerm, ScoreTerm):
    name = "dwell"
    needs = frozenset({"occupancy"})

    def features(self, evidence: BoxEvidence) -> np.ndarray:
        return dwell_features(evidence)
