"""Several streams in one process: one model, one backend shared through `BatchingBackend`, one thread and
one `Detector` per stream (its own background model, flow history, tubes, scoring and events), and one
output folder per stream (`OUT/<name>/`, the files `lpgb-run` writes for one source, streamed as scored).

A stream that fails (a source that cannot be opened, an undecodable frame) is reported in one line and the
others go on; a network source that drops is reopened with backoff (`StreamsConfig.retries`). Ctrl-C or
SIGTERM stops every stream after its current frame and keeps every scored frame.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from lpgb.runtime.errors import LpgbError
from lpgb.runtime.signals import SignalGuard

__all__ = ["StreamSpec", "StreamsConfig", "StreamOutcome", "StreamsInterrupted", "read_sources", "run_streams",
           "fleet_summary"]

Reporter = Callable[[str], None]
FrameCallback = Callable[[str, float], None]  # (stream name, frame score) after each written frame
LATENCY_WINDOW = 10_000  # frames per stream whose latency the summary's percentiles read


@dataclass(frozen=True)
class StreamSpec:
    """One source and the name of its output folder (`OUT/<name>/`)."""

    name: str
    source: str


@dataclass(frozen=True)
class StreamsConfig:
    """How several streams share a process. `retries`: reopenings of a network source that drops (waits
    1, 2, 4 ... s, at most `max_backoff_s`); `max_wait_s`: how long a stream's network request waits for
    the other streams' before its batch runs without them."""

    retries: int = 5
    max_backoff_s: float = 30.0
    max_wait_s: float = 0.02
    resume: bool = False  # continue each stream's folder a killed run left (frames recomputed, not rewritten)


@dataclass
class StreamOutcome:
    """What one stream did: frames scored, events found, its output folder, and why it stopped early."""

    spec: StreamSpec
    out_dir: Path
    scored: int = 0
    events: int = 0
    error: Optional[str] = None
    seconds: float = 0.0
    resumed: int = 0  # frames a killed run had written, kept and not written again (`StreamsConfig.resume`)
    # seconds per frame, from decode to written: the last LATENCY_WINDOW frames (flat memory on endless streams)
    latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))


def _is_network(source: str) -> bool:
    from lpgb.runtime.video import STREAM_PREFIXES

    return source.lower().startswith(STREAM_PREFIXES)


def _default_name(source: str) -> str:
    from lpgb.runtime.runner import folder_name

    text = source.rstrip("/")
    return folder_name(Path(text).stem if not _is_network(text) else text.split("://", 1)[1].replace("/", "_"),
                       "stream")


