"""Score terms: k-NN density, flow, velocity features, term states, and the registries end to end."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import cv2
import numpy as np
import pytest

from lpgb.runtime.config import FlowConfig, LpgbConfig, ScoringConfig, preset
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.flow import HISTORY_FRAMES, FlowEstimator, FlowField
from lpgb.runtime.scoring import TERM_STATES, Calibration, TermScorer, load_terms, save_term_states
from lpgb.runtime.terms import TERMS, BoxEvidence, make_terms
from lpgb.runtime.terms.knn import KnnBank, greedy_coreset
from lpgb.runtime.foreground import ForegroundEstimator, ForegroundField
from lpgb.runtime.terms.velocity import BIN_MEAN, BIN_MEAN_BULK, BIN_SHARE, BINS, velocity_features


def test_knn_held_out_scores_use_other_videos_only():
    rows = np.array([[0.0], [0.1], [5.0], [5.1]], np.float32)
    groups = np.array([0, 0, 1, 1])
    bank = KnnBank(k=1, bank_size=10)
    held_out = bank.fit(rows, groups)
    z = (rows - rows.mean()) / rows.std()
    # each row's nearest neighbour in the OTHER video is ~5 apart, not its own twin 0.1 apart
    assert held_out[0] == pytest.approx(abs(z[0, 0] - z[2, 0]), rel=1e-2)
    assert held_out[3] == pytest.approx(abs(z[3, 0] - z[1, 0]), rel=1e-2)
    assert bank.score(rows[:1])[0] == pytest.approx(0.0, abs=1e-3)  # serving: the whole bank
    assert bank.score(np.zeros((0, 1)))[:].shape == (0,)


def test_coreset_is_bounded_and_covers_far_points():
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(0, 0.01, (500, 3)), [[10.0, 10.0, 10.0]]]).astype(np.float32)
    keep = greedy_coreset(z, 20)
    assert len(keep) == 20 and 500 in keep  # the outlier is a centre


def test_knn_state_round_trip_is_exact_float16(tmp_path):
    rng = np.random.default_rng(1)
    rows, groups = rng.normal(size=(200, 6)).astype(np.float32), np.repeat(np.arange(4), 50)
    cfg = replace(preset("tiny"), scoring=ScoringConfig(terms=("velocity",), bank_size=64))
    (term,) = make_terms(cfg)
    term.fit(rows, groups)
    before = term.score(rows[:10])
    save_term_states(tmp_path / TERM_STATES, [term])
    (again,) = load_terms(cfg, tmp_path)
    np.testing.assert_array_equal(again.score(rows[:10]), before)
    assert again.knn.bank.shape == (64, 6)


def test_stateful_term_without_state_is_refused(tmp_path):
    cfg = replace(preset("tiny"), scoring=ScoringConfig(terms=("smm", "appearance")))
    with pytest.raises(LpgbError, match="'appearance' has no fitted state"):
        load_terms(cfg, tmp_path)
    assert [t.name for t in load_terms(replace(cfg, scoring=ScoringConfig(terms=("smm",))), tmp_path)] == ["smm"]


def test_unknown_term_is_one_line_error():
    with pytest.raises(LpgbError, match="unknown score term 'nope'"):
        make_terms(replace(preset("tiny"), scoring=ScoringConfig(terms=("nope",))))


def test_velocity_features_bin_direction_and_speed():
    flow = np.zeros((100, 200, 2), np.float32)
    flow[20:60, 10:50] = (3.0, 0.0)  # box A moves right at 3 px/frame
    flow[20:60, 100:140] = (0.0, -2.0)  # box B moves up at 2 px/frame
    ev = BoxEvidence((100, 200), np.array([[10, 20, 50, 60], [100, 20, 140, 60], [150, 70, 190, 95]], np.float32),
                     flow=FlowField(flow, 1.0))
    f = velocity_features(ev, BIN_MEAN)
    assert f.shape == (3, BINS + 1)
    right = int((0.0 + np.pi) / (2 * np.pi) * BINS)  # angle 0
    up = int((-np.pi / 2 + np.pi) / (2 * np.pi) * BINS)  # angle -pi/2 (image y points down)
    assert f[0, right] == pytest.approx(3.0) and f[0, :BINS].sum() == pytest.approx(3.0)  # % of height 100
    assert f[1, up] == pytest.approx(2.0) and f[1, :BINS].sum() == pytest.approx(2.0)
    assert not f[2, :BINS].any()  # still box
    assert f[0, BINS] == pytest.approx(np.log(40 / 100))
    with pytest.raises(LpgbError, match="needs 'flow'"):
        velocity_features(replace(ev, flow=None))
    with pytest.raises(LpgbError, match="needs 'foreground'"):
        velocity_features(ev)  # the default rule reads the foreground mask


def test_velocity_bulk_motion_is_the_median_flow_over_the_foreground():
    """Limbs swing fast left and right (cancelling in the bins' view of direction); the body (the foreground
    pixels) drifts down at 0.3 px/frame, below the 0.5 px moving threshold: the bulk columns hold
    |median x| = 0 and |median y| = 0.3 (in % of a 100 px frame height). Without foreground pixels in a
    box, its moving pixels give the median."""
    flow = np.zeros((100, 200, 2), np.float32)
    flow[20:60, 10:50] = (0.0, 0.3)  # body of object A
    flow[20:25, 10:50] = (2.0, 0.0)  # its limbs, right ...
    flow[55:60, 10:50] = (-2.0, 0.0)  # ... and left
    flow[20:60, 100:140] = (-1.5, 0.0)  # object B, not in the mask: its moving pixels are used
    mask = np.zeros((100, 200), bool)
    mask[20:60, 10:50] = True
    boxes = np.array([[10, 20, 50, 60], [100, 20, 140, 60]], np.float32)
    ev = BoxEvidence((100, 200), boxes, flow=FlowField(flow, 1.0), foreground=ForegroundField(mask))
    f = velocity_features(ev, BIN_MEAN_BULK)
    assert f.shape == (2, BINS + 3)
    np.testing.assert_allclose(f[:, :BINS + 1], velocity_features(ev, BIN_MEAN))  # the first columns are unchanged
    assert f[0, BINS + 1:] == pytest.approx((0.0, 0.3), abs=1e-6)
    assert f[1, BINS + 1:] == pytest.approx((1.5, 0.0), abs=1e-6)  # absolute: left and right are alike
    # the flow at half the frame size: the mask is sampled on its grid and the same values come out
    half = FlowField(flow[::2, ::2].copy() * 0.5, 0.5)
    g = velocity_features(replace(ev, flow=half), BIN_MEAN_BULK)
    assert g[0, BINS + 1:] == pytest.approx((0.0, 0.3), abs=1e-6)


def test_velocity_bulk_motion_pools_the_objects_last_frames():
    """This frame the body stands still, in the 4 frames before it drifted down at 1 px/frame: the median over
    the 5 frames' foreground pixels is the drift. Past masks count only where they are foreground."""
    still, drift = np.zeros((100, 200, 2), np.float32), np.zeros((100, 200, 2), np.float32)
    still[20:60, 10:50] = (0.6, 0.0)  # moving a little (the bins see it), no drift
    drift[20:60, 10:50] = (0.0, 1.0)
    drift[0:20] = (5.0, 5.0)  # fast motion outside the mask is ignored
    mask = np.zeros((100, 200), bool)
    mask[20:60, 10:50] = True
    box = np.array([[10, 20, 50, 60]], np.float32)
    past_flows, past_masks = (drift,) * 4, (mask,) * 4
    ev = BoxEvidence((100, 200), box, flow=FlowField(still, 1.0, past_flows),
                     foreground=ForegroundField(mask, past_masks))
    assert velocity_features(ev, BIN_MEAN_BULK)[0, BINS + 1:] == pytest.approx((0.0, 1.0))
    alone = replace(ev, flow=FlowField(still, 1.0), foreground=ForegroundField(mask))
    assert velocity_features(alone, BIN_MEAN_BULK)[0, BINS + 1:] == pytest.approx((0.6, 0.0))
    empty = (np.zeros_like(mask),) * 4
    ev_empty = replace(ev, foreground=ForegroundField(mask, empty))
    assert velocity_features(ev_empty, BIN_MEAN_BULK)[0, BINS + 1:] == pytest.approx((0.6, 0.0))


