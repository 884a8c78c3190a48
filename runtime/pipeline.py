"""The streaming detection loop (torch-free): decode -> proposals -> grouping -> tube crops ->
branch features -> fusion + SMM -> box and frame scores. One batched call per part per frame.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from lpgb.runtime.backends.base import Backend, load_backend
from lpgb.runtime.config import LpgbConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.motion import MotionProposer
from lpgb.runtime.preprocess import crops_to_input
from lpgb.runtime.proposals import frame_proposals, rpn_letterbox
from lpgb.runtime.scoring import Calibration, box_scores, frame_score
from lpgb.runtime.tubes import TubeBuilder

STAGES = ("proposals", "tubes", "branch1", "branch2", "smm", "scoring")


@dataclass(frozen=True)
class ModelInfo:
    """What a model folder provides: its config, training calibration, the folder a backend loads."""

    cfg: LpgbConfig
    calibration: Calibration
    backend_dir: Path
    has_rpn: bool


def resolve_model(path: Path, backend: str) -> ModelInfo:
    """Accept a run folder (RUN, uses RUN/export for exported backends) or an export folder."""
    path = Path(path)
    if not path.exists():
        raise LpgbError(f"model folder {path} does not exist (train one with lpgb-train, export with lpgb-export)")
    if backend == "torch":
        run_dir = path.parent if (path / "model.json").is_file() and not (path / "weights").is_dir() else path
        if not (run_dir / "weights").is_dir() or not (run_dir / "calibration.json").is_file():
            raise LpgbError(f"{run_dir} is not a finished lpgb run (needs weights/ and calibration.json)")
        cfg = LpgbConfig.load(run_dir / "config.json")
        cal = Calibration.from_dict(json.loads((run_dir / "calibration.json").read_text()))
        return ModelInfo(cfg, cal, run_dir, (run_dir / "weights" / "rpn.pt").is_file())
    from lpgb.runtime.sidecar import load_sidecar

    export_dir = path if (path / "model.json").is_file() else path / "export"
    if not (export_dir / "model.json").is_file():
        raise LpgbError(f"{path} has no exported model (model.json): run lpgb-export {path}")
    sidecar = load_sidecar(export_dir)
    cfg = LpgbConfig.from_dict(sidecar.config)
    return ModelInfo(cfg, Calibration.from_dict(sidecar.calibration), export_dir, "rpn" in sidecar.parts)


@dataclass
class FrameResult:
    """boxes (K,4) float32 frame pixels; box_scores (K,) calibrated; score: the frame's anomaly score."""

    index: int
    boxes: np.ndarray
    box_scores: np.ndarray
    score: float
    times: dict[str, float] = field(default_factory=dict)


class Detector:
    """Frame-by-frame anomaly scoring with any Backend; state = ring buffer + motion model."""

    def __init__(self, info: ModelInfo, backend: Backend) -> None:
        self.cfg, self.cal, self.backend = info.cfg, info.calibration, backend
        source = info.cfg.proposals.source
        self.use_rpn = source in ("rpn", "union") and info.has_rpn
        if source == "rpn" and not info.has_rpn:
            raise LpgbError("proposals.source is 'rpn' but the model has no RPN part")
        self.motion = MotionProposer(info.cfg.proposals) if source in ("motion", "union") else None
        self.tubes = TubeBuilder(info.cfg)
        self.index = 0

    def propose(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rpn_out = None
        if self.use_rpn:
            image, letterbox = rpn_letterbox(frame, self.cfg.proposals)
            out = self.backend.run("rpn", {"image": image})
            rpn_out = (letterbox.to_frame(out["boxes"]), out["scores"])
        return frame_proposals(frame, rpn_out, self.motion, self.cfg.proposals)

    def score_tubes(self, crops: np.ndarray, times: dict[str, float]) -> np.ndarray:
        """crops (K, L+1, S, S, 3) uint8 -> per-tube prediction error (K,)."""
        k, t = crops.shape[:2]
        x = crops_to_input(crops)  # (K*(L+1), 3, S, S)
        feats = {}
        for part in ("branch1", "branch2"):
            start = time.perf_counter()
            f = self.backend.run(part, {"crops": x})["features"]  # (K*(L+1), N_q, E_d)
            feats[part] = f.reshape(k, t, *f.shape[1:]).astype(np.float32)
            times[part] = time.perf_counter() - start
        start = time.perf_counter()
        error = self.backend.run("smm", {"f1": feats["branch1"], "f2": feats["branch2"]})["error"]
        times["smm"] = time.perf_counter() - start
        return error.reshape(k)

    def process(self, frame: np.ndarray) -> FrameResult:
        times: dict[str, float] = {}
        start = time.perf_counter()
        boxes, scores = self.propose(frame)
        times["proposals"] = time.perf_counter() - start
        start = time.perf_counter()
        batch = self.tubes.push(frame, boxes, scores)
        times["tubes"] = time.perf_counter() - start
        errors = self.score_tubes(batch.crops, times) if len(batch.boxes) else np.zeros(0, np.float32)
        start = time.perf_counter()
        b_scores = box_scores(errors, self.cal)
        score = frame_score(b_scores, self.cal)
        times["scoring"] = time.perf_counter() - start
        result = FrameResult(self.index, batch.boxes, b_scores, float(score), times)
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
    info = resolve_model(model, backend)
    return Detector(info, load_backend(backend, info.backend_dir, precision, device))


def score_frames(detector: Detector, frames, max_frames: int = 0) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Score an iterable of frames; returns scores (T,) and per-stage times (seconds per frame)."""
    scores, times = [], defaultdict(list)
    for i, frame in enumerate(frames):
        if max_frames and i >= max_frames:
            break
        r = detector.process(frame)
        scores.append(r.score)
        for k, v in r.times.items():
            times[k].append(v)
    return np.asarray(scores, np.float32), dict(times)


def run_source(request: RunRequest) -> str:
    """`lpgb-run`: stream a source through the detector and write all outputs; returns a summary line."""
    from lpgb.runtime.atomic import prepare_output_dir
    from lpgb.runtime.events import EventDetector
    from lpgb.runtime.outputs import OutputWriter
    from lpgb.runtime.progress import progress_bar
    from lpgb.runtime.video import open_source

    labels = _load_labels(request.labels)
    with open_source(request.source) as src:
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
                writer.add(r.index, r.index / src.fps, r.score, r.boxes, r.box_scores, frame)
                events.push(r.index, r.index / src.fps, r.score)
                bar.update(task, advance=1, info=f"score {r.score:+.2f} boxes {len(r.boxes)}")
        if writer is None:
            raise LpgbError(f"{request.source}: no frames to score")
        elapsed = time.perf_counter() - started
        found = events.finish()
        writer.close(found, labels)
    n = detector.index
    return (f"{n} frames in {elapsed:.1f}s ({n / elapsed:.1f} FPS incl. load; first score after "
            f"{first_latency:.2f}s), {len(found)} events, backend {request.backend} "
            f"[{', '.join(detector.backend.providers)}] -> {out_dir}")


def _load_labels(path: Optional[Path]) -> Optional[np.ndarray]:
    if path is None:
        return None
    if not Path(path).is_file():
        raise LpgbError(f"labels file {path} does not exist")
    return np.load(path).astype(np.uint8).reshape(-1)


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(str(name)).stem) or "source"
