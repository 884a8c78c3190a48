"""TubeBuilder (ring buffer, same region over L+1 frames) and crops_to_input."""

import numpy as np
import pytest

from lpgb.runtime.config import preset
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.geometry import crop_region
from lpgb.runtime.preprocess import MEAN, STD, crops_to_input
from lpgb.runtime.tubes import TubeBatch, TubeBuilder

CFG = preset("tiny")  # L = 5, S = 64
L, S = CFG.smm.window, CFG.spatial.image_size


def _frame(value, shape=(120, 160, 3)):
    return np.full(shape, value, np.uint8)


def B(*rows):
    return np.array(rows, np.float32).reshape(-1, 4)


def test_tube_shapes_and_fill_with_oldest_frame():
    builder = TubeBuilder(CFG)
    batch = builder.push(_frame(10), B([40, 40, 80, 80]), np.array([0.9], np.float32))
    assert isinstance(batch, TubeBatch) and len(batch) == 1
    assert batch.crops.shape == (1, L + 1, S, S, 3) and batch.crops.dtype == np.uint8
    assert (batch.crops == 10).all()  # only one frame: it is repeated
    assert not builder.ready
    batch = builder.push(_frame(20), B([40, 40, 80, 80]), np.array([0.9], np.float32))
    assert [int(c[0, 0, 0]) for c in batch.crops[0]] == [10] * L + [20]


def test_ring_buffer_keeps_last_l_plus_one_oldest_first():
    builder = TubeBuilder(CFG)
    for t in range(L + 4):
        batch = builder.push(_frame(t), B([40, 40, 80, 80]), np.ones(1, np.float32))
    assert builder.ready and builder.buffered == L + 1
    assert [int(c[0, 0, 0]) for c in batch.crops[0]] == list(range(3, L + 4))
    builder.reset()
    assert builder.buffered == 0 and not builder.ready


def test_same_region_cropped_from_every_frame_with_padding():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(L + 1)]
    builder = TubeBuilder(CFG)
    boxes = B([0, 0, 30, 20], [20, 10, 50, 30], [120, 90, 150, 118])  # first two merge
    for frame in frames:
        batch = builder.push(frame, boxes, np.array([0.5, 0.8, 0.6], np.float32))
    assert len(batch) == 2
    np.testing.assert_array_equal(batch.boxes, B([0, 0, 50, 30], [120, 90, 150, 118]))
    np.testing.assert_allclose(batch.scores, [0.8, 0.6])
    for k, region in enumerate(batch.regions):
        assert region[2] - region[0] == region[3] - region[1]  # square
        for j, frame in enumerate(frames):
            np.testing.assert_array_equal(batch.crops[k, j], crop_region(frame, region, S))
    # the first region leaves the frame at the top-left: its crops start with zero padding
    assert batch.regions[0, 0] < 0 and batch.regions[0, 1] < 0
    assert (batch.crops[0, :, 0, 0] == 0).all()


def test_zero_boxes():
    builder = TubeBuilder(CFG)
    batch = builder.push(_frame(1), np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    assert len(batch) == 0
    assert batch.boxes.shape == (0, 4) and batch.scores.shape == (0,) and batch.regions.shape == (0, 4)
    assert batch.crops.shape == (0, L + 1, S, S, 3)
    assert crops_to_input(batch.crops).shape == (0, 3, S, S)


def test_bad_frames():
    builder = TubeBuilder(CFG)
    with pytest.raises(LpgbError):
        builder.push(np.zeros((10, 10), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    builder.push(_frame(0), np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    with pytest.raises(LpgbError):
        builder.push(_frame(0, (60, 80, 3)), np.zeros((0, 4), np.float32), np.zeros(0, np.float32))


def test_crops_to_input_rgb_normalised_flattened():
    crops = np.zeros((2, 3, 8, 8, 3), np.uint8)
    crops[..., 0] = 255  # blue in BGR
    out = crops_to_input(crops)
    assert out.shape == (6, 3, 8, 8) and out.dtype == np.float32 and out.flags.c_contiguous
    expected = (np.array([0.0, 0.0, 1.0], np.float32) - MEAN) / STD  # RGB: blue is the last channel
    np.testing.assert_allclose(out[:, :, 3, 4], np.broadcast_to(expected, (6, 3)), rtol=1e-5)
    assert crops_to_input(np.zeros((8, 8, 3), np.uint8)).shape == (1, 3, 8, 8)
    with pytest.raises(LpgbError):
        crops_to_input(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(LpgbError):
        crops_to_input(np.zeros((8, 6, 3), np.uint8))
