"""Run outputs of one video: scores.csv, frames.jsonl, scores.json, events.json, scores.png, [video.mp4].

Streaming: from the first `add`, every frame is appended (and handed to the OS) as one row of
`scores.csv` and one JSON line of `frames.jsonl` (the streamed per-frame log: the record of
scores.json's "frames" list), so an interrupted run keeps every frame it scored. Nothing per frame
is held in memory but the last `plot_frames` scores for the plot. `close()` writes scores.json
(streamed back from frames.jsonl), events.json and scores.png atomically and renames the video.

Output folder: without `overwrite` it must be new or empty and files are written in it directly.
With `overwrite` the old outputs stay untouched while the run lasts: new files go to a hidden
staging folder `OUT/.lpgb-run-staging-<pid>/` and `close()` moves each over the old one
(`os.replace`), removing old writer outputs this run did not produce (e.g. an old video.mp4). Only
files an earlier lpgb-run wrote are replaced or removed: they are listed in OUT/.lpgb-manifest.json
(`lpgb.runtime.manifest`); a file of an output's name that is not listed (the user's own video.mp4)
is refused in one line at the start, and other files in OUT are never touched. One writer per folder:
OUT/.lpgb-lock holds the writer's pid (a second writer is refused; a dead owner's lock is taken over),
and staging folders of killed writers are removed with one line saying so. `abort()` (or an exception
in the `with` block) discards this writer's files and leaves old outputs as they were. A killed
process (SIGKILL) leaves the frames scored so far in scores.csv / frames.jsonl (in the staging folder
with `overwrite`).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import os
import shutil
from collections import deque
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Optional, Sequence

import cv2
import numpy as np

from lpgb.runtime import render
from lpgb.runtime.atomic import atomic_path, prepare_output_dir, write_text_atomic
from lpgb.runtime.config import ScoringConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.manifest import FolderLock, Manifest, owned_entries, stale_folders
from lpgb.runtime.scoring import Calibration, CausalSmoother

CSV_COLUMNS = ("frame", "time_s", "score", "smoothed", "num_boxes", "max_box_score")
NO_BOX_NOTE = "a frame without boxes scores the calibrated normal level (normal_level)"


OUTPUT_FILES = ("scores.csv", "scores.json", "events.json", "scores.png", "video.mp4")
FRAMES_LOG = "frames.jsonl"  # the streamed per-frame log (one scores.json frame record per line)
PRODUCED_FILES = (*OUTPUT_FILES, FRAMES_LOG)  # every file a writer may produce (and replace with overwrite)
PATH_KEYS = {"scores.csv": "csv", FRAMES_LOG: "frames", "scores.json": "json", "events.json": "events",
             "scores.png": "plot", "video.mp4": "video"}
STAGING_PREFIX = ".lpgb-run-staging-"
PLOT_MAX_FRAMES = 200_000  # the plot shows at most the last this many frames (bounded memory)
VIDEO_PARTIAL = ".video.partial.mp4"
COMMAND = "lpgb-run"  # the name its manifest and lock are recorded under


class OutputWriter:
    """Streams per-frame results of one video to disk and writes the summary files at `close()`.

    `frame_size` is the input frame's (height, width), i.e. `frame.shape[:2]`; only needed for
    `save_video` (taken from the first frame when None; other sizes are resized to it).
    `cal` (threshold, normal level) drives the plot, the JSON header and the box colours (green at
    the normal level, red at the threshold); `scoring` gives the smoothing of the `smoothed`
    column (causal half-Gaussian, `scoring.smoothing_sigma`) when `add` is not given one.
    `meta` is stored in scores.json as is (model, backend, source...). `count` is the number of
    frames written so far.
    """

    def __init__(self, out_dir: Path, fps: float, save_video: bool = False,
                 frame_size: tuple[int, int] | None = None, cal: Calibration | None = None,
                 scoring: ScoringConfig | None = None, *, overwrite: bool = False,
                 meta: dict[str, Any] | None = None, strip_height: int = render.STRIP_HEIGHT,
                 plot_frames: int = PLOT_MAX_FRAMES, resume: bool = False) -> None:
        if resume and overwrite:
            raise LpgbError("an output is either resumed or overwritten, not both")
        self.resumable = resume and resumable_output(Path(out_dir))
        self.out_dir = Path(out_dir) if self.resumable else prepare_output_dir(Path(out_dir), overwrite)
        self._lock = FolderLock(self.out_dir, COMMAND).acquire()
        try:
            self._replaces = owned_entries(self.out_dir, COMMAND, (*PRODUCED_FILES, VIDEO_PARTIAL)) if overwrite else []
            if overwrite:
                _clean_stale_staging(self.out_dir)
        except BaseException:
            self._lock.release()
            raise
        self.work_dir = self.out_dir / f"{STAGING_PREFIX}{os.getpid()}" if overwrite else self.out_dir
        self.results_dir = self.work_dir  # where the files are now: out_dir once close() has moved them
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
        self.count = 0
        self._curve = ScoreCurve(plot_frames)
        self._history: deque[float] = deque(maxlen=4096)
        self._csv: BinaryIO | None = None
        self._log: BinaryIO | None = None
        self._opened = False
        self._writer: cv2.VideoWriter | None = None
        self._video_tmp = self.work_dir / VIDEO_PARTIAL
        self._closed = False
        lo = self.normal_level if self.normal_level is not None else 0.0
        hi = self.threshold if self.threshold is not None and self.threshold > lo else lo + 3.0
        self._range = (float(lo), float(hi))
        self.resumed = 0  # frames a killed writer left in the folder (`resume`); `replay` them before `add`
        if self.resumable:
            try:
                self._open_streams()  # cut back to the frames both files hold whole
            except BaseException:
                self._lock.release()
                raise

    def replay(self, score: float) -> None:
        """Frame `count` again, already written by the killed writer: only the smoother, the plot curve and
        the count move (call it with the recomputed score of each of the first `resumed` frames)."""
        if self.count >= self.resumed:
            raise LpgbError(f"replay of frame {self.count}, but only {self.resumed} frames were written before")
        smoothed = self.smoother.push(score) if np.isfinite(score) else float("nan")
        self.count += 1
        self._curve.append(score, smoothed)
        self._history.append(float(smoothed) if np.isfinite(smoothed) else self._range[0])

    # -- per frame -------------------------------------------------------------------------------
    def add(self, frame_idx: int, time_s: float, score: float, boxes: np.ndarray | None = None,
            box_scores: np.ndarray | None = None, frame: np.ndarray | None = None,
            smoothed: float | None = None, term_scores: dict[str, np.ndarray] | None = None,
            dominant: Sequence[str] = ()) -> float:
        """Write one frame (a scores.csv row, a frames.jsonl line); returns the smoothed score
        (computed here unless given).

        `term_scores` {term: (K,)} are each box's standardised score terms (written per box as `terms`),
        `dominant` the term with the largest value per box (drawn beside the box).
        With `save_video`, `frame` (uint8 BGR) is annotated and appended to the video."""
        if self._closed:
            raise LpgbError("OutputWriter is closed")
        if self.count < self.resumed:
            raise LpgbError(f"frame {self.count} was written before the resume: replay it, do not add it")
        if self.save_video and frame is None:
            raise LpgbError("save_video needs the frame passed to OutputWriter.add")
        if smoothed is None:
            smoothed = self.smoother.push(score) if np.isfinite(score) else float("nan")
        b = np.zeros((0, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32).reshape(-1, 4)
        s = np.zeros((0,), np.float32) if box_scores is None else np.asarray(box_scores, np.float32).reshape(-1)
        if len(b) != len(s):
            raise ValueError(f"{len(b)} boxes but {len(s)} box scores")
        record = {"frame": int(frame_idx), "time": round(float(time_s), 6), "score": _finite(score),
                  "smoothed": _finite(smoothed), "boxes": _box_entries(b, s, term_scores, dominant)}
        self._open_streams()
        self._append(_csv_row(record), (json.dumps(record, allow_nan=False, default=_json_default) + "\n").encode())
        self.count += 1
        self._curve.append(score, smoothed)
        self._history.append(float(smoothed) if np.isfinite(smoothed) else self._range[0])
        if self.save_video:
            self._write_video_frame(frame, b, s, frame_idx, dominant)
        return float(smoothed)

    def _open_streams(self) -> None:
        """Create scores.csv (header row) and frames.jsonl in the work folder, once."""
        if self._opened:
            return
        if self.resumable:
            self._opened = True
            self._csv, self._log, self.resumed = _reopen_streams(self.out_dir)
            return
        if self.work_dir != self.out_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)  # a leftover of an earlier process with this pid
            self.work_dir.mkdir()
        else:  # a new or empty folder: everything the writer may make in it is its own
            names = (*PRODUCED_FILES, VIDEO_PARTIAL)
            Manifest(COMMAND, names, names).write(self.out_dir)
        self._opened = True
        self._csv = open(self.work_dir / "scores.csv", "wb", buffering=0)
        self._log = open(self.work_dir / FRAMES_LOG, "wb", buffering=0)
        _write_all(self._csv, _csv_line(CSV_COLUMNS))

    def _append(self, csv_line: bytes, log_line: bytes) -> None:
        """Append one frame to both streams (unbuffered: in the OS at return). On an OS error (disk
        full) both are cut back to the last whole frame, so they always hold the same frames."""
        assert self._csv is not None and self._log is not None
        marks = [(f, f.tell()) for f in (self._csv, self._log)]
        try:
            _write_all(self._csv, csv_line)
            _write_all(self._log, log_line)
        except OSError:
            for f, pos in marks:
                with contextlib.suppress(OSError):
                    f.truncate(pos)
                    f.seek(pos)
            raise

    def _close_streams(self) -> None:
        for f in (self._csv, self._log):
            if f is not None:
                f.close()
        self._csv = self._log = None

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
                raise LpgbError(f"OpenCV cannot write an MP4 video in {self.work_dir} (mp4v codec unavailable?)")
        lo, hi = self._range
        img = render.annotate_frame(frame, boxes, scores, self._history, self.threshold, lo, hi,
                                    label=f"frame {frame_idx}", strip_height=self.strip_height, tags=dominant)
        self._writer.write(img)

    # -- end ---------------------------------------------------------------------------------------
    def close(self, events: Sequence[Any] = (), labels: np.ndarray | None = None) -> dict[str, Path]:
        """Write the summary files; `events` are `lpgb.runtime.events.Event`s (or dicts), `labels` optional
        per-frame ground truth (1 = abnormal) shaded in the plot. Returns {kind: final path in OUT}.

        If a file cannot be written (OSError, e.g. a full disk) the error is raised after the files
        written so far (at least scores.csv and frames.jsonl) have been moved to OUT."""
        if self._closed:
            raise LpgbError("OutputWriter is already closed")
        self._closed = True
        produced: list[str] = []
        try:
            self._open_streams()
            self._close_streams()
            produced += ["scores.csv", FRAMES_LOG]
            self._write_summary(events, labels, produced)
        finally:
            self._release_video()
            paths = self._commit(produced)
        return paths

    def _write_summary(self, events: Sequence[Any], labels: np.ndarray | None, produced: list[str]) -> None:
        """The video, scores.json, events.json and scores.png into the work folder (names into `produced`)."""
        if self._writer is not None:
            self._release_video()
            os.replace(self._video_tmp, self.work_dir / "video.mp4")
            produced.append("video.mp4")
        self._write_scores_json(self.work_dir / "scores.json")
        produced.append("scores.json")
        ev = [e if isinstance(e, dict) else e.to_dict() for e in events]
        write_text_atomic(self.work_dir / "events.json", json.dumps({"threshold": self.threshold, "events": ev},
                                                                    indent=2, default=_json_default))
        produced.append("events.json")
        self._write_plot(self.work_dir / "scores.png", labels)
        produced.append("scores.png")

    def _write_scores_json(self, path: Path) -> None:
        """Header + "frames": the frames.jsonl lines copied one by one (never all in memory)."""
        header = {"fps": self.fps, "num_frames": self.count, "threshold": self.threshold,
                  "normal_level": self.normal_level, "calibration": self.cal.to_dict() if self.cal else None,
                  "smoothing": "causal half-Gaussian", "smoothing_sigma": self.smoother_sigma,
                  "note": NO_BOX_NOTE, "meta": self.meta}
        head = json.dumps(header, allow_nan=False, default=_json_default)
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as dst, \
                open(self.work_dir / FRAMES_LOG, encoding="utf-8") as src:
            dst.write(head[:-1] + ', "frames": [')
            for i, line in enumerate(itertools.islice(src, self.count)):
                dst.write(", " + line.rstrip("\n") if i else line.rstrip("\n"))
            dst.write("]}")

    def _write_plot(self, path: Path, labels: np.ndarray | None) -> None:
        scores, smoothed = self._curve.arrays()
        first = self._curve.first
        title = (f"score (grey), smoothed (blue), threshold (orange): last {len(scores)} of {self._curve.total} "
                 "frames") if first else ""
        lab = None if labels is None else np.asarray(labels).reshape(-1)[first:]
        img = render.plot_scores(scores, smoothed, self.threshold, lab, title=title)
        with atomic_path(path) as tmp:
            if not cv2.imwrite(str(tmp), img):
                raise LpgbError(f"cannot write {path}")

    def _release_video(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def _commit(self, produced: Iterable[str]) -> dict[str, Path]:
        """Move the produced files from the staging folder over the old outputs (only those an earlier
        lpgb-run wrote) and record them in the manifest; returns their paths."""
        produced = list(produced)
        new = Manifest(COMMAND, tuple(produced), tuple(produced))
        try:
            if self.work_dir != self.out_dir:
                if produced:
                    new.merged(Manifest(COMMAND, tuple(self._replaces), tuple(self._replaces))).write(self.out_dir)
                    for name in produced:
                        os.replace(self.work_dir / name, self.out_dir / name)
                    for name in set(self._replaces) - set(produced):
                        (self.out_dir / name).unlink(missing_ok=True)  # an old output this run did not replace
                    new.write(self.out_dir)
                shutil.rmtree(self.work_dir, ignore_errors=True)
            else:
                new.write(self.out_dir)
        finally:
            self._lock.release()
        self.results_dir = self.out_dir
        return {PATH_KEYS[name]: self.out_dir / name for name in produced}

    def abort(self) -> None:
        """Stop without results: discard this writer's files (streams, partial video, staging folder);
        old outputs stay untouched. Does nothing after `close()`."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._close_streams()
        self._release_video()
        if self.work_dir != self.out_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        elif self._opened:
            for name in ("scores.csv", FRAMES_LOG, VIDEO_PARTIAL):
                (self.out_dir / name).unlink(missing_ok=True)
            Manifest(COMMAND, (), ()).remove(self.out_dir)
        self._lock.release()

    def __enter__(self) -> "OutputWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()


