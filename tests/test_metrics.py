"""Metrics against hand-computed cases."""

import numpy as np
import pytest

from lpgb.runtime.errors import LpgbError
from lpgb.runtime.metrics import causal_kernel, gaussian_smooth, macro_auc, micro_auc


def test_micro_auc_hand_computed() -> None:
    # positives {0.35, 0.8} vs negatives {0.1, 0.4}: 3 of 4 pairs ordered correctly
    assert micro_auc([np.array([0.1, 0.4, 0.35, 0.8])], [np.array([0, 0, 1, 1])]) == pytest.approx(0.75)


def test_micro_auc_concatenates_videos() -> None:
    scores = [np.array([0.1, 0.9]), np.array([0.5, 0.2])]
    labels = [np.array([0, 1]), np.array([0, 0])]
    # positives {0.9} vs negatives {0.1, 0.5, 0.2}: all correct
    assert micro_auc(scores, labels) == pytest.approx(1.0)
    # a per-video offset hurts micro but not macro
    scores = [np.array([0.1, 0.3]), np.array([0.6, 0.9])]
    labels = [np.array([0, 1]), np.array([0, 1])]
    assert micro_auc(scores, labels) == pytest.approx(0.75)
    assert macro_auc(scores, labels).value == pytest.approx(1.0)


def test_macro_auc_skips_single_class_videos() -> None:
    scores = [np.array([0.1, 0.4, 0.35, 0.8]), np.array([0.9, 0.1]), np.array([0.8, 0.1, 0.7])]
    labels = [np.array([0, 0, 1, 1]), np.array([0, 0]), np.array([1, 0, 0])]
    result = macro_auc(scores, labels)
    assert result.value == pytest.approx((0.75 + 1.0) / 2)
    assert (result.n_videos, result.n_used, result.n_single_class) == (3, 2, 1)
    assert result.per_video[1] is None


def test_auc_errors() -> None:
    with pytest.raises(LpgbError, match="2 scores but 3 labels"):
        micro_auc([np.zeros(2)], [np.zeros(3)])
    with pytest.raises(LpgbError, match="no abnormal"):
        micro_auc([np.arange(3.0)], [np.zeros(3)])
    with pytest.raises(LpgbError, match="no normal"):
        macro_auc([np.arange(3.0)], [np.ones(3)])
    with pytest.raises(LpgbError):
        macro_auc([np.arange(2.0), np.arange(2.0)], [np.array([0, 0]), np.array([1, 1])])
    with pytest.raises(LpgbError, match="videos"):
        micro_auc([np.zeros(2)], [])


def test_centred_smoothing_matches_scipy_and_keeps_level() -> None:
    from scipy.ndimage import gaussian_filter1d

    x = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 5.0, 5.0])
    np.testing.assert_allclose(gaussian_smooth(x, 1.5), gaussian_filter1d(x, 1.5, mode="nearest"))
    np.testing.assert_allclose(gaussian_smooth(np.full(9, 3.0), 2.0), 3.0)
    np.testing.assert_array_equal(gaussian_smooth(x, 0.0), x)


def test_causal_smoothing_uses_no_future_frames() -> None:
    rng = np.random.default_rng(0)
    x = rng.random(50)
    y = x.copy()
    y[30:] += 10.0  # change only the future of frame 29
    a, b = gaussian_smooth(x, 3.0, causal=True), gaussian_smooth(y, 3.0, causal=True)
    np.testing.assert_array_equal(a[:30], b[:30])
    assert np.all(b[30:] > a[30:])
    # centred smoothing does look ahead
    assert gaussian_smooth(y, 3.0)[29] > gaussian_smooth(x, 3.0)[29]


def test_causal_smoothing_hand_computed() -> None:
    k = causal_kernel(1.0)
    assert k.sum() == pytest.approx(1.0) and k.size == 5 and np.all(np.diff(k) < 0)
    step = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    out = gaussian_smooth(step, 1.0, causal=True)
    assert out[4] == 0.0
    assert out[5] == pytest.approx(k[0])
    assert out[6] == pytest.approx(k[0] + k[1])
    np.testing.assert_allclose(gaussian_smooth(np.full(6, 2.0), 2.0, causal=True), 2.0)