def test_flow_and_foreground_carry_the_same_history():
    cfg = preset("tiny")
    flows, masks = FlowEstimator(cfg.flow), ForegroundEstimator(cfg.proposals)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (40, 60, 3), dtype=np.uint8) for _ in range(HISTORY_FRAMES + 3)]
    for n, frame in enumerate(frames):
        f, m = flows.update(frame), masks.update(frame)
        assert len(f.past) == len(m.past) == min(n, HISTORY_FRAMES - 1)
    assert f.past[0] is not f.flow and f.past[0].shape == f.flow.shape
    flows.reset()
    assert flows.update(frames[0]).past == ()


def test_velocity_term_needs_the_foreground_only_for_banks_with_bulk_columns():
    term = TERMS["velocity"](preset("tiny"))
    assert term.bin_rule == BIN_MEAN_BULK and term.needs == {"flow", "foreground"}
    rows = np.random.default_rng(0).random((40, BINS + 3)).astype(np.float32)
    term.fit(rows, np.repeat(np.arange(4), 10))
    state = term.state()
    assert int(state["bin_rule"]) == BIN_MEAN_BULK
    again = TERMS["velocity"](preset("tiny"))
    again.load_state(state)
    assert again.needs == {"flow", "foreground"}
    old = TERMS["velocity"](preset("tiny"))
    old.load_state({**state, "bin_rule": np.asarray(BIN_MEAN)})  # a bank fitted before the bulk columns
    assert old.bin_rule == BIN_MEAN and old.needs == {"flow"}


