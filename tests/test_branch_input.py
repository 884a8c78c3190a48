"""What the branches see of a crop (SpatialConfig.input_form, preprocess.encode_tubes) and the patterns-only
serving path (TubeScorer.patterns_batch): one crop per object, the same rows as the whole-tube path."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lpgb.runtime.config import LpgbConfig, SpatialConfig, preset
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.pipeline import TubeScorer
from lpgb.runtime.preprocess import MOTION_GAIN, crops_to_input, encode_tubes, tubes_to_input
from lpgb.runtime.tubes import TubeBuilder
from test_feature_cache import PixelBackend, _frames

CFG = preset("tiny")


def test_rgb_is_unchanged_and_motion_encodes_grey_and_differences():
    rng = np.random.default_rng(0)
    tube = rng.integers(0, 256, (2, 4, 8, 8, 3), np.uint8)  # (K, T, S, S, 3)
    assert encode_tubes(tube, "rgb") is tube or np.array_equal(encode_tubes(tube, "rgb"), tube)
    out = encode_tubes(tube, "motion")
    assert out.shape == tube.shape and out.dtype == np.uint8
    grey = tube.astype(np.float32) @ np.array([0.114, 0.587, 0.299], np.float32)
    np.testing.assert_allclose(out[..., 0], np.clip(np.rint(grey), 0, 255), atol=0)
    expect1 = np.clip(np.rint(128 + MOTION_GAIN * (grey[:, 3] - grey[:, 2])), 0, 255)
    expect2 = np.clip(np.rint(128 + MOTION_GAIN * (grey[:, 3] - grey[:, 1])), 0, 255)
    np.testing.assert_array_equal(out[:, 3, ..., 1], expect1)
    np.testing.assert_array_equal(out[:, 3, ..., 2], expect2)
    assert (out[:, 0, ..., 1:] == 128).all()  # the first step has no earlier frame: no motion
    # a still object has no motion; a brightening one has positive differences, growing with the gap
    still = np.repeat(tube[:, :1], 4, axis=1)
    assert (encode_tubes(still, "motion")[..., 1:] == 128).all()
    ramp = np.stack([np.full((8, 8, 3), 60 + 10 * j, np.uint8) for j in range(4)])[None]
    enc = encode_tubes(ramp, "motion")[0, -1]
    assert (enc[..., 1] == 148).all() and (enc[..., 2] == 168).all()
    assert tubes_to_input(tube, "motion").shape == (8, 3, 8, 8)
    np.testing.assert_array_equal(tubes_to_input(tube, "rgb"), crops_to_input(tube))


def test_bad_forms_are_refused_in_one_line():
    with pytest.raises(LpgbError, match="input_form"):
        encode_tubes(np.zeros((1, 2, 8, 8, 3), np.uint8), "flow")
    with pytest.raises(LpgbError, match="input_form"):
        SpatialConfig(input_form="flow")
    with pytest.raises(LpgbError, match="uint8"):
        encode_tubes(np.zeros((1, 2, 8, 8, 3), np.float32), "motion")
    # an older config without the field serves as it was trained: rgb
    data = CFG.to_dict()
    del data["spatial"]["input_form"]
    assert LpgbConfig.from_dict(data).spatial.input_form == "rgb"


@pytest.mark.parametrize("form", ["rgb", "motion"])
def test_patterns_batch_equals_the_whole_tube_patterns(form):
    cfg = replace(CFG, spatial=replace(CFG.spatial, input_form=form))
    builder, whole = TubeBuilder(cfg), TubeScorer(PixelBackend(), None, form)
    fast_backend = PixelBackend()
    fast = TubeScorer(fast_backend, None, form)
    frames = _frames(12, speed=3.0)
    for t, (frame, box) in enumerate(frames):
        batch = builder.push(frame, box, np.ones(len(box), np.float32))
        ref = whole(batch.crops, {})["patterns"]
        got = fast.patterns_batch(builder, batch, {})["patterns"]
        np.testing.assert_array_equal(got, ref)
    assert fast_backend.crops == 2 * len(frames)  # one crop per object per frame through each branch
    if form == "motion":  # the object moves: its motion channels differ from a still scene's
        assert not np.array_equal(encode_tubes(batch.crops, "motion")[..., 1:],
                                  np.full_like(batch.crops[..., 1:], 128))


def test_train_request_sets_branch_input_and_reconstruction(tmp_path):
    """--branch-input and --reconstruction-weight reach the run's configs; the branch input is fixed with the run."""
    from lpgb.trainer.pipeline import TrainRequest, make_configs, prepare_run

    cfg, train_cfg = make_configs(TrainRequest(data=tmp_path, out=tmp_path / "run", preset="tiny",
                                               branch_input="motion", reconstruction_weight=0.5))
    assert cfg.spatial.input_form == "motion" and train_cfg.spatial.reconstruction_weight == 0.5
    cfg, train_cfg = make_configs(TrainRequest(data=tmp_path, out=tmp_path / "run", preset="tiny"))
    assert cfg.spatial.input_form == "rgb" and train_cfg.spatial.reconstruction_weight == 0.0
    prepare_run(TrainRequest(data=tmp_path, out=tmp_path / "run", preset="tiny", branch_input="motion"))
    with pytest.raises(LpgbError, match="fixed"):
        prepare_run(TrainRequest(data=tmp_path, out=tmp_path / "run", stage="spatial", branch_input="rgb"))


