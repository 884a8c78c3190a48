"""Nothing is lost: --overwrite replaces only a command's own outputs, once the new ones exist; a run
folder is never an export target; a failed first training run leaves no folder behind; the training
caches (tubes, branch features) are rebuilt when what made them changed."""

from __future__ import annotations

from dataclasses import replace

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lpgb.runtime.errors import LpgbError

from cli_helpers import _cli, assert_one_line_error

_one_line_error = assert_one_line_error


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def run_copy(micro_run, tmp_path) -> Path:
    """A copy of the session's trained + exported run, with a file of the user's own."""
    run = tmp_path / "run"
    shutil.copytree(micro_run["run"], run)
    (run / "notes.txt").write_text("my notes")
    return run


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> Path:
    from lpgb.benchmarks.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth") / "data"
    generate(root, SynthConfig(seed=0, train_videos=2, test_videos=1, frames_per_video=30))
    return root


# --- 1. lpgb-export --overwrite ------------------------------------------------------------------------
def test_export_into_the_run_itself_is_refused_and_nothing_is_deleted(run_copy):
    before = _tree(run_copy)
    _one_line_error(_cli("lpgb-export", run_copy, "--out", run_copy, "--overwrite"), contains="run folder")
    assert _tree(run_copy) == before


@pytest.mark.parametrize("where", ["weights", "other_run_export", "data", "data/training/x"])
def test_export_into_a_run_or_dataset_folder_is_refused(where, run_copy, micro_run, tmp_path):
    from lpgb.export.pipeline import ExportRequest, export_run

    data = tmp_path / "data"
    shutil.copytree(micro_run["data"], data)
    other = tmp_path / "other"
    shutil.copytree(run_copy, other, ignore=shutil.ignore_patterns("export", "tubes"))
    out = {"weights": run_copy / "weights", "other_run_export": other / "export", "data": data,
           "data/training/x": data / "training" / "x"}[where]
    before = _tree(tmp_path)
    with pytest.raises(LpgbError, match="run folder|dataset folder"):
        export_run(ExportRequest(run=run_copy, out=out, overwrite=True))
    assert _tree(tmp_path) == before and not (data / "training" / "x").exists()


def test_export_overwrite_replaces_only_export_files(run_copy, capsys):
    from lpgb.export.pipeline import ExportRequest, export_run
    from lpgb.runtime.sidecar import load_sidecar

    export = run_copy / "export"
    (export / "mine.txt").write_text("keep me")
    (export / "ort_trt_cache").mkdir()
    (export / "ort_trt_cache" / "old.engine").write_bytes(b"stale")
    old_sidecar = (export / "model.json").read_text()
    assert (export / "branch1_fp16.onnx").is_file()
    capsys.readouterr()
    assert export_run(ExportRequest(run=run_copy, overwrite=True)) == export  # FP32 only this time
    err = capsys.readouterr().err
    assert "replaced in" in err and "branch1.onnx" in err and "model.json" in err
    assert "branch1_fp16.onnx" in err and "ort_trt_cache" in err  # the old export's files it removed
    assert (export / "mine.txt").read_text() == "keep me"
    assert not (export / "branch1_fp16.onnx").exists() and not (export / "ort_trt_cache").exists()
    assert (export / "model.json").read_text() != old_sidecar
    assert set(load_sidecar(export).parts) == {"rpn", "branch1", "branch2", "smm"}  # hashes match the new files
    assert not [p for p in export.iterdir() if p.name.startswith(".")]  # no staging folder left
    assert (run_copy / "notes.txt").read_text() == "my notes" and (run_copy / "weights" / "rpn.pt").is_file()