def test_velocity_bin_rule_mean_per_bin_and_the_earlier_share_rule_of_old_banks():
    """A box whose pixels move right at 4 and up at 2 (half each): mean per bin gives 4 and 2; the rule of
    banks saved without one (config version 3) gives each bin's share of the mean speed, 2 and 1."""
    flow = np.zeros((100, 100, 2), np.float32)
    flow[0:40, 0:20] = (4.0, 0.0)
    flow[0:40, 20:40] = (0.0, -2.0)
    ev = BoxEvidence((100, 100), np.array([[0, 0, 40, 40]], np.float32), flow=FlowField(flow, 1.0))
    right, up = int(np.pi / (2 * np.pi) * BINS), int((np.pi / 2) / (2 * np.pi) * BINS)
    mean = velocity_features(ev, BIN_MEAN)[0]
    share = velocity_features(ev, BIN_SHARE)[0]
    assert (mean[right], mean[up]) == pytest.approx((4.0, 2.0))
    assert (share[right], share[up]) == pytest.approx((2.0, 1.0))
    term = TERMS["velocity"](preset("tiny"))
    rows = np.random.default_rng(0).random((40, BINS + 1)).astype(np.float32)
    term.fit(rows, np.repeat(np.arange(4), 10))
    state = term.state()
    old = TERMS["velocity"](preset("tiny"))
    old.load_state({k: v for k, v in state.items() if k != "bin_rule"})
    assert old.features(ev)[0, right] == pytest.approx(2.0)
    with pytest.raises(LpgbError, match="unknown bin rule"):
        old.load_state({**state, "bin_rule": np.asarray(7)})


