"""`motion_patterns`: how unusual an object's local motion pattern is: k-NN density of branch 1's
query-mean features of its newest crop (E_d values, the space the irregularity read-out reads) against a
coreset of the training boxes' features. With motion crops (`spatial.input_form` "motion") branch 1 sees the
object's frames and their differences, so this is the learned counterpart of the pixel probe: appearance
and motion of the object, not of the scene. Only branch 1 runs (the `branch1` network path)."""

from __future__ import annotations

import numpy as np

from lpgb.runtime.terms.base import BoxEvidence, ScoreTerm
from lpgb.runtime.terms.knn import DensityTerm

__all__ = ["MotionPatternsTerm"]


class MotionPatternsTerm(DensityTerm, ScoreTerm):
    name = "motion_patterns"
    needs = frozenset({"branch1"})

    def features(self, evidence: BoxEvidence) -> np.ndarray:
        """(K, E_d): the mean over branch 1's N_q query vectors of each box's newest crop."""
        rows = np.asarray(evidence.require("branch1", self.name), np.float32)
        n_q, e_d = self.cfg.spatial.num_queries, self.cfg.spatial.embed_dim
        return rows.reshape(len(evidence.boxes), n_q, e_d).mean(axis=1)
