"""Fit the configured score terms on normal training boxes and calibrate them (torch-free).

Input is a table of training boxes, `TrainingBoxes` (the trainer's tube cache, or boxes collected by
running the serving Proposer + TubeBuilder over the training videos), plus the network outputs for
those boxes when a term needs them. Each term computes its features through the same
`ScoreTerm.features(BoxEvidence)` it uses when serving; flow is computed by the serving
`FlowEstimator` over each training video in order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from lpgb.runtime.atomic import write_text_atomic
from lpgb.runtime.config import LpgbConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.flow import FlowEstimator
from lpgb.runtime.foreground import ForegroundEstimator
from lpgb.runtime.occupancy import OccupancyEstimator
from lpgb.runtime.scoring import TERM_STATES, Calibration, calibrate, save_term_states
from lpgb.runtime.terms import ScoreTerm, reads_networks, term_class
from lpgb.runtime.terms.base import MASK_EVIDENCE, BoxEvidence
from lpgb.runtime.tracks import Tracker
from lpgb.runtime.tubes import TubeBuilder

PER_FRAME_EVIDENCE = frozenset({"flow"}) | MASK_EVIDENCE  # computed from every frame of a video, in order

__all__ = ["TrainingBoxes", "collect_training_boxes", "fit_terms", "save_fitted", "load_training_scores",
           "TRAINING_SCORES"]

Progress = Callable[[int, int, str], None]
RowsFn = Callable[[TubeBuilder, object], np.ndarray]  # (builder, TubeBatch) -> (K, D) rows of the batch's boxes


@dataclass(frozen=True)
class TrainingBoxes:
    """boxes (M, 4) float32 grouped boxes; meta (M, 3+) int: video index, frame index, position among the
    frame's boxes, ...;
    frame_shapes (V, 2) (H, W) per video; rows (M, D) float32 or None: network rows of the same boxes."""

    boxes: np.ndarray
    meta: np.ndarray
    frame_shapes: np.ndarray
    rows: Optional[np.ndarray] = None  # (M, D) per-box network rows collected with the boxes (branch-1 features)

    @property
    def frame_keys(self) -> np.ndarray:
        return self.meta[:, 0].astype(np.int64) * 1_000_000 + self.meta[:, 1].astype(np.int64)


def collect_training_boxes(videos: Sequence, cfg: LpgbConfig, new_proposer: Callable[[], Callable],
                           progress: Optional[Progress] = None, rows: Optional[RowsFn] = None) -> TrainingBoxes:
    """Every grouped box of every frame of the training videos (after the tube buffer fills), made by
    the serving stages: a fresh proposer per video and `TubeBuilder` grouping (no crops). With `rows`
    (called as `rows(builder, batch)` on each frame's grouped boxes, e.g. the serving branch-1 features of
    their newest crops) the table also holds those rows, `TrainingBoxes.rows` (M, D)."""
    from lpgb.runtime.video import open_source

    boxes, meta, shapes, extra = [], [], [], []
    for v, item in enumerate(videos):
        propose, builder, shape = new_proposer(), TubeBuilder(cfg), None
        with open_source(item.source) as src:
            for f, frame in enumerate(src):
                shape = frame.shape[:2]
                batch = builder.push(frame, *propose(frame), crop=False)
                if builder.ready and len(batch.boxes):
                    boxes.append(batch.boxes)
                    meta.append(np.array([[v, f, k] for k in range(len(batch.boxes))], np.int64))
                    if rows is not None:
                        extra.append(np.asarray(rows(builder, batch), np.float32))
        if shape is None:
            raise LpgbError(f"training video {item.name} has no frames")
        shapes.append(shape)
        if progress:
            progress(v + 1, len(videos), f"{item.name}: {sum(len(m) for m in meta)} boxes")
    if not boxes:
        raise LpgbError("no objects were proposed in any training video: check the data or proposal settings")
    return TrainingBoxes(np.concatenate(boxes).astype(np.float32), np.concatenate(meta), np.asarray(shapes),
                         np.concatenate(extra) if rows is not None else None)


def _evidence_rows(table: TrainingBoxes, videos: Sequence, needs: frozenset[str], cfg: LpgbConfig,
                   tube_error: Optional[np.ndarray], fused: Optional[np.ndarray], patterns: Optional[np.ndarray],
                   progress: Optional[Progress]):
    """Yield (row indices, BoxEvidence) per training (video, frame) that has boxes."""
    from lpgb.runtime.video import open_source

    branch1 = table.rows if table.rows is not None else (  # (M, N) collected, or branch 1's half of patterns
        None if patterns is None else patterns[:, :patterns.shape[1] // 2])
    given = {"tube_error": tube_error, "fused": fused, "patterns": patterns, "branch1": branch1}
    if any(kind in needs and value is None for kind, value in given.items()):
        raise LpgbError("fitting these score terms needs the temporal part's outputs for the training boxes")
    order = np.lexsort((table.meta[:, 1], table.meta[:, 0]))
    vids = np.unique(table.meta[:, 0])
    for n, v in enumerate(vids):
        rows = order[table.meta[order, 0] == v]
        frames = table.meta[rows, 1]
        shape = tuple(int(x) for x in table.frame_shapes[v])

        tracker = Tracker() if "track" in needs else None

        def evidence(idx: np.ndarray, f: int, flow=None, foreground=None, occupancy=None) -> BoxEvidence:
            track = tracker.update(int(f), table.boxes[idx]) if tracker is not None else None
            return BoxEvidence(shape, table.boxes[idx], flow=flow, foreground=foreground, occupancy=occupancy,
                               track=track,
                               tube_error=None if tube_error is None else tube_error[idx],
                               fused=None if fused is None else fused[idx],
                               patterns=None if patterns is None else patterns[idx],
                               branch1=None if branch1 is None else branch1[idx])

        if not needs & PER_FRAME_EVIDENCE:
            for f in np.unique(frames):
                yield rows[frames == f], evidence(rows[frames == f], f)
        else:
            wanted = set(int(f) for f in frames)
            flows = FlowEstimator(cfg.flow) if "flow" in needs else None
            masks = ForegroundEstimator(cfg.proposals) if needs & MASK_EVIDENCE else None
            occupancies = OccupancyEstimator() if "occupancy" in needs else None
            with open_source(videos[int(v)].source) as src:
                for f, frame in enumerate(src):
                    flow = flows.update(frame) if flows is not None else None
                    foreground = masks.update(frame) if masks is not None else None
                    occupancy = occupancies.add(foreground) if occupancies is not None else None
                    if f in wanted:
                        yield rows[frames == f], evidence(rows[frames == f], f, flow, foreground, occupancy)
                    if f >= max(wanted):
                        break
        if progress:
            progress(n + 1, len(vids), "score-term features")


def _fit_named(cfg: LpgbConfig, names: Sequence[str], table: TrainingBoxes, videos: Sequence,
               tube_error: Optional[np.ndarray], fused: Optional[np.ndarray], patterns: Optional[np.ndarray],
               progress: Optional[Progress], read_outs: Optional[dict[str, dict[str, np.ndarray]]] = None
               ) -> tuple[list[ScoreTerm], dict[str, np.ndarray], np.ndarray]:
    """Fit the terms `names` on `table`; returns them, their held-out raw scores (M,) and the table row
    each score belongs to (M,) (rows come in video, frame order). `read_outs` {term: state}: the trained
    read-outs of terms whose state comes from training (`trained_read_out`), loaded before their fit."""
    terms = [term_class(n)(cfg) for n in names]
    for t in terms:
        if t.trained_read_out and read_outs and t.name in read_outs:
            t.load_state(read_outs[t.name])
    needs = frozenset().union(*(t.needs for t in terms))
    feats: dict[str, list] = {t.name: [] for t in terms}
    index: list[np.ndarray] = []
    for rows, ev in _evidence_rows(table, videos, needs, cfg, tube_error, fused, patterns, progress):
        index.append(rows)
        for t in terms:
            feats[t.name].append(t.features(ev))
    if not index:
        raise LpgbError("no training boxes to fit the score terms on")
    rows = np.concatenate(index)
    groups = table.meta[rows, 0]
    return terms, {t.name: t.fit(np.concatenate(feats[t.name]), groups) for t in terms}, rows


def _rows_in(table: TrainingBoxes, rows: np.ndarray, within: TrainingBoxes) -> np.ndarray:
    """For the boxes `table[rows]`, their row in `within` (every training box), matched on (video, frame,
    position in the frame); refuses if any is missing or differs (the tube cache must hold boxes the serving
    proposer and grouping made)."""
    ids = {tuple(r): i for i, r in enumerate(np.asarray(within.meta)[:, :3].tolist())}
    found = np.array([ids.get(tuple(r), -1) for r in np.asarray(table.meta)[rows, :3].tolist()], np.int64)
    if (found < 0).any() or not np.allclose(within.boxes[np.maximum(found, 0)], table.boxes[rows], atol=1e-3):
        raise LpgbError("the tube cache's boxes are not the serving proposer's boxes: rebuild it with "
                        "lpgb-train DATA --out RUN --stage temporal")
    return found


def fit_terms(cfg: LpgbConfig, table: TrainingBoxes, videos: Sequence, tube_error: Optional[np.ndarray] = None,
              fused: Optional[np.ndarray] = None, progress: Optional[Progress] = None,
              patterns: Optional[np.ndarray] = None, all_boxes: Optional[TrainingBoxes] = None,
              read_outs: Optional[dict[str, dict[str, np.ndarray]]] = None
              ) -> tuple[list[ScoreTerm], Calibration, dict[str, np.ndarray], np.ndarray]:
    """Fit `cfg.scoring.terms` on the training boxes; returns the terms, the calibration, each term's
    held-out raw training scores (M,) and their frame keys (M,) (for `save_fitted` and diagnostics).

    `table` holds the boxes the network outputs (`tube_error`, `fused`, `patterns`) belong to: the tube
    cache's subsample. With `all_boxes` (every grouped box of the training frames, `collect_training_boxes`),
    the terms that read no network output are fitted on all of them, as a model without network terms
    fits them, and all terms are calibrated together on `table`'s boxes (their held-out scores from those
    fits). `read_outs` {term: state}: read-outs trained with the networks (the `irregularity` term's)."""
    names = list(cfg.scoring.terms)
    free = [n for n in names if not reads_networks(n)]
    if all_boxes is None or not free or len(free) == len(names):
        terms, raw, rows = _fit_named(cfg, names, table, videos, tube_error, fused, patterns, progress, read_outs)
    else:
        networked = [n for n in names if n not in free]
        net_terms, raw, rows = _fit_named(cfg, networked, table, videos, tube_error, fused, patterns, progress,
                                          read_outs)
        free_terms, free_raw, free_rows = _fit_named(cfg, free, all_boxes, videos, None, None, None, progress)
        position = np.empty(len(all_boxes.boxes), np.int64)
        position[free_rows] = np.arange(len(free_rows))
        at = position[_rows_in(table, rows, all_boxes)]
        raw.update({n: v[at] for n, v in free_raw.items()})
        by_name = {t.name: t for t in (*net_terms, *free_terms)}
        terms, raw = [by_name[n] for n in names], {n: raw[n] for n in names}
    keys = table.frame_keys[rows]
    cal = calibrate(raw, keys, cfg.scoring)
    size = np.median(np.asarray(table.frame_shapes, np.float64).reshape(-1, 2), axis=0)
    cal = replace(cal, frame_size=(int(size[0]), int(size[1])))
    return terms, cal, raw, keys


TRAINING_SCORES = "term_training_scores.npz"


def save_fitted(folder: Path, terms: list[ScoreTerm], cal: Calibration,
                raw: Optional[dict[str, np.ndarray]] = None, frame_keys: Optional[np.ndarray] = None) -> None:
    """`folder/terms.npz` (term states) and `folder/calibration.json`, atomically; with `raw` also the
    held-out raw training scores per term and their frame keys (`term_training_scores.npz`), from which
    any subset of the terms can be recalibrated offline (`python -m lpgb.benchmarks.terms --model`)."""
    from lpgb.runtime.atomic import atomic_path

    save_term_states(Path(folder) / TERM_STATES, terms)
    write_text_atomic(Path(folder) / "calibration.json", json.dumps(cal.to_dict(), indent=2))
    if raw is not None and frame_keys is not None:
        with atomic_path(Path(folder) / TRAINING_SCORES) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, frame_keys=np.asarray(frame_keys), **{f"raw/{n}": v for n, v in raw.items()})


def load_training_scores(folder: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """What `save_fitted` stored: ({term: raw training scores (M,)}, frame keys (M,))."""
    path = Path(folder) / TRAINING_SCORES
    if not path.is_file():
        raise LpgbError(f"{path} not found: refit the terms with lpgb-train DATA --out RUN --stage calibrate")
    with np.load(path, allow_pickle=False) as data:
        return {k[4:]: data[k] for k in data.files if k.startswith("raw/")}, data["frame_keys"]
