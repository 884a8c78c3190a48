"""lpgb-run streams its results and never loses scored frames: a bad frame, SIGTERM, Ctrl-C and a full
disk keep the frames scored so far (scores.csv rows == frames.jsonl lines == scores.json frames);
--overwrite replaces old results only when the new run has scored frames; the writer's memory does not
grow with frames; the long-stream memory benchmark runs."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from lpgb.runtime.errors import LpgbError

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def _cli(name: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def _kept(out: Path) -> tuple[int, int, dict]:
    """(scores.csv rows, frames.jsonl lines, scores.json) of an output folder."""
    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    logged = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    data = json.loads((out / "scores.json").read_text())
    assert [int(r["frame"]) for r in rows] == [r["frame"] for r in logged] == [r["frame"] for r in data["frames"]]
    assert data["num_frames"] == len(data["frames"])
    return len(rows), len(logged), data


def _frames_dir(micro_run) -> Path:
    return sorted((micro_run["data"] / "testing" / "frames").iterdir())[0]


def _copy_frames(micro_run, dst: Path, count: int) -> Path:
    """A frame folder of `count` frames, cycling through the test videos' jpgs."""
    files = [p for d in sorted((micro_run["data"] / "testing" / "frames").iterdir()) for p in sorted(d.glob("*.jpg"))]
    dst.mkdir()
    for i in range(count):
        shutil.copyfile(files[i % len(files)], dst / f"{i:05d}.jpg")
    return dst


