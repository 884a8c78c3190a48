"""Whole-video scoring for evaluation: one video through one fresh `Detector`, frame scores out.

Used by `lpgb-bench` (accuracy per backend) and `lpgb-export --check` (FP16 / INT8 pipeline gates),
so both score a video the same way. Serving with outputs is `lpgb.runtime.runner.run_source`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from lpgb.runtime.pipeline import Detector, score_frames
from lpgb.runtime.video import open_source

__all__ = ["score_video"]


def score_video(detector: Detector, source: Path | str, max_frames: int = 0,
                term_curves: Optional[dict[str, list[float]]] = None,
                stage_times: Optional[dict[str, list[float]]] = None) -> np.ndarray:
    """Per-frame scores `(T,)` float32 of `source` (at most `max_frames`, 0 = all) by `detector`, which
    should be fresh (no state from another video); its backend is closed afterwards, also on error.
    `term_curves`: see `lpgb.runtime.pipeline.score_frames`; `stage_times`, when given, receives its
    per-stage seconds per frame."""
    try:
        with open_source(source) as src:
            scores, times = score_frames(detector, src, max_frames=max_frames, term_curves=term_curves)
        if stage_times is not None:
            stage_times.update(times)
    finally:
        if detector.backend is not None:
            detector.backend.close()
    return scores