def read_sources(sources: Sequence[str], sources_file: Optional[Path], report: Reporter
                 ) -> list[StreamSpec]:
    """The streams of the command line (`sources`) and of `sources_file` (one source per line, optionally
    followed by a name; blank lines and `#` comments skipped). A local path that does not exist or a name
    used twice is reported in one line (`report`) and left out; the rest is returned."""
    entries: list[tuple[str, Optional[str], str]] = [(s, None, f"argument {s}") for s in sources]
    if sources_file is not None:
        path = Path(sources_file)
        if not path.is_file():
            raise LpgbError(f"sources file {sources_file} does not exist")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise LpgbError(f"cannot read the sources file {sources_file}: {exc}") from None
        for n, line in enumerate(lines, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            parts = text.split()
            if len(parts) > 2:
                report(f"{sources_file}:{n}: expected 'SOURCE [NAME]', got {line.strip()!r}; skipped")
                continue
            entries.append((parts[0], parts[1] if len(parts) == 2 else None, f"{sources_file}:{n}"))
    specs: list[StreamSpec] = []
    names: set[str] = set()
    for source, name, where in entries:
        if not _is_network(source) and not source.strip().isdigit() and not Path(source).expanduser().exists():
            report(f"{where}: no such video, frame folder or camera: {source}; skipped")
            continue
        chosen = name or _default_name(source)
        if chosen in names:
            report(f"{where}: the stream name {chosen!r} is used twice; skipped (give it a name of its own)")
            continue
        names.add(chosen)
        specs.append(StreamSpec(chosen, source))
    return specs


class _Stream:
    """One stream's loop: its source, detector, events and writer, on the shared backend."""

    def __init__(self, spec: StreamSpec, out_dir: Path, request, bundle, batcher, cfg: StreamsConfig,
                 stop: threading.Event, report: Reporter, on_frame: Optional[FrameCallback] = None) -> None:
        self.spec, self.request, self.bundle, self.batcher = spec, request, bundle, batcher
        self.cfg, self.stop, self.report, self.on_frame = cfg, stop, report, on_frame
        self.outcome = StreamOutcome(spec, out_dir)
        self.writer = None
        self.events = None

    def run(self) -> StreamOutcome:
        """Score the source until it ends, `request.max_frames`, a stop, or a failure (reported)."""
        from lpgb.runtime.events import EventDetector
        from lpgb.runtime.pipeline import Detector

        start = time.perf_counter()
        detector = Detector(self.bundle, self.batcher)
        self.events = EventDetector(detector.cal, detector.cfg.scoring)
        attempt = 0
        try:
            while not self.stop.is_set():
                try:
                    self._score(detector)
                    break
                except LpgbError as exc:
                    if not _is_network(self.spec.source) or attempt >= self.cfg.retries:
                        raise
                    wait = min(2.0 ** attempt, self.cfg.max_backoff_s)
                    attempt += 1
                    self.report(f"{self.spec.name}: {exc}; reconnecting in {wait:.0f}s "
                                f"(attempt {attempt}/{self.cfg.retries})")
                    self.stop.wait(wait)
        except LpgbError as exc:
            self.outcome.error = str(exc)
        except OSError as exc:
            self.outcome.error = f"cannot write the results ({exc.strerror or exc})"
        finally:
            self._close(detector)
            self.outcome.seconds = time.perf_counter() - start
        return self.outcome

    def _score(self, detector) -> None:
        from lpgb.runtime.video import open_source

        limit = self.request.max_frames
        with open_source(self.spec.source) as src:
            fps = src.fps
            frames = iter(src)
            while not self.stop.is_set() and not (limit and detector.index >= limit):
                t0 = time.perf_counter()
                frame = next(frames, None)
                if frame is None:
                    return
                with self.batcher.step():
                    r = detector.process(frame)
                if self._record(frame, r, fps):
                    self.outcome.latencies.append(time.perf_counter() - t0)

    def _record(self, frame: np.ndarray, r, fps: float) -> bool:
        """Write frame `r` (or, resuming, replay one the killed run wrote); False for a replayed frame."""
        from lpgb.runtime.outputs import OutputWriter

        fps = fps if fps and fps > 0 else 25.0
        if self.writer is None:
            self.writer = OutputWriter(self.outcome.out_dir, fps, self.request.save_video, frame.shape[:2],
                                       self.bundle.calibration, self.bundle.cfg.scoring,
                                       overwrite=self.request.overwrite and not self.cfg.resume,
                                       meta={"source": self.spec.source}, resume=self.cfg.resume)
            self.outcome.resumed = self.writer.resumed
        self.events.push(r.index, r.index / fps, r.score)
        if self.writer.count < self.writer.resumed:
            self.writer.replay(r.score)
            return False
        self.writer.add(r.index, r.index / fps, r.score, r.boxes, r.box_scores, frame,
                        term_scores=r.term_scores, dominant=r.dominant)
        self.outcome.scored = self.writer.count
        if self.on_frame is not None:
            self.on_frame(self.spec.name, r.score)
        return True

    def _close(self, detector) -> None:
        if self.writer is None:
            return
        found = self.events.finish()
        self.outcome.events = len(found)
        try:
            self.writer.close(found)
        except (OSError, LpgbError) as exc:
            self.outcome.error = self.outcome.error or f"the summary files could not all be written: {exc}"


def run_streams(request, specs: Sequence[StreamSpec], out: Path, cfg: StreamsConfig = StreamsConfig(),
                report: Optional[Reporter] = None, on_frame: Optional[FrameCallback] = None) -> list[StreamOutcome]:
    """Score every stream of `specs` in this process, each into `out/<name>/`; `request` is the
    `lpgb.runtime.runner.RunRequest` of the options every stream shares (its `source` and `out` unused).
    `on_frame(name, score)` is called from the stream's thread after each frame is written (a progress bar).
    Returns one outcome per stream; a stream's failure is in its outcome (and reported), not raised."""
    from lpgb.runtime.atomic import NewFolder
    from lpgb.runtime.backends.base import load_backend
    from lpgb.runtime.batching import BatchingBackend
    from lpgb.runtime.bundle import ModelBundle
    from lpgb.runtime.outputs import check_apart, finished_frames, prepare_run_output, resumable_output

    say = report or (lambda line: None)
    out = Path(out)
    made = [NewFolder.before(out)] + [NewFolder.before(out / s.name) for s in specs]  # undone if the model fails
    ready, settled = [], {}
    for spec in specs:  # each stream's folder is checked alone, before the model loads
        try:
            finished = finished_frames(out / spec.name) if cfg.resume else None
            if finished is not None:  # a retried run: this stream was done before the process died
                settled[spec.name] = StreamOutcome(spec, out / spec.name, scored=finished)
                continue
            if cfg.resume and resumable_output(out / spec.name):
                check_apart(out / spec.name, source=spec.source, model=request.model)
            else:
                prepare_run_output(out / spec.name, request.overwrite, source=spec.source, model=request.model)
            ready.append(spec)
        except LpgbError as exc:
            say(f"{spec.name}: {exc}; skipped")
            settled[spec.name] = StreamOutcome(spec, out / spec.name, error=f"skipped: {exc}")
    if not ready and not any(o.error is None for o in settled.values()):
        raise LpgbError("no stream can run: every source was missing or refused")
    if not ready:
        return [settled[s.name] for s in specs]
    try:
        bundle = ModelBundle.open(request.model, request.backend)
        batcher = BatchingBackend(load_backend(request.backend, bundle.folder, request.precision, request.device),
                                  cfg.max_wait_s)
    except BaseException:
        for folder in reversed(made):  # a refused model leaves no folder this call made (and nothing in it)
            folder.undo()
        raise
    stop = threading.Event()
    streams = [_Stream(s, out / s.name, request, bundle, batcher, cfg, stop, say, on_frame) for s in ready]
    outcomes: list[Optional[StreamOutcome]] = [None] * len(streams)

    def work(i: int) -> None:
        outcomes[i] = streams[i].run()

    threads = [threading.Thread(target=work, args=(i,), name=f"lpgb-stream-{s.spec.name}", daemon=True)
               for i, s in enumerate(streams)]
    with _StopOnSignals(stop) as signals:
        try:
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.2)
        finally:
            batcher.close()
    for o, s in zip(outcomes, streams):
        settled[s.spec.name] = o if o is not None else StreamOutcome(s.spec, s.outcome.out_dir, error="thread died")
        if settled[s.spec.name].error:
            say(f"{s.spec.name}: stopped after {settled[s.spec.name].scored} frames: {settled[s.spec.name].error}")
    done = [settled[s.name] for s in specs]
    if signals.received is not None:
        raise StreamsInterrupted(done, signals.received)
    return done