def resumable_output(out: Path) -> bool:
    """Whether `out` holds the streamed files of an lpgb-run that was killed before its summary: both
    streams, written by lpgb-run (its manifest), no scores.json yet."""
    return (out / "scores.csv").is_file() and (out / FRAMES_LOG).is_file() and not (out / "scores.json").exists() \
        and bool(owned_entries(out, COMMAND, ("scores.csv", FRAMES_LOG)))


def finished_frames(out: Path) -> Optional[int]:
    """The frame count of a finished lpgb-run output in `out` (its summary written), else None."""
    if not ((out / "scores.json").is_file() and (out / FRAMES_LOG).is_file()):
        return None
    if not owned_entries(out, COMMAND, ("scores.json", FRAMES_LOG)):
        return None
    return _count_lines(out / FRAMES_LOG)


def _whole_lines(path: Path) -> list[int]:
    """Byte offsets just after each complete line of `path`."""
    ends, pos = [], 0
    with open(path, "rb") as f:
        for line in f:
            pos += len(line)
            if line.endswith(b"\n"):
                ends.append(pos)
    return ends


def _reopen_streams(out: Path) -> tuple[BinaryIO, BinaryIO, int]:
    """scores.csv and frames.jsonl of a killed writer, cut back to the frames both hold whole (a kill
    between the two writes of a frame leaves it in one only), opened for appending; and that count."""
    csv_ends, log_ends = _whole_lines(out / "scores.csv"), _whole_lines(out / FRAMES_LOG)
    if not csv_ends:
        raise LpgbError(f"{out / 'scores.csv'} has no header: cannot resume it; remove the folder or use --overwrite")
    n = min(len(csv_ends) - 1, len(log_ends))
    streams = []
    for path, cut in ((out / "scores.csv", csv_ends[n]), (out / FRAMES_LOG, log_ends[n - 1] if n else 0)):
        f = open(path, "r+b", buffering=0)
        f.truncate(cut)
        f.seek(cut)
        streams.append(f)
    return streams[0], streams[1], n


