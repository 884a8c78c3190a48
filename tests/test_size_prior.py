"""The scene's person-size prior and the crowd split of motion blobs (lpgb.runtime.size_prior)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lpgb.benchmarks.synth import SynthConfig, generate
from lpgb.runtime.config import ProposalConfig
from lpgb.runtime.datasets import open_dataset
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.motion import MotionProposer
from lpgb.runtime.video import open_source
from lpgb.runtime.size_prior import expected_size, fit_size_prior, prior_from_blobs, split_blobs, with_size_prior

H = 200


def _person_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Person blobs whose height is 0.1 H + 0.2 bottom and width 0.4 x height."""
    bottom = rng.uniform(80, 195, n)
    h = 0.1 * H + 0.2 * bottom + rng.normal(0, 1, n)
    w = 0.4 * h
    x = rng.uniform(0, 200, n)
    return np.stack([x, bottom - h, x + w, bottom], axis=1)


def test_prior_recovers_the_perspective_despite_merged_blobs() -> None:
    rng = np.random.default_rng(0)
    boxes = _person_boxes(rng, 600)
    merged = boxes[:200].copy()
    merged[:, 2] += 1.5 * (merged[:, 2] - merged[:, 0])  # two or three people side by side
    merged[:, 1] -= 0.3 * (merged[:, 3] - merged[:, 1])  # and one behind
    prior = prior_from_blobs(np.concatenate([boxes, merged]), H)
    exp_h, exp_w = expected_size(np.array([100.0, 180.0]), H, prior)
    true_h = 0.1 * H + 0.2 * np.array([100.0, 180.0])
    assert np.allclose(exp_h, true_h, rtol=0.08) and np.allclose(exp_w, 0.4 * true_h, rtol=0.12)
    with pytest.raises(LpgbError, match="at least"):
        prior_from_blobs(boxes[:5], H)


def _mask(*rects: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((H, 240), np.uint8)
    for x1, y1, x2, y2 in rects:
        mask[y1:y2, x1:x2] = 255
    return mask


CFG = ProposalConfig(motion_split=True, size_prior=(0.2, 0.0, 0.06, 0.0), motion_min_area=20)  # 40 x 12 px people


def test_split_cuts_two_people_side_by_side_but_not_a_cart() -> None:
    two = _mask((50, 100, 62, 140), (62, 120, 64, 124), (64, 101, 76, 140))  # two bodies, arms touching
    boxes, fill = split_blobs(np.array([[50, 100, 76, 140]], np.float32), two, CFG)
    assert len(boxes) == 2 and boxes[0].tolist() in ([50, 100, 62, 140], [50, 100, 64, 140])
    assert boxes[1].tolist() in ([64, 101, 76, 140], [62, 101, 76, 140])  # the touching arm goes to one of them
    assert fill.min() > 0.8
    cart = _mask((50, 110, 80, 140))  # as wide as two people, filled: no valley to cut at
    boxes, _ = split_blobs(np.array([[50, 110, 80, 140]], np.float32), cart, CFG)
    assert boxes.tolist() == [[50, 110, 80, 140]]
    one = _mask((100, 100, 112, 140))
    assert split_blobs(np.array([[100, 100, 112, 140]], np.float32), one, CFG)[0].tolist() == [[100, 100, 112, 140]]
    stacked = _mask((100, 40, 112, 79), (105, 79, 107, 81), (100, 81, 112, 120))  # one above the other
    boxes, _ = split_blobs(np.array([[100, 40, 112, 120]], np.float32), stacked, CFG)
    assert len(boxes) == 2 and boxes[0].tolist()[1] == 40 and boxes[1].tolist()[3] == 120
    assert boxes[0][3] <= 81 and boxes[1][1] >= 79


def test_split_is_off_by_default_and_needs_a_prior() -> None:
    assert ProposalConfig().motion_split is False
    with pytest.raises(LpgbError, match="size_prior"):
        MotionProposer(ProposalConfig(motion_split=True))
    with pytest.raises(LpgbError, match="size_prior"):
        ProposalConfig(size_prior=(0.1, 0.2))
    with pytest.raises(LpgbError, match="split_factor"):
        ProposalConfig(split_factor=1.0)
    with pytest.raises(LpgbError, match="split_valley"):
        ProposalConfig(split_valley=0.0)
    assert with_size_prior(ProposalConfig(), []) == ProposalConfig()  # nothing to fit when the split is off


@pytest.fixture(scope="module")
def crowd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prior") / "crowd"
    generate(out, SynthConfig(seed=2, train_videos=2, test_videos=1, frames_per_video=50, crowd=20))
    return out


def test_fit_on_a_crowd_learns_perspective_and_the_split_yields_more_boxes(crowd: Path) -> None:
    cfg = ProposalConfig(motion_warmup=10)
    prior = fit_size_prior(open_dataset(crowd).train_videos(), cfg)
    far, near = expected_size(np.array([60.0, 150.0]), 160, prior)[0]
    assert near > 1.3 * far  # people lower in the frame are larger
    split = with_size_prior(replace(cfg, motion_split=True), open_dataset(crowd).train_videos())
    assert split.size_prior == prior
    video = open_dataset(crowd).test_videos()[0]
    with open_source(video.source) as src:
        frames = list(src)
    plain, cut = MotionProposer(cfg), MotionProposer(split)
    counts = np.array([[len(plain.update(f)[0]), len(cut.update(f)[0])] for f in frames])
    assert counts[:, 1].sum() > 1.2 * counts[:, 0].sum()
