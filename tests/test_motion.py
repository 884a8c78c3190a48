"""Motion proposals (MOG2) and proposal post-processing (source, NMS, top-K, letterbox)."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from lpgb.runtime.config import ProposalConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.geometry import iou_matrix
from lpgb.runtime.motion import MotionProposer, motion_boxes_for_video
from lpgb.runtime.proposals import Letterbox, combine_proposals, nms, rpn_letterbox

PED2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "ped2" / "training" / "frames"


def _background(shape=(160, 240, 3), seed=0):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (5, 5), 0)


def _scene(n, moving=True, shape=(160, 240, 3)):
    """Static textured background + sensor noise; a 20x30 white rectangle moving 4 px/frame."""
    rng = np.random.default_rng(1)
    bg = _background(shape)
    for t in range(n):
        frame = np.clip(bg + rng.normal(0, 2, bg.shape), 0, 255).astype(np.uint8)
        box = np.array([[10 + 4 * t, 60, 30 + 4 * t, 90]], np.float32)
        if moving:
            x1, y1, x2, y2 = box[0].astype(int)
            frame[y1:y2, x1:x2] = 255
        yield frame, box


def test_moving_rectangle_is_proposed_after_warmup():
    cfg = ProposalConfig(motion_warmup=10, motion_persistence=2)
    proposer = MotionProposer(cfg)
    for t, (frame, truth) in enumerate(_scene(30)):
        boxes, scores = proposer.update(frame)
        assert boxes.dtype == np.float32 and scores.dtype == np.float32
        if t < cfg.motion_warmup:
            assert boxes.shape == (0, 4) and scores.shape == (0,)
        elif t >= cfg.motion_warmup + 2:
            assert len(boxes) == 1, (t, boxes)
            assert iou_matrix(boxes, truth)[0, 0] > 0.5
            assert 0.5 <= scores[0] <= 1.0
    assert proposer.warmed_up


def test_an_object_that_stops_stays_a_proposal_for_about_0_1_history_frames():
    """MOG2 absorbs a stopped object after ~0.105 x motion_history frames (background ratio 0.9): with the
    default history 500 a person who falls and lies still stays a box for ~50 frames; with 200, ~20."""
    rng = np.random.default_rng(1)
    bg = _background()

    def frames_visible(history: int) -> int:
        proposer = MotionProposer(ProposalConfig(motion_warmup=10, motion_history=history))
        seen = 0
        for t in range(10 + 120):
            frame = np.clip(bg + rng.normal(0, 2, bg.shape), 0, 255).astype(np.uint8)
            if t >= 10:
                frame[60:90, 100:140] = 255  # appears and stays still
            boxes, _ = proposer.update(frame)
            seen += int(t >= 10 and len(boxes) > 0)
        return seen

    default = ProposalConfig().motion_history
    assert default == 500
    assert 40 <= frames_visible(default) <= 70
    assert frames_visible(200) <= 30


def test_static_scene_gives_no_boxes():
    results = motion_boxes_for_video((f for f, _ in _scene(30, moving=False)), ProposalConfig(motion_warmup=5))
    assert len(results) == 30
    assert all(b.shape == (0, 4) and s.shape == (0,) for b, s in results)


def test_persistence_filters_a_one_frame_flash():
    cfg = ProposalConfig(motion_warmup=5, motion_persistence=2)
    proposer = MotionProposer(cfg)
    bg = _background()
    for _ in range(10):
        proposer.update(bg)
    flash = bg.copy()
    flash[50:80, 50:80] = 255
    boxes, _ = proposer.update(flash)
    assert len(boxes) == 0  # nothing was there the frame before
    boxes, _ = proposer.update(flash)
    assert len(boxes) == 1  # persisted for two frames


def _two_walkers(gap: int):
    """Two 8x30 white bars `gap` px apart on the noisy background, moving together 3 px/frame."""
    rng = np.random.default_rng(2)
    bg = _background()
    for t in range(30):
        frame = np.clip(bg + rng.normal(0, 2, bg.shape), 0, 255).astype(np.uint8)
        x = 10 + 3 * t
        frame[60:90, x : x + 8] = 255
        frame[60:90, x + 8 + gap : x + 16 + gap] = 255
        yield frame


def test_mask_cleanup_closing_5_keeps_neighbours_apart_closing_7_dilate_3_joins_them():
    """Closing 7 + dilation 3 (the default) merges people walking 6 px apart into one box."""
    new = ProposalConfig(motion_warmup=10, motion_close=5, motion_dilate=0)
    old = ProposalConfig(motion_warmup=10)
    counts = {}
    for name, cfg in (("new", new), ("old", old)):
        results = motion_boxes_for_video(_two_walkers(gap=6), cfg)
        counts[name] = {len(b) for b, _ in results[new.motion_warmup + 5 :]}  # once the warm-up trail has faded
    assert counts == {"new": {2}, "old": {1}}
    # a bar broken by a 2-px gap (a low-contrast waist) is mended into one box by the closing
    proposer = MotionProposer(new)
    bg = _background()
    for t in range(16):
        frame = bg.copy()
        frame[60:74, 10 + 3 * t : 18 + 3 * t] = 255
        frame[76:90, 10 + 3 * t : 18 + 3 * t] = 255
        boxes, _ = proposer.update(frame)
    assert len(boxes) == 1 and boxes[0, 3] - boxes[0, 1] == 30


def test_motion_rejects_bad_frames():
    proposer = MotionProposer(ProposalConfig())
    with pytest.raises(LpgbError):
        proposer.update(np.zeros((10, 10), np.uint8))
    proposer.update(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(LpgbError):
        proposer.update(np.zeros((12, 10, 3), np.uint8))


@pytest.mark.ped2
@pytest.mark.parametrize("video", ["01", "02"])
def test_ped2_people_are_proposed(video):
    folder = PED2 / video
    files = sorted(folder.glob("*.jpg"))[:35]
    if not files:
        pytest.skip(f"Ped2 frames not found at {folder}")
    cfg = ProposalConfig()
    results = motion_boxes_for_video((cv2.imread(str(f)) for f in files), cfg)
    h, w = cv2.imread(str(files[0])).shape[:2]
    late = results[cfg.motion_warmup + 2 :]
    assert all(len(b) > 0 for b, _ in late)  # Ped2 training scenes always have walkers
    for boxes, scores in late:
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert ((scores >= 0.5) & (scores <= 1.0)).all()
        assert (boxes[:, 2] - boxes[:, 0]).max() < w / 2  # blobs, not the whole frame


# ----------------------------------------------------------------------------- proposals


def B(*rows):
    return np.array(rows, np.float32).reshape(-1, 4)


def test_nms_keeps_best_of_overlapping():
    boxes = B([0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60])
    keep = nms(boxes, np.array([0.6, 0.9, 0.5], np.float32), 0.5)
    assert keep.tolist() == [1, 2]
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5).shape == (0,)


def test_combine_sources_threshold_size_clip_topk():
    rpn = (B([0, 0, 20, 20], [100, 100, 140, 140], [30, 30, 34, 50]), np.array([0.9, 0.3, 0.95], np.float32))
    motion = (B([1, 0, 21, 20], [200, 50, 260, 90]), np.array([0.8, 0.7], np.float32))
    shape = (120, 240, 3)
    boxes, scores = combine_proposals(rpn, motion, shape, ProposalConfig(source="rpn"))
    np.testing.assert_array_equal(boxes, B([0, 0, 20, 20]))  # 0.3 under threshold, 4-px wide too small
    boxes, scores = combine_proposals(rpn, motion, shape, ProposalConfig(source="motion"))
    np.testing.assert_array_equal(boxes, B([1, 0, 21, 20], [200, 50, 240, 90]))  # clipped to the frame
    boxes, scores = combine_proposals(rpn, motion, shape, ProposalConfig(source="union"))  # by score
    np.testing.assert_array_equal(boxes, B([0, 0, 20, 20], [200, 50, 240, 90]))  # NMS drops the motion twin
    np.testing.assert_allclose(scores, [0.9, 0.7])
    boxes, scores = combine_proposals(rpn, motion, shape, ProposalConfig(source="union", union_priority="score", top_k=1))
    assert boxes.shape == (1, 4) and scores.tolist() == pytest.approx([0.9])
    # motion first: the motion twin survives NMS with its own score, RPN boxes come after
    boxes, scores = combine_proposals(rpn, motion, shape, ProposalConfig(source="union", union_priority="motion"))
    np.testing.assert_array_equal(boxes, B([1, 0, 21, 20], [200, 50, 240, 90]))
    np.testing.assert_allclose(scores, [0.8, 0.7])
    lone_rpn = (B([0, 0, 20, 20], [60, 60, 80, 100]), np.array([0.9, 0.99], np.float32))
    boxes, scores = combine_proposals(lone_rpn, motion, shape, ProposalConfig(source="union", union_priority="motion", top_k=3))
    np.testing.assert_array_equal(boxes, B([1, 0, 21, 20], [200, 50, 240, 90], [60, 60, 80, 100]))
    np.testing.assert_allclose(scores, [0.8, 0.7, 0.99])
    with pytest.raises(LpgbError, match="union_priority"):
        combine_proposals(rpn, motion, shape, ProposalConfig(source="rpn", union_priority="size"))


def test_combine_zero_and_missing_inputs():
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    for source in ("rpn", "motion", "union"):
        boxes, scores = combine_proposals(empty, empty, (100, 100, 3), ProposalConfig(source=source))
        assert boxes.shape == (0, 4) and scores.shape == (0,)
    boxes, _ = combine_proposals(None, empty, (100, 100, 3), ProposalConfig(source="union"))
    assert boxes.shape == (0, 4)
    with pytest.raises(LpgbError):
        combine_proposals(None, empty, (100, 100, 3), ProposalConfig(source="rpn"))


def test_letterbox_roundtrip():
    frame = np.full((240, 360, 3), (10, 20, 30), np.uint8)  # BGR
    image, lb = rpn_letterbox(frame, ProposalConfig(rpn_input_size=(320, 480)))
    assert image.shape == (1, 3, 320, 480) and image.dtype == np.float32
    # 360x240 -> scale 4/3 -> 480x320: no padding
    assert lb == Letterbox(scale=pytest.approx(4 / 3), pad_x=0, pad_y=0)
    np.testing.assert_allclose(image[0, :, 5, 5], [30 / 255, 20 / 255, 10 / 255], rtol=1e-6)  # RGB
    image, lb = rpn_letterbox(frame, ProposalConfig(rpn_input_size=(160, 160)))
    assert lb.pad_x == 0 and lb.pad_y > 0 and image[0, :, 0, 80].max() == 0  # zero padding on top
    frame_boxes = B([30, 60, 120, 200])
    np.testing.assert_allclose(lb.to_frame(lb.to_input(frame_boxes)), frame_boxes, atol=1e-4)
    bottom = lb.pad_y + round(240 * lb.scale)  # content ends here
    np.testing.assert_allclose(lb.to_frame(B([0, lb.pad_y, 160, bottom])), B([0, 0, 360, 240]), atol=1)
    assert lb.to_frame(np.zeros((0, 4), np.float32)).shape == (0, 4)


def test_box_fill_measures_the_moving_object_after_warmup():
    cfg = ProposalConfig(motion_warmup=10, motion_persistence=2)
    proposer = MotionProposer(cfg)
    probe = B([0, 0, 1, 1])
    for t, (frame, truth) in enumerate(_scene(20)):
        proposer.update(frame)
        if t < cfg.motion_warmup:
            assert proposer.box_fill(probe) is None  # no trusted mask yet
    x1, y1, x2, y2 = truth[0]
    candidates = B([x1, y1, x2, y2],  # the object itself
                   [x1 - 20, y1 - 30, x2 + 20, y2 + 30],  # loose box: the object is a small part of it
                   [150, 10, 200, 40],  # empty background
                   [-50, -50, 10_000, 10_000])  # leaves the frame: clipped, not an error
    fill = proposer.box_fill(candidates)
    assert fill.dtype == np.float32 and fill.shape == (4,)
    assert fill[0] > 0.8 and fill[1] < 0.35 and fill[2] == 0.0 and 0.0 < fill[3] < 0.05
    assert proposer.box_fill(np.zeros((0, 4), np.float32)).shape == (0,)


def test_fill_ranking_keeps_the_tight_rpn_box_over_the_loose_one():
    # two overlapping RPN boxes on one moving object: the loose one has the higher objectness
    loose, tight = [10, 10, 40, 50], [12, 12, 38, 48]
    rpn = (B(loose, tight, [100, 10, 120, 50]), np.array([0.9, 0.8, 0.7], np.float32))
    fill = np.array([0.3, 0.9, 0.0], np.float32)  # the third box sits on a still object
    motion = (B([200, 50, 230, 90]), np.array([0.75], np.float32))
    shape = (120, 240, 3)
    plain = ProposalConfig(source="union")
    boxes, scores = combine_proposals(rpn, motion, shape, plain, fill)  # power 0: objectness decides
    np.testing.assert_array_equal(boxes, B(loose, motion[0][0], [100, 10, 120, 50]))
    ranked = ProposalConfig(source="union", rpn_fill_power=4.0)
    boxes, scores = combine_proposals(rpn, motion, shape, ranked, fill)
    np.testing.assert_array_equal(boxes, B(tight, motion[0][0], [100, 10, 120, 50]))  # still box kept
    np.testing.assert_allclose(scores, [0.8, 0.75, 0.7])  # scores stay objectness / motion scores
    boxes, _ = combine_proposals(rpn, motion, shape, ranked, None)  # no mask (warm-up): plain ranking
    np.testing.assert_array_equal(boxes[0], loose)
    with pytest.raises(LpgbError, match="rpn_fill has 2 values for 3 RPN boxes"):
        combine_proposals(rpn, motion, shape, ranked, fill[:2])
    with pytest.raises(LpgbError, match="rpn_fill_power must be >= 0"):
        combine_proposals(rpn, motion, shape, ProposalConfig(source="union", rpn_fill_power=-1.0), fill)