def _clean_stale_staging(out: Path) -> None:
    """Remove staging folders of killed writers in `out` (this writer holds its lock), one line each;
    one of a process that still exists (an older lpgb without locks, or a reused pid) is only reported."""
    from lpgb.runtime.cli_common import console

    stale, live = stale_folders(out, STAGING_PREFIX)
    for path in stale:
        frames = _count_lines(path / FRAMES_LOG)
        shutil.rmtree(path, ignore_errors=True)
        console.print(f"removed {path}: the staging folder of a killed lpgb-run (pid {path.name[len(STAGING_PREFIX):]}"
                      f" is gone; {frames} uncommitted frames)", highlight=False, soft_wrap=True)
    for path in live:
        console.print(f"[yellow]warning:[/] left {path} as it is: process {path.name[len(STAGING_PREFIX):]} "
                      "still exists", highlight=False, soft_wrap=True)


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return 0


def prepare_run_output(out: Path, overwrite: bool, **inputs: Optional[Path | str]) -> Path:
    """The checks of `OutputWriter` done before a model loads, so a refusal comes at once: `out` is apart
    from the `inputs` (`check_apart`), new or empty unless `overwrite`, and with `overwrite` every
    output-named file in it was written by lpgb-run and no live writer holds it. Creates `out`."""
    check_apart(out, **inputs)
    out = prepare_output_dir(Path(out), overwrite)
    with FolderLock(out, COMMAND):
        if overwrite:
            owned_entries(out, COMMAND, (*PRODUCED_FILES, VIDEO_PARTIAL))
    return out