def test_failed_export_keeps_the_old_one_and_removes_a_folder_it_made(run_copy, tmp_path, monkeypatch):
    import lpgb.export.pipeline as pipeline

    def fail(run_dir, cfg, out, request):
        (out / "branch1.onnx").write_bytes(b"half written")
        raise LpgbError("export failed")

    monkeypatch.setattr(pipeline, "_write_export", fail)
    before = _tree(run_copy / "export")
    with pytest.raises(LpgbError, match="export failed"):
        pipeline.export_run(pipeline.ExportRequest(run=run_copy, overwrite=True))
    assert _tree(run_copy / "export") == before
    assert not [p for p in (run_copy / "export").iterdir() if p.name.startswith(".")]
    with pytest.raises(LpgbError, match="export failed"):
        pipeline.export_run(pipeline.ExportRequest(run=run_copy, out=tmp_path / "new" / "export"))
    assert not (tmp_path / "new").exists()


# --- 2. lpgb-demo --overwrite ----------------------------------------------------------------------------
def test_demo_refuses_a_folder_with_other_files(tmp_path):
    out = tmp_path / "demo"
    (out / "data").mkdir(parents=True)
    (out / "data" / "x.txt").write_text("old demo")
    (out / "thesis.tex").write_text("mine")
    before = _tree(out)
    _one_line_error(_cli("lpgb-demo", out, "--overwrite"), contains="thesis.tex")
    assert _tree(out) == before


def test_demo_refuses_an_earlier_demo_without_overwrite(tmp_path):
    from lpgb.benchmarks.demo import demo_entries

    from lpgb.benchmarks.demo import COMMAND
    from lpgb.runtime.manifest import Manifest

    (tmp_path / "bench.md").write_text("old")
    with pytest.raises(LpgbError, match="bench.md was not written by lpgb-demo"):  # no manifest: the user's
        demo_entries(tmp_path, overwrite=True)
    Manifest.of(tmp_path, COMMAND, ["bench.md"]).write(tmp_path)
    with pytest.raises(LpgbError, match="--overwrite"):
        demo_entries(tmp_path, overwrite=False)
    assert demo_entries(tmp_path, overwrite=True) == ["bench.md"]
    assert demo_entries(tmp_path / "new", overwrite=False) == []


def _old_demo(out: Path) -> dict[str, bytes]:
    """An earlier demo's outputs, recorded in its manifest as the demo records them."""
    from lpgb.benchmarks.demo import COMMAND, DEMO_ENTRIES
    from lpgb.runtime.manifest import Manifest

    for name in ("data", "run", "detect"):
        (out / name).mkdir(parents=True)
        (out / name / "old.txt").write_text(f"old {name}")
    (out / "bench.json").write_text("{}")
    Manifest.of(out, COMMAND, DEMO_ENTRIES).write(out)
    return _tree(out)


def test_demo_overwrite_replaces_old_outputs_only_after_success(tmp_path):
    from lpgb.benchmarks.demo import demo_entries, replacing_outputs

    out = tmp_path / "demo"
    _old_demo(out)
    with replacing_outputs(out, demo_entries(out, overwrite=True)):
        assert not (out / "data").exists()  # old outputs wait aside, the new ones are made at their real paths
        (out / "data").mkdir()
        (out / "data" / "new.txt").write_text("new")
        (out / "bench.md").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [".lpgb-manifest.json", "bench.md", "data"]
    from lpgb.benchmarks.demo import COMMAND
    from lpgb.runtime.manifest import Manifest

    assert Manifest.read(out, COMMAND).files == ("bench.md", "data/new.txt")
    assert (out / "data" / "new.txt").read_text() == "new"


def test_failed_demo_restores_the_old_outputs(tmp_path):
    from lpgb.benchmarks.demo import demo_entries, replacing_outputs

    out = tmp_path / "demo"
    before = _old_demo(out)
    with pytest.raises(KeyboardInterrupt):
        with replacing_outputs(out, demo_entries(out, overwrite=True)):
            (out / "data").mkdir()
            (out / "data" / "partial.txt").write_text("partial")
            raise KeyboardInterrupt
    assert _tree(out) == before and sorted(p.name for p in out.iterdir()) == [
        ".lpgb-manifest.json", "bench.json", "data", "detect", "run"]
    with pytest.raises(LpgbError):
        with replacing_outputs(tmp_path / "fresh", demo_entries(tmp_path / "fresh", overwrite=False)):
            (tmp_path / "fresh" / "data").mkdir()
            raise LpgbError("train failed")
    assert not (tmp_path / "fresh").exists()


