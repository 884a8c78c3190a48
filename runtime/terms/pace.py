"""`pace`: the irregularity read-out, two-sided. The `irregularity` logit is high for an object that looks
as if it moved faster than the normal objects at its size (its consecutive crops look like every second
frame); an object that moves slower than any normal one (loitering, a fall, a stop in a walkway) gets a
logit *below* the normal ones, which the one-sided term ranks as the most normal box of all. `pace` is the
distance of the logit from the median logit of the training boxes: unusual in either direction."""

from __future__ import annotations

import numpy as np

from lpgb.runtime.errors import LpgbError
from lpgb.runtime.terms.irregularity import IrregularityTerm

__all__ = ["PaceTerm"]


class PaceTerm(IrregularityTerm):
    """features: branch 1's query-mean features (K, E_d); state: the read-out weight (E_d,), bias () and the
    training boxes' median logit ()."""

    name = "pace"

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.center: np.float32 | None = None

    def fit(self, features: np.ndarray, groups: np.ndarray) -> np.ndarray:
        logits = super().fit(features, groups)  # the read-out's logits, before `center` exists
        self.center = np.float32(np.median(logits))
        return self.score(features)

    def score(self, features: np.ndarray) -> np.ndarray:
        logits = super().score(features)
        if self.center is None:
            return logits  # only inside `fit`
        return np.abs(logits - self.center).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        if self.center is None:
            raise LpgbError("pace term saved before it was fitted")
        return {**super().state(), "center": np.asarray(self.center, np.float32)}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        super().load_state(arrays)
        if "center" in arrays:  # a trained read-out alone (before `fit`) has no centre yet
            center = np.asarray(arrays["center"], np.float32).reshape(())
            if not np.isfinite(center):
                raise LpgbError("pace centre must be finite")
            self.center = np.float32(center)
