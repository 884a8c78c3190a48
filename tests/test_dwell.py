"""Foreground mask and occupancy, and the dwell term: a blob that stays on one spot out-dwells one passing
through."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lpgb.runtime.config import preset
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.foreground import ForegroundEstimator, mask_window
from lpgb.runtime.geometry import box_window
from lpgb.runtime.motion import MotionProposer
from lpgb.runtime.occupancy import DWELL_FRAMES, OccupancyEstimator, OccupancyField
from lpgb.runtime.terms import TERMS, BoxEvidence
from lpgb.runtime.terms.dwell import dwell_features

H, W = 120, 200
WARMUP = 10


def _frames(n: int) -> list[np.ndarray]:
    """A textured background; from frame WARMUP on a walker crosses at 2 px/frame and a loiterer jiggles
    around x = 150 (both bright rectangles 10 x 30)."""
    rng = np.random.default_rng(0)
    background = rng.integers(60, 90, (H, W, 3), dtype=np.uint8)
    out = []
    for f in range(n):
        frame = background.copy()
        if f >= WARMUP:
            x = 10 + 2 * (f - WARMUP)
            frame[40:70, x:x + 10] = 230
            j = 145 + int(round(3 * np.sin(f / 2.0)))
            frame[40:70, j:j + 10] = 230
        out.append(frame)
    return out


def _cfg():
    cfg = preset("tiny")
    return replace(cfg, proposals=replace(cfg.proposals, motion_warmup=WARMUP))


def test_occupancy_of_a_loiterer_rises_and_a_passer_by_stays_low():
    cfg = _cfg()
    est, masks = OccupancyEstimator(), ForegroundEstimator(cfg.proposals)
    frames = _frames(WARMUP + 40)
    for frame in frames:
        field = est.add(masks.update(frame))
    walker = np.array([[10 + 2 * 39, 40, 10 + 2 * 39 + 10, 70]], np.float32)
    loiterer = np.array([[142, 40, 158, 70]], np.float32)
    ev = BoxEvidence((H, W), np.concatenate([walker, loiterer]), occupancy=field)
    dwell = dwell_features(ev)[:, 0]
    assert dwell[1] > 0.6 and dwell[0] < 0.35  # 40 frames on one spot vs about 5 frames under the walker
    assert field.occupancy.max() <= 1.0 and field.occupancy.min() >= 0.0
    assert field.occupancy.dtype == np.float32 and field.occupancy.shape == (H, W)


def test_foreground_is_empty_while_warming_up_then_the_proposers_mask():
    cfg = _cfg()
    own, motion = ForegroundEstimator(cfg.proposals), MotionProposer(cfg.proposals)
    shared = ForegroundEstimator(cfg.proposals, motion)
    frames = _frames(WARMUP + 5)
    for f, frame in enumerate(frames):
        motion.update(frame)
        a, b = own.update(frame), shared.update(frame)
        np.testing.assert_array_equal(a.mask, b.mask)
        assert a.mask.shape == (H, W) and a.mask.dtype == bool
        if f < WARMUP:
            assert not a.mask.any()
    np.testing.assert_array_equal(a.mask, motion.mask > 0)
    j = 145 + int(round(3 * np.sin((len(frames) - 1) / 2.0)))  # the loiterer's left edge in the last frame
    assert a.mask[42:68, j + 1:j + 9].all() and not a.mask[:, :5].any()  # the loiterer; the empty left edge
    box = np.array([j, 40, j + 10, 70], np.float32)
    half = mask_window(a.mask, box, (H // 2, W // 2), scale=0.5)  # the mask on a half-size grid
    rows, cols = box_window(box, H // 2, W // 2, scale=0.5)
    assert half.shape == (rows.stop - rows.start, cols.stop - cols.start) and half[1:-1, 1:-1].all()
    assert mask_window(a.mask, box, (H, W)).shape == (30, 10)


def test_occupancy_reuses_the_proposers_mask_with_the_same_result():
    cfg = _cfg()
    motion = MotionProposer(cfg.proposals)
    own = (OccupancyEstimator(), ForegroundEstimator(cfg.proposals))
    shared = (OccupancyEstimator(), ForegroundEstimator(cfg.proposals, motion))
    for frame in _frames(WARMUP + 12):
        motion.update(frame)
        a, b = (occupancy.add(masks.update(frame)) for occupancy, masks in (own, shared))
    np.testing.assert_array_equal(a.occupancy, b.occupancy)
    assert a.occupancy.max() > 0
    # the moving average: a pixel covered in every frame since the warm-up ended
    covered = 1 - (1 - 1 / DWELL_FRAMES) ** 12
    assert a.occupancy.max() == pytest.approx(covered, rel=1e-4)


def test_dwell_term_fits_scores_and_needs_occupancy():
    term = TERMS["dwell"](_cfg())
    rng = np.random.default_rng(0)
    rows = (0.3 * rng.random((90, 1))).astype(np.float32)
    held_out = term.fit(rows, np.repeat(np.arange(3), 30))
    assert np.isfinite(held_out).all()
    high, low = term.score(np.array([[0.9], [0.15]], np.float32))
    assert high > low
    box = np.array([[0, 0, 5, 5]], np.float32)
    with pytest.raises(LpgbError, match="needs 'occupancy'"):
        dwell_features(BoxEvidence((H, W), box))
    field = OccupancyField(np.ones((H, W), np.float32))
    assert dwell_features(BoxEvidence((H, W), np.array([[-5, -5, 500, 500]], np.float32), occupancy=field))[0, 0] == 1.0
