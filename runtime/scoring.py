"""From tube prediction errors to box and frame scores (DESIGN "Pipeline" step 8).

Box score = the tube's prediction error standardised with the mean/std of the TRAINING tube
errors; frame score = max over the frame's boxes, or the calibrated normal level (median
training frame score) when a frame has no box. Nothing here ever looks at test statistics.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable

import numpy as np

from lpgb.runtime.config import ScoringConfig
from lpgb.runtime.errors import LpgbError

_MIN_STD = 1e-8


@dataclass(frozen=True)
class Calibration:
    """Training-score statistics; stored as `calibration.json` in the run and the export sidecar."""

    error_mean: float  # mean of training tube errors
    error_std: float  # std of training tube errors (floored at 1e-8)
    normal_level: float  # median training frame score (the score of a frame without boxes)
    threshold: float  # ScoringConfig.threshold_quantile of training frame scores
    n_frames: int  # training frames (with at least one box) behind normal_level/threshold

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Calibration":
        if not isinstance(data, dict):
            raise LpgbError(f"calibration: expected an object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(names - set(data))
        if unknown or missing:
            raise LpgbError(f"calibration: unknown key(s) {', '.join(unknown) or '-'}, missing key(s) "
                            f"{', '.join(missing) or '-'}")
        return cls(error_mean=float(data["error_mean"]), error_std=float(data["error_std"]),
                   normal_level=float(data["normal_level"]), threshold=float(data["threshold"]),
                   n_frames=int(data["n_frames"]))


def calibrate(train_tube_errors: np.ndarray, train_frame_max_errors: list[np.ndarray],
              cfg: ScoringConfig) -> Calibration:
    """Calibrate on normal training videos.

    `train_tube_errors`: every training tube's prediction error, shape (M,).
    `train_frame_max_errors`: per training video, the per-frame max tube error, shape (T_v,),
    NaN for frames without boxes (those are skipped: they score the normal level by definition).
    """
    errors = np.asarray(train_tube_errors, dtype=np.float64).ravel()
    errors = errors[np.isfinite(errors)]
    if errors.size == 0:
        raise LpgbError("calibration needs at least one training tube error (no boxes in the training videos?)")
    mean = float(errors.mean())
    std = max(float(errors.std()), _MIN_STD)
    per_video = [np.asarray(v, dtype=np.float64).ravel() for v in train_frame_max_errors]
    frame_max = np.concatenate(per_video) if per_video else np.zeros(0)
    frame_max = frame_max[np.isfinite(frame_max)]
    if frame_max.size == 0:
        raise LpgbError("calibration needs at least one training frame with a box")
    frame_scores = (frame_max - mean) / std
    if not 0.0 < cfg.threshold_quantile <= 1.0:
        raise LpgbError(f"scoring.threshold_quantile must be in (0, 1], got {cfg.threshold_quantile}")
    return Calibration(error_mean=mean, error_std=std, normal_level=float(np.median(frame_scores)),
                       threshold=float(np.quantile(frame_scores, cfg.threshold_quantile)),
                       n_frames=int(frame_scores.size))


def box_scores(errors: np.ndarray, cal: Calibration) -> np.ndarray:
    """(K,) tube errors -> (K,) float32 box scores, (error - mean) / std."""
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    return ((e - cal.error_mean) / cal.error_std).astype(np.float32)


def frame_score(scores: np.ndarray, cal: Calibration) -> float:
    """Max box score of the frame, or `cal.normal_level` when the frame has no box."""
    s = np.asarray(scores).reshape(-1)
    return float(s.max()) if s.size else float(cal.normal_level)


def half_gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Causal weights w[k] ∝ exp(-k²/2σ²) for lags k = 0..ceil(truncate·σ) (w[0] = now), summing to 1.

    The same kernel as `lpgb.runtime.metrics.causal_kernel` (kept here so scoring does not import
    scikit-learn); a test checks they agree.
    """
    if sigma <= 0:
        return np.ones(1)
    radius = int(np.ceil(truncate * float(sigma)))
    k = np.arange(radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (k / float(sigma)) ** 2)
    return w / w.sum()


class CausalSmoother:
    """Streaming half-Gaussian smoothing: the output at t uses frames t-R..t only.

    Before R frames have been seen the first score stands in for the missing past (as
    `metrics.gaussian_smooth(..., causal=True)` does), so a constant signal stays constant and
    streaming equals the offline curve. sigma <= 0 passes scores through.
    """

    def __init__(self, sigma: float, truncate: float = 4.0) -> None:
        self.kernel = half_gaussian_kernel(sigma, truncate)
        self._history: deque[float] = deque(maxlen=len(self.kernel))  # newest first

    def push(self, score: float) -> float:
        if not self._history:
            self._history.extend([float(score)] * len(self.kernel))
        else:
            self._history.appendleft(float(score))
        h = np.fromiter(self._history, dtype=np.float64, count=len(self._history))
        return float(np.dot(self.kernel, h))

    def smooth(self, scores: Iterable[float]) -> np.ndarray:
        """Push a whole sequence (continuing the stream) and return the smoothed values."""
        return np.array([self.push(s) for s in scores], dtype=np.float64)

    def reset(self) -> None:
        self._history.clear()


__all__ = ["Calibration", "calibrate", "box_scores", "frame_score", "half_gaussian_kernel", "CausalSmoother"]
