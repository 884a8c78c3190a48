"""The tracker behind the trajectory term, and the term's features: path vs net speed."""

from __future__ import annotations

import numpy as np
import pytest

from lpgb.runtime.config import preset
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.terms import TERMS, BoxEvidence
from lpgb.runtime.terms.trajectory import trajectory_features
from lpgb.runtime.tracks import MAX_GAP, TRAIL_FRAMES, Tracker


def _box(cx: float, cy: float, w: float = 10.0, h: float = 20.0) -> np.ndarray:
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32)


def test_tracker_follows_two_objects_and_ends_a_lost_track():
    tracker = Tracker()
    for f in range(12):
        trail = tracker.update(f, np.stack([_box(20 + f, 50), _box(150 - f, 50)]))
    assert list(trail.length) == [12, 12]
    assert trail.centres[0, -1, 0] == pytest.approx(31.0) and trail.centres[1, -1, 0] == pytest.approx(139.0)
    assert trail.centres[0, 0, 0] == pytest.approx(20.0)  # padded with the oldest observation
    # the first object vanishes for longer than MAX_GAP frames: a box there later starts a new track
    f = 12 + MAX_GAP + 1
    for g in range(12, f):
        tracker.update(g, _box(150 - g, 50)[None])
    trail = tracker.update(f, np.stack([_box(20 + f, 50), _box(150 - f, 50)]))
    assert list(trail.length) == [1, f + 1]
    for g in range(f + 1, f + TRAIL_FRAMES + 5):
        trail = tracker.update(g, _box(150 - g, 50)[None])
    assert trail.length[0] == TRAIL_FRAMES and trail.frames[0, -1] - trail.frames[0, 0] == TRAIL_FRAMES - 1


def test_trajectory_features_tell_a_loiterer_from_a_walker_and_a_stander():
    tracker, frame_shape = Tracker(), (100, 400)
    for f in range(TRAIL_FRAMES):
        angle = 2 * np.pi * f / 15
        boxes = np.stack([_box(20 + 2 * f, 50), _box(200 + 8 * np.cos(angle), 50 + 8 * np.sin(angle)), _box(300, 50)])
        ev = BoxEvidence(frame_shape, boxes, track=tracker.update(f, boxes))
    path, net, log_h = trajectory_features(ev).T
    assert path[0] == pytest.approx(2.0, rel=0.01) and net[0] == pytest.approx(2.0, rel=0.01)  # % of height 100
    assert path[1] > 2.0 and net[1] < 0.5 * path[1]  # circling: long path, short displacement
    assert path[2] == 0 and net[2] == 0
    assert log_h == pytest.approx(np.log(0.2))
    term = TERMS["trajectory"](preset("tiny"))
    rows = np.random.default_rng(0).random((60, 3)).astype(np.float32)
    assert np.isfinite(term.fit(rows, np.repeat(np.arange(3), 20))).all()
    with pytest.raises(LpgbError, match="needs 'track'"):
        trajectory_features(BoxEvidence(frame_shape, boxes))