def test_patterns_diagnostic_reads_rows_and_refuses_a_run_without_features(tmp_path):
    from lpgb.benchmarks.patterns import VARIANTS, Variant, pca_basis, read_rows, training_features

    f1, f2 = np.random.default_rng(0).standard_normal((2, 10, 4, 3)).astype(np.float32)
    assert read_rows(f1, f2, Variant((1, 2), "queries", 0, 1)).shape == (10, 24)
    assert read_rows(f1, f2, Variant((2,), "mean", 0, 1)).shape == (10, 3)
    np.testing.assert_allclose(read_rows(f1, f2, Variant((1,), "mean", 0, 1)), f1.mean(1), rtol=1e-6)
    mean, basis = pca_basis(read_rows(f1, f2, Variant((1, 2), "queries", 0, 1)), 5)
    assert mean.shape == (24,) and basis.shape == (24, 5)
    np.testing.assert_allclose(basis.T @ basis, np.eye(5), atol=1e-5)  # orthonormal directions
    assert len({v.name for v in VARIANTS}) == len(VARIANTS)
    with pytest.raises(LpgbError, match="tube features"):
        training_features(tmp_path)


def test_patterns_diagnostic_scores_frames_with_far_boxes_higher():
    """`evaluate` on made-up features: frames holding a box far from the training rows are the abnormal ones."""
    from lpgb.benchmarks.patterns import Variant, evaluate

    rng = np.random.default_rng(0)
    train = (rng.standard_normal((60, 2, 3)).astype(np.float32), rng.standard_normal((60, 2, 3)).astype(np.float32),
             np.repeat(np.arange(3), 20))
    frames, labels = [], []
    for t in range(30):
        abnormal = t % 3 == 0
        boxes = rng.standard_normal((2, 2, 2, 3)).astype(np.float32)  # (K, 2 branches, N_q, E_d)
        if abnormal:
            boxes[1] += 6.0
        frames.append(None if t == 1 else boxes)  # a frame without boxes scores the video's lowest
        labels.append(int(abnormal))
    videos = [{"name": "01", "labels": np.array(labels, np.uint8), "frames": frames}]
    for variant in (Variant((1, 2), "queries", 0, 1), Variant((1,), "mean", 2, 5)):
        row = evaluate(variant, train, videos)
        assert row["micro_auc"] > 0.95 and row["per_video_auc"][0] == row["micro_auc"]
