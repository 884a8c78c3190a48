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
from lpgb.runtime.config import LpgbConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.flow import FlowEstimator
from lpgb.runtime.preprocess import crops_to_input
from lpgb.runtime.proposer import Proposer, backend_rpn
from lpgb.runtime.bundle import ModelBundle
from lpgb.runtime.scoring import TermScorer, frame_score, load_terms
from lpgb.runtime.terms.base import BoxEvidence
from lpgb.runtime.tubes import TubeBuilder

STAGES = ("proposals", "tubes", "flow", "branch1", "branch2", "smm", "scoring")


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
    """The tube-feature stage on a backend: crops -> branch1, branch2 -> temporal part (`smm`)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def __call__(self, crops: np.ndarray, times: dict[str, float]) -> dict[str, np.ndarray]:
        """crops (K, L+1, S, S, 3) uint8 -> {"tube_error": (K,), "patterns": (K, 2N), "fused": (K, N) or absent}."""
        k, t = crops.shape[:2]
        x = crops_to_input(crops)  # (K*(L+1), 3, S, S)
        feats = {}
        for part in ("branch1", "branch2"):
            start = time.perf_counter()
            f = self.backend.run(part, {"crops": x})["features"]  # (K*(L+1), N_q, E_d)
            feats[part] = f.reshape(k, t, *f.shape[1:]).astype(np.float32)
            times[part] = time.perf_counter() - start
        start = time.perf_counter()
        out = self.backend.run("smm", {"f1": feats["branch1"], "f2": feats["branch2"]})
        times["smm"] = time.perf_counter() - start
        result = {"tube_error": out["error"].reshape(k),
                  "patterns": np.concatenate([feats["branch1"][:, -1].reshape(k, -1),
                                              feats["branch2"][:, -1].reshape(k, -1)], axis=1)}
        if "current" in out:
            result["fused"] = out["current"].reshape(k, -1)
        return result


class Detector:
    """Frame-by-frame anomaly scoring with any Backend; composes the stage objects (one per video)."""

    def __init__(self, info: ModelBundle, backend: Optional[Backend]) -> None:
        self.cfg, self.cal, self.backend = info.cfg, info.calibration, backend
        self.proposer = Proposer(info.cfg.proposals, backend_rpn(backend) if info.has_rpn else None)
        self.tubes = TubeBuilder(info.cfg)
        self.scorer = TermScorer(info.cfg, info.calibration, load_terms(info.cfg, info.folder))
        needs = self.scorer.needs
        self.flow = FlowEstimator() if "flow" in needs else None
        self.tube_scorer = TubeScorer(backend) if needs & {"tube_error", "fused", "patterns"} else None
        self.needs_fused = "fused" in needs
        self.index = 0

    def evidence(self, frame: np.ndarray, boxes: np.ndarray, crops: np.ndarray,
                 times: dict[str, float]) -> BoxEvidence:
        """What the score terms need for the frame's grouped boxes, computing only that."""
        start = time.perf_counter()
        flow = self.flow.update(frame) if self.flow is not None else None
        times["flow"] = time.perf_counter() - start
        tube = {}
        if self.tube_scorer is not None and len(boxes):
            tube = self.tube_scorer(crops, times)
            if self.needs_fused and "fused" not in tube:
                raise LpgbError("the appearance term needs the temporal part's 'current' output, which this "
                                "export lacks: re-export the run with this lpgb (lpgb-export RUN --overwrite)")
        return BoxEvidence(frame.shape[:2], boxes, flow=flow, tube_error=tube.get("tube_error"),
                           fused=tube.get("fused"), patterns=tube.get("patterns"))

    def process(self, frame: np.ndarray) -> FrameResult:
        times: dict[str, float] = {}
        start = time.perf_counter()
        boxes, scores = self.proposer(frame)
        times["proposals"] = time.perf_counter() - start
        start = time.perf_counter()
        batch = self.tubes.push(frame, boxes, scores, crop=self.tube_scorer is not None)
        times["tubes"] = time.perf_counter() - start
        evidence = self.evidence(frame, batch.boxes, batch.crops, times)
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