# --- 3. training caches: tubes and branch features ---------------------------------------------------------
def _perturb(path: Path) -> None:
    """Change every float tensor of a saved state dict a little (a retrained model)."""
    from lpgb.trainer.checkpoint import load_weights, save_checkpoint

    state = load_weights(path)
    save_checkpoint(path, **{k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()})


def test_branch_features_are_recomputed_when_the_branches_change(run_copy, monkeypatch):
    import lpgb.trainer.temporal_stage as temporal
    from lpgb.runtime.config import LpgbConfig
    from lpgb.runtime.sidecar import sha256_file
    from lpgb.trainer.spatial_stage import load_branch
    from lpgb.trainer.tube_cache import TubeCache

    cfg = LpgbConfig.load(run_copy / "config.json")
    cache = TubeCache.load(run_copy / "tubes")

    def features() -> tuple[np.ndarray, np.ndarray]:
        branches = tuple(load_branch(run_copy, cfg, b) for b in (1, 2))
        return temporal.load_or_extract_features(branches, cache, run_copy, "cpu")

    f1, _ = features()  # computed now, or read when the copied run's record matches
    record = json.loads((run_copy / "tubes" / "features.json").read_text())
    assert record["branch1_sha256"] == sha256_file(run_copy / "weights" / "branch1.pt")
    extract = temporal.extract_features
    monkeypatch.setattr(temporal, "extract_features", lambda *a, **k: pytest.fail("features were not reused"))
    np.testing.assert_array_equal(features()[0], f1)
    monkeypatch.setattr(temporal, "extract_features", extract)
    _perturb(run_copy / "weights" / "branch1.pt")
    g1, _ = features()
    assert not np.allclose(g1, f1)
    record = json.loads((run_copy / "tubes" / "features.json").read_text())
    assert record["branch1_sha256"] == sha256_file(run_copy / "weights" / "branch1.pt")
    (run_copy / "tubes" / "features.json").unlink()  # no record: recomputed too
    monkeypatch.setattr(temporal, "extract_features", lambda *a, **k: (g1 + 1, g1 + 1))
    np.testing.assert_array_equal(features()[0], g1 + 1)


def _stage_sees_tube_cache(run: Path, data: Path, monkeypatch) -> bool:
    """Run train_all --stage temporal with a stand-in stage; True when the stage found the tube cache kept."""
    import lpgb.trainer.pipeline as pipeline

    seen = []
    monkeypatch.setattr(pipeline, "_run_stage", lambda stage, videos, run_dir, *a: seen.append(
        (run_dir / "tubes" / "videos.json").is_file()))
    pipeline.train_all(pipeline.TrainRequest(data=data, out=run, stage="temporal"))
    return seen == [True]


def test_tube_cache_is_rebuilt_when_the_rpn_or_the_dataset_changes(run_copy, micro_run, tmp_path, monkeypatch):
    from lpgb.trainer.tube_cache import KEY_FILE

    data = micro_run["data"]
    if not (run_copy / "tubes" / KEY_FILE).is_file():  # a reused micro run made before the record existed
        assert not _stage_sees_tube_cache(run_copy, data, monkeypatch)
        pytest.skip("the copied run had no tube cache record (LPGB_MICRO_RUN from an older lpgb)")
    assert _stage_sees_tube_cache(run_copy, data, monkeypatch)  # same inputs: kept
    moved = tmp_path / "moved_data"
    shutil.copytree(data, moved)
    other = tmp_path / "other"
    shutil.copytree(run_copy, other)
    assert not _stage_sees_tube_cache(other, moved, monkeypatch)  # another dataset folder
    _perturb(run_copy / "weights" / "rpn.pt")
    assert not _stage_sees_tube_cache(run_copy, data, monkeypatch)  # the RPN was retrained
    assert not (run_copy / "tubes" / "crops.npy").exists() and not (run_copy / "tubes" / KEY_FILE).exists()


