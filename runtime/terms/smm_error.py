"""`smm`: the paper's score, the tube's SMM prediction error (mean squared error of v(t) predicted
from v(t-L..t-1)). Stateless; calibrated like every term with training statistics."""

from __future__ import annotations

import numpy as np

from lpgb.runtime.terms.base import BoxEvidence, ScoreTerm

__all__ = ["SmmErrorTerm"]


class SmmErrorTerm(ScoreTerm):
    name = "smm"
    needs = frozenset({"tube_error"})

    def features(self, evidence: BoxEvidence) -> np.ndarray:
        return np.asarray(evidence.require("tube_error", self.name), np.float32).reshape(-1, 1)

    def fit(self, features: np.ndarray, groups: np.ndarray) -> np.ndarray:
        return np.asarray(features, np.float32).reshape(-1)

    def score(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, np.float32).reshape(-1)
