"""The `lpgb-run` application around the `Detector` (`lpgb.runtime.pipeline`, the stages): `run_source`
streams a source through it and owns what a run adds: the output folder and writer (`lpgb.runtime.outputs`),
Ctrl-C/SIGTERM handling (`_StopSignals`), the labels file, frame-size warnings and the summary line.
"""

from __future__ import annotations

import contextlib
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from lpgb.runtime.errors import LpgbError
from lpgb.runtime.pipeline import Detector, FrameResult, open_detector
from lpgb.runtime.scoring import Calibration
from lpgb.runtime.signals import SignalGuard


@dataclass(frozen=True)
class RunRequest:
    source: str
    model: Path
    backend: str = "ort"
    precision: str = "fp32"
    device: str = "cpu"
    out: Optional[Path] = None
    save_video: bool = False
    labels: Optional[Path] = None
    max_frames: int = 0
    overwrite: bool = False


def run_source(request: RunRequest, source=None) -> str:
    """`lpgb-run`: stream a source through the detector and write all outputs; returns a summary line.

    Every scored frame is on disk as it is scored (scores.csv, frames.jsonl). When the run is stopped
    by Ctrl-C, SIGTERM, a frame the source cannot decode or an OS error while writing (a full disk),
    the events are finished, the summary files written as far as possible and a one-line error says
    at which frame it stopped, why and where the scored frames are: `RunInterrupted` (exit 130 /
    143) for the signals, `LpgbError` otherwise. With no frame scored nothing is written.
    `source`, an open `lpgb.runtime.video.FrameSource` (closed here), replaces `request.source`.
    """
    from lpgb.runtime.video import open_source

    if request.max_frames < 0:
        raise LpgbError(f"--max-frames must be >= 0 (0 = the whole source), got {request.max_frames}")
    labels = _load_labels(request.labels)
    with (source if source is not None else open_source(request.source)) as src, _StopSignals() as guard:
        if labels is not None and src.frame_count and len(labels) != src.frame_count:
            raise LpgbError(f"--labels has {len(labels)} values but {request.source} has {src.frame_count} frames")
        try:
            run = _start_run(request, src)
            stop = _score_loop(run, src, guard)
        except (KeyboardInterrupt, _Terminated) as exc:  # while the model loads
            reason, code = _interrupt_reason(exc)
            raise RunInterrupted(f"{reason} before the first frame was scored; nothing written", code) from None
        try:
            return _finish_run(run, src, stop, guard, labels)
        except (KeyboardInterrupt, _Terminated) as exc:  # a second signal while the summary was written
            reason, code = _interrupt_reason(exc)
            where = run.writer.results_dir if run.writer is not None else run.out_dir
            raise RunInterrupted(f"{reason} again while writing the summary; {run.scored} scored frames kept in "
                                 f"{where} (scores.csv, frames.jsonl)", code) from None