def check_apart(out: Path, **inputs: Optional[Path | str]) -> None:
    """LpgbError (one line) when the output folder `out` is, or holds, one of the command's inputs (the
    source video or frame folder, the model folder), or lies inside an input folder (a run's export
    folder, a frame folder): outputs never touch inputs. Inputs that are not local paths (a webcam
    index, a URL) are skipped."""
    o = Path(out).expanduser().resolve()
    for what, value in inputs.items():
        if value is None or not Path(value).expanduser().exists():
            continue
        p = Path(value).expanduser().resolve()
        if p == o or o in p.parents or (p.is_dir() and p in o.parents):
            raise LpgbError(f"output folder {out} {'is' if p == o else 'holds' if o in p.parents else 'is inside'} "
                            f"the {what} {value}; choose an output folder apart from the command's inputs")


class ScoreCurve:
    """The last `size` frames' score and smoothed score (float32 ring buffer) for the plot."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise LpgbError(f"plot_frames must be >= 1, got {size}")
        self.size = int(size)
        self.total = 0
        self._data = np.empty((2, self.size), np.float32)  # pages are committed as frames arrive

    def append(self, score: float, smoothed: float) -> None:
        self._data[:, self.total % self.size] = (score, smoothed)
        self.total += 1

    @property
    def first(self) -> int:
        """Index of the oldest frame still held."""
        return max(0, self.total - self.size)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores, smoothed) float64, oldest first; NaN where a score was not finite."""
        if self.total <= self.size:
            data = self._data[:, :self.total]
        else:
            cut = self.total % self.size
            data = np.concatenate([self._data[:, cut:], self._data[:, :cut]], axis=1)
        out = data.astype(np.float64)
        out[~np.isfinite(out)] = np.nan
        return out[0], out[1]