def run_source(request: RunRequest) -> str:
    """`lpgb-run`: stream a source through the detector and write all outputs; returns a summary line."""
    from lpgb.runtime.atomic import prepare_output_dir
    from lpgb.runtime.cli_common import console
    from lpgb.runtime.events import EventDetector
    from lpgb.runtime.outputs import OutputWriter
    from lpgb.runtime.progress import progress_bar
    from lpgb.runtime.video import open_source

    if request.max_frames < 0:
        raise LpgbError(f"--max-frames must be >= 0 (0 = the whole source), got {request.max_frames}")
    labels = _load_labels(request.labels)
    with open_source(request.source) as src:
        if labels is not None and src.frame_count and len(labels) != src.frame_count:
            raise LpgbError(f"--labels has {len(labels)} values but {request.source} has {src.frame_count} frames")
        out_dir = Path(request.out) if request.out else Path("runs") / "detect" / _safe_name(src.name)
        prepare_output_dir(out_dir, request.overwrite)
        started = time.perf_counter()
        detector = open_detector(request.model, request.backend, request.precision, request.device)
        events = EventDetector(detector.cal, detector.cfg.scoring)
        writer = None
        total = src.frame_count if src.frame_count else None
        if request.max_frames:
            total = min(total or request.max_frames, request.max_frames)
        first_latency = None
        with progress_bar() as bar:
            task = bar.add_task("lpgb-run", total=total, info="")
            for i, frame in enumerate(src):
                if request.max_frames and i >= request.max_frames:
                    break
                if writer is None:
                    writer = OutputWriter(out_dir, src.fps, request.save_video, frame.shape[:2], detector.cal,
                                          detector.cfg.scoring, overwrite=request.overwrite)
                r = detector.process(frame)
                if first_latency is None:
                    first_latency = time.perf_counter() - started
                writer.add(r.index, r.index / src.fps, r.score, r.boxes, r.box_scores, frame,
                           term_scores=r.term_scores, dominant=r.dominant)
                events.push(r.index, r.index / src.fps, r.score)
                bar.update(task, advance=1, info=f"score {r.score:+.2f} boxes {len(r.boxes)}")
        if writer is None:
            raise LpgbError(f"{request.source}: no frames to score")
        if src.frame_count and not request.max_frames and detector.index < src.frame_count:
            console.print(f"[yellow]warning:[/] {request.source} announces {src.frame_count} frames but only "
                          f"{detector.index} could be decoded (truncated or damaged file?)", highlight=False)
        elapsed = time.perf_counter() - started
        found = events.finish()
        writer.close(found, labels)
    n = detector.index
    return (f"{n} frames in {elapsed:.1f}s ({n / elapsed:.1f} FPS incl. load; first score after "
            f"{first_latency:.2f}s), {len(found)} events, backend {request.backend} "
            f"[{', '.join(detector.backend.providers)}] -> {out_dir}")


def _load_labels(path: Optional[Path]) -> Optional[np.ndarray]:
    """A .npy of per-frame labels (0 normal, 1 abnormal); anything else is a one-line error."""
    if path is None:
        return None
    if not Path(path).is_file():
        raise LpgbError(f"labels file {path} does not exist")
    try:
        values = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise LpgbError(f"labels file {path} is not a numeric .npy array ({str(exc).splitlines()[0]})") from None
    if values.dtype.kind not in "biuf" or values.size == 0 or not np.isin(values, (0, 1)).all():
        raise LpgbError(f"labels file {path} must hold per-frame 0/1 values, got {values.dtype} {values.shape}")
    return values.astype(np.uint8).reshape(-1)


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(str(name)).stem) or "source"