class RunInterrupted(LpgbError):
    """lpgb-run stopped by Ctrl-C (`exit_code` 130) or SIGTERM (143); the message says what was kept."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Terminated(BaseException):
    """Raised by run_source's SIGTERM handler (a BaseException like KeyboardInterrupt: no `except
    Exception` on the way swallows it)."""


@dataclass
class _Stop:
    """Why the frame loop ended early: a one-line reason, the exit code, the original exception."""

    reason: str
    exit_code: int
    error: BaseException


@dataclass
class _Run:
    """What one lpgb-run holds while it scores: the detector, events, the writer (from the first frame)."""

    request: RunRequest
    out_dir: Path
    fps: float
    total: Optional[int]
    detector: Detector
    events: object  # lpgb.runtime.events.EventDetector
    started: float
    writer: Optional[object] = None  # lpgb.runtime.outputs.OutputWriter
    first_latency: Optional[float] = None

    @property
    def scored(self) -> int:
        return self.writer.count if self.writer is not None else 0

    def record(self, frame: np.ndarray, r: FrameResult) -> None:
        """Write one scored frame (opening the writer at the first) and push it to the events."""
        from lpgb.runtime.outputs import OutputWriter

        if self.writer is None:
            _warn_odd_frame_size(frame.shape[:2], self.detector.cal)
            self.writer = OutputWriter(self.out_dir, self.fps, self.request.save_video, frame.shape[:2],
                                       self.detector.cal, self.detector.cfg.scoring, overwrite=self.request.overwrite)
        if self.first_latency is None:
            self.first_latency = time.perf_counter() - self.started
        self.writer.add(r.index, r.index / self.fps, r.score, r.boxes, r.box_scores, frame,
                        term_scores=r.term_scores, dominant=r.dominant)
        self.events.push(r.index, r.index / self.fps, r.score)


def _start_run(request: RunRequest, src) -> _Run:
    """Prepare the output folder and load the model (the old outputs are not touched)."""
    from lpgb.runtime.events import EventDetector
    from lpgb.runtime.frame_rate import warn_source_fps
    from lpgb.runtime.outputs import prepare_run_output

    out_dir = Path(request.out) if request.out else Path("runs") / "detect" / _safe_name(src.name)
    made = not out_dir.exists()
    prepare_run_output(out_dir, request.overwrite, source=request.source, model=request.model)
    started = time.perf_counter()
    try:
        detector = open_detector(request.model, request.backend, request.precision, request.device)
    except BaseException:  # a refused model (or Ctrl-C while it loads): no empty folder of ours left behind
        if made:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only while empty
        raise
    warn_source_fps(request.source, src, request.model)
    total = src.frame_count if src.frame_count else None
    if request.max_frames:
        total = min(total or request.max_frames, request.max_frames)
    return _Run(request, out_dir, src.fps, total, detector, EventDetector(detector.cal, detector.cfg.scoring), started)


def _score_loop(run: _Run, src, guard: "_StopSignals") -> Optional[_Stop]:
    """Score frames until the source ends or --max-frames; a stop (signal, undecodable frame, write
    error) is returned, not raised. From here on signals are held until `_finish_run` is done."""
    import itertools

    from lpgb.runtime.progress import progress_bar

    try:
        with progress_bar() as bar:
            task = bar.add_task("lpgb-run", total=run.total, info="")
            try:
                for frame in itertools.islice(src, run.request.max_frames or None):
                    r = run.detector.process(frame)
                    with guard.hold():  # a signal here waits until both files hold the whole frame
                        run.record(frame, r)
                    bar.update(task, advance=1, info=f"score {r.score:+.2f} boxes {len(r.boxes)}")
            except BaseException:
                bar.live.transient = True  # the stop message is the only line left
                raise
    except (KeyboardInterrupt, _Terminated) as exc:
        guard.hold_all()
        return _Stop(*_interrupt_reason(exc), exc)
    except LpgbError as exc:
        return _Stop(str(exc), 2, exc)
    except OSError as exc:
        return _Stop(f"cannot write the results ({exc.strerror or exc})", 2, exc)
    except Exception as exc:  # a bug: the scored frames are still closed and kept, then it is re-raised
        return _Stop(f"unexpected {type(exc).__name__}", 1, exc)
    finally:
        guard.hold_all()
    return None


def _finish_run(run: _Run, src, stop: Optional[_Stop], guard: "_StopSignals", labels: Optional[np.ndarray]) -> str:
    """Close the writer (summary files) and return the summary line, or raise the one-line stop."""
    from rich.markup import escape

    from lpgb.runtime.cli_common import console

    if run.scored == 0:
        if run.writer is not None:
            run.writer.abort()
        if stop is None:
            raise LpgbError(f"{run.request.source}: no frames to score")
        if isinstance(stop.error, (KeyboardInterrupt, _Terminated)):
            raise RunInterrupted(f"{stop.reason} before the first frame was scored; nothing written", stop.exit_code)
        if isinstance(stop.error, OSError):
            raise LpgbError(f"{stop.reason} in {run.out_dir}; nothing written") from None
        raise stop.error
    if stop is None and src.frame_count and not run.request.max_frames and run.detector.index < src.frame_count:
        console.print(f"[yellow]warning:[/] {run.request.source} announces {src.frame_count} frames but only "
                      f"{run.detector.index} could be decoded (truncated or damaged file?)", highlight=False)
    elapsed = time.perf_counter() - run.started
    found = run.events.finish()
    close_error = None
    try:
        run.writer.close(found, labels)
    except (OSError, LpgbError) as exc:
        close_error = exc
    if stop is None and guard.pending is not None:
        stop = _Stop(*_interrupt_reason(guard.pending_error()), guard.pending_error())
    if stop is not None and stop.exit_code == 1:
        console.print(f"[yellow]{escape(str(_stopped_error(run, stop, close_error)))}[/]", highlight=False,
                      soft_wrap=True)
        raise stop.error
    if stop is not None or close_error is not None:
        raise _stopped_error(run, stop, close_error)
    n = run.scored
    return (f"{n} frames in {elapsed:.1f}s ({n / elapsed:.1f} FPS incl. load; first score after "
            f"{run.first_latency:.2f}s), {len(found)} events, backend {run.request.backend} "
            f"[{', '.join(run.detector.backend.providers)}] -> {run.out_dir}")


def _stopped_error(run: _Run, stop: Optional[_Stop], close_error: Optional[BaseException]) -> LpgbError:
    """'stopped at frame 15 of 30: <why>; 15 scored frames kept in OUT' (+ why the summary is missing)."""
    n, of = run.scored, f" of {run.total}" if run.total else ""
    where = run.writer.results_dir
    kept = f"{n} scored frame{'s' if n != 1 else ''} kept in {where}"
    if close_error is not None:
        detail = close_error.strerror if isinstance(close_error, OSError) and close_error.strerror else close_error
        kept += f" (scores.csv, frames.jsonl; the summary files could not all be written: {detail})"
    if stop is None:
        return LpgbError(f"all {n} frames scored but {kept}")
    message = f"stopped at frame {n}{of}: {stop.reason}; {kept}"
    return RunInterrupted(message, stop.exit_code) if stop.exit_code in (130, 143) else LpgbError(message)


def _interrupt_reason(exc: BaseException) -> tuple[str, int]:
    """(reason, exit code) of a Ctrl-C (130) or SIGTERM (143) stop."""
    if isinstance(exc, _Terminated):
        return "terminated (SIGTERM)", 143
    return "interrupted (Ctrl-C)", 130


class _StopSignals(SignalGuard):
    """For the duration of run_source: SIGINT raises KeyboardInterrupt and SIGTERM `_Terminated`, but
    inside `hold()` (a frame being written) and after `hold_all()` (the summary) the first signal is
    only recorded in `pending`; a second one raises at once (forced stop). Installed and restored by
    `SignalGuard` (main thread only, never over an ignored signal)."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: Optional[int] = None
        self._holding = False

    def _handle(self, signum: int, _frame: object) -> None:
        if self._holding and self.pending is None:
            self.pending = signum
            return
        raise self._error(signum)  # not holding, or a second signal while holding: stop now

    @staticmethod
    def _error(signum: int) -> BaseException:
        return _Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    def pending_error(self) -> BaseException:
        """The exception of the held signal (`pending` must be set)."""
        return self._error(self.pending)

    def hold(self) -> "_Held":
        """A block in which signals are held; a held one is raised after it (unless the block raised)."""
        return _Held(self)

    def hold_all(self) -> None:
        """Hold every further signal (in `pending`) until the handlers are restored."""
        self._holding = True


class _Held:
    """`with guard.hold():` signals arriving in the block wait in `guard.pending` until it ends."""

    def __init__(self, guard: _StopSignals) -> None:
        self.guard = guard

    def __enter__(self) -> None:
        self.guard._holding = True

    def __exit__(self, exc_type, exc, tb) -> None:
        self.guard._holding = False
        if exc_type is None and self.guard.pending is not None:
            signum, self.guard.pending = self.guard.pending, None
            raise self.guard._error(signum)


MIN_FRAME_SIDE = 32  # pixels: smaller frames cannot show an object the proposals would find


TRAINING_SIZE_RATIO = 2.0  # frames taller/shorter than the training frames by more than this factor get a warning


def _warn_odd_frame_size(shape: tuple[int, ...], cal: Calibration) -> None:
    """One warning line for frames too small to hold objects, of an extreme aspect ratio, or of a size far
    from the training frames' (the motion proposals' areas and kernels are in pixels)."""
    from lpgb.runtime.cli_common import console

    h, w = int(shape[0]), int(shape[1])
    trained = cal.frame_size
    if trained and min(h, w) >= MIN_FRAME_SIDE and not (
            1 / TRAINING_SIZE_RATIO <= h / max(trained[0], 1) <= TRAINING_SIZE_RATIO):
        console.print(f"[yellow]warning:[/] frames of {w}x{h} pixels, but the model was fitted on {trained[1]}x"
                      f"{trained[0]} frames: the motion proposals work in pixels, so objects may be missed or "
                      "split; train on this camera's videos or resize them to the training size", highlight=False)
        return
    if min(h, w) < MIN_FRAME_SIDE:
        console.print(f"[yellow]warning:[/] frames of {w}x{h} pixels are too small to show objects "
                      f"(under {MIN_FRAME_SIDE} px); every frame will score the normal level", highlight=False)
    elif max(h, w) > 8 * min(h, w):
        console.print(f"[yellow]warning:[/] frames of {w}x{h} pixels have an extreme aspect ratio; is this the "
                      "camera the model was trained on?", highlight=False)


def _load_labels(path: Optional[Path]) -> Optional[np.ndarray]:
    """A .npy of per-frame labels (0 normal, 1 abnormal); anything else is a one-line error."""
    if path is None:
        return None
    from lpgb.runtime.datasets import load_npy

    if not Path(path).is_file():
        raise LpgbError(f"labels file {path} does not exist")
    values = load_npy(Path(path), "labels file")  # a text file is named as one, not as a pickle
    if values.dtype.kind not in "biuf" or values.size == 0 or not np.isin(values, (0, 1)).all():
        raise LpgbError(f"labels file {path} must hold per-frame 0/1 values, got {values.dtype} {values.shape}")
    return values.astype(np.uint8).reshape(-1)


def folder_name(text: str, empty: str = "source") -> str:
    """`text` as an output folder name: letters, digits and -_. kept, anything else `_`; `empty` if nothing."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text)) or empty


def _safe_name(name: str) -> str:
    return folder_name(Path(str(name)).stem)