def _box_entries(boxes: np.ndarray, scores: np.ndarray, term_scores: dict[str, np.ndarray] | None,
                 dominant: Sequence[str]) -> list[dict[str, Any]]:
    """Per box: rounded box, score, standardised terms and the dominant term (when given)."""
    terms = {n: np.asarray(v, np.float32).reshape(-1) for n, v in (term_scores or {}).items()}
    entries = []
    for i, (bb, ss) in enumerate(zip(boxes, scores)):
        entry: dict[str, Any] = {"box": [round(float(v), 2) for v in bb], "score": _finite(ss)}
        if terms:
            entry["terms"] = {n: _finite(v[i]) for n, v in terms.items()}
        if i < len(dominant):
            entry["dominant"] = dominant[i]
        entries.append(entry)
    return entries


def _csv_row(record: dict[str, Any]) -> bytes:
    bs = [b["score"] for b in record["boxes"] if b["score"] is not None]
    return _csv_line([record["frame"], f"{record['time']:.6f}", _fmt(record["score"]), _fmt(record["smoothed"]),
                      len(record["boxes"]), _fmt(max(bs)) if bs else ""])


def _csv_line(row: Sequence[Any]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(row)
    return buf.getvalue().encode()


def _write_all(f: BinaryIO, data: bytes) -> None:
    """Write all of `data` to an unbuffered file (raw writes may be short)."""
    view = memoryview(data)
    while view:
        view = view[f.write(view):]


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


__all__ = ["OutputWriter", "ScoreCurve", "check_apart", "prepare_run_output", "CSV_COLUMNS", "NO_BOX_NOTE", "OUTPUT_FILES", "FRAMES_LOG",
           "PRODUCED_FILES", "PLOT_MAX_FRAMES"]
