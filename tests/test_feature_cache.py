"""Branch-feature cache (runtime/feature_cache.py, TubeScorer.score_batch) and region snapping
(ProposalConfig.region_snap, geometry.snap_regions)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from lpgb.runtime.config import LpgbConfig, ProposalConfig, preset
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.feature_cache import FeatureCache
from lpgb.runtime.geometry import enlarge, group_boxes, make_square, snap_regions, square_regions
from lpgb.runtime.pipeline import TubeScorer
from lpgb.runtime.tubes import TubeBuilder

CFG = preset("tiny")  # L = 5, S = 64
L = CFG.smm.window


class PixelBackend:
    """branch1/branch2: features from each crop's pixels (so a wrong crop gives other numbers);
    smm: error = mean of the features. Counts the crops it sees."""

    name = "pixels"
    providers = ["numpy"]

    def __init__(self) -> None:
        self.crops = 0

    def run(self, part: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if part in ("branch1", "branch2"):
            x = inputs["crops"]  # (B, 3, S, S)
            self.crops += len(x)
            sign = 1.0 if part == "branch1" else -1.0
            feats = sign * x.reshape(len(x), 3, 4, -1).mean(axis=3)  # (B, 3, 4) = (B, N_q, E_d)
            return {"features": feats.astype(np.float32)}
        f1 = inputs["f1"]  # (K, L+1, N_q, E_d)
        k = len(f1)
        return {"error": (f1 - inputs["f2"]).reshape(k, -1).mean(axis=1), "current": f1[:, -1].reshape(k, -1)}

    def close(self) -> None:
        pass


def _frames(n: int, speed: float = 1.5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Frames (120, 200, 3) with a textured 20x30 block moving right by `speed` px/frame (+ 1 px box jitter)."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 255, (30, 20, 3), np.uint8)
    out = []
    for t in range(n):
        frame = np.full((120, 200, 3), 40, np.uint8)
        x = int(20 + speed * t)
        frame[40:70, x:x + 20] = texture
        jitter = rng.integers(-1, 2, 4)
        box = np.array([[x + jitter[0], 40 + jitter[1], x + 20 + jitter[2], 70 + jitter[3]]], np.float32)
        out.append((frame, box))
    return out


def _run(cfg: LpgbConfig, cache: bool, n: int = 40, check=None) -> tuple[list[np.ndarray], TubeScorer, PixelBackend]:
    backend = PixelBackend()
    scorer = TubeScorer(backend, FeatureCache() if cache else None)
    builder = TubeBuilder(cfg)
    errors = []
    for frame, box in _frames(n):
        batch = builder.push(frame, box, np.ones(len(box), np.float32), crop=not cache)
        if cache:
            scorer.cache.evict_before(int(builder.window_indices()[0]))
        errors.append(scorer.score_batch(builder, batch, {})["tube_error"])
        if check is not None:
            check(builder, scorer)
    return errors, scorer, backend


def test_cached_features_are_the_uncached_ones_and_snapping_gives_hits():
    snapped = replace(CFG, proposals=replace(CFG.proposals, region_snap=0.2))
    off, _, backend_off = _run(snapped, cache=False)
    on, scorer, backend_on = _run(snapped, cache=True)
    np.testing.assert_array_equal(np.concatenate(off), np.concatenate(on))  # same crops, same features
    stats = scorer.cache.stats
    assert stats.lookups == 40 * (L + 1) and stats.hit_rate > 0.25
    assert backend_on.crops == 2 * stats.computed == 2 * scorer.crops_run < 0.7 * backend_off.crops  # both branches
    # exact regions of a jittering moving object almost never repeat: the hits come from the snapping
    _, exact, _ = _run(CFG, cache=True)
    assert exact.cache.stats.hit_rate < stats.hit_rate / 2


def test_cache_holds_only_buffered_frames():
    cfg = replace(CFG, proposals=replace(CFG.proposals, region_snap=0.1))
    sizes = []

    def check(builder: TubeBuilder, scorer: TubeScorer) -> None:
        window = set(int(i) for i in builder.window_indices())
        assert scorer.cache.frames() <= window
        sizes.append(len(scorer.cache))

    _run(cfg, cache=True, n=60, check=check)
    assert max(sizes) <= (L + 1) * (L + 1)  # one box: each buffered frame cut at most L+1 distinct regions
    cache = FeatureCache(max_entries=3)
    for i in range(5):
        cache.put((i, 0, 0, 8, 8), np.zeros((2, 2)), np.zeros((2, 2)))
    assert len(cache) == 3 and cache.frames() == {2, 3, 4}
    with pytest.raises(LpgbError):
        FeatureCache(max_entries=0)


def test_window_indices_and_indexed_crops_match_the_tube_crops():
    builder = TubeBuilder(CFG)
    for t, (frame, box) in enumerate(_frames(8)):
        batch = builder.push(frame, box, np.ones(1, np.float32))
        indices = builder.window_indices()
        assert list(indices) == [max(0, i) for i in range(t - L, t + 1)]
        crops = builder.crop_indexed(indices, np.repeat(batch.regions, L + 1, axis=0))
        np.testing.assert_array_equal(crops, batch.crops[0])
    with pytest.raises(LpgbError, match="not buffered"):
        builder.crop_indexed(np.array([0]), batch.regions)


def test_detector_scores_identical_with_and_without_cache(micro_run):
    from lpgb.runtime.backends.base import load_backend
    from lpgb.runtime.bundle import ModelBundle
    from lpgb.runtime.datasets import open_dataset
    from lpgb.runtime.pipeline import Detector
    from lpgb.runtime.video import open_source

    bundle = ModelBundle.open(micro_run["export"], "ort")
    assert bundle.cfg.proposals.region_snap == 0.0
    video = open_dataset(micro_run["data"]).test_videos()[0]
    with open_source(video.source) as src:
        frames = list(src)
    results = {}
    for cache in (False, True):
        detector = Detector(bundle, load_backend("ort", bundle.folder), feature_cache=cache)
        assert detector.tube_scorer is not None and (detector.tube_scorer.cache is not None) == cache
        out = [detector.process(f) for f in frames]
        results[cache] = (out, detector.tube_scorer)
        detector.backend.close()
    (off, scorer_off), (on, scorer_on) = results[False], results[True]
    assert sum(len(r.boxes) for r in off) > 0
    np.testing.assert_array_equal([r.score for r in off], [r.score for r in on])
    for a, b in zip(off, on):
        assert a.term_scores.keys() == b.term_scores.keys()
        for name in a.term_scores:
            np.testing.assert_array_equal(a.term_scores[name], b.term_scores[name])
    assert scorer_on.cache.stats.lookups == scorer_off.crops_run  # same tubes read ...
    assert scorer_on.crops_run < scorer_off.crops_run  # ... fewer crops run (at least the repeated first frames)


def test_snap_regions_ladder_grid_and_containment():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 300, (500, 2))
    wh = rng.uniform(8, 120, (500, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    squares = enlarge(make_square(boxes), 1.25)
    for snap in (0.1, 0.2):
        regions = snap_regions(squares, snap)
        side = regions[:, 2] - regions[:, 0]
        assert (side == regions[:, 3] - regions[:, 1]).all()
        need = squares[:, 2] - squares[:, 0]
        assert (side >= np.floor(need)).all() and (side <= np.ceil(need * (1 + snap)) + 1).all()
        levels = {int(math.ceil((1 + snap) ** k - 1e-6)) for k in range(60)}
        assert set(side.tolist()) <= levels
        step = np.maximum(np.rint(snap * side), 1)
        assert (regions[:, 0] % step == 0).all() and (regions[:, 1] % step == 0).all()
        # snap <= 1 - 1/context_scale: the object box stays inside its region
        assert (regions[:, :2] <= np.floor(boxes[:, :2]) + 1).all() and (regions[:, 2:] >= np.ceil(boxes[:, 2:]) - 1).all()
    assert snap_regions(np.zeros((0, 4), np.float32), 0.2).shape == (0, 4)


def test_region_snap_config_validation_and_default_off():
    assert ProposalConfig().region_snap == 0.0 and preset("edge").proposals.region_snap == 0.0
    assert ProposalConfig(region_snap=0.2).region_snap == 0.2
    for bad in (-0.1, 1.0, 2, float("nan"), "0.2"):
        with pytest.raises(LpgbError, match="region_snap"):
            ProposalConfig(region_snap=bad)
    data = preset("edge").to_dict()
    data["proposals"]["region_snap"] = 1.5
    with pytest.raises(LpgbError, match="region_snap"):
        LpgbConfig.from_dict(data)
    del data["proposals"]["region_snap"]  # a config written before the field: exact regions, as it was made
    assert LpgbConfig.from_dict(data).proposals.region_snap == 0.0
    # snapping off: group_boxes gives the exact regions it always gave
    boxes = np.array([[10, 12, 40, 70], [100, 50, 121, 63]], np.float32)
    _, _, regions = group_boxes(boxes, np.ones(2, np.float32), (120, 200, 3), ProposalConfig())
    np.testing.assert_array_equal(regions, square_regions(enlarge(make_square(boxes), 1.25)))
    np.testing.assert_array_equal(regions[0], [-11, 5, 61, 77])


def test_diagnostic_refuses_bad_input(tmp_path):
    from lpgb.benchmarks.feature_cache import main

    for argv, match in ((["--snap", "1.5"], "--snap"), (["--snap", "0.2", "--max-videos", "-1"], "--max-videos"),
                        (["--snap", "x"], "invalid float")):
        with pytest.raises(LpgbError, match=match):
            main([str(tmp_path), "--model", str(tmp_path), *argv])
