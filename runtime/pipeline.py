"""The streaming detection loop (torch-free), composed of stage objects:
decode -> Proposer (motion + RPN union) -> TubeBuilder (grouping, tube crops) -> [FlowEstimator] ->
TubeScorer (branch features -> fusion + SMM on a backend) -> TermScorer (score terms, calibration) ->
box and frame scores. One batched backend call per part per frame; stages a frame's terms do not
need are skipped (a velocity-only model runs no network but the RPN).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from lpgb.runtime.backends.base import Backend, load_backend
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.feature_cache import FeatureCache
from lpgb.runtime.flow import FlowEstimator
from lpgb.runtime.foreground import ForegroundEstimator
from lpgb.runtime.preprocess import crops_to_input, encode_tubes
from lpgb.runtime.proposer import Proposer, backend_rpn
from lpgb.runtime.bundle import ModelBundle
from lpgb.runtime.scoring import Calibration, TermScorer, frame_score, load_terms
from lpgb.runtime.terms import network_path
from lpgb.runtime.terms.base import MASK_EVIDENCE, BoxEvidence
from lpgb.runtime.occupancy import OccupancyEstimator
from lpgb.runtime.tracks import Tracker
from lpgb.runtime.tubes import TubeBatch, TubeBuilder


@dataclass
class FrameResult:
    """boxes (K,4) float32 frame pixels; box_scores (K,) combined; term_scores {term: (K,)} standardised;
    score: the frame's anomaly score."""

    index: int
    boxes: np.ndarray
    box_scores: np.ndarray
    score: float
    times: dict[str, float] = field(default_factory=dict)
    term_scores: dict[str, np.ndarray] = field(default_factory=dict)
    dominant: list[str] = field(default_factory=list)


