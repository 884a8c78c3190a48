"""The score-term contract: fit on normal training data -> state saved in the model bundle; score per box.

A score term turns what the serving stages computed for the K grouped boxes of one frame
(`BoxEvidence`) into one raw anomaly value per box. Terms are fitted on boxes from the normal
training videos only; `fit` also returns the raw training scores that calibrate the term
(for density terms, each training box scored against the boxes of the OTHER training videos, so the
calibration sees realistic normal scores, not zero self-distances). Calibration per term and the
combination rule live in `lpgb.runtime.scoring`.

A new term is one module with a `ScoreTerm` subclass, its test and one line in
`lpgb.runtime.terms.TERMS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from lpgb.runtime.config import LpgbConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.flow import FlowField
from lpgb.runtime.foreground import ForegroundField
from lpgb.runtime.occupancy import OccupancyField
from lpgb.runtime.tracks import Trail

__all__ = ["BoxEvidence", "ScoreTerm", "EVIDENCE_KINDS", "NETWORK_EVIDENCE", "MASK_EVIDENCE"]

EVIDENCE_KINDS = ("flow", "foreground", "occupancy", "track", "tube_error", "fused", "patterns", "branch1")
NETWORK_EVIDENCE = frozenset({"tube_error", "fused", "patterns", "branch1"})  # made by the branches / temporal part
MASK_EVIDENCE = frozenset({"foreground", "occupancy"})  # made from the motion stage's foreground mask


@dataclass(frozen=True)
class BoxEvidence:
    """One frame's grouped boxes and what the stages computed for them (None: not computed).

    frame_shape `(H, W)`; boxes `(K, 4)` float32 frame pixels; flow: the frame's FlowField; foreground: the
    frame's ForegroundField (the motion stage's mask); occupancy: the frame's foreground OccupancyField;
    track: the boxes' centre trails (`lpgb.runtime.tracks.Trail`);
    tube_error `(K,)` float32 SMM prediction errors; fused `(K, N)` float32 fused local-pattern
    vectors v(t) of the tubes' newest frame; patterns `(K, 2 N)` float32 the two branches' features of
    the newest frame, side by side (before fusion); branch1 `(K, N)` float32 branch 1's features of the
    newest frame alone (the first half of `patterns`).
    """

    frame_shape: tuple[int, int]
    boxes: np.ndarray
    flow: Optional[FlowField] = None
    foreground: Optional[ForegroundField] = None
    occupancy: Optional[OccupancyField] = None
    track: Optional[Trail] = None
    tube_error: Optional[np.ndarray] = None
    fused: Optional[np.ndarray] = None
    patterns: Optional[np.ndarray] = None
    branch1: Optional[np.ndarray] = None

    def require(self, kind: str, term: str) -> object:
        value = getattr(self, kind)
        if value is None:
            raise LpgbError(f"score term {term!r} needs {kind!r}, which this frame's evidence lacks")
        return value


class ScoreTerm(ABC):
    """One anomaly score term. Subclasses set `name` and `needs` (a subset of EVIDENCE_KINDS) as class
    attributes; `needs` is what a new fit reads, and an instance may narrow it when a loaded state reads
    less (a velocity bank fitted before the bulk columns needs no foreground mask)."""

    name: ClassVar[str]
    needs: frozenset[str]
    stateful: ClassVar[bool] = False  # True: `state()` must be saved after fit and loaded to serve
    trained_read_out: ClassVar[bool] = False  # True: its state is trained with the networks, loaded before `fit`

    def __init__(self, cfg: LpgbConfig) -> None:
        self.cfg = cfg

    @abstractmethod
    def features(self, evidence: BoxEvidence) -> np.ndarray:
        """Per-box feature rows `(K, D)` float32 (what `fit` and `score` consume)."""

    @abstractmethod
    def fit(self, features: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Fit on normal training rows `(M, D)` from videos `groups` `(M,)` int; returns the raw
        calibration scores `(M,)` (held-out where the term is a density)."""

    @abstractmethod
    def score(self, features: np.ndarray) -> np.ndarray:
        """Raw anomaly value per row `(K,)` float32; larger = more anomalous."""

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to save in the bundle (empty for stateless terms)."""
        return {}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what `state` returned."""
        if arrays:
            raise LpgbError(f"score term {self.name!r} has no state, got {', '.join(sorted(arrays))}")
