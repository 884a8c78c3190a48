"""Calibration, box/frame scores, causal smoothing and hysteresis events on hand-made cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lpgb.runtime.config import ScoringConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.events import Event, EventDetector
from lpgb.runtime.scoring import (Calibration, CausalSmoother, TermCalibration, calibrate, combine, frame_score,
                                  half_gaussian_kernel, standardise)


def _cal(threshold: float = 2.0, normal: float = -0.5) -> Calibration:
    return Calibration(terms={"smm": TermCalibration(1.0, 0.5)}, normal_level=normal, threshold=threshold,
                       n_frames=10)


def test_calibrate_hand_case():
    # two training frames' boxes: frame a has errors 1, 3; frame b has 5, 3, 3 -> mean 3, std sqrt(2) over 5 boxes
    tube = np.array([1.0, 3.0, 5.0, 3.0, 3.0])
    keys = np.array([0, 0, 1, 1, 1])
    cfg = ScoringConfig(terms=("smm",), threshold_quantile=0.5)
    cal = calibrate({"smm": tube}, keys, cfg)
    std = np.std(tube)
    assert cal.terms["smm"].mean == pytest.approx(3.0) and cal.terms["smm"].std == pytest.approx(std)
    z = (np.array([3.0, 5.0]) - 3.0) / std  # frame score = max over its boxes
    assert cal.n_frames == 2
    assert cal.normal_level == pytest.approx(np.median(z))
    assert cal.threshold == pytest.approx(np.quantile(z, 0.5))
    cal99 = calibrate({"smm": tube}, keys, ScoringConfig(terms=("smm",), threshold_quantile=1.0))
    assert cal99.threshold == pytest.approx(2.0 / std)


def test_calibrate_two_terms_sum_and_max():
    keys = np.arange(4)
    raw = {"a": np.array([0.0, 1.0, 2.0, 3.0]), "b": np.array([3.0, 2.0, 1.0, 0.0])}
    z = (raw["a"] - 1.5) / np.std(raw["a"])
    summed = calibrate(raw, keys, ScoringConfig(terms=("a", "b"), combine="sum", threshold_quantile=1.0))
    assert summed.threshold == pytest.approx(0.0)  # a and b cancel exactly
    maxed = calibrate(raw, keys, ScoringConfig(terms=("a", "b"), combine="max", threshold_quantile=1.0))
    assert maxed.threshold == pytest.approx(z.max())
    assert maxed.normal_level == pytest.approx(np.median(np.maximum(z, -z)))


def test_calibrate_rejects_empty_and_constant():
    with pytest.raises(LpgbError, match="training box"):
        calibrate({"smm": np.zeros(0)}, np.zeros(0), ScoringConfig())
    with pytest.raises(LpgbError, match="3 scores for 2 boxes"):
        calibrate({"smm": np.ones(3)}, np.zeros(2), ScoringConfig())
    cal = calibrate({"smm": np.ones(4)}, np.arange(4), ScoringConfig())  # zero std is floored, no division by 0
    assert np.isfinite(cal.threshold) and cal.terms["smm"].std > 0


def test_calibration_round_trip_and_old_format():
    cal = _cal()
    again = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal
    with pytest.raises(LpgbError, match="unknown"):
        Calibration.from_dict({**cal.to_dict(), "extra": 1})
    with pytest.raises(LpgbError, match="missing"):
        Calibration.from_dict({"terms": {}})
    old = {"error_mean": 1.0, "error_std": 0.5, "normal_level": -0.5, "threshold": 2.0, "n_frames": 10}
    assert Calibration.from_dict(old) == cal  # a calibration from before score terms is the smm term


def test_box_and_frame_scores():
    cal = _cal()
    s = combine(standardise({"smm": np.array([1.0, 2.0, 0.5])}, cal), "sum")
    assert s.dtype == np.float32
    np.testing.assert_allclose(s, [0.0, 2.0, -1.0])
    assert frame_score(s, cal) == pytest.approx(2.0)
    assert frame_score(combine(standardise({"smm": np.zeros(0)}, cal), "max"), cal) == cal.normal_level
    with pytest.raises(LpgbError, match="velocity"):
        standardise({"velocity": np.ones(2)}, cal)


def test_half_gaussian_kernel():
    k = half_gaussian_kernel(2.0)
    assert k.size == 9 and k.sum() == pytest.approx(1.0) and np.all(np.diff(k) < 0)
    assert half_gaussian_kernel(0).tolist() == [1.0]


def test_causal_smoother_is_causal_and_constant_preserving():
    sm = CausalSmoother(2.0)
    assert sm.smooth([3.0] * 5) == pytest.approx([3.0] * 5)
    sm.reset()
    x = np.zeros(30)
    x[10] = 1.0
    y = sm.smooth(x)
    assert np.all(y[:10] == 0) and y[10] == pytest.approx(half_gaussian_kernel(2.0)[0])
    assert np.all(np.diff(y[10:]) <= 0)  # decays after the impulse
    assert CausalSmoother(0).smooth([1.0, 5.0]).tolist() == [1.0, 5.0]


def test_causal_smoother_matches_metrics():
    metrics = pytest.importorskip("lpgb.runtime.metrics")
    x = np.random.default_rng(1).standard_normal(50)
    for sigma in (0.7, 3.0):
        np.testing.assert_allclose(half_gaussian_kernel(sigma), metrics.causal_kernel(sigma))
        np.testing.assert_allclose(CausalSmoother(sigma).smooth(x), metrics.gaussian_smooth(x, sigma, causal=True),
                                   rtol=1e-12, atol=1e-12)


def _run(scores, cal=None, **cfg):
    det = EventDetector(cal or _cal(threshold=2.0), ScoringConfig(**{"hysteresis": 0.5, "min_event_frames": 2, **cfg}))
    for i, s in enumerate(scores):
        det.push(i, i / 10.0, s)
    return det.finish()


def test_events_hysteresis():
    # starts at 2.0, stays while >= 1.0 (0.5 * 2), ends when below
    ev = _run([0, 2.5, 1.5, 3.0, 1.0, 0.9, 0, 2.0, 2.2, 0.1])
    assert ev == [
        Event(start_frame=1, end_frame=4, start_time=0.1, end_time=0.4, peak_score=3.0, peak_frame=3),
        Event(start_frame=7, end_frame=8, start_time=0.7, end_time=0.8, peak_score=2.2, peak_frame=8),
    ]
    assert ev[0].num_frames == 4 and json.loads(json.dumps(ev[0].to_dict()))["peak_frame"] == 3


def test_events_min_length_and_open_at_end():
    assert _run([0, 5, 0, 0]) == []  # one frame < min_event_frames
    ev = _run([0, 0, 2.1, 1.5, 1.2])  # still open at the end: closed by finish()
    assert len(ev) == 1 and (ev[0].start_frame, ev[0].end_frame) == (2, 4)
    assert _run([1.9] * 10) == []  # never reaches the threshold


def test_events_negative_threshold_release_below_start():
    ev = _run([-3, -1.5, -1.8, -2.5, -3], cal=_cal(threshold=-2.0), hysteresis=0.5)
    # release level = -2 - 0.5 * 2 = -3: the event lasts while the score >= -3
    assert len(ev) == 1 and (ev[0].start_frame, ev[0].end_frame, ev[0].peak_frame) == (1, 4, 1)


def test_calibration_keeps_the_training_frame_size_and_reads_files_without_it():
    cal = Calibration(terms={"velocity": TermCalibration(1.0, 2.0)}, normal_level=0.5, threshold=3.0, n_frames=7,
                      frame_size=(240, 360))
    back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back == cal and back.frame_size == (240, 360)
    old = {k: v for k, v in cal.to_dict().items() if k != "frame_size"}
    assert Calibration.from_dict(old).frame_size is None


def test_tail_frame_rule_discounts_a_crowded_frames_max_and_round_trips():
    # 2,000 training boxes, N(0, 1), 4 per frame: a frame's tail score is -log P(max of K normal boxes >= its max)
    rng = np.random.default_rng(0)
    raw, keys = {"velocity": rng.normal(size=2000)}, np.repeat(np.arange(500), 4)
    cal = calibrate(raw, keys, ScoringConfig(frame_rule="tail"))
    assert cal.box_tail is not None and len(cal.box_tail.quantiles) == 100
    back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back == cal
    one, many = frame_score(np.array([2.0]), cal), frame_score(np.full(20, 2.0), cal)
    assert one > many > 0  # the same largest box is less surprising among 20 boxes than alone
    # beyond every training box the exponential tail keeps the order, and the score stays finite
    far, farther = frame_score(np.array([30.0]), cal), frame_score(np.array([300.0]), cal)
    assert np.isfinite(farther) and farther > far > one
    assert frame_score(np.zeros(0), cal) == cal.normal_level
    # the default "max" keeps no tail and scores the max
    plain = calibrate(raw, keys, ScoringConfig())
    assert plain.box_tail is None and "box_tail" not in plain.to_dict()
    assert frame_score(np.array([1.0, 2.0]), plain) == 2.0


@pytest.mark.parametrize("tail", [{"quantiles": [0.0] * 99, "beta": 1.0},
                                  {"quantiles": list(range(100, 0, -1)), "beta": 1.0},
                                  {"quantiles": list(range(100)), "beta": 0.0},
                                  {"quantiles": list(range(100)), "beta": "x"}])
def test_a_bad_box_tail_is_refused_when_read(tail):
    data = {**_cal().to_dict(), "box_tail": tail}
    with pytest.raises(LpgbError, match="box_tail"):
        Calibration.from_dict(data)


def test_scorer_refuses_a_calibration_made_for_the_other_frame_rule():
    from lpgb.runtime.config import LpgbConfig
    from lpgb.runtime.scoring import TermScorer

    rng = np.random.default_rng(1)
    cal = calibrate({"smm": rng.normal(size=50)}, np.arange(50), ScoringConfig(terms=("smm",), frame_rule="tail"))
    cfg = LpgbConfig()
    with pytest.raises(LpgbError, match="frame_rule is 'max'.*recalibrate"):
        TermScorer(cfg, cal, [])
    with pytest.raises(LpgbError, match="scoring.frame_rule must be one of"):
        ScoringConfig(frame_rule="mean")
