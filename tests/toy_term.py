"""A toy score term in one file (for the registry test): how far a box's log area is from the
training boxes' mean, in training standard deviations."""

from __future__ import annotations

import numpy as np

from lpgb.runtime.terms import ScoreTerm, register_term
from lpgb.runtime.terms.base import BoxEvidence


@register_term
class BoxSizeTerm(ScoreTerm):
    name = "toy_size"
    stateful = True
    needs = frozenset()

    def features(self, evidence: BoxEvidence) -> np.ndarray:
        b = np.asarray(evidence.boxes, np.float32).reshape(-1, 4)
        return np.log(np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1.0)).reshape(-1, 1)

    def fit(self, features: np.ndarray, groups: np.ndarray) -> np.ndarray:
        self.mean, self.std = float(features.mean()), float(features.std()) + 1e-6
        return self.score(features)

    def score(self, features: np.ndarray) -> np.ndarray:
        return (np.abs(features[:, 0] - self.mean) / self.std).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"stats": np.array([self.mean, self.std], np.float32)}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.mean, self.std = (float(v) for v in arrays["stats"])