def test_drop_stale_cache_keeps_a_matching_cache_and_clears_an_unfinished_one(tmp_path):
    from lpgb.trainer.tube_cache import CACHE_FILES, KEY_FILE, drop_stale_cache, record_key

    for name in CACHE_FILES:
        (tmp_path / name).write_text("x")
    key = {"rpn_sha256": "a", "videos": ["01"]}
    record_key(tmp_path, key)
    assert not drop_stale_cache(tmp_path, key) and (tmp_path / "crops.npy").is_file()
    assert drop_stale_cache(tmp_path, {**key, "rpn_sha256": "b"}) and not any(tmp_path.iterdir())
    (tmp_path / "crops.npy").write_text("half")  # a build that stopped before videos.json
    (tmp_path / KEY_FILE).write_text(json.dumps(key))
    assert not drop_stale_cache(tmp_path, key) and not any(tmp_path.iterdir())


# --- 4. a first training run that fails leaves no run folder ---------------------------------------------------
@pytest.fixture(scope="module")
def corrupt_data(synth_data, tmp_path_factory) -> Path:
    """The synthetic set with an undecodable first training video."""
    data = tmp_path_factory.mktemp("corrupt") / "data"
    shutil.copytree(synth_data, data)
    noise = np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    (data / "training" / "videos" / "01.avi").write_bytes(noise)
    return data


def test_failed_first_training_run_leaves_no_folder(corrupt_data, tmp_path):
    run = tmp_path / "new" / "run"
    r = _cli("lpgb-train", corrupt_data, "--out", run, "--preset", "tiny", "--epochs-scale", "0.05")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1].startswith("error:"), r.stderr
    assert not (tmp_path / "new").exists()  # a rerun needs no --overwrite


def test_failed_training_keeps_folders_that_had_content(corrupt_data, tmp_path):
    from lpgb.trainer.pipeline import TrainRequest, train_all

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LpgbError):
        train_all(TrainRequest(data=corrupt_data, out=empty, preset="tiny", epochs_scale=0.05))
    assert empty.is_dir() and not any(empty.iterdir())
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    with pytest.raises(LpgbError):
        train_all(TrainRequest(data=corrupt_data, out=used, preset="tiny", epochs_scale=0.05, overwrite=True))
    assert (used / "notes.txt").read_text() == "mine" and (used / "config.json").is_file()


def test_failed_training_keeps_a_resumable_checkpoint(synth_data, tmp_path, monkeypatch):
    import lpgb.trainer.pipeline as pipeline

    def stage(name, videos, run_dir, *args):
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        (run_dir / "checkpoints" / "rpn.pt").write_bytes(b"epoch 1")
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_run_stage", stage)
    with pytest.raises(KeyboardInterrupt):
        pipeline.train_all(pipeline.TrainRequest(data=synth_data, out=tmp_path / "run", preset="tiny"))
    assert (tmp_path / "run" / "checkpoints" / "rpn.pt").is_file()  # --resume continues from it