class TubeScorer:
    """The tube-feature stage on a backend: crops -> branch1, branch2 -> temporal part (`smm`).

    With a `FeatureCache`, `score_batch` cuts and runs through the branches only the (frame, region)
    crops not seen before (same crop and preprocessing, so the features are those of the uncached path).
    `crops_run` counts the crops that went through the branches (each through both).
    """

    def __init__(self, backend: Backend, cache: Optional[FeatureCache] = None, input_form: str = "rgb") -> None:
        self.backend = backend
        # a motion-encoded crop depends on the frames before it, which the (frame, region) cache key does not
        # name (runtime/preprocess.encode_tubes), so motion input runs without the cache
        self.cache = cache if input_form == "rgb" else None
        self.input_form = input_form
        self.crops_run = 0

    def __call__(self, crops: np.ndarray, times: dict[str, float]) -> dict[str, np.ndarray]:
        """crops (K, L+1, S, S, 3) uint8 -> {"tube_error": (K,), "patterns": (K, 2N), "fused": (K, N) or absent}."""
        k, t = crops.shape[:2]
        f1, f2 = self._branches(encode_tubes(crops, self.input_form), times)  # (K*(L+1), N_q, E_d) each
        return self._temporal(f1.reshape(k, t, *f1.shape[1:]), f2.reshape(k, t, *f2.shape[1:]), times)

    def patterns_batch(self, tubes: TubeBuilder, batch: TubeBatch, times: dict[str, float],
                       both: bool = True) -> dict[str, np.ndarray]:
        """Only the branch features of each region's newest crop: {"patterns": (K, 2N), "branch1": (K, N)},
        what the `patterns` and `irregularity` terms read, with one crop per object through each branch (with
        `both` False through branch 1 only, and no "patterns") and no temporal part. The crop is encoded as in
        a whole tube (its motion channels from the two frames before, same region), so the rows equal
        `__call__`'s."""
        start = time.perf_counter()
        indices = tubes.window_indices()
        steps = indices[-3:] if self.input_form == "motion" else indices[-1:]  # (T',) frames t-2..t or t
        k = len(batch.regions)
        crops = tubes.crop_indexed(np.tile(steps, k), np.repeat(batch.regions, len(steps), axis=0))
        newest = encode_tubes(crops.reshape(k, len(steps), *crops.shape[1:]), self.input_form)[:, -1]
        times["tubes"] = times.get("tubes", 0.0) + time.perf_counter() - start
        if not both:
            return {"branch1": self._branch(1, crops_to_input(newest), times).reshape(k, -1)}
        f1, f2 = self._branches(newest, times)  # (K, N_q, E_d) each
        return {"patterns": np.concatenate([f1.reshape(k, -1), f2.reshape(k, -1)], axis=1),
                "branch1": f1.reshape(k, -1)}

    def score_batch(self, tubes: TubeBuilder, batch: TubeBatch, times: dict[str, float]) -> dict[str, np.ndarray]:
        """The tubes of `batch`, the frame just pushed to `tubes`: like `__call__` on their crops, but with
        a cache only the crops it lacks are cut (from `tubes`' buffer) and run. Same dict as `__call__`."""
        if self.cache is None:
            return self(batch.crops if batch.crops.shape[1] else tubes.crop(batch.regions), times)
        cache = self.cache
        indices = tubes.window_indices()  # (L+1,)
        keys = [[cache.key(i, region) for i in indices] for region in batch.regions]
        cache.stats.lookups += len(keys) * len(indices)
        cache.stats.hits += sum(key in cache for row in keys for key in row)  # found from earlier frames
        missing = list(dict.fromkeys(key for row in keys for key in row if key not in cache))
        if missing:
            start = time.perf_counter()
            crops = tubes.crop_indexed(np.array([m[0] for m in missing]), np.array([m[1:] for m in missing]))
            times["tubes"] = times.get("tubes", 0.0) + time.perf_counter() - start
            f1, f2 = self._branches(crops, times)
            for key, a, b in zip(missing, f1, f2):
                cache.put(key, a, b)
            cache.stats.computed += len(missing)
        else:
            times["branch1"] = times["branch2"] = 0.0
        pairs = [[cache.get(key) for key in row] for row in keys]
        f1 = np.stack([np.stack([a for a, _ in row]) for row in pairs])  # (K, L+1, N_q, E_d)
        f2 = np.stack([np.stack([b for _, b in row]) for row in pairs])
        return self._temporal(f1, f2, times)

    def _branches(self, crops: np.ndarray, times: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """crops (..., S, S, 3) uint8 -> branch1, branch2 features, each (B, N_q, E_d) float32 (B = crops)."""
        x = crops_to_input(crops)  # (B, 3, S, S)
        return self._branch(1, x, times), self._branch(2, x, times)

    def _branch(self, branch_id: int, x: np.ndarray, times: dict[str, float]) -> np.ndarray:
        """Branch input x (B, 3, S, S) float32 -> that branch's features (B, N_q, E_d) float32; counts the
        crops once (at branch 1) in `crops_run`."""
        part = f"branch{branch_id}"
        self.crops_run += x.shape[0] if branch_id == 1 else 0
        start = time.perf_counter()
        feats = self.backend.run(part, {"crops": x})["features"].astype(np.float32)
        times[part] = time.perf_counter() - start
        return feats

    def _temporal(self, f1: np.ndarray, f2: np.ndarray, times: dict[str, float]) -> dict[str, np.ndarray]:
        """f1, f2 (K, L+1, N_q, E_d) -> the fusion + SMM outputs as in `__call__`."""
        k = f1.shape[0]
        start = time.perf_counter()
        out = self.backend.run("smm", {"f1": f1, "f2": f2})
        times["smm"] = time.perf_counter() - start
        result = {"tube_error": out["error"].reshape(k),
                  "patterns": np.concatenate([f1[:, -1].reshape(k, -1), f2[:, -1].reshape(k, -1)], axis=1),
                  "branch1": f1[:, -1].reshape(k, -1)}
        if "current" in out:
            result["fused"] = out["current"].reshape(k, -1)
        return result


class Detector:
    """Frame-by-frame anomaly scoring with any Backend; composes the stage objects (one per video).

    `feature_cache`: reuse the branch features of (frame, region) crops already run (runtime/feature_cache.py);
    the scores are the same as without it, only fewer crops go through the branches.
    """

    def __init__(self, info: ModelBundle, backend: Optional[Backend], feature_cache: bool = True) -> None:
        self.cfg, self.cal, self.backend = info.cfg, info.calibration, backend
        self.proposer = Proposer(info.cfg.proposals, backend_rpn(backend) if info.has_rpn else None)
        self.tubes = TubeBuilder(info.cfg)
        self.scorer = TermScorer(info.cfg, info.calibration, load_terms(info.cfg, info.folder))
        needs = self.scorer.needs
        self.flow = FlowEstimator(info.cfg.flow) if "flow" in needs else None
        masks = needs & MASK_EVIDENCE
        self.foreground = ForegroundEstimator(info.cfg.proposals, self.proposer.motion) if masks else None
        self.occupancy = OccupancyEstimator() if "occupancy" in needs else None
        self.tracker = Tracker() if "track" in needs else None
        cache = FeatureCache() if feature_cache else None
        path = network_path(needs)
        self.tube_scorer = TubeScorer(backend, cache, info.cfg.spatial.input_form) if path != "none" else None
        self.needs_fused = "fused" in needs
        self.patterns_only = path in ("patterns", "branch1")  # newest crops through the branches, no tubes, no SMM
        self.both_branches = path != "branch1"
        self.index = 0

    def evidence(self, frame: np.ndarray, batch: TubeBatch, times: dict[str, float]) -> BoxEvidence:
        """What the score terms need for the frame's grouped boxes (`batch`, just pushed), computing only that."""
        boxes = batch.boxes
        start = time.perf_counter()
        flow = self.flow.update(frame) if self.flow is not None else None
        times["flow"] = time.perf_counter() - start
        foreground = occupancy = None
        if self.foreground is not None:
            start = time.perf_counter()
            foreground = self.foreground.update(frame)
            times["foreground"] = time.perf_counter() - start
        if self.occupancy is not None:
            start = time.perf_counter()
            occupancy = self.occupancy.add(foreground)
            times["occupancy"] = time.perf_counter() - start
        track = None
        if self.tracker is not None:
            start = time.perf_counter()
            track = self.tracker.update(self.index, boxes)
            times["tracks"] = time.perf_counter() - start
        tube = {}
        if self.tube_scorer is not None and len(boxes) and self.patterns_only:
            tube = self.tube_scorer.patterns_batch(self.tubes, batch, times, both=self.both_branches)
        elif self.tube_scorer is not None and len(boxes):
            tube = self.tube_scorer.score_batch(self.tubes, batch, times)
            if self.needs_fused and "fused" not in tube:
                raise LpgbError("the appearance term needs the temporal part's 'current' output, which this "
                                "export lacks: re-export the run with this lpgb (lpgb-export RUN --overwrite)")
        return BoxEvidence(frame.shape[:2], boxes, flow=flow, foreground=foreground, occupancy=occupancy,
                           track=track, tube_error=tube.get("tube_error"), fused=tube.get("fused"),
                           patterns=tube.get("patterns"), branch1=tube.get("branch1"))

    def process(self, frame: np.ndarray) -> FrameResult:
        times: dict[str, float] = {}
        start = time.perf_counter()
        boxes, scores = self.proposer(frame)
        times["proposals"] = time.perf_counter() - start
        start = time.perf_counter()
        cache = self.tube_scorer.cache if self.tube_scorer is not None else None
        cut = self.tube_scorer is not None and cache is None and not self.patterns_only
        batch = self.tubes.push(frame, boxes, scores, crop=cut)
        if cache is not None and not self.patterns_only:
            cache.evict_before(int(self.tubes.window_indices()[0]))  # frames that left the buffer
        times["tubes"] = time.perf_counter() - start
        evidence = self.evidence(frame, batch, times)
        start = time.perf_counter()
        scored = self.scorer.score(evidence, times)
        score = frame_score(scored.combined, self.cal)
        times["scoring"] = time.perf_counter() - start
        result = FrameResult(self.index, batch.boxes, scored.combined, float(score), times, scored.terms,
                             scored.dominant())
        self.index += 1
        return result


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


def open_detector(model: Path, backend: str, precision: str = "fp32", device: str = "cpu") -> Detector:
    bundle = ModelBundle.open(model, backend)
    return Detector(bundle, load_backend(backend, bundle.folder, precision, device))


def score_frames(detector: Detector, frames, max_frames: int = 0,
                 term_curves: Optional[dict[str, list[float]]] = None) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Score an iterable of frames; returns scores (T,) and per-stage times (seconds per frame).

    `term_curves`, when given, receives per term the frame curve of that term alone (max over the
    frame's boxes of its standardised value, the normal level without boxes).
    """
    scores, times = [], defaultdict(list)
    for i, frame in enumerate(frames):
        if max_frames and i >= max_frames:
            break
        r = detector.process(frame)
        scores.append(r.score)
        for k, v in r.times.items():
            times[k].append(v)
        if term_curves is not None:
            for name, values in r.term_scores.items():
                term_curves.setdefault(name, []).append(frame_score(values, detector.cal))
    return np.asarray(scores, np.float32), dict(times)


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
    prepare_run_output(out_dir, request.overwrite, source=request.source, model=request.model)
    started = time.perf_counter()
    detector = open_detector(request.model, request.backend, request.precision, request.device)
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


class _StopSignals:
    """For the duration of run_source: SIGINT raises KeyboardInterrupt and SIGTERM `_Terminated`, but
    inside `hold()` (a frame being written) and after `hold_all()` (the summary) the first signal is
    only recorded in `pending`; a second one raises at once (forced stop). Handlers are installed from
    the main thread only (else left as they are), never over an ignored signal, and restored at exit."""

    def __init__(self) -> None:
        self.pending: Optional[int] = None
        self._holding = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> "_StopSignals":
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            old = signal.getsignal(sig)
            if old is not None and old != signal.SIG_IGN:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum: int, _frame: object) -> None:
        if self._holding and self.pending is None:
            self.pending = signum
            return
        raise self._error(signum)  # not holding, or a second signal while holding: stop now

    @staticmethod
    def _error(signum: int) -> BaseException:
        import signal

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


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(str(name)).stem) or "source"
