"""The training videos' frame rate is recorded with the run (informational) and lpgb-run warns in one
line about a source at more than twice or less than half of it; old runs without the record serve
with no warning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from cli_helpers import _cli


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> Path:
    from lpgb.benchmarks.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth") / "data"
    generate(root, SynthConfig(seed=0, train_videos=2, test_videos=1, frames_per_video=30))  # 25 frames/s
    return root


def test_training_fps_of_video_files_and_none_for_frame_folders(synth_data, tmp_path):
    from lpgb.runtime.frame_rate import file_fps, training_fps

    videos = sorted((synth_data / "training" / "videos").glob("*.avi"))
    assert file_fps(videos[0]) == pytest.approx(25.0)
    slow = tmp_path / "slow.avi"
    writer = cv2.VideoWriter(str(slow), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    assert training_fps([*videos, slow]) == pytest.approx(25.0)  # the median
    frames = synth_data / "testing" / "frames" / "01"
    assert file_fps(frames) is None and training_fps([frames]) is None


def test_fps_warning_beyond_twice_either_way():
    from lpgb.runtime.frame_rate import fps_warning

    line = fps_warning("cam.mp4", 5.0, 25.0)
    assert line is not None and "5 frames/s" in line and "25 frames/s" in line and "\n" not in line
    assert fps_warning("cam.mp4", 60.0, 25.0) is not None
    assert fps_warning("cam.mp4", 12.5, 25.0) is None and fps_warning("cam.mp4", 50.0, 25.0) is None
    assert fps_warning("cam.mp4", 5.0, None) is None and fps_warning("cam.mp4", None, 25.0) is None


def test_train_records_the_training_fps_in_data_json(synth_data, tmp_path, monkeypatch):
    import lpgb.trainer.pipeline as pipeline
    from lpgb.runtime.frame_rate import recorded_fps

    monkeypatch.setattr(pipeline, "_run_stage", lambda *a: None)
    run = pipeline.train_all(pipeline.TrainRequest(data=synth_data, out=tmp_path / "run", preset="tiny",
                                                   stage="rpn"))
    record = json.loads((run / "data.json").read_text())
    assert record["fps"] == pytest.approx(25.0) and Path(record["data"]) == synth_data.resolve()
    (run / "export").mkdir()
    assert recorded_fps(run) == recorded_fps(run / "export") == pytest.approx(25.0)
    (run / "data.json").write_text(json.dumps({"data": record["data"]}))  # a run from before the record
    assert recorded_fps(run) is None and recorded_fps(tmp_path / "nowhere") is None


def _video_at(path: Path, frames: list[Path], fps: float) -> Path:
    first = cv2.imread(str(frames[0]))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (first.shape[1], first.shape[0]))
    for f in frames:
        writer.write(cv2.imread(str(f)))
    writer.release()
    return path


def _warnings(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "frames/s" in ln]


def test_run_warns_once_about_a_source_at_another_frame_rate(micro_run, tmp_path):
    from lpgb.runtime.frame_rate import record_training_fps

    run = tmp_path / "run"
    shutil.copytree(micro_run["run"], run)
    record_training_fps(run, sorted((micro_run["data"] / "training" / "videos").glob("*.avi")))
    frames = sorted(sorted((micro_run["data"] / "testing" / "frames").iterdir())[0].glob("*.jpg"))[:6]
    slow = _video_at(tmp_path / "slow.avi", frames, 5.0)
    same = _video_at(tmp_path / "same.avi", frames, 25.0)
    r = _cli("lpgb-run", slow, "--model", run, "--out", tmp_path / "a", "--max-frames", "3")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = _warnings(r.stderr)
    assert len(lines) == 1 and "5 frames/s" in lines[0] and "25 frames/s" in lines[0], r.stderr
    r = _cli("lpgb-run", same, "--model", run / "export", "--out", tmp_path / "b", "--max-frames", "3")
    assert r.returncode == 0 and not _warnings(r.stderr), r.stderr[-3000:]
    data = json.loads((run / "data.json").read_text())
    del data["fps"]
    (run / "data.json").write_text(json.dumps(data))  # an old model folder: serves with no warning
    r = _cli("lpgb-run", slow, "--model", run, "--out", tmp_path / "c", "--max-frames", "3")
    assert r.returncode == 0 and not _warnings(r.stderr), r.stderr[-3000:]


def test_export_carries_the_training_fps_in_model_json(micro_run, tmp_path):
    """lpgb-export copies the run's training frame rate into model.json, so a bare export folder (copied
    away from its run) still knows it; a malformed value is refused when the sidecar is read."""
    from lpgb.runtime.frame_rate import recorded_fps
    from lpgb.runtime.sidecar import Sidecar

    sidecar = json.loads((micro_run["export"] / "model.json").read_text())
    assert sidecar["training_fps"] == pytest.approx(25.0)
    bare = tmp_path / "export"
    shutil.copytree(micro_run["export"], bare)
    assert recorded_fps(bare) == pytest.approx(25.0)
    Sidecar.from_dict(sidecar)  # reads back
    for bad in (-1, 0, "25", True, 1e9):
        with pytest.raises(ValueError, match="training_fps"):
            Sidecar.from_dict({**sidecar, "training_fps": bad})
    older = {k: v for k, v in sidecar.items() if k != "training_fps"}  # an export made before the field
    assert Sidecar.from_dict(older).training_fps is None
