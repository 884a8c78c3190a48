"""Messages that say what happened: `lpgb-data check` fails (exit 2) on the problems it lists; a full disk
while writing is "disk full while writing PATH"; Ctrl-C in lpgb-train says where it stopped and that
--resume continues; a text file given as labels is called a text file, not a pickle."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lpgb.runtime.errors import LpgbError

from cli_helpers import ENV, _cli, assert_one_line_error


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> Path:
    from lpgb.benchmarks.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth") / "data"
    generate(root, SynthConfig(seed=0, train_videos=1, test_videos=1, frames_per_video=30))
    return root


# --- lpgb-data check ------------------------------------------------------------------------------------
def test_data_check_exits_2_on_an_undecodable_frame(synth_data, tmp_path):
    import shutil

    r = _cli("lpgb-data", "check", synth_data)
    assert r.returncode == 0 and "problems: none" in r.stdout, r.stderr
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    bad = sorted((data / "testing" / "frames" / "01").glob("*.jpg"))[5]
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    r = _cli("lpgb-data", "check", data)
    line = assert_one_line_error(r, contains="cannot decode image")
    assert bad.name in line and "(and 1 more" in line and "problems: 2" in r.stdout  # the report lists both


# --- a full disk -----------------------------------------------------------------------------------------
def test_numpy_short_write_is_disk_full_with_the_path(tmp_path, monkeypatch):
    import lpgb.trainer.tube_cache as tube_cache

    def short_write(file, arr, *a, **k):
        Path(file).write_bytes(b"\x93NUMPY partial")
        raise OSError("8183808 requested and 2084736 written")  # numpy's message when the disk fills up

    cache = tube_cache.TubeCache(np.zeros((2, 3, 8, 8, 3), np.uint8), np.zeros((2, 4), np.float32),
                                 np.zeros((2, 3), np.int32), np.zeros((1, 2), np.int32), ["01"])
    monkeypatch.setattr(tube_cache.np, "save", short_write)
    with pytest.raises(LpgbError, match=r"^disk full while writing .*tubes/crops\.npy \(\d+ MiB left") as info:
        cache.save(tmp_path / "tubes")
    assert "requested" not in str(info.value)
    assert list((tmp_path / "tubes").iterdir()) == []  # no partial or temporary file left


def test_other_disk_full_errors_and_unrelated_errors(tmp_path, monkeypatch):
    import lpgb.runtime.atomic as atomic
    from lpgb.runtime.atomic import atomic_path

    with pytest.raises(LpgbError, match="disk full while writing .*x.bin"):
        with atomic_path(tmp_path / "x.bin"):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(RuntimeError, match="file write failed"):  # plenty of space: not called a full disk
        with atomic_path(tmp_path / "x.bin"):
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    monkeypatch.setattr(atomic, "free_bytes", lambda folder: 0)
    with pytest.raises(LpgbError, match="disk full while writing .*x.bin"):  # torch's message on a full disk
        with atomic_path(tmp_path / "x.bin"):
            raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    with pytest.raises(PermissionError):
        with atomic_path(tmp_path / "x.bin"):
            raise PermissionError(errno.EACCES, "Permission denied")
    assert list(tmp_path.iterdir()) == []


def test_train_on_a_full_disk_is_one_line(synth_data, tmp_path):
    """The CLI: a full disk while lpgb-train writes its first file is one line naming it, exit 2."""
    code = (
        "import sys\n"
        "import lpgb.runtime.atomic as atomic\n"
        "real = atomic.write_text_atomic\n"
        "def full(path, text):\n"
        "    with atomic.atomic_path(path) as tmp:\n"
        "        tmp.write_text(text[:3])\n"
        "        raise OSError('8183808 requested and 2084736 written')\n"
        "atomic.write_text_atomic = full\n"
        "import lpgb.trainer.pipeline as p\n"
        "p.write_text_atomic = full\n"
        f"sys.argv = ['lpgb-train', {str(synth_data)!r}, '--out', {str(tmp_path / 'run')!r}, '--preset', 'tiny']\n"
        "import lpgb.trainer.cli as c\n"
        "c.main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)
    line = assert_one_line_error(r, contains="disk full while writing")
    assert "requested" not in line and str(tmp_path / "run") in line


# --- Ctrl-C in lpgb-train --------------------------------------------------------------------------------
def _interrupted_train(data: Path, run: Path, stage_body: str) -> subprocess.CompletedProcess:
    """lpgb-train whose stages are replaced by `stage_body` (python, `run_dir` in scope) then a Ctrl-C."""
    code = (
        "import sys\n"
        "import lpgb.trainer.pipeline as p\n"
        "from lpgb.trainer.checkpoint import save_checkpoint\n"
        "def stage(name, videos, run_dir, *a):\n"
        + "".join(f"    {line}\n" for line in stage_body.splitlines()) +
        "    raise KeyboardInterrupt\n"
        "p._run_stage = stage\n"
        f"sys.argv = ['lpgb-train', {str(data)!r}, '--out', {str(run)!r}, '--preset', 'tiny']\n"
        "import lpgb.trainer.cli as c\n"
        "c.main()\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)


def _one_interrupted_line(r: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 130, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "lpgb-train:" not in ln]
    assert len(lines) == 1 and lines[0].startswith("interrupted:"), r.stderr
    return lines[0]


def test_ctrl_c_in_train_says_where_it_stopped_and_how_to_resume(synth_data, tmp_path):
    run = tmp_path / "run"
    line = _one_interrupted_line(_interrupted_train(
        synth_data, run, "save_checkpoint(run_dir / 'checkpoints' / 'spatial_branch1.pt', epoch=2)"))
    assert "spatial_branch1 stage after epoch 3" in line and "--resume" in line and str(run) in line
    line = _one_interrupted_line(_interrupted_train(synth_data, tmp_path / "new", "pass"))
    assert "nothing was kept" in line and not (tmp_path / "new").exists()


# --- --labels ----------------------------------------------------------------------------------------------
def test_text_labels_are_called_a_text_file(tmp_path):
    from lpgb.runtime.datasets import load_npy

    text = tmp_path / "labels.txt"
    text.write_text("0\n1\n1\n0\n")
    with pytest.raises(LpgbError, match="labels file .*labels.txt is a text file") as info:
        load_npy(text, "labels file")
    assert "pickle" not in str(info.value)
    binary = tmp_path / "labels.bin"
    binary.write_bytes(bytes([0, 1, 255, 7]))
    with pytest.raises(LpgbError, match="is not a .npy file"):
        load_npy(binary, "labels file")
    np.save(tmp_path / "ok.npy", np.array([0, 1], np.uint8))
    assert load_npy(tmp_path / "ok.npy", "labels file").tolist() == [0, 1]


# --- Ctrl-C in lpgb-demo and lpgb-data synth (typer alone exits 130 without a word) ---------------------------
def _interrupted(module: str, patch: str, argv: list[str]) -> subprocess.CompletedProcess:
    code = (
        "import sys\n"
        f"import {module} as m\n"
        f"{patch}\n"
        f"sys.argv = {argv!r}\n"
        "m.main()\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)


def test_ctrl_c_in_demo_and_synth_is_one_line(tmp_path):
    demo = tmp_path / "demo"
    r = _interrupted("lpgb.benchmarks.demo",
                     "def stop(out, seed):\n    (out / 'data').mkdir()\n    raise KeyboardInterrupt\nm._run_demo = stop",
                     ["lpgb-demo", str(demo)])
    line = _one_interrupted_line(r)
    assert "the demo stopped" in line and "partial outputs removed" in line and not demo.exists()
    r = _interrupted("lpgb.benchmarks.data_cli",
                     "def stop(out, cfg, progress=None, overwrite=False):\n    raise KeyboardInterrupt\nm.generate = stop",
                     ["lpgb-data", "synth", str(tmp_path / "set")])
    assert "nothing written" in _one_interrupted_line(r)


def test_ctrl_c_in_export_and_bench_is_one_line(tmp_path):
    r = _interrupted("lpgb.export.cli",
                     "import lpgb.export.pipeline as pl\ndef stop(request):\n    raise KeyboardInterrupt\npl.export_run = stop",
                     ["lpgb-export", str(tmp_path)])
    assert "lpgb-export stopped" in _one_interrupted_line(r)
    r = _interrupted("lpgb.benchmarks.cli",
                     "import lpgb.benchmarks.suite as s\ndef stop(request):\n    raise KeyboardInterrupt\ns.run_bench = stop",
                     ["lpgb-bench", "--model", str(tmp_path)])
    assert "lpgb-bench stopped" in _one_interrupted_line(r)