def test_flow_estimator_measures_a_shift_and_downscales():
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur((rng.random((240, 960)) * 255).astype(np.uint8), (0, 0), 3)
    a = cv2.cvtColor(base, cv2.COLOR_GRAY2BGR)
    b = np.roll(a, 4, axis=1)  # 4 px to the right
    est = FlowEstimator(FlowConfig())
    first = est.update(a)
    assert first.scale == 0.5 and not first.flow.any()
    moved = est.update(b).region(np.array([200, 50, 700, 200]))  # frame pixels per frame
    assert np.median(moved[:, 0]) == pytest.approx(4.0, abs=0.5) and abs(np.median(moved[:, 1])) < 0.5


def test_toy_term_in_one_file_runs_through_the_scorer():
    import toy_term  # noqa: F401  (registers "toy_size")

    assert "toy_size" in TERMS
    cfg = replace(preset("tiny"), scoring=ScoringConfig(terms=("toy_size",)))
    (term,) = make_terms(cfg)
    boxes = np.array([[0, 0, 10, 10], [0, 0, 12, 12], [0, 0, 50, 50]], np.float32)
    ev = BoxEvidence((100, 100), boxes)
    raw = term.fit(term.features(ev)[:2], np.array([0, 1]))
    from lpgb.runtime.scoring import calibrate

    cal = calibrate({"toy_size": raw}, np.array([0, 1]), cfg.scoring)
    scored = TermScorer(cfg, cal, [term]).score(ev)
    assert scored.combined.argmax() == 2 and scored.dominant() == ["toy_size"] * 3


def test_toy_term_and_backend_through_detector_and_bench(micro_run, tmp_path):
    """A term and a backend, each one file + a registry line, served by Detector and lpgb-bench."""
    import toy_backend
    import toy_term  # noqa: F401

    from lpgb.benchmarks.suite import BenchRequest, run_bench
    from lpgb.runtime.backends.base import load_backend
    from lpgb.runtime.datasets import open_dataset
    from lpgb.runtime.bundle import ModelBundle
    from lpgb.runtime.pipeline import Detector, open_detector
    from lpgb.runtime.proposer import Proposer, backend_rpn
    from lpgb.runtime.sidecar import load_sidecar, sha256_file, write_sidecar
    from lpgb.runtime.term_fit import collect_training_boxes, fit_terms, save_fitted

    export = tmp_path / "export"
    shutil.copytree(micro_run["export"], export)
    sidecar = load_sidecar(export)
    cfg = LpgbConfig.from_dict(sidecar.config)
    cfg = replace(cfg, scoring=replace(cfg.scoring, terms=("velocity", "toy_size")))
    videos = open_dataset(micro_run["data"]).train_videos()
    rpn_backend = load_backend("toy", export)
    table = collect_training_boxes(videos, cfg, lambda: Proposer(cfg.proposals, backend_rpn(rpn_backend)))
    terms, cal, _, _ = fit_terms(cfg, table, videos)
    save_fitted(export, terms, cal)
    write_sidecar(export, replace(sidecar, config=cfg.to_dict(), calibration=cal.to_dict(),
                                  files={TERM_STATES: sha256_file(export / TERM_STATES)}))
    assert set(json.loads((export / "calibration.json").read_text())["terms"]) == {"velocity", "toy_size"}

    toy_backend.CALLS.clear()
    detector = open_detector(export, "toy")
    assert isinstance(detector, Detector) and detector.tube_scorer is None  # no term needs the branches
    test_video = open_dataset(micro_run["data"]).test_videos()[0]
    from lpgb.runtime.video import open_source

    with open_source(test_video.source) as src:
        results = [detector.process(f) for f in src]
    assert toy_backend.CALLS["rpn"] == len(results) and toy_backend.CALLS["branch1"] == 0
    boxed = [r for r in results if len(r.boxes)]
    assert boxed and set(boxed[0].term_scores) == {"velocity", "toy_size"}
    assert all(np.isfinite(r.score) for r in results)

    report = run_bench(BenchRequest(model=export, data=micro_run["data"], backends=("ort", "toy"),
                                    speed_frames=10, sweep=(), paired_rounds=0))
    acc = report["accuracy"]
    assert set(acc["per_backend"]) == {"ort", "toy"}
    assert acc["per_backend"]["toy"]["scores"] == acc["per_backend"]["ort"]["scores"]  # same graphs underneath
    assert set(acc["per_term"]) == {"velocity", "toy_size"}
    assert ModelBundle.open(export, "toy").cfg.scoring.terms == ("velocity", "toy_size")


