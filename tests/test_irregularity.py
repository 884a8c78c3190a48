"""Branch 1's motion-irregularity task (trainer) and the `irregularity` score term that serves its read-out
(runtime): the loss, the skipped-frame input, the refusals, the term's parity with the torch head, the
branch-1-only serving path and its cost."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from lpgb.runtime.config import preset
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.pipeline import TubeScorer
from lpgb.runtime.terms import network_path, term_class, terms_network_path
from lpgb.runtime.terms.base import BoxEvidence
from lpgb.runtime.tubes import TubeBuilder
from test_feature_cache import PixelBackend, _frames

CFG = preset("tiny")
MOTION = replace(CFG, spatial=replace(CFG.spatial, input_form="motion"))


def test_loss_is_low_only_when_the_head_separates_the_two_classes():
    from lpgb.trainer.losses import irregularity_loss

    low, high = torch.full((8,), -6.0), torch.full((8,), 6.0)
    assert irregularity_loss(low, high) < 0.01
    assert irregularity_loss(high, low) > 5.0
    assert abs(irregularity_loss(torch.zeros(8), torch.zeros(8)).item() - np.log(2)) < 1e-6


def test_a_few_steps_teach_branch_and_head_to_tell_skipped_frames():
    """On tubes of a moving square the skipped-frame crops move twice as far; branch + head learn it."""
    from lpgb.trainer.losses import irregularity_loss
    from lpgb.trainer.models.branch import Branch
    from lpgb.trainer.models.irregularity import IrregularityHead
    from lpgb.trainer.spatial_stage import _batch_input, _skipped_input
    from lpgb.trainer.tube_cache import TubeCache

    torch.manual_seed(0)
    s, t, m = CFG.spatial.image_size, 6, 16
    crops = np.full((m, t, s, s, 3), 40, np.uint8)
    for i in range(m):
        for j in range(t):
            x = 4 + 3 * j + (i % 4)
            crops[i, j, 20:40, x:x + 12] = 200
    cache = TubeCache(crops, np.zeros((m, 4), np.float32), np.zeros((m, 3), np.int32), np.zeros((1, 2), np.int32),
                      ["v"])
    branch, head = Branch(MOTION.spatial), IrregularityHead(MOTION.spatial)
    opt = torch.optim.Adam([*branch.parameters(), *head.parameters()], lr=1e-3)
    rng = np.random.default_rng(0)
    index = np.arange(m)
    first = None
    for _ in range(25):
        normal = _batch_input(cache, index, rng, "motion")
        skipped = _skipped_input(cache, index, rng)
        assert normal.shape == skipped.shape == (m, 3, s, s)
        loss = irregularity_loss(head(branch(normal)), head(branch(skipped)))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_the_task_is_refused_without_motion_input_or_with_short_tubes(tmp_path):
    from lpgb.trainer.config import SpatialTrainConfig
    from lpgb.trainer.pipeline import TrainRequest, make_configs
    from lpgb.trainer.spatial_stage import irregularity_branch

    on = SpatialTrainConfig(irregularity_epochs=2)
    assert irregularity_branch(1, MOTION, on, 6) and not irregularity_branch(2, MOTION, on, 6)
    assert not irregularity_branch(1, MOTION, SpatialTrainConfig(), 6)
    with pytest.raises(LpgbError, match="branch-input motion"):
        irregularity_branch(1, CFG, on, 6)
    with pytest.raises(LpgbError, match="at least 5 frames"):
        irregularity_branch(1, MOTION, on, 4)
    with pytest.raises(LpgbError, match="--branch-input motion"):
        make_configs(TrainRequest(data=tmp_path, out=tmp_path / "r", preset="tiny", branch_input="rgb",
                                  irregularity_epochs=2))
    with pytest.raises(LpgbError, match="irregularity-epochs"):
        make_configs(TrainRequest(data=tmp_path, out=tmp_path / "r", preset="tiny", branch_input="motion",
                                  irregularity_epochs=0, terms=("velocity", "irregularity")))
    cfg, t = make_configs(TrainRequest(data=tmp_path, out=tmp_path / "r", preset="tiny", branch_input="motion",
                                       irregularity_epochs=5, terms=("irregularity",)))
    assert t.spatial.irregularity_epochs == 5 and cfg.scoring.terms == ("irregularity",)


def test_the_term_serves_the_torch_head_and_validates_its_state(tmp_path):
    from lpgb.trainer.models.irregularity import IrregularityHead, load_head_arrays, save_head

    torch.manual_seed(1)
    head = IrregularityHead(MOTION.spatial)
    save_head(head, tmp_path / "weights")
    arrays = load_head_arrays(tmp_path)
    assert load_head_arrays(tmp_path / "nothing") is None
    term = term_class("irregularity")(MOTION)
    n_q, e_d = MOTION.spatial.num_queries, MOTION.spatial.embed_dim
    feats = np.random.default_rng(0).normal(size=(5, n_q, e_d)).astype(np.float32)
    ev = BoxEvidence((64, 64), np.zeros((5, 4), np.float32), branch1=feats.reshape(5, -1))
    with pytest.raises(LpgbError, match="irregularity-epochs"):
        term.fit(term.features(ev), np.zeros(5))
    term.load_state(arrays)
    got = term.fit(term.features(ev), np.zeros(5))
    with torch.no_grad():
        ref = head(torch.from_numpy(feats)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
    with torch.no_grad():  # the head rebuilt from its saved read-out is the same head
        rebuilt = IrregularityHead.from_arrays(MOTION.spatial, arrays)(torch.from_numpy(feats)).numpy()
    np.testing.assert_allclose(rebuilt, ref, atol=1e-6)
    again = term_class("irregularity")(MOTION)
    again.load_state(term.state())
    np.testing.assert_allclose(again.score(term.features(ev)), ref, atol=1e-5)
    with pytest.raises(LpgbError, match="finite"):
        again.load_state({"weight": np.full(e_d, np.nan, np.float32), "bias": np.float32(0)})
    with pytest.raises(LpgbError, match="lacks bias"):
        again.load_state({"weight": np.zeros(e_d, np.float32)})
    with pytest.raises(LpgbError, match="finite weights"):
        again.load_state({"weight": np.zeros(e_d + 1, np.float32), "bias": np.float32(0)})


def test_pace_is_the_two_sided_distance_of_the_read_out_from_its_training_median(tmp_path):
    """An object slower than every normal one (logit far below) scores as high as one far faster."""
    from lpgb.trainer.models.irregularity import IrregularityHead, load_head_arrays, save_head

    torch.manual_seed(2)
    save_head(IrregularityHead(MOTION.spatial), tmp_path / "weights")
    arrays = load_head_arrays(tmp_path)
    n_q, e_d = MOTION.spatial.num_queries, MOTION.spatial.embed_dim
    feats = np.random.default_rng(1).normal(size=(41, n_q, e_d)).astype(np.float32)
    ev = BoxEvidence((64, 64), np.zeros((41, 4), np.float32), branch1=feats.reshape(41, -1))
    one_sided, pace = term_class("irregularity")(MOTION), term_class("pace")(MOTION)
    one_sided.load_state(arrays)
    pace.load_state(arrays)  # the trained read-out alone: no centre until fit
    logits = one_sided.fit(one_sided.features(ev), np.zeros(41))
    got = pace.fit(pace.features(ev), np.zeros(41))
    np.testing.assert_allclose(got, np.abs(logits - np.median(logits)), atol=1e-5)
    assert got.min() >= 0 and got[np.argmin(logits)] > np.median(got) and got[np.argmax(logits)] > np.median(got)
    again = term_class("pace")(MOTION)
    again.load_state(pace.state())
    np.testing.assert_allclose(again.score(pace.features(ev)), got, atol=1e-6)
    with pytest.raises(LpgbError, match="centre must be finite"):
        again.load_state({**pace.state(), "center": np.float32(np.nan)})
    assert terms_network_path(["velocity", "shape", "pace", "motion_patterns"]) == "branch1"


def test_motion_patterns_scores_branch1_features_far_from_the_training_boxes_higher():
    n_q, e_d = MOTION.spatial.num_queries, MOTION.spatial.embed_dim
    rng = np.random.default_rng(3)
    train = rng.normal(size=(60, n_q, e_d)).astype(np.float32)
    term = term_class("motion_patterns")(MOTION)
    ev = BoxEvidence((64, 64), np.zeros((60, 4), np.float32), branch1=train.reshape(60, -1))
    held_out = term.fit(term.features(ev), np.arange(60) % 3)
    assert held_out.shape == (60,) and np.isfinite(held_out).all()
    near = train[:4] + 0.01 * rng.normal(size=train[:4].shape).astype(np.float32)
    far = train[:4] + 5.0
    test = BoxEvidence((64, 64), np.zeros((8, 4), np.float32),
                       branch1=np.concatenate([near, far]).reshape(8, -1))
    scores = term.score(term.features(test))
    assert scores[4:].min() > scores[:4].max()
    again = term_class("motion_patterns")(MOTION)
    again.load_state(term.state())
    np.testing.assert_allclose(again.score(again.features(test)), scores, atol=1e-6)


def test_network_paths_run_only_what_the_terms_read():
    assert network_path({"flow"}) == "none"
    assert network_path({"branch1", "flow"}) == "branch1"
    assert network_path({"branch1", "patterns"}) == "patterns"
    assert network_path({"branch1", "tube_error"}) == "tubes"
    assert terms_network_path(["velocity", "shape", "irregularity"]) == "branch1"
    assert terms_network_path(["irregularity", "patterns"]) == "patterns"


def test_branch1_batch_runs_one_branch_and_equals_the_other_paths():
    builder, whole = TubeBuilder(MOTION), TubeScorer(PixelBackend(), None, "motion")
    both, one = TubeScorer(PixelBackend(), None, "motion"), TubeScorer(PixelBackend(), None, "motion")
    frames = _frames(10, speed=3.0)
    for frame, box in frames:
        batch = builder.push(frame, box, np.ones(len(box), np.float32))
        ref = whole(batch.crops, {})
        pair = both.patterns_batch(builder, batch, {})
        times: dict[str, float] = {}
        alone = one.patterns_batch(builder, batch, times, both=False)
        assert set(alone) == {"branch1"} and "branch2" not in times
        np.testing.assert_array_equal(alone["branch1"], ref["branch1"])
        np.testing.assert_array_equal(pair["branch1"], ref["branch1"])
        np.testing.assert_array_equal(pair["patterns"][:, :ref["branch1"].shape[1]], ref["branch1"])
    assert one.backend.crops == len(frames) and both.backend.crops == 2 * len(frames)


def test_cost_model_counts_branch1_only():
    from lpgb.benchmarks.cost import PartCost, frame_cost

    parts = PartCost(rpn_flops=0, branch_flops=100, smm_flops=10, rpn_params=0, branch_params=5, smm_params=2)
    one = frame_cost(parts, CFG, 4.0, "branch1")
    two = frame_cost(parts, CFG, 4.0, "patterns")
    assert one["flops_by_part"]["branch2"] == 0 and one["flops_by_part"]["branch1"] == 400
    assert two["flops"] == 2 * one["flops"] and one["network_path"] == "branch1"
    assert one["bytes_by_part"]["branch2"] == 0


def test_a_trained_motion_run_serves_the_irregularity_term_alike_in_torch_and_ort(tmp_path):
    """lpgb-train with the irregularity task writes the read-out and its held-out accuracy; the exported
    model serves `irregularity` (branch 1 only: no branch 2 time) with the torch run's scores."""
    import json

    from lpgb.benchmarks.synth import SynthConfig, generate
    from lpgb.export.pipeline import ExportRequest, export_run
    from lpgb.runtime.pipeline import open_detector, score_frames
    from lpgb.runtime.video import open_source
    from lpgb.trainer.pipeline import TrainRequest, train_all

    generate(tmp_path / "data", SynthConfig(seed=0, train_videos=2, test_videos=1, frames_per_video=40))
    run = train_all(TrainRequest(data=tmp_path / "data", out=tmp_path / "run", preset="tiny", epochs_scale=0.1,
                                 seed=0, branch_input="motion", irregularity_epochs=1,
                                 terms=("velocity", "irregularity", "pace", "motion_patterns")))
    report = json.loads((run / "spatial_report.json").read_text())
    assert 0.0 <= report["branch1.irregularity"]["accuracy"] <= 1.0
    export = export_run(ExportRequest(run=run))
    video = sorted((tmp_path / "data" / "testing" / "frames").iterdir())[0]
    curves = {}
    for name, model, backend in (("torch", run, "torch"), ("ort", export, "ort")):
        det = open_detector(model, backend)
        with open_source(video) as src:
            scores, times = score_frames(det, src)
        assert "branch1" in times and "branch2" not in times and np.isfinite(scores).all()
        curves[name] = scores
    np.testing.assert_allclose(curves["ort"], curves["torch"], atol=1e-4)


def test_edge_motion_preset_trains_and_serves_the_read_out_and_edge_stays_network_free(tmp_path):
    from lpgb.trainer.pipeline import TrainRequest, make_configs

    cfg, t = make_configs(TrainRequest(data=tmp_path, out=tmp_path / "r", preset="edge-motion"))
    assert cfg.spatial.input_form == "motion" and cfg.spatial.image_size == 64
    assert t.spatial.irregularity_epochs == 8 and "irregularity" in cfg.scoring.terms
    assert terms_network_path(cfg.scoring.terms) == "branch1"
    cfg, t = make_configs(TrainRequest(data=tmp_path, out=tmp_path / "r"))
    assert cfg.preset == "edge" and t.spatial.irregularity_epochs == 0
    assert terms_network_path(cfg.scoring.terms) == "none"
