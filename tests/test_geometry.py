"""Grouping rules of paper 3.1 / 4.2: merge overlapping, square, enlarge, pad, same region."""

import numpy as np
import pytest

from lpgb.runtime.config import ProposalConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.geometry import (
    crop_region, enlarge, group_boxes, iou_matrix, make_square, merge_overlapping, tube_regions,
)


def B(*rows):
    return np.array(rows, np.float32).reshape(-1, 4)


def test_merge_chain_and_isolated():
    # A overlaps B, B overlaps C, A does not touch C -> one union; D stays alone.
    boxes = B([0, 0, 10, 10], [8, 0, 20, 10], [18, 5, 30, 20], [50, 50, 60, 60])
    scores = np.array([0.6, 0.9, 0.7, 0.8], np.float32)
    out, s = merge_overlapping(boxes, scores)
    np.testing.assert_array_equal(out, B([0, 0, 30, 20], [50, 50, 60, 60]))
    np.testing.assert_array_equal(s, np.array([0.9, 0.8], np.float32))
    assert out.dtype == np.float32 and s.dtype == np.float32


def test_merge_touching_edges_do_not_merge_and_order_independent():
    boxes = B([0, 0, 10, 10], [10, 0, 20, 10])  # share an edge: intersection area 0
    out, _ = merge_overlapping(boxes, np.ones(2, np.float32))
    np.testing.assert_array_equal(out, boxes)
    # chain given out of order still merges into one
    boxes = B([18, 5, 30, 20], [0, 0, 10, 10], [8, 0, 20, 10])
    out, s = merge_overlapping(boxes, np.array([0.1, 0.2, 0.3], np.float32))
    np.testing.assert_array_equal(out, B([0, 0, 30, 20]))
    np.testing.assert_allclose(s, [0.3])


def test_merge_empty():
    out, s = merge_overlapping(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    assert out.shape == (0, 4) and s.shape == (0,)


def test_make_square_grows_short_side_symmetrically():
    out = make_square(B([10, 20, 30, 60], [0, 0, 40, 10], [5, 5, 15, 15]))
    np.testing.assert_allclose(out, B([0, 20, 40, 60], [0, -15, 40, 25], [5, 5, 15, 15]))


def test_enlarge_about_centre():
    out = enlarge(B([10, 10, 50, 30]), 1.25)
    np.testing.assert_allclose(out, B([5, 7.5, 55, 32.5]))
    with pytest.raises(LpgbError):
        enlarge(B([0, 0, 1, 1]), 0)


def test_tube_regions_pipeline():
    cfg = ProposalConfig(context_scale=1.25)
    # two overlapping boxes -> union (0,0,40,20) -> square side 40 centred (20,10) -> 50 -> [-5,-15,45,35]
    regions = tube_regions(B([0, 0, 20, 20], [10, 0, 40, 20], [100, 100, 108, 116]), (160, 240, 3), cfg)
    assert regions.dtype.kind == "i" and regions.shape == (2, 4)
    np.testing.assert_array_equal(regions[0], [-5, -15, 45, 35])
    # (100,100,108,116): side 16 centred (104,108) -> 20 -> [94, 98, 114, 118]
    np.testing.assert_array_equal(regions[1], [94, 98, 114, 118])
    sides = regions[:, 2:] - regions[:, :2]
    assert (sides[:, 0] == sides[:, 1]).all()


def test_tube_regions_without_merge_and_empty():
    cfg = ProposalConfig(merge_overlapping=False, context_scale=1.0)
    regions = tube_regions(B([0, 0, 20, 20], [10, 0, 30, 20]), (100, 100, 3), cfg)
    np.testing.assert_array_equal(regions, [[0, 0, 20, 20], [10, 0, 30, 20]])
    assert tube_regions(np.zeros((0, 4), np.float32), (100, 100, 3), cfg).shape == (0, 4)


def test_group_boxes_clips_and_keeps_scores():
    cfg = ProposalConfig()
    boxes, scores, regions = group_boxes(B([-10, -10, 20, 20], [15, 15, 30, 30]), np.array([0.5, 0.7], np.float32),
                                         (100, 100, 3), cfg)
    np.testing.assert_array_equal(boxes, B([0, 0, 30, 30]))
    np.testing.assert_allclose(scores, [0.7])
    assert regions.shape == (1, 4)


def test_crop_region_inside_is_exact_and_resized():
    frame = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    out = crop_region(frame, (5, 2, 15, 12), 10)
    np.testing.assert_array_equal(out, frame[2:12, 5:15])
    assert crop_region(frame, (5, 2, 15, 12), 32).shape == (32, 32, 3)
    assert crop_region(frame, (0, 0, 20, 20), 8).shape == (8, 8, 3)


def test_crop_region_pads_with_zeros_outside():
    frame = np.full((10, 10, 3), 200, np.uint8)
    out = crop_region(frame, (-4, -4, 4, 4), 8)  # 8x8, top-left 4x4 quadrant inside
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert (out[4:, 4:] == 200).all()
    assert (out[:4] == 0).all() and (out[:, :4] == 0).all()
    # entirely outside the frame -> all zeros
    assert (crop_region(frame, (20, 20, 28, 28), 8) == 0).all()
    # right/bottom edges
    out = crop_region(frame, (6, 6, 14, 14), 8)
    assert (out[:4, :4] == 200).all() and (out[4:] == 0).all() and (out[:, 4:] == 0).all()


def test_crop_region_same_region_across_frames():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (40, 60, 3), dtype=np.uint8) for _ in range(3)]
    region = (10, 5, 30, 25)
    crops = [crop_region(f, region, 20) for f in frames]
    for f, c in zip(frames, crops):
        np.testing.assert_array_equal(c, f[5:25, 10:30])


def test_crop_region_rejects_empty():
    with pytest.raises(LpgbError):
        crop_region(np.zeros((4, 4, 3), np.uint8), (2, 2, 2, 5), 4)


def test_iou_matrix():
    iou = iou_matrix(B([0, 0, 10, 10]), B([0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]))
    np.testing.assert_allclose(iou, [[1.0, 1 / 3, 0.0]], rtol=1e-6)