# ---------------------------------------------------------------------------------------------- (a)
def test_bad_frame_keeps_the_frames_before_it(micro_run, tmp_path):
    frames = tmp_path / "frames"
    shutil.copytree(_frames_dir(micro_run), frames)
    (frames / "015.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    r = _cli("lpgb-run", frames, "--model", micro_run["run"], "--out", out)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 2, r.stderr[-2000:]
    lines = _lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "stopped at frame 15 of 40" in lines[0] and "015.jpg" in lines[0], lines[0]
    assert f"15 scored frames kept in {out}" in lines[0], lines[0]
    rows, logged, data = _kept(out)
    assert rows == logged == data["num_frames"] == 15
    assert [f["frame"] for f in data["frames"]] == list(range(15))
    assert (out / "events.json").is_file() and (out / "scores.png").is_file()


# ---------------------------------------------------------------------------------------------- (b)
def test_sigterm_keeps_the_scored_frames(micro_run, tmp_path):
    frames = _copy_frames(micro_run, tmp_path / "long", 400)
    out = tmp_path / "out"
    proc = subprocess.Popen([str(BIN / "lpgb-run"), str(frames), "--model", str(micro_run["run"]), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    log = out / "frames.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and log.read_bytes().count(b"\n") >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert "Traceback" not in stderr, stderr[-3000:]
    assert proc.returncode == 143, f"exit {proc.returncode}: {stderr[-2000:]}"
    lines = _lines(stderr)
    assert len(lines) == 1 and "stopped at frame" in lines[0] and "SIGTERM" in lines[0], stderr
    rows, logged, data = _kept(out)
    assert 0 < rows == logged == data["num_frames"] < 400
    assert f"{rows} scored frames kept in {out}" in lines[0]


def test_ctrl_c_in_process_keeps_frames_and_restores_handlers(micro_run, tmp_path, request):
    """SIGINT mid-run: RunInterrupted (exit code 130) with the frames before it; handlers restored."""
    from lpgb.runtime.runner import RunInterrupted, RunRequest, run_source
    from lpgb.runtime.video import FrameSource, open_source

    class Interrupting(FrameSource):
        def __init__(self):
            self.inner = open_source(_frames_dir(micro_run))
            super().__init__("interrupting", self.inner.fps, self.inner.frame_count)

        def _frames(self):
            for i, frame in enumerate(self.inner):
                if i == 10:
                    os.kill(os.getpid(), signal.SIGINT)
                yield frame

        def close(self):
            self.inner.close()

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:  # a background job: make Ctrl-C reach Python
        signal.signal(signal.SIGINT, signal.default_int_handler)
        request.addfinalizer(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    out = tmp_path / "out"
    with pytest.raises(RunInterrupted, match=r"stopped at frame 10 of 40: interrupted \(Ctrl-C\)") as err:
        run_source(RunRequest(source="interrupting", model=micro_run["run"], out=out), source=Interrupting())
    assert err.value.exit_code == 130 and "10 scored frames kept" in str(err.value)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    rows, logged, data = _kept(out)
    assert rows == logged == data["num_frames"] == 10


def test_signals_are_held_while_a_frame_is_written():
    from lpgb.runtime.runner import _StopSignals, _Terminated

    before = signal.getsignal(signal.SIGTERM)
    with _StopSignals() as guard:
        with pytest.raises(_Terminated):
            with guard.hold():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                written = True  # reached: the signal waits for the end of the block
        assert written and guard.pending is None
        guard.hold_all()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert guard.pending == signal.SIGTERM
        with pytest.raises(_Terminated):  # a second signal forces the stop
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGTERM) == before


def test_full_disk_mid_run_keeps_whole_frames(micro_run, tmp_path, monkeypatch):
    """ENOSPC while frame 7 is written: both streams are cut back to frames 0-6 and the summary is written."""
    from lpgb.runtime import outputs
    from lpgb.runtime.runner import RunRequest, run_source

    real, calls = outputs._write_all, []

    def write_all(f, data):
        calls.append(f.name)
        if len(calls) == 1 + 2 * 7 + 2:  # header, 7 frames (csv + jsonl), then frame 7's jsonl line
            raise OSError(errno.ENOSPC, "No space left on device")
        real(f, data)

    monkeypatch.setattr(outputs, "_write_all", write_all)
    out = tmp_path / "out"
    with pytest.raises(LpgbError, match="stopped at frame 7 of 40: cannot write the results "
                                        r"\(No space left on device\); 7 scored frames kept"):
        run_source(RunRequest(source=str(_frames_dir(micro_run)), model=micro_run["run"], out=out))
    rows, logged, data = _kept(out)
    assert rows == logged == data["num_frames"] == 7


# ---------------------------------------------------------------------------------------------- (c)
OLD = {"scores.csv": b"old csv", "scores.json": b"old json", "events.json": b"old events", "scores.png": b"old png",
       "frames.jsonl": b"old log", "video.mp4": b"old video"}


def _old_results(out: Path) -> None:
    """An earlier lpgb-run's outputs (listed in its manifest) beside a file of the user's."""
    from lpgb.runtime.manifest import Manifest

    out.mkdir()
    for name, data in OLD.items():
        (out / name).write_bytes(data)
    (out / "notes.txt").write_text("mine")
    Manifest("lpgb-run", tuple(OLD), tuple(OLD)).write(out)


def test_overwrite_keeps_old_results_until_the_new_run_has_frames(micro_run, tmp_path):
    out = tmp_path / "out"
    _old_results(out)
    # A full disk from the first write: the writer exists but no frame is added -> exit 2, nothing touched.
    code = (
        "import errno, sys\n"
        "import lpgb.runtime.outputs as o\n"
        "def full(f, data):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "o._write_all = full\n"
        f"sys.argv = ['lpgb-run', {str(_frames_dir(micro_run))!r}, '--model', {str(micro_run['run'])!r}, "
        f"'--out', {str(out)!r}, '--overwrite']\n"
        "import lpgb.runtime.cli as c\n"
        "c.main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 2, r.stderr[-2000:]
    lines = _lines(r.stderr)
    assert len(lines) == 1 and "No space left on device" in lines[0] and "nothing written" in lines[0], r.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()
            if p.name not in ("notes.txt", ".lpgb-manifest.json")} == OLD  # no staging or lock left
    assert (out / "notes.txt").read_text() == "mine"

    r = _cli("lpgb-run", _frames_dir(micro_run), "--model", micro_run["run"], "--out", out, "--overwrite",
             "--max-frames", "5")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir() if p.name != ".lpgb-manifest.json") == [
        "events.json", "frames.jsonl", "notes.txt", "scores.csv", "scores.json", "scores.png"]  # the old video is gone
    assert (out / "notes.txt").read_text() == "mine"
    rows, logged, data = _kept(out)
    assert rows == logged == data["num_frames"] == 5


# ---------------------------------------------------------------------------------------------- (d)
def test_writer_memory_does_not_grow_with_frames(tmp_path):
    from lpgb.runtime.outputs import OutputWriter

    n = 5000
    w = OutputWriter(tmp_path / "out", 25.0)
    boxes = np.array([[4, 4, 30, 40], [50, 8, 70, 60]], np.float32)
    terms = {"smm": np.array([0.5, 1.5], np.float32), "velocity": np.array([2.0, -1.0], np.float32)}

    def add(i: int) -> None:
        w.add(i, i / 25.0, float(np.sin(i / 50.0)), boxes, np.array([1.0, 2.0], np.float32),
              term_scores=terms, dominant=["velocity", "smm"])

    for i in range(1000):
        add(i)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(1000, n):
            add(i)
        grown = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        w.close()
        close_peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # Holding 4000 records as dicts would take ~5 MB; the bounded deques hold <= 4096 floats.
    assert grown < 600_000, f"writer memory grew {grown / 1e6:.2f} MB over 4000 frames"
    assert close_peak < 4_000_000, f"close() peaked at {close_peak / 1e6:.2f} MB: are all records loaded?"
    for name, value in vars(w).items():
        if isinstance(value, (list, dict, tuple, set)):
            assert len(value) < 100, f"OutputWriter.{name} holds {len(value)} items"
        if isinstance(value, deque):
            assert value.maxlen is not None, f"OutputWriter.{name} is an unbounded deque"
    data = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert data["num_frames"] == len(data["frames"]) == n
    assert data["frames"][-1]["boxes"][0]["terms"] == {"smm": 0.5, "velocity": 2.0}
    assert data["frames"][-1]["boxes"][1]["dominant"] == "smm"
    assert (tmp_path / "out" / "frames.jsonl").read_bytes().count(b"\n") == n


# ---------------------------------------------------------------------------------------------- benchmark
def test_long_stream_benchmark(micro_run, tmp_path):
    report = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "lpgb.benchmarks.long_stream", "--model", str(micro_run["run"]),
                        "--frames", "60", "--every", "20", "--warmup", "20", "--json", str(report),
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["frames"] == 60 and data["warmup_frame"] == 20 and data["backend"] == "ort"
    assert [n for n, _ in data["samples"]] == [20, 40, 60]
    assert data["rss_warm_mb"] > 0 and data["rss_end_mb"] > 0
    assert data["growth_mb"] == pytest.approx(data["rss_end_mb"] - data["rss_warm_mb"], abs=0.02)
    rows, logged, kept = _kept(tmp_path / "out")
    assert rows == logged == kept["num_frames"] == 60


@pytest.mark.parametrize("args, contains", [
    (["--model", "nope-run", "--frames", "10"], "does not exist"),
    (["--frames", "10"], "see --help"),
])
def test_long_stream_bad_input_is_one_line(args, contains, tmp_path):
    r = subprocess.run([sys.executable, "-m", "lpgb.benchmarks.long_stream", *args], capture_output=True, text=True,
                       env=ENV, timeout=120, cwd=tmp_path)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 2, r.stderr[-2000:]
    lines = _lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:") and contains in lines[0], r.stderr


def test_tiny_frames_warn_once(micro_run, tmp_path):
    """1x1-pixel frames run (every frame scores the normal level) with one warning line, not silently."""
    import subprocess
    import sys
    from pathlib import Path

    import cv2
    import numpy as np

    folder = tmp_path / "tiny"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((1, 1, 3), 80, np.uint8))
    exe = Path(sys.executable).parent / "lpgb-run"
    r = subprocess.run([str(exe), str(folder), "--model", str(micro_run["run"]), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sum("too small to show objects" in line for line in r.stderr.splitlines()) == 1


def test_frames_far_from_the_training_size_get_one_warning(micro_run, tmp_path):
    """The calibration records the training frame size; frames 3x taller are served with one warning line."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import cv2
    import numpy as np

    cal = json.loads((Path(micro_run["run"]) / "calibration.json").read_text())
    h, w = cal["frame_size"]
    folder = tmp_path / "big"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((3 * h, 3 * w, 3), 90 + i, np.uint8))
    exe = Path(sys.executable).parent / "lpgb-run"
    r = subprocess.run([str(exe), str(folder), "--model", str(micro_run["run"]), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sum("but the model was fitted on" in line for line in r.stderr.splitlines()) == 1
