"""Several streams in one process (`lpgb-run A B C`, `--sources FILE`): one model shared through the
batching backend, each stream's scores equal to its single-stream run, one line per refused source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import _cli, assert_one_line_error


def _scores(folder: Path) -> np.ndarray:
    return np.array([json.loads(line)["score"] for line in (folder / "frames.jsonl").read_text().splitlines()])


def _videos(micro_run) -> list[Path]:
    return sorted((micro_run["data"] / "testing" / "frames").iterdir())


def test_streams_share_one_batched_model_and_score_as_single_runs(micro_run, tmp_path):
    """The micro model runs the branches and the temporal part on every box (smm, appearance terms), so the
    streams' tubes meet in shared backend calls; each stream's curve equals its own lpgb-run's. Tolerance
    1e-5: ORT's matrix kernels may block a batch of other size differently (measured max 0 here)."""
    from lpgb.runtime.runner import RunRequest, run_source
    from lpgb.runtime.streams import read_sources, run_streams

    videos = _videos(micro_run)
    lines: list[str] = []
    specs = read_sources([str(v) for v in videos] + [str(videos[0])], None, lines.append)
    assert len(specs) == len(videos) and len(lines) == 1 and "used twice" in lines[0]
    request = RunRequest(source="", model=micro_run["export"], max_frames=30)
    outcomes = run_streams(request, specs, tmp_path / "multi", report=lines.append)
    assert all(o.error is None and o.scored == 30 for o in outcomes)
    for spec in specs:
        run_source(RunRequest(source=spec.source, model=micro_run["export"], max_frames=30,
                              out=tmp_path / "single" / spec.name))
        multi, single = _scores(tmp_path / "multi" / spec.name), _scores(tmp_path / "single" / spec.name)
        assert len(multi) == 30 and np.isfinite(multi).all()
        np.testing.assert_allclose(multi, single, atol=1e-5)
        assert {"scores.csv", "frames.jsonl", "events.json"} <= {p.name for p in (tmp_path / "multi" / spec.name).iterdir()}


def test_cli_reports_each_bad_source_in_one_line_and_runs_the_rest(micro_run, tmp_path):
    videos = _videos(micro_run)
    listing = tmp_path / "cams.txt"
    listing.write_text(f"# site A\n{videos[0]} gate\n{tmp_path / 'missing.mp4'} door\n{videos[1]} gate\n"
                       f"{videos[1]}  yard  # second camera\n")
    r = _cli("lpgb-run", "--sources", listing, "--model", micro_run["export"], "--out", tmp_path / "out",
             "--max-frames", 12)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    warned = [ln for ln in (r.stdout + r.stderr).splitlines() if "warning:" in ln]
    assert len(warned) == 2 and any("missing.mp4" in w for w in warned) and any("used twice" in w for w in warned)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gate", "yard"]
    assert len(_scores(tmp_path / "out" / "yard")) == 12
    r = _cli("lpgb-run", tmp_path / "nope1.mp4", tmp_path / "nope2.mp4", "--model", micro_run["export"],
             "--out", tmp_path / "none")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "no stream can run" in r.stderr
    r = _cli("lpgb-run", "--sources", tmp_path / "absent.txt", "--model", micro_run["export"])
    assert_one_line_error(r, "sources file")


def test_ctrl_c_stops_every_stream_after_its_frame_and_keeps_what_was_scored(micro_run, tmp_path):
    import signal
    import subprocess
    import time

    from cli_helpers import BIN, ENV
    from lpgb.benchmarks.synth import SynthConfig, generate

    generate(tmp_path / "data", SynthConfig(seed=4, train_videos=1, test_videos=2, frames_per_video=300))
    videos = sorted((tmp_path / "data" / "testing" / "frames").iterdir())
    out = tmp_path / "out"
    # a background job (CI's shell) starts children with SIGINT ignored; a terminal's Ctrl-C reaches a child
    # whose SIGINT is at its default, as here
    proc = subprocess.Popen([str(BIN / "lpgb-run"), *map(str, videos), "--model", str(micro_run["export"]),
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not all(
            (out / v.name / "frames.jsonl").is_file() and (out / v.name / "frames.jsonl").read_text().count("\n") >= 5
            for v in videos):
        time.sleep(0.1)
    assert proc.poll() is None, f"lpgb-run ended before it was interrupted: {proc.communicate()[1][-1000:]}"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "interrupted" in (stdout + stderr)
    for v in videos:
        frames = _scores(out / v.name)
        assert 5 <= len(frames) < 300
        summary = json.loads((out / v.name / "scores.json").read_text())  # each stream closed its files
        assert summary["num_frames"] == len(frames)


def test_an_unreachable_network_stream_is_retried_then_reported_and_the_others_run(micro_run, tmp_path):
    video = _videos(micro_run)[0]
    r = _cli("lpgb-run", video, "http://127.0.0.1:9/cam.mp4", "--reconnects", 1, "--model", micro_run["export"],
             "--out", tmp_path / "out", "--max-frames", 10)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    said = r.stdout + r.stderr
    assert "reconnecting in 1s (attempt 1/1)" in said and "127.0.0.1_9_cam.mp4: stopped after 0 frames" in said
    assert len(_scores(tmp_path / "out" / video.name)) == 10


def test_a_refused_model_leaves_no_stream_folder_behind(micro_run, tmp_path):
    videos = _videos(micro_run)
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "mine.txt").write_text("mine")
    r = _cli("lpgb-run", *videos, "--model", tmp_path / "no-model", "--out", tmp_path / "kept")
    assert_one_line_error(r, "does not exist")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["mine.txt"]
    r = _cli("lpgb-run", *videos, "--model", tmp_path / "no-model", "--out", tmp_path / "new" / "site")
    assert_one_line_error(r, "does not exist")
    assert not (tmp_path / "new").exists()


def test_bench_streams_measures_the_one_backend_named():
    from lpgb.benchmarks.cli import streams_backend
    from lpgb.runtime.errors import LpgbError

    assert streams_backend("torch,ort") == "ort"  # the option's default
    assert streams_backend("openvino") == "openvino" and streams_backend(" ort-int8 ,") == "ort-int8"
    with pytest.raises(LpgbError, match="--streams measures one backend"):
        streams_backend("ort,openvino")
