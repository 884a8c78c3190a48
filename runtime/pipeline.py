"""The streaming detection loop (torch-free), composed of stage objects:
decode -> Proposer (motion + RPN union) -> TubeBuilder (grouping, tube crops) -> [FlowEstimator] ->
TubeScorer (branch features -> fusion + SMM on a backend) -> TermScorer (score terms, calibration) ->
box and frame scores. One batched backend call per part per frame; stages a frame's terms do not
need are skipped (a velocity-only model runs no network but the RPN).

The lpgb-run application around it (output folder, writer, signals, labels) is `lpgb.runtime.runner`.
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
from lpgb.runtime.scoring import TermScorer, frame_score, load_terms
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
                term_curves.setdefault(name, []).append(  # a term alone: the max of its standardised values
                    float(np.max(values)) if np.size(values) else float(detector.cal.normal_level))
    return np.asarray(scores, np.float32), dict(times)