def test_shape_features_and_border_flag():
    from lpgb.runtime.terms.shape import shape_features

    ev = BoxEvidence((100, 200), np.array([[10, 20, 30, 60], [50, 50, 130, 70], [0, 10, 20, 50]], np.float32))
    f = shape_features(ev)
    np.testing.assert_allclose(f[:, 0], np.log([40 / 100, 20 / 100, 40 / 100]), rtol=1e-6)
    np.testing.assert_allclose(f[:, 1], np.log([20 / 40, 80 / 20, 20 / 40]), rtol=1e-6)
    assert f[:, 2].tolist() == [0.0, 0.0, 1.0]  # the third box starts at x = 0


def test_shape_term_flags_a_wide_box_among_walkers():
    cfg = replace(preset("tiny"), scoring=ScoringConfig(terms=("shape",)))
    (term,) = make_terms(cfg)
    rng = np.random.default_rng(0)
    h = rng.uniform(30, 50, 200)
    x = rng.uniform(20, 150, 200)
    aspect = rng.uniform(0.3, 0.5, 200)
    walkers = np.stack([x, np.full(200, 40.0), x + h * aspect, 40 + h], 1).astype(np.float32)
    term.fit(term.features(BoxEvidence((240, 360), walkers)), np.arange(200) % 4)
    probe = np.array([[50, 40, 66, 80], [60, 40, 120, 70]], np.float32)  # a walker, a cart-like wide box
    scores = term.score(term.features(BoxEvidence((240, 360), probe)))
    assert scores[1] > 5 * max(scores[0], 0.05)


def test_train_refits_terms_on_an_existing_run(micro_run, tmp_path):
    """`lpgb-train --stage calibrate --terms ...` refits an existing run's score terms in place."""
    from lpgb.trainer.pipeline import TrainRequest, train_all

    run = tmp_path / "run"
    shutil.copytree(micro_run["run"], run, ignore=shutil.ignore_patterns("export"))
    train_all(TrainRequest(data=micro_run["data"], out=run, stage="calibrate", terms=("smm", "shape"), combine="max"))
    cfg = LpgbConfig.load(run / "config.json")
    assert (cfg.scoring.terms, cfg.scoring.combine, cfg.preset) == (("smm", "shape"), "max", "tiny")
    cal = json.loads((run / "calibration.json").read_text())
    assert set(cal["terms"]) == {"smm", "shape"}
    (shape,) = [t for t in load_terms(cfg, run) if t.name == "shape"]
    assert shape.knn.bank is not None
    with pytest.raises(LpgbError, match="unknown score term 'bogus'"):
        train_all(TrainRequest(data=micro_run["data"], out=run, stage="calibrate", terms=("bogus",)))
    with pytest.raises(LpgbError, match="refit them with --stage calibrate"):
        train_all(TrainRequest(data=micro_run["data"], out=run, stage="temporal", terms=("smm",)))


