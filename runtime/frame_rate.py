"""The training videos' frame rate, recorded with the run, and the serving-time check against it.

Motion terms and tubes see motion per frame: a source at another frame rate than the training videos
moves its objects further (or less) between frames, so its scores are off the calibration. lpgb-train
records the median frame rate of the training video files in RUN/data.json (`"fps"`, informational:
scoring never reads it); lpgb-run warns in one line when a source's rate differs by more than
`FPS_RATIO`; lpgb-export copies the rate into model.json (`training_fps`), so a bare export folder carries
it. Frame folders have no frame rate (nothing is recorded or checked for them), and a model folder without
the record (older runs and exports) serves with no warning.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Iterable, Optional

import cv2
import numpy as np

from lpgb.runtime.atomic import write_text_atomic

DATA_RECORD = "data.json"  # RUN/data.json: {"data": dataset path, "fps": training frame rate or null}
FPS_RATIO = 2.0  # a source whose frame rate differs from the training videos' by more than this factor is warned


def file_fps(path: Path) -> Optional[float]:
    """The frame rate a video file's container states; None for a frame folder, an unreadable file or
    a rate that is missing or absurd."""
    path = Path(path)
    if not path.is_file():
        return None
    cap = cv2.VideoCapture(str(path))
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    finally:
        cap.release()
    return float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else None


def training_fps(sources: Iterable[Path]) -> Optional[float]:
    """Median frame rate of the video files among `sources` (None when none states one)."""
    rates = [r for r in (file_fps(s) for s in sources) if r is not None]
    return round(float(statistics.median(rates)), 3) if rates else None


def record_training_fps(run_dir: Path, sources: Iterable[Path]) -> Optional[float]:
    """Add the training videos' frame rate to RUN/data.json (kept as it is when it holds the same value)."""
    path = Path(run_dir) / DATA_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # no record of the dataset: the run folder is not lpgb-train's
    if not isinstance(record, dict):
        return None
    fps = training_fps(sources)
    if record.get("fps", "absent") != fps:
        write_text_atomic(path, json.dumps({**record, "fps": fps}))
    return fps


def recorded_fps(model: Path) -> Optional[float]:
    """The training frame rate recorded for a model folder: an export folder's model.json (`training_fps`,
    written by lpgb-export), else RUN/data.json of RUN or of the export's parent run; None when not recorded
    or unreadable."""
    model = Path(model)
    try:
        fps = json.loads((model / "model.json").read_text()).get("training_fps")
        if isinstance(fps, (int, float)) and not isinstance(fps, bool) and 0 < fps < 1000:
            return float(fps)
    except (OSError, ValueError, AttributeError):
        pass
    for folder in (model, model.parent):
        try:
            fps = json.loads((folder / DATA_RECORD).read_text()).get("fps")
        except (OSError, ValueError, AttributeError):
            continue
        return float(fps) if isinstance(fps, (int, float)) and 0 < fps < 1000 else None
    return None


def fps_warning(source: str, source_fps: Optional[float], trained_fps: Optional[float]) -> Optional[str]:
    """One line when the two rates differ by more than `FPS_RATIO` (None when either is unknown)."""
    if not source_fps or not trained_fps:
        return None
    ratio = max(source_fps, trained_fps) / min(source_fps, trained_fps)
    if ratio <= FPS_RATIO:
        return None
    return (f"{source} runs at {source_fps:g} frames/s but the model was trained on {trained_fps:g} frames/s videos "
            f"({ratio:.1f}x): objects move {'further' if source_fps < trained_fps else 'less'} between frames than "
            f"in training, so scores are off the calibration; resample the source to about {trained_fps:g} "
            "frames/s or train on this camera's videos")


def warn_source_fps(source: str, src: object, model: Path) -> None:
    """Print `fps_warning` for an open `lpgb.runtime.video.FrameSource` (frame folders have no rate)."""
    from rich.markup import escape

    from lpgb.runtime.cli_common import console
    from lpgb.runtime.video import FolderSource

    if isinstance(src, FolderSource):
        return
    line = fps_warning(source, getattr(src, "fps", None), recorded_fps(model))
    if line is not None:
        console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)


__all__ = ["DATA_RECORD", "FPS_RATIO", "file_fps", "training_fps", "record_training_fps", "recorded_fps",
           "fps_warning", "warn_source_fps"]
