"""`appearance`: how unusual an object's local pattern is: k-NN density of the fused vector v(t)
(the temporal part's fusion of both branches at the tube's newest frame, N = N_q * E_d values)
against a coreset of the training tubes' vectors. `patterns`: the same density on the two branches'
features before the fusion (2 N values), which the fusion, trained only to make v predictable, may
have flattened."""

from __future__ import annotations

import numpy as np

from lpgb.runtime.terms.base import BoxEvidence, ScoreTerm
from lpgb.runtime.terms.knn import DensityTerm

__all__ = ["AppearanceTerm", "PatternsTerm"]


class AppearanceTerm(DensityTerm, ScoreTerm):
    name = "appearance"
    needs = frozenset({"fused"})

    def features(self, evidence: BoxEvidence) -> np.ndarray:
        return np.asarray(evidence.require("fused", self.name), np.float32).reshape(len(evidence.boxes), -1)


class PatternsTerm(AppearanceTerm):
    name = "patterns"
    needs = frozenset({"patterns"})

    def features(self, evidence: BoxEvidence) -> np.ndarray:
        return np.asarray(evidence.require("patterns", self.name), np.float32).reshape(len(evidence.boxes), -1)