def test_mixed_model_fits_network_free_terms_on_every_box(micro_run, tmp_path):
    """With a network term beside them, `shape` (no network) is fitted on every training box, exactly as in a
    model without network terms, and all terms are calibrated together on the tube boxes."""
    from lpgb.runtime.term_fit import load_training_scores
    from lpgb.trainer.pipeline import TrainRequest, train_all

    folders = {}
    for terms in (("smm", "shape"), ("shape",)):
        run = folders[terms] = tmp_path / "_".join(terms)
        shutil.copytree(micro_run["run"], run, ignore=shutil.ignore_patterns("export"))
        train_all(TrainRequest(data=micro_run["data"], out=run, stage="calibrate", terms=terms))
    mixed, alone = (np.load(folders[t] / "terms.npz") for t in (("smm", "shape"), ("shape",)))
    for key in ("shape/mean", "shape/std", "shape/bank"):
        np.testing.assert_array_equal(mixed[key], alone[key])
    raw, keys = load_training_scores(folders[("smm", "shape")])
    assert set(raw) == {"smm", "shape"} and len(raw["smm"]) == len(raw["shape"]) == len(keys)
    all_raw, all_keys = load_training_scores(folders[("shape",)])
    assert len(all_keys) >= len(keys)
    assert np.isin(raw["shape"], all_raw["shape"]).all()  # the same held-out scores, at the tube boxes


def test_fit_terms_with_a_tube_subsample_fits_network_free_terms_on_all_boxes(micro_run):
    """The tube cache keeps a subsample of the boxes; `fit_terms(..., all_boxes=...)` still fits `shape` on
    all of them (same bank as fitting it alone) and returns every term's held-out scores at the tube boxes."""
    from lpgb.runtime.datasets import open_dataset
    from lpgb.runtime.proposer import Proposer
    from lpgb.runtime.term_fit import TrainingBoxes, collect_training_boxes, fit_terms

    cfg = LpgbConfig.load(micro_run["run"] / "config.json")
    cfg = replace(cfg, proposals=replace(cfg.proposals, source="motion"))
    videos = open_dataset(micro_run["data"]).train_videos()
    every = collect_training_boxes(videos, cfg, lambda: Proposer(cfg.proposals, None))
    sub = np.arange(0, len(every.boxes), 3)
    tubes = TrainingBoxes(every.boxes[sub], every.meta[sub], every.frame_shapes)
    tube_error = np.random.default_rng(0).random(len(sub)).astype(np.float32)
    both = replace(cfg, scoring=replace(cfg.scoring, terms=("smm", "shape")))
    terms, cal, raw, keys = fit_terms(both, tubes, videos, tube_error=tube_error, all_boxes=every)
    alone_terms, _, alone_raw, alone_keys = fit_terms(replace(cfg, scoring=replace(cfg.scoring, terms=("shape",))),
                                                     every, videos)
    np.testing.assert_array_equal(terms[1].knn.bank, alone_terms[0].knn.bank)
    assert [t.name for t in terms] == ["smm", "shape"] and set(cal.terms) == {"smm", "shape"}
    assert len(raw["smm"]) == len(raw["shape"]) == len(keys) == len(sub)
    assert np.isfinite(raw["shape"]).all() and np.isin(raw["shape"], alone_raw["shape"]).all()
    assert len(alone_keys) > len(keys)
    moved = replace(tubes, boxes=tubes.boxes + 5.0)  # boxes the serving proposer did not make
    with pytest.raises(LpgbError, match="not the serving proposer's boxes"):
        fit_terms(both, moved, videos, tube_error=tube_error, all_boxes=every)


def test_a_failed_refit_leaves_the_runs_config_unchanged(micro_run, tmp_path, monkeypatch):
    """`--stage calibrate --terms ...` writes the new terms into config.json only once they are fitted."""
    import lpgb.trainer.temporal_stage as temporal_stage
    from lpgb.trainer.pipeline import TrainRequest, train_all

    run = tmp_path / "run"
    shutil.copytree(micro_run["run"], run, ignore=shutil.ignore_patterns("export"))
    before = (run / "config.json").read_text()

    def broken(*args, **kwargs):
        raise LpgbError("simulated failure while fitting")

    monkeypatch.setattr(temporal_stage, "calibrate_network_free", broken)
    with pytest.raises(LpgbError, match="simulated failure"):
        train_all(TrainRequest(data=micro_run["data"], out=run, stage="calibrate", terms=("shape",)))
    assert (run / "config.json").read_text() == before
