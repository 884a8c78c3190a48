"""OutputWriter and render: CSV/JSON/PNG/MP4 written and readable; per-frame rows streamed; output folders
are not clobbered (--overwrite replaces old outputs only at close)."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from lpgb.runtime import render
from lpgb.runtime.config import ScoringConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.events import EventDetector
from lpgb.runtime.manifest import MANIFEST, Manifest
from lpgb.runtime.outputs import OutputWriter, ScoreCurve
from lpgb.runtime.scoring import Calibration, CausalSmoother, TermCalibration

CAL = Calibration(terms={"smm": TermCalibration(0.0, 1.0)}, normal_level=0.0, threshold=2.0, n_frames=100)
H, W, N = 48, 64, 12


def _scores() -> np.ndarray:
    s = np.zeros(N)
    s[4:8] = [2.5, 3.0, 2.8, 2.2]
    return s


def _names(folder) -> list[str]:
    """The files in `folder` but the manifest (checked by its own tests)."""
    return sorted(p.name for p in folder.iterdir() if p.name != MANIFEST)


def _fill(writer: OutputWriter, with_frames: bool) -> list:
    det = EventDetector(CAL, ScoringConfig(min_event_frames=2))
    for i, s in enumerate(_scores()):
        frame = np.full((H, W, 3), 40 + 10 * i, np.uint8) if with_frames else None
        boxes = np.array([[4, 4, 30, 40]], np.float32) if i % 3 else np.zeros((0, 4), np.float32)
        bs = np.full(len(boxes), s, np.float32)
        writer.add(i, i / 10.0, float(s), boxes, bs, frame)
        det.push(i, i / 10.0, float(s))
    return det.finish()


def test_outputs_written(tmp_path):
    out = tmp_path / "run"
    labels = (_scores() > 1).astype(np.uint8)
    w = OutputWriter(out, 10.0, save_video=True, frame_size=(H, W), cal=CAL, scoring=ScoringConfig(smoothing_sigma=1.0),
                     meta={"backend": "ort"})
    events = _fill(w, with_frames=True)
    paths = w.close(events, labels)
    assert _names(out) == ["events.json", "frames.jsonl", "scores.csv", "scores.json",
                                                     "scores.png", "video.mp4"]
    assert set(paths) == {"csv", "frames", "json", "events", "plot", "video"}

    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == N and rows[5]["frame"] == "5" and float(rows[5]["score"]) == pytest.approx(3.0)
    assert rows[0]["num_boxes"] == "0" and rows[0]["max_box_score"] == ""
    expected = CausalSmoother(1.0).smooth(_scores())
    np.testing.assert_allclose([float(r["smoothed"]) for r in rows], expected, atol=1e-5)

    data = json.loads((out / "scores.json").read_text())
    assert data["num_frames"] == N and data["threshold"] == 2.0 and data["meta"] == {"backend": "ort"}
    assert data["calibration"]["n_frames"] == 100 and "normal level" in data["note"]
    assert data["frames"][4]["boxes"] == [{"box": [4.0, 4.0, 30.0, 40.0], "score": 2.5}]
    logged = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert logged == data["frames"]  # scores.json's frames are the streamed per-frame log
    ev = json.loads((out / "events.json").read_text())["events"]
    assert len(ev) == 1 and (ev[0]["start_frame"], ev[0]["end_frame"], ev[0]["peak_frame"]) == (4, 7, 5)

    img = cv2.imread(str(out / "scores.png"))
    assert img is not None and img.shape == (320, 1000, 3)

    cap = cv2.VideoCapture(str(out / "video.mp4"))
    count = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (H + render.STRIP_HEIGHT, W, 3)
        count += 1
    cap.release()
    assert count == N


def test_no_video_and_no_leftovers(tmp_path):
    w = OutputWriter(tmp_path / "a", 25.0)
    _fill(w, with_frames=False)
    w.close()
    names = _names(tmp_path / "a")
    assert names == ["events.json", "frames.jsonl", "scores.csv", "scores.json", "scores.png"]


def test_refuses_non_empty_folder_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "video.mp4").write_bytes(b"old")
    Manifest("lpgb-run", ("video.mp4",), ("video.mp4",)).write(out)  # written by an earlier lpgb-run
    with pytest.raises(LpgbError, match="not empty"):
        OutputWriter(out, 25.0)
    w = OutputWriter(out, 25.0, overwrite=True)
    assert (out / "video.mp4").read_bytes() == b"old"  # old outputs stay until the new run closes
    w.close()
    assert (out / "scores.csv").is_file()
    assert not (out / "video.mp4").exists()  # an old output this run did not produce is removed at close
    assert set(Manifest.read(out, "lpgb-run").entries) == {"scores.csv", "frames.jsonl", "scores.json",
                                                           "events.json", "scores.png"}


def test_abort_removes_partial_video(tmp_path):
    out = tmp_path / "x"
    with pytest.raises(RuntimeError):
        with OutputWriter(out, 10.0, save_video=True) as w:
            w.add(0, 0.0, 0.0, None, None, np.zeros((H, W, 3), np.uint8))
            raise RuntimeError("boom")
    assert list(out.iterdir()) == []  # no manifest, no lock either
    with pytest.raises(LpgbError, match="needs the frame"):
        OutputWriter(tmp_path / "y", 10.0, save_video=True).add(0, 0.0, 0.0)


def _old_results(out) -> dict:
    out.mkdir()
    old = {"scores.csv": b"old csv", "scores.json": b"old json", "video.mp4": b"old video"}
    for name, data in old.items():
        (out / name).write_bytes(data)
    (out / "notes.txt").write_text("mine")
    Manifest("lpgb-run", tuple(old), tuple(old)).write(out)  # they were written by an earlier lpgb-run
    return old


def test_overwrite_replaces_old_outputs_only_at_close(tmp_path):
    out = tmp_path / "out"
    old = _old_results(out)
    w = OutputWriter(out, 10.0, cal=CAL, overwrite=True)
    events = _fill(w, with_frames=False)
    assert {n: (out / n).read_bytes() for n in old} == old  # untouched while the run lasts
    staging = [p for p in out.iterdir() if p.name.startswith(".lpgb-run-staging-")]
    assert len(staging) == 1 and (staging[0] / "frames.jsonl").read_bytes().count(b"\n") == N
    paths = w.close(events)
    assert all(p.parent == out and p.is_file() for p in paths.values())
    assert _names(out) == ["events.json", "frames.jsonl", "notes.txt", "scores.csv",
                                                     "scores.json", "scores.png"]
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "scores.json").read_text())["num_frames"] == N


def test_overwrite_abort_leaves_old_outputs(tmp_path):
    out = tmp_path / "out"
    old = _old_results(out)
    with pytest.raises(RuntimeError):
        with OutputWriter(out, 10.0, save_video=True, overwrite=True) as w:
            _fill(w, with_frames=True)
            raise RuntimeError("boom")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name not in ("notes.txt", MANIFEST)} == old


def test_close_failure_keeps_the_streamed_frames(tmp_path, monkeypatch):
    """A full disk at close: scores.csv and frames.jsonl (all frames) still replace the old outputs."""
    out = tmp_path / "out"
    _old_results(out)

    def full(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(OutputWriter, "_write_scores_json", full)
    w = OutputWriter(out, 10.0, overwrite=True)
    _fill(w, with_frames=False)
    with pytest.raises(OSError, match="No space"):
        w.close()
    assert _names(out) == ["frames.jsonl", "notes.txt", "scores.csv"]
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == N == len((out / "frames.jsonl").read_text().splitlines())
    assert w.results_dir == out


def test_scores_json_format_and_streams(tmp_path):
    """scores.json is exactly json.dumps(header + frames) as before streaming; rows are on disk at once."""
    out = tmp_path / "out"
    w = OutputWriter(out, 10.0, cal=CAL, meta={"source": "x"})
    w.add(0, 0.0, 1.0, np.array([[1, 2, 3, 4]]), np.array([1.0]), term_scores={"smm": np.array([0.5])},
          dominant=["smm"])
    w.add(1, 0.1, float("nan"))
    assert (out / "scores.csv").read_text().count("\n") == 3 and (out / "frames.jsonl").read_text().count("\n") == 2
    w.close()
    text = (out / "scores.json").read_text()
    data = json.loads(text)
    assert text == json.dumps(data, allow_nan=False)
    assert list(data)[-1] == "frames" and data["meta"] == {"source": "x"} and data["frames"][1]["score"] is None
    assert data["frames"][0]["boxes"] == [{"box": [1.0, 2.0, 3.0, 4.0], "score": 1.0, "terms": {"smm": 0.5},
                                           "dominant": "smm"}]


def test_plot_keeps_the_last_frames(tmp_path):
    curve = ScoreCurve(10)
    for i in range(25):
        curve.append(float(i), float("inf") if i == 20 else i + 0.5)
    scores, smoothed = curve.arrays()
    assert curve.first == 15 and scores.tolist() == list(range(15, 25)) and np.isnan(smoothed[5])
    w = OutputWriter(tmp_path / "out", 10.0, cal=CAL, plot_frames=5)
    events = _fill(w, with_frames=False)
    w.close(events, (_scores() > 1).astype(np.uint8))
    assert cv2.imread(str(tmp_path / "out" / "scores.png")) is not None
    assert json.loads((tmp_path / "out" / "scores.json").read_text())["num_frames"] == N


def test_render_helpers():
    assert render.score_colour(-1, 0, 2) == (0, 255, 0)
    assert render.score_colour(5, 0, 2) == (0, 0, 255)
    img = render.annotate_frame(np.zeros((H, W, 3), np.uint8), np.array([[1, 1, 20, 20]]), np.array([3.0]),
                                [0.0, 1.0, 3.0], threshold=2.0, lo=0.0, hi=2.0)
    assert img.shape == (H + render.STRIP_HEIGHT, W, 3)
    assert tuple(img[1, 10]) == (0, 0, 255)  # red box edge for a score above threshold
    plot = render.plot_scores(np.array([np.nan, 1.0]), None, None, None, size=(200, 100))
    assert plot.shape == (100, 200, 3)


def test_resume_keeps_the_frames_a_killed_writer_left_and_writes_the_rest_once(tmp_path):
    """A writer killed between its two writes of frame 5 (scores.csv has it, frames.jsonl only half): the
    resumed writer cuts both back to frames 0-4, replays them (smoothing as if never stopped) and appends
    5-11; the result equals an uninterrupted run's files."""
    whole = OutputWriter(tmp_path / "whole", 10.0, cal=CAL, scoring=ScoringConfig())
    _fill(whole, False)
    whole.close()
    scores = _scores()
    out = tmp_path / "killed"
    killed = OutputWriter(out, 10.0, cal=CAL, scoring=ScoringConfig())
    for i in range(5):
        killed.add(i, i / 10.0, float(scores[i]), np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    killed._close_streams()
    killed._lock.release()  # as after kill -9: the pid in the lock is gone
    with open(out / "scores.csv", "a") as f:
        f.write("5,0.5,0.0,0.0,0,\n")
    with open(out / "frames.jsonl", "a") as f:
        f.write('{"frame": 5, "ti')
    with pytest.raises(LpgbError, match="not empty"):
        OutputWriter(out, 10.0, cal=CAL, scoring=ScoringConfig())  # without resume: refused, nothing touched
    resumed = OutputWriter(out, 10.0, cal=CAL, scoring=ScoringConfig(), resume=True)
    assert resumed.resumed == 5
    with pytest.raises(LpgbError, match="replay it"):
        resumed.add(0, 0.0, 0.0)
    for i in range(5):
        resumed.replay(float(scores[i]))
    for i in range(5, N):
        resumed.add(i, i / 10.0, float(scores[i]), np.zeros((0, 4), np.float32), np.zeros(0, np.float32))
    resumed.close()
    frames = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    want = [json.loads(line) for line in (tmp_path / "whole" / "frames.jsonl").read_text().splitlines()]
    assert [f["frame"] for f in frames] == list(range(N))
    assert [f["smoothed"] for f in frames] == pytest.approx([f["smoothed"] for f in want])
    rows = list(csv.reader((out / "scores.csv").open()))
    assert len(rows) == N + 1 and [r[0] for r in rows[1:]] == [str(i) for i in range(N)]
    assert json.loads((out / "scores.json").read_text())["num_frames"] == N
