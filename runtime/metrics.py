"""Frame-level evaluation: micro / macro ROC AUC and score smoothing.

Scores and labels are per-frame arrays `(T,)` per video; labels are 0 (normal) / 1 (abnormal).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d
from sklearn.metrics import roc_auc_score

from lpgb.runtime.errors import LpgbError


@dataclass(frozen=True)
class MacroAUC:
    """Mean per-video AUC over the `n_used` videos that contain both classes."""

    value: float
    n_videos: int
    n_used: int
    n_single_class: int
    per_video: tuple[float | None, ...] = ()  # None for a skipped single-class video


def _pairs(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(scores) != len(labels):
        raise LpgbError(f"got scores for {len(scores)} videos but labels for {len(labels)}")
    if len(scores) == 0:
        raise LpgbError("no videos to evaluate: expected at least one scored, labelled video")
    pairs = []
    for i, (s, y) in enumerate(zip(scores, labels)):
        s = np.asarray(s, dtype=np.float64).reshape(-1)
        y = (np.asarray(y).reshape(-1) != 0).astype(np.uint8)
        if s.shape != y.shape:
            raise LpgbError(f"video {i}: {s.size} scores but {y.size} labels; expected one score per frame")
        if not np.all(np.isfinite(s)):
            raise LpgbError(f"video {i}: scores contain NaN or inf")
        pairs.append((s, y))
    return pairs


def _require_both_classes(y: np.ndarray) -> None:
    positives = int(y.sum())
    if positives == 0 or positives == y.size:
        kind = "abnormal" if positives == 0 else "normal"
        raise LpgbError(f"AUC needs both classes but the labels contain no {kind} frames")


def micro_auc(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> float:
    """ROC AUC over all frames of all videos concatenated (higher score = more abnormal)."""
    pairs = _pairs(scores, labels)
    s = np.concatenate([p[0] for p in pairs])
    y = np.concatenate([p[1] for p in pairs])
    _require_both_classes(y)
    return float(roc_auc_score(y, s))


def macro_auc(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> MacroAUC:
    """Mean of per-video ROC AUCs.

    Videos whose frames are all normal or all abnormal have no AUC: they are skipped and counted
    in `n_single_class`. LpgbError when no video has both classes.
    """
    pairs = _pairs(scores, labels)
    per_video: list[float | None] = []
    for s, y in pairs:
        both = 0 < int(y.sum()) < y.size
        per_video.append(float(roc_auc_score(y, s)) if both else None)
    used = [v for v in per_video if v is not None]
    if not used:
        _require_both_classes(np.concatenate([p[1] for p in pairs]))
        raise LpgbError("macro AUC needs at least one video with both normal and abnormal frames")
    return MacroAUC(value=float(np.mean(used)), n_videos=len(pairs), n_used=len(used),
                    n_single_class=len(pairs) - len(used), per_video=tuple(per_video))


def causal_kernel(sigma: float) -> np.ndarray:
    """Half-Gaussian weights `(K,)` for lags 0..K-1 (K = ceil(4 sigma) + 1), summing to 1: the kernel
    of the runtime's live smoothing (`lpgb.runtime.scoring.half_gaussian_kernel`)."""
    from lpgb.runtime.scoring import half_gaussian_kernel

    return half_gaussian_kernel(sigma)


def gaussian_smooth(scores: np.ndarray, sigma: float, causal: bool = False) -> np.ndarray:
    """Smooth a score curve `(T,)` -> `(T,)` float64.

    Centred: scipy gaussian_filter1d, mode='nearest'. Causal: each output is a normalised
    half-Gaussian average of the current and past frames only (the first frame is repeated
    before the start), so it can run live. sigma <= 0 returns a copy.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise LpgbError(f"expected a 1-D score curve, got shape {s.shape}")
    if sigma <= 0 or s.size == 0:
        return s.copy()
    if not causal:
        return gaussian_filter1d(s, sigma, mode="nearest")
    kernel = causal_kernel(sigma)
    padded = np.concatenate([np.full(kernel.size - 1, s[0]), s])
    # out[t] = sum_k kernel[k] * s[t - k]
    return np.convolve(padded, kernel, mode="valid")


__all__ = ["MacroAUC", "micro_auc", "macro_auc", "gaussian_smooth", "causal_kernel", "rank_correlation"]


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation with average ranks for ties (frames without boxes all share one score);
    1.0 for fewer than two values or two identical constant vectors, 0.0 for a constant against a varying one."""
    from scipy.stats import rankdata

    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if a.size < 2:
        return 1.0
    ra, rb = rankdata(a), rankdata(b)
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.corrcoef(ra, rb)[0, 1])