# --- 5. --overwrite touches only what the command wrote (manifest), never its inputs; one writer per folder ---
def _video(path: Path, frames: int = 4) -> Path:
    """A small readable MP4 (grey frames)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 40 + 20 * i, np.uint8))
    writer.release()
    assert path.stat().st_size > 0
    return path


def _dead_pid() -> int:
    """The id of a process that has exited."""
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_run_never_touches_its_input_video(tmp_path):
    video = _video(tmp_path / "clip" / "video.mp4")
    before = _tree(tmp_path)
    _one_line_error(_cli("lpgb-run", video, "--out", tmp_path / "clip", "--overwrite", "--model", tmp_path / "no"),
                    contains="holds the source")
    _one_line_error(_cli("lpgb-run", video, "--out", tmp_path, "--overwrite", "--model", tmp_path / "no"),
                    contains="holds the source")
    assert _tree(tmp_path) == before


def test_run_output_apart_from_frames_folder_and_model(tmp_path):
    from lpgb.runtime.outputs import check_apart

    frames = tmp_path / "frames"
    frames.mkdir()
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    for out, contains in ((frames, "is the source"), (frames / "out", "is inside the source"),
                          (run, "holds the model"), (tmp_path, "holds the source"),
                          (run / "export" / "detect", "is inside the model")):
        with pytest.raises(LpgbError, match=contains):
            check_apart(out, source=str(frames), model=run / "export")
    with pytest.raises(LpgbError, match="is inside the model"):
        check_apart(run / "export", source="0", model=run)  # the folder the model loads from
    check_apart(tmp_path / "detect", source=str(frames), model=run / "export")
    check_apart(run / "detect", source="0", model=run / "export")  # a webcam index is no path


def test_run_overwrite_refuses_a_file_it_did_not_write(tmp_path):
    from lpgb.runtime.outputs import OutputWriter

    out = tmp_path / "out"
    out.mkdir()
    (out / "video.mp4").write_bytes(b"my holiday")  # no manifest: not lpgb-run's
    with pytest.raises(LpgbError, match="video.mp4 was not written by lpgb-run"):
        OutputWriter(out, 25.0, overwrite=True)
    assert _tree(out) == {"video.mp4": b"my holiday"}  # and no lock left behind
    (out / "video.mp4").unlink()
    w = OutputWriter(out, 25.0, overwrite=True)
    w.add(0, 0.0, 1.0)
    w.close()
    (out / "scores.png").write_bytes(b"edited by hand")  # listed, so replaced by the next run
    (out / "scores.json").unlink()
    (out / "scores.json").mkdir()  # a folder now where a file was listed: it holds unlisted files
    (out / "scores.json" / "mine.txt").write_text("mine")
    with pytest.raises(LpgbError, match="mine.txt was not written"):
        OutputWriter(out, 25.0, overwrite=True)
    assert (out / "scores.json" / "mine.txt").read_text() == "mine"


def test_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path):
    import os
    import subprocess

    from lpgb.runtime.manifest import LOCK
    from lpgb.runtime.outputs import OutputWriter

    out = tmp_path / "out"
    first = OutputWriter(out, 25.0)
    first.add(0, 0.0, 1.0)
    with pytest.raises(LpgbError, match=f"being written by another lpgb command \\(pid {os.getpid()}\\)"):
        OutputWriter(out, 25.0, overwrite=True)
    first.close()
    assert not (out / LOCK).exists()
    (out / LOCK).write_text(f"{_dead_pid()}\n")  # a writer killed with -9
    second = OutputWriter(out, 25.0, overwrite=True)
    assert (out / LOCK).read_text().split() == [str(os.getpid())]
    second.add(0, 0.0, 2.0)
    second.close()
    assert not (out / LOCK).exists()
    live = subprocess.Popen(["sleep", "60"])
    try:
        (out / LOCK).write_text(f"{live.pid}\n")
        frames = tmp_path / "frames"
        frames.mkdir()
        import cv2

        for i in range(3):
            cv2.imwrite(str(frames / f"{i:03d}.jpg"), np.full((48, 64, 3), 60, np.uint8))
        _one_line_error(_cli("lpgb-run", frames, "--out", out, "--overwrite", "--model", tmp_path / "no"),
                        contains=f"pid {live.pid}")
    finally:
        live.kill()
        live.wait()
    r = _cli("lpgb-run", frames, "--out", out, "--overwrite", "--model", tmp_path / "no")
    assert r.returncode == 2 and "being written" not in r.stderr, r.stderr  # taken over; the model is what fails
    assert not (out / LOCK).exists()


def test_stale_staging_folder_of_a_killed_run_is_removed_with_one_line(tmp_path, capsys):
    from lpgb.runtime.outputs import OutputWriter

    out = tmp_path / "out"
    w = OutputWriter(out, 25.0)
    w.add(0, 0.0, 1.0)
    w.close()
    dead = out / f".lpgb-run-staging-{_dead_pid()}"
    dead.mkdir()
    (dead / "frames.jsonl").write_text('{"frame": 0}\n{"frame": 1}\n')
    capsys.readouterr()
    w = OutputWriter(out, 25.0, overwrite=True)
    err = capsys.readouterr().err
    assert not dead.exists() and f"removed {dead}" in err and "2 uncommitted frames" in err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1
    w.add(0, 0.0, 1.0)
    w.close()
    assert not [p for p in out.iterdir() if p.name.startswith(".lpgb-run-staging-")]


def test_synth_overwrite_keeps_unrelated_files(tmp_path):
    from lpgb.benchmarks.synth import SynthConfig, generate
    from lpgb.runtime.manifest import MANIFEST

    out = tmp_path / "set"
    cfg = SynthConfig(train_videos=1, test_videos=1, frames_per_video=30)
    generate(out, cfg)
    (out / "notes.txt").write_text("mine")
    (out / "extra").mkdir()
    (out / "extra" / "labels.csv").write_text("mine too")
    r = _cli("lpgb-data", "synth", out, "--videos", "1", "--train-videos", "1", "--frames", "31", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert (out / "notes.txt").read_text() == "mine" and (out / "extra" / "labels.csv").read_text() == "mine too"
    assert SynthConfig.load(out / "synth.json").frames_per_video == 31 and (out / MANIFEST).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no aside or temporary folder left
    (out / "training" / "videos" / "my_own.avi").write_bytes(b"mine")  # a file of the user's inside the set
    before = _tree(out)
    _one_line_error(_cli("lpgb-data", "synth", out, "--videos", "1", "--train-videos", "1", "--frames", "30",
                         "--overwrite"), contains="my_own.avi was not written by lpgb-data synth")
    assert _tree(out) == before


def test_synth_overwrite_refuses_a_set_without_manifest(tmp_path):
    from lpgb.benchmarks.synth import SynthConfig, generate
    from lpgb.runtime.manifest import MANIFEST

    out = tmp_path / "set"
    generate(out, SynthConfig(train_videos=1, test_videos=1, frames_per_video=30))
    (out / MANIFEST).unlink()  # a set made before the manifest, or a user's own dataset with a synth.json
    before = _tree(out)
    with pytest.raises(LpgbError, match="predates"):
        generate(out, SynthConfig(train_videos=1, test_videos=1, frames_per_video=30), overwrite=True)
    assert _tree(out) == before


@pytest.mark.parametrize("entry", ["data", "run"])
def test_demo_overwrite_refuses_the_users_own_data_or_run(entry, tmp_path):
    out = tmp_path / "demo"
    (out / entry / "training").mkdir(parents=True)
    (out / entry / "training" / "cam1.avi").write_bytes(b"my only copy")
    before = _tree(out)
    _one_line_error(_cli("lpgb-demo", out, "--overwrite"), contains=f"{entry} was not written by lpgb-demo")
    assert _tree(out) == before


def test_demo_overwrite_refuses_a_users_file_inside_an_earlier_demo(tmp_path):
    from lpgb.benchmarks.demo import demo_entries

    out = tmp_path / "demo"
    _old_demo(out)
    assert demo_entries(out, overwrite=True) == ["bench.json", "data", "detect", "run"]
    (out / "run" / "thesis.tex").write_text("mine")
    with pytest.raises(LpgbError, match="thesis.tex was not written by lpgb-demo"):
        demo_entries(out, overwrite=True)


def test_tube_cache_key_follows_the_videos_content(synth_data, tmp_path):
    """A regenerated video (same name, other bytes) or an edited frame file gives another key, so the
    cache made from the old one is dropped; an untouched copy keeps the cache."""
    import os

    from lpgb.runtime.config import preset
    from lpgb.runtime.datasets import open_dataset
    from lpgb.trainer.tube_cache import CACHE_FILES, drop_stale_cache, record_key, tube_cache_key

    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    cfg = preset("tiny")
    ds = open_dataset(data)
    videos = ds.train_videos() + ds.test_videos()  # video files and frame folders
    assert {v.source.is_dir() for v in videos} == {True, False}

    def key() -> dict:
        return tube_cache_key(tmp_path / "run", cfg, data, videos, 8)

    cache = tmp_path / "tubes"
    cache.mkdir()
    for name in CACHE_FILES:
        (cache / name).write_text("x")
    record_key(cache, key())
    assert key() == key() and not drop_stale_cache(cache, key())  # nothing changed: kept
    video = data / "training" / "videos" / "01.avi"
    old = video.read_bytes()
    video.write_bytes(old[:-16] + bytes(16))  # regenerated: same name and size, new bytes and mtime
    assert drop_stale_cache(cache, key()) and not (cache / "crops.npy").exists()
    first = key()
    frame = sorted((data / "testing" / "frames" / "01").glob("*.jpg"))[3]
    st = frame.stat()
    os.utime(frame, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a frame file rewritten
    assert key()["content"] != first["content"] and key()["videos"] == first["videos"]
    # the crowd split's fields enter the key only when the split is on (off: the boxes of older caches)
    assert "motion_split" not in key()["proposals"] and "size_prior" not in key()["proposals"]
    split = replace(cfg, proposals=replace(cfg.proposals, motion_split=True, size_prior=(10.0, 40.0, 5.0, 20.0)))
    assert tube_cache_key(tmp_path / "run", split, data, videos, 8)["proposals"]["motion_split"] is True


def test_concurrent_runs_and_a_killed_run_on_one_folder(micro_run, tmp_path):
    """Two lpgb-run --overwrite on one folder: the second is refused naming the first; the first killed
    with -9 leaves its staging folder, which the next run removes with one line, keeping the results."""
    import signal
    import subprocess
    import time

    import cv2

    from cli_helpers import BIN, ENV

    frames = sorted(sorted((micro_run["data"] / "testing" / "frames").iterdir())[0].glob("*.jpg"))
    first = cv2.imread(str(frames[0]))
    long = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(long), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (first.shape[1], first.shape[0]))
    for _ in range(40):
        for f in frames:
            writer.write(cv2.imread(str(f)))
    writer.release()
    out = tmp_path / "out"
    assert _cli("lpgb-run", long, "--model", micro_run["run"], "--out", out, "--max-frames", "3").returncode == 0
    a = subprocess.Popen([str(BIN / "lpgb-run"), str(long), "--model", str(micro_run["run"]), "--out", str(out),
                          "--overwrite"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list(out.glob(".lpgb-run-staging-*/frames.jsonl")) and time.time() < deadline:
            time.sleep(0.2)
        assert a.poll() is None, "the first run ended before the test could overlap it"
        _one_line_error(_cli("lpgb-run", long, "--model", micro_run["run"], "--out", out, "--overwrite",
                             "--max-frames", "3"), contains=f"being written by another lpgb command (pid {a.pid})")
    finally:
        a.send_signal(signal.SIGKILL)
        a.wait()
    staging = out / f".lpgb-run-staging-{a.pid}"
    assert staging.is_dir() and (out / "scores.json").is_file()  # the old results are still there
    r = _cli("lpgb-run", long, "--model", micro_run["run"], "--out", out, "--overwrite", "--max-frames", "4")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len([ln for ln in r.stderr.splitlines() if f"removed {staging}" in ln]) == 1, r.stderr
    assert not staging.exists() and json.loads((out / "scores.json").read_text())["num_frames"] == 4