class StreamsInterrupted(LpgbError):
    """Ctrl-C (`exit_code` 130) or SIGTERM (143) stopped the streams; each finished its frame and closed its
    files, so every scored frame is kept. `outcomes` as `run_streams` returns them."""

    def __init__(self, outcomes: list[StreamOutcome], signum: int) -> None:
        import signal

        self.outcomes = outcomes
        self.exit_code = 143 if signum == signal.SIGTERM else 130
        why = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted (Ctrl-C)"
        super().__init__(f"{why}: {sum(o.scored for o in outcomes)} scored frames of {len(outcomes)} streams kept, "
                         "each in its folder")


class _StopOnSignals(SignalGuard):
    """While several streams run: the first SIGINT or SIGTERM sets `stop` (each stream finishes its frame
    and closes its files) and is kept in `received`; a second one stops at once. Installed and restored
    by `SignalGuard` (main thread only, never over an ignored signal)."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__()
        self.stop = stop
        self.received: Optional[int] = None

    def _handle(self, signum: int, _frame: object) -> None:
        if self.received is not None:
            raise KeyboardInterrupt  # a second signal: stop now
        self.received = signum
        self.stop.set()


def fleet_summary(outcomes: Sequence[StreamOutcome], seconds: float) -> str:
    """One line over all streams: frames, aggregate FPS, events, failures."""
    frames = sum(o.scored for o in outcomes)
    failed = [o.spec.name for o in outcomes if o.error]
    lat = np.concatenate([np.asarray(o.latencies, np.float64) for o in outcomes]) if outcomes else np.zeros(0)
    lat = lat if lat.size else np.zeros(1)  # every frame kept from before a resume: no latency measured
    return (f"{len(outcomes)} streams, {frames} frames in {seconds:.1f}s ({frames / max(seconds, 1e-9):.1f} FPS "
            f"together; per-frame latency p50 {1000 * np.median(lat):.0f} ms, p99 "
            f"{1000 * np.quantile(lat, 0.99):.0f} ms), {sum(o.events for o in outcomes)} events"
            + (f"; failed: {', '.join(failed)}" if failed else ""))
