"""Synthetic generator: layout, labels consistent with boxes, anomaly semantics, determinism."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lpgb.benchmarks.data_cli import app
from lpgb.runtime.datasets import open_dataset
from lpgb.runtime.errors import LpgbError
from lpgb.benchmarks.synth import ANOMALY_KINDS, SynthConfig, generate
from lpgb.runtime.video import open_source

CFG = SynthConfig(seed=3, train_videos=2, test_videos=6, frames_per_video=72)


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "set"
    calls: list[tuple[int, int]] = []
    generate(out, CFG, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 8) for i in range(1, 9)]
    return out


def _boxes(path: Path) -> list[list[dict]]:
    return json.loads(path.read_text())


def test_layout_and_config(synth_set: Path) -> None:
    assert SynthConfig.load(synth_set / "synth.json") == CFG
    ds = open_dataset(synth_set)
    assert ds.layout == "shanghaitech"
    assert [v.name for v in ds.train_videos()] == ["01", "02"]
    assert all(v.boxes is not None for v in ds.train_videos())
    assert [v.name for v in ds.test_videos()] == ["01", "02", "03", "04", "05", "06"]
    assert not [p for p in synth_set.parent.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_training_avi_decodes(synth_set: Path) -> None:
    with open_source(synth_set / "training/videos/01.avi") as src:
        frames = list(src)
        assert src.fps == pytest.approx(CFG.fps)
    assert len(frames) == CFG.frames_per_video
    assert frames[0].shape == (CFG.height, CFG.width, 3)
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 0.5  # things move
    boxes = _boxes(synth_set / "training/boxes/01.json")
    assert len(boxes) == CFG.frames_per_video
    assert all(o["anomaly"] == "none" and o["kind"] == "walker" for frame in boxes for o in frame)


def test_test_labels_match_boxes(synth_set: Path) -> None:
    kinds = set()
    for v in open_dataset(synth_set).test_videos():
        boxes = _boxes(v.boxes)
        assert len(v.labels) == len(boxes) == len(list(v.source.glob("*.jpg"))) == CFG.frames_per_video
        from_boxes = [int(any(o["anomaly"] != "none" for o in frame)) for frame in boxes]
        assert v.labels.tolist() == from_boxes
        assert v.labels[: CFG.frames_per_video // 3].sum() == 0  # normal start
        assert 5 < v.labels.sum() < CFG.frames_per_video  # an anomaly segment
        for frame in boxes:
            for o in frame:
                x1, y1, x2, y2 = o["box"]
                assert 0 <= x1 < x2 <= CFG.width and 0 <= y1 < y2 <= CFG.height
                assert set(o["attributes"]) == {"action", "colour", "size", "place"}
                if o["anomaly"] != "none":
                    kinds.add(o["kind"] if o["anomaly"] == "novel_object" else o["anomaly"])
    assert kinds == set(ANOMALY_KINDS)


def _abnormal_track(boxes: list[list[dict]]) -> tuple[np.ndarray, list[dict]]:
    """Centres (N, 2) and objects of the single anomalous object, frame by frame."""
    objs = [o for frame in boxes for o in frame if o["anomaly"] != "none"]
    centres = np.array([[(o["box"][0] + o["box"][2]) / 2, (o["box"][1] + o["box"][3]) / 2] for o in objs])
    return centres, objs


def test_anomalies_differ_in_motion_or_appearance(synth_set: Path) -> None:
    seen = []
    for v in open_dataset(synth_set).test_videos():
        centres, objs = _abnormal_track(_boxes(v.boxes))
        step = np.abs(np.diff(centres, axis=0))
        kind = objs[0]["anomaly"] if objs[0]["anomaly"] != "novel_object" else objs[0]["kind"]
        if kind in ("running", "bicycle"):
            assert np.median(step[:, 0]) > 3.0
        elif kind == "wrong_way":
            edges = np.abs(np.diff([[o["box"][1], o["box"][3]] for o in objs], axis=0)).max(axis=1)
            assert np.median(edges) > 1.2 and np.median(step[:, 0]) < 0.5  # vertical, unclipped edge
        elif kind == "falling":
            lying = [o for o in objs if o["attributes"]["action"] == "lying"]
            assert lying and all(o["box"][2] - o["box"][0] > o["box"][3] - o["box"][1] for o in lying)
        elif kind == "loitering":
            assert np.ptp(centres[:, 0]) < 30 and len(centres) >= 40
        elif kind == "cart":
            assert {o["kind"] for o in objs} == {"cart"}
        seen.append(kind)
    assert sorted(seen) == sorted(ANOMALY_KINDS)


def test_deterministic(tmp_path: Path) -> None:
    cfg = SynthConfig(seed=11, train_videos=1, test_videos=1, frames_per_video=30)
    generate(tmp_path / "a", cfg)
    generate(tmp_path / "b", cfg)
    generate(tmp_path / "c", replace(cfg, seed=12))
    for rel in ("testing/boxes/01.json", "testing/frames/01/015.jpg", "testing/test_frame_mask/01.npy",
                "training/boxes/01.json"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert (tmp_path / "a/testing/boxes/01.json").read_bytes() != (tmp_path / "c/testing/boxes/01.json").read_bytes()


def test_refuses_non_empty_output(tmp_path: Path) -> None:
    cfg = SynthConfig(train_videos=0, test_videos=1, frames_per_video=30)
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(LpgbError, match="not empty"):
        generate(other, cfg)
    with pytest.raises(LpgbError, match="not a synthetic set"):
        generate(other, cfg, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"
    generate(tmp_path / "s", cfg)
    generate(tmp_path / "s", replace(cfg, frames_per_video=31), overwrite=True)
    assert SynthConfig.load(tmp_path / "s/synth.json").frames_per_video == 31
    with pytest.raises(LpgbError):
        SynthConfig(frames_per_video=5)


def test_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(app, ["synth", str(out), "--videos", "1", "--train-videos", "1", "--frames", "30",
                                 "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert SynthConfig.load(out / "synth.json").seed == 2
    result = runner.invoke(app, ["check", str(out)])
    assert result.exit_code == 0 and "layout: shanghaitech" in result.output
    assert "test: 1 videos, 30 frames" in result.output
    result = runner.invoke(app, ["synth", str(out), "--videos", "1"])
    assert isinstance(result.exception, LpgbError)  # run_app turns this into one line, exit 2


# ------------------------------------------------------------------------------------------------
# crowd mode

# sha256 over the raw frames and objects of SynthConfig(seed=5, train_videos=1, test_videos=2,
# frames_per_video=40) (training 01, testing 01 and 02) and its synth.json, recorded with the generator
# as it was before crowd mode (commit 9460d46): the sparse default must not change.
SPARSE_REFERENCE = "bed26885a78b1084cb9f8037fd6f94fefb283d5fe0b8ff484bc47d7cd37ed531"
CROWD = SynthConfig(seed=4, train_videos=1, test_videos=12, frames_per_video=40, crowd=30)


def test_sparse_default_unchanged_by_crowd_mode() -> None:
    import hashlib

    from lpgb.benchmarks.synth import make_scene, render_video

    cfg = SynthConfig(seed=5, train_videos=1, test_videos=2, frames_per_video=40)
    scene = make_scene(cfg)
    digest = hashlib.sha256()
    for split, index in (("training", 0), ("testing", 0), ("testing", 1)):
        for frame, objects in render_video(cfg, scene, split, index):
            digest.update(frame.tobytes())
            digest.update(json.dumps(objects).encode())
    digest.update(cfg.to_json().encode())
    assert digest.hexdigest() == SPARSE_REFERENCE
    assert "crowd" not in json.loads(cfg.to_json())


@pytest.fixture(scope="module")
def crowd_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("crowd") / "set"
    generate(out, CROWD)
    return out


def test_crowd_density_groups_and_labels(crowd_set: Path) -> None:
    assert SynthConfig.load(crowd_set / "synth.json") == CROWD
    per_frame, overlapping, walkers = [], 0, 0
    for v in open_dataset(crowd_set).test_videos():
        boxes = _boxes(v.boxes)
        assert v.labels.tolist() == [int(any(o["anomaly"] != "none" for o in f)) for f in boxes]
        for frame in boxes:
            per_frame.append(len(frame))
            b = np.array([o["box"] for o in frame], np.float32)
            ix = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
            iy = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
            touching = (ix > 0) & (iy > 0)
            np.fill_diagonal(touching, False)
            overlapping += int(touching.any(axis=1).sum())
            walkers += len(frame)
            assert all(o["attributes"]["zone"] in ("crowd", "open") for o in frame)
    assert np.median(per_frame) >= 0.7 * CROWD.crowd and max(per_frame) <= CROWD.crowd + 12
    assert overlapping / walkers > 0.5  # groups and crossings occlude each other


def test_crowd_perspective(crowd_set: Path) -> None:
    rows, heights = [], []
    for frame in _boxes(crowd_set / "training/boxes/01.json"):
        for o in frame:
            x1, y1, x2, y2 = o["box"]
            if o["attributes"]["action"] == "walking" and 0 < y1 and y2 < CROWD.height - 1:
                rows.append(y2)
                heights.append(y2 - y1)
    rows, heights = np.array(rows), np.array(heights)
    far, near = heights[rows < np.quantile(rows, 0.2)], heights[rows > np.quantile(rows, 0.8)]
    assert np.median(far) < 0.8 * np.median(near)  # people further up the frame are smaller
    assert np.polyfit(rows, heights, 1)[0] > 0


def test_crowd_anomalies_inside_and_outside_the_crowd(crowd_set: Path) -> None:
    from lpgb.benchmarks.synth import anomaly_in_crowd

    placed: dict[str, set[str]] = {}
    for i, v in enumerate(open_dataset(crowd_set).test_videos()):
        objs = [o for f in _boxes(v.boxes) for o in f if o["anomaly"] != "none"]
        kind = objs[0]["anomaly"] if objs[0]["anomaly"] != "novel_object" else objs[0]["kind"]
        zones = [o["attributes"]["zone"] for o in objs]
        if kind != "wrong_way":  # walks across both bands
            expected = "crowd" if anomaly_in_crowd(CROWD, i) else "open"
            assert zones.count(expected) > 0.8 * len(zones), (kind, expected, zones)
            placed.setdefault(kind, set()).add(expected)
    assert all(zones == {"crowd", "open"} for zones in placed.values()) and len(placed) == len(ANOMALY_KINDS) - 1


def test_crowd_cli_and_bad_values(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "crowd"
    result = runner.invoke(app, ["synth", str(out), "--videos", "1", "--train-videos", "0", "--frames", "30",
                                 "--crowd", "12", "--perspective", "0.6"])
    assert result.exit_code == 0, result.output
    cfg = SynthConfig.load(out / "synth.json")
    assert (cfg.crowd, cfg.perspective) == (12, 0.6)
    for bad in (["--crowd", "-1"], ["--crowd", "500"], ["--crowd", "10", "--perspective", "0"]):
        result = runner.invoke(app, ["synth", str(tmp_path / "bad"), "--videos", "1", *bad])
        # a typer range (usage error, exit 2) or an LpgbError (one line, exit 2 under run_app)
        assert isinstance(result.exception, LpgbError) or result.exit_code == 2, bad
        assert not (tmp_path / "bad").exists()
