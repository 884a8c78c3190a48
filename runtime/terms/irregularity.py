"""`irregularity`: branch 1's motion-irregularity read-out, a network term.

Branch 1 (motion input) is trained beside its contrastive loss to tell a crop encoded from consecutive
frames from the same crop encoded from every second frame (`lpgb.trainer.models.irregularity`). Its linear
read-out of the branch features is this term's state; the raw score of a box is the read-out's logit on
its newest crop's branch-1 features (the `branch1` evidence: only branch 1 runs when no other
term reads a network), high for an object that moves unlike the
normal objects at its size and place in the crop. Calibrated like every term, with training statistics.
"""

from __future__ import annotations

import numpy as np

from lpgb.runtime.errors import LpgbError
from lpgb.runtime.terms.base import BoxEvidence, ScoreTerm

__all__ = ["IrregularityTerm"]


class IrregularityTerm(ScoreTerm):
    """features: branch 1's query-mean features (K, E_d); state: the read-out weight (E_d,) and bias ()."""

    name = "irregularity"
    needs = frozenset({"branch1"})
    stateful = True
    trained_read_out = True  # its state comes from training (RUN/weights), loaded before `fit`

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.weight: np.ndarray | None = None
        self.bias = np.float32(0.0)

    def features(self, evidence: BoxEvidence) -> np.ndarray:
        rows = np.asarray(evidence.require("branch1", self.name), np.float32)
        n_q, e_d = self.cfg.spatial.num_queries, self.cfg.spatial.embed_dim
        return rows.reshape(len(evidence.boxes), n_q, e_d).mean(axis=1)  # (K, E_d)

    def fit(self, features: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """The read-out is trained with branch 1; `fit` only scores the training rows with it."""
        if self.weight is None:
            raise LpgbError("the irregularity term needs the read-out trained with branch 1: train the run with "
                            "--branch-input motion --irregularity-epochs 8")
        return self.score(features)

    def score(self, features: np.ndarray) -> np.ndarray:
        if self.weight is None:
            raise LpgbError("irregularity term used before its read-out was loaded")
        rows = np.asarray(features, np.float32).reshape(-1, len(self.weight))
        return (rows @ self.weight + self.bias).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"weight": self.weight, "bias": np.asarray(self.bias, np.float32)}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        missing = {"weight", "bias"} - set(arrays)
        if missing:
            raise LpgbError(f"irregularity state lacks {', '.join(sorted(missing))}")
        weight = np.asarray(arrays["weight"], np.float32).reshape(-1)
        if len(weight) != self.cfg.spatial.embed_dim or not np.isfinite(weight).all():
            raise LpgbError(f"irregularity read-out must hold {self.cfg.spatial.embed_dim} finite weights")
        self.weight, self.bias = weight, np.float32(np.asarray(arrays["bias"]).reshape(()))
