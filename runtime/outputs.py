"""Run outputs of one video: scores.csv, scores.json, events.json, scores.png, [video.mp4].

Per-frame records are kept in memory and written atomically at `close()`. The annotated video
is written while frames arrive to a hidden temporary file in the output folder and renamed to
`video.mp4` at `close()` (deleted by `abort()` or when the `with` block raises).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import deque
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from lpgb.runtime import render
from lpgb.runtime.atomic import atomic_path, prepare_output_dir, write_text_atomic
from lpgb.runtime.config import ScoringConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.scoring import Calibration, CausalSmoother

CSV_COLUMNS = ("frame", "time_s", "score", "smoothed", "num_boxes", "max_box_score")
NO_BOX_NOTE = "a frame without boxes scores the calibrated normal level (normal_level)"


OUTPUT_FILES = ("scores.csv", "scores.json", "events.json", "scores.png", "video.mp4")


class OutputWriter:
    """Collects per-frame results of one video and writes them.

    `frame_size` is the input frame's (height, width), i.e. `frame.shape[:2]`; only needed for
    `save_video` (taken from the first frame when None; other sizes are resized to it).
    `cal` (threshold, normal level) drives the plot, the JSON header and the box colours (green at
    the normal level, red at the threshold); `scoring` gives the smoothing of the `smoothed`
    column (causal half-Gaussian, `scoring.smoothing_sigma`) when `add` is not given one.
    `meta` is stored in scores.json as is (model, backend, source...).
    """

    def __init__(self, out_dir: Path, fps: float, save_video: bool = False,
                 frame_size: tuple[int, int] | None = None, cal: Calibration | None = None,
                 scoring: ScoringConfig | None = None, *, overwrite: bool = False,
                 meta: dict[str, Any] | None = None, strip_height: int = render.STRIP_HEIGHT) -> None:
        self.out_dir = prepare_output_dir(Path(out_dir), overwrite)
        if overwrite:
            for name in OUTPUT_FILES:
                (self.out_dir / name).unlink(missing_ok=True)
        self.fps = float(fps) if fps and fps > 0 else 25.0
        self.save_video = save_video
        self.frame_size = (int(frame_size[0]), int(frame_size[1])) if frame_size is not None else None
        self.cal = cal
        self.threshold = cal.threshold if cal is not None else None
        self.normal_level = cal.normal_level if cal is not None else None
        self.smoother_sigma = float(scoring.smoothing_sigma) if scoring is not None else 0.0
        self.smoother = CausalSmoother(self.smoother_sigma)
        self.meta = dict(meta or {})
        self.strip_height = strip_height
        self.records: list[dict[str, Any]] = []
        self._history: deque[float] = deque(maxlen=4096)
        self._writer: cv2.VideoWriter | None = None
        self._video_tmp = self.out_dir / ".video.partial.mp4"
        self._closed = False
        lo = self.normal_level if self.normal_level is not None else 0.0
        hi = self.threshold if self.threshold is not None and self.threshold > lo else lo + 3.0
        self._range = (float(lo), float(hi))

    # -- per frame -------------------------------------------------------------------------------
    def add(self, frame_idx: int, time_s: float, score: float, boxes: np.ndarray | None = None,
            box_scores: np.ndarray | None = None, frame: np.ndarray | None = None,
            smoothed: float | None = None, term_scores: dict[str, np.ndarray] | None = None,
            dominant: Sequence[str] = ()) -> float:
        """Record one frame; returns the smoothed score (computed here unless given).

        `term_scores` {term: (K,)} are each box's standardised score terms (written per box as `terms`),
        `dominant` the term with the largest value per box (drawn beside the box).
        With `save_video`, `frame` (uint8 BGR) is annotated and appended to the video."""
        if self._closed:
            raise LpgbError("OutputWriter is closed")
        if smoothed is None:
            smoothed = self.smoother.push(score) if np.isfinite(score) else float("nan")
        b = np.zeros((0, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32).reshape(-1, 4)
        s = np.zeros((0,), np.float32) if box_scores is None else np.asarray(box_scores, np.float32).reshape(-1)
        if len(b) != len(s):
            raise ValueError(f"{len(b)} boxes but {len(s)} box scores")
        terms = {n: np.asarray(v, np.float32).reshape(-1) for n, v in (term_scores or {}).items()}
        boxes_out = []
        for i, (bb, ss) in enumerate(zip(b, s)):
            entry = {"box": [round(float(v), 2) for v in bb], "score": _finite(ss)}
            if terms:
                entry["terms"] = {n: _finite(v[i]) for n, v in terms.items()}
            if i < len(dominant):
                entry["dominant"] = dominant[i]
            boxes_out.append(entry)
        self.records.append({
            "frame": int(frame_idx), "time": round(float(time_s), 6), "score": _finite(score),
            "smoothed": _finite(smoothed), "boxes": boxes_out,
        })
        self._history.append(float(smoothed) if np.isfinite(smoothed) else self._range[0])
        if self.save_video:
            if frame is None:
                raise LpgbError("save_video needs the frame passed to OutputWriter.add")
            self._write_video_frame(frame, b, s, frame_idx, dominant)
        return float(smoothed)

    def _write_video_frame(self, frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray, frame_idx: int,
                           dominant: Sequence[str] = ()) -> None:
        if self.frame_size is None:
            self.frame_size = (int(frame.shape[0]), int(frame.shape[1]))
        h, w = self.frame_size
        if frame.shape[:2] != (h, w):
            frame = cv2.resize(frame, (w, h))
        if self._writer is None:
            size = (w, h + self.strip_height)
            self._writer = cv2.VideoWriter(str(self._video_tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size)
            if not self._writer.isOpened():
                self._writer = None
                raise LpgbError(f"OpenCV cannot write an MP4 video in {self.out_dir} (mp4v codec unavailable?)")
        lo, hi = self._range
        img = render.annotate_frame(frame, boxes, scores, self._history, self.threshold, lo, hi,
                                    label=f"frame {frame_idx}", strip_height=self.strip_height, tags=dominant)
        self._writer.write(img)

    # -- end ---------------------------------------------------------------------------------------
    def close(self, events: Sequence[Any] = (), labels: np.ndarray | None = None) -> dict[str, Path]:
        """Write all files; `events` are `lpgb.runtime.events.Event`s (or dicts), `labels` optional
        per-frame ground truth (1 = abnormal) shaded in the plot. Returns {kind: path}."""
        if self._closed:
            raise LpgbError("OutputWriter is already closed")
        self._closed = True
        paths = {
            "csv": self.out_dir / "scores.csv", "json": self.out_dir / "scores.json",
            "events": self.out_dir / "events.json", "plot": self.out_dir / "scores.png",
        }
        buf = io.StringIO()
        wr = csv.writer(buf, lineterminator="\n")
        wr.writerow(CSV_COLUMNS)
        for r in self.records:
            bs = [b["score"] for b in r["boxes"] if b["score"] is not None]
            wr.writerow([r["frame"], f"{r['time']:.6f}", _fmt(r["score"]), _fmt(r["smoothed"]), len(r["boxes"]),
                         _fmt(max(bs)) if bs else ""])
        write_text_atomic(paths["csv"], buf.getvalue())
        header = {"fps": self.fps, "num_frames": len(self.records), "threshold": self.threshold,
                  "normal_level": self.normal_level, "calibration": self.cal.to_dict() if self.cal else None,
                  "smoothing": "causal half-Gaussian", "smoothing_sigma": self.smoother_sigma,
                  "note": NO_BOX_NOTE, "meta": self.meta}
        write_text_atomic(paths["json"], json.dumps({**header, "frames": self.records}, allow_nan=False,
                                                    default=_json_default))
        ev = [e if isinstance(e, dict) else e.to_dict() for e in events]
        write_text_atomic(paths["events"], json.dumps({"threshold": self.threshold, "events": ev}, indent=2,
                                                      default=_json_default))
        scores = np.array([np.nan if r["score"] is None else r["score"] for r in self.records], dtype=np.float64)
        smoothed = np.array([np.nan if r["smoothed"] is None else r["smoothed"] for r in self.records], dtype=np.float64)
        img = render.plot_scores(scores, smoothed, self.threshold, labels)
        with atomic_path(paths["plot"]) as tmp:
            if not cv2.imwrite(str(tmp), img):
                raise LpgbError(f"cannot write {paths['plot']}")
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            paths["video"] = self.out_dir / "video.mp4"
            os.replace(self._video_tmp, paths["video"])
        return paths

    def abort(self) -> None:
        """Stop without writing results; removes the partial video."""
        self._closed = True
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self._video_tmp.exists():
            self._video_tmp.unlink()

    def __enter__(self) -> "OutputWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()


def _finite(x: float) -> float | None:
    """NaN/inf become null so scores.json stays strict JSON."""
    x = float(x)
    return x if np.isfinite(x) else None


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.6f}"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


__all__ = ["OutputWriter", "CSV_COLUMNS", "NO_BOX_NOTE", "OUTPUT_FILES"]
