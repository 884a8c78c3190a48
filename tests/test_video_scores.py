"""Whole-video scoring (lpgb.runtime.video_scores), shared by lpgb-bench accuracy and lpgb-export --check."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from lpgb.runtime.video_scores import score_video


class _Backend:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class _Detector:
    """Scores a frame by its mean grey level; raises at frame `fail_at`."""

    def __init__(self, fail_at: int = -1) -> None:
        self.backend, self.cal, self.fail_at, self.index = _Backend(), None, fail_at, 0

    def process(self, frame: np.ndarray) -> SimpleNamespace:
        if self.index == self.fail_at:
            raise RuntimeError("frame failed")
        self.index += 1
        return SimpleNamespace(score=float(frame.mean()), times={"total": 0.0}, term_scores={})


@pytest.fixture()
def frames_dir(tmp_path):
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), np.full((16, 24, 3), 10 * (i + 1), np.uint8))
    return tmp_path


def test_scores_every_frame_and_closes_the_backend(frames_dir):
    detector = _Detector()
    scores = score_video(detector, frames_dir)
    assert scores.dtype == np.float32 and scores.tolist() == [10, 20, 30, 40, 50]
    assert detector.backend.closed


def test_max_frames_cuts_the_video(frames_dir):
    assert score_video(_Detector(), frames_dir, max_frames=2).tolist() == [10, 20]


def test_backend_closed_when_scoring_fails(frames_dir):
    detector = _Detector(fail_at=3)
    with pytest.raises(RuntimeError, match="frame failed"):
        score_video(detector, frames_dir)
    assert detector.backend.closed
