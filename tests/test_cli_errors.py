"""Every CLI on bad input: exit code 2, exactly one stderr line starting with "error:", no traceback.
`--help` works for each."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import ENV, _cli, assert_one_line_error

CLIS = ("lpgb-run", "lpgb-train", "lpgb-export", "lpgb-bench", "lpgb-data")


@pytest.mark.parametrize("name", CLIS)
def test_help(name):
    r = _cli(name, "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout


# --- bad sources (lpgb-run) ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model(micro_run) -> Path:
    return micro_run["run"]


def test_run_missing_video(model, tmp_path):
    assert_one_line_error(_cli("lpgb-run", tmp_path / "nope.avi", "--model", model, "--out", tmp_path / "o"))


def test_run_corrupt_video(model, tmp_path):
    bad = tmp_path / "bad.avi"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    assert_one_line_error(_cli("lpgb-run", bad, "--model", model, "--out", tmp_path / "o"))


def test_run_empty_frames_folder(model, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(_cli("lpgb-run", tmp_path / "empty", "--model", model, "--out", tmp_path / "o"))


def _frames_dir(micro_run) -> Path:
    return sorted((micro_run["data"] / "testing" / "frames").iterdir())[0]


def test_run_model_folder_missing(micro_run, tmp_path):
    assert_one_line_error(_cli("lpgb-run", _frames_dir(micro_run), "--model", tmp_path / "no_model",
                               "--out", tmp_path / "o"), contains="does not exist")


def _export_copy(micro_run, tmp_path) -> Path:
    dst = tmp_path / "export"
    shutil.copytree(micro_run["export"], dst)
    return dst


def test_run_model_from_other_lpgb_version(micro_run, tmp_path):
    export = _export_copy(micro_run, tmp_path)
    meta = json.loads((export / "model.json").read_text())
    meta["lpgb_version"] = "99.0.0"
    (export / "model.json").write_text(json.dumps(meta))
    assert_one_line_error(_cli("lpgb-run", _frames_dir(micro_run), "--model", export, "--out", tmp_path / "o"),
                          contains="99.0.0")


def test_run_model_with_other_config_version(micro_run, tmp_path):
    export = _export_copy(micro_run, tmp_path)
    meta = json.loads((export / "model.json").read_text())
    meta["config"]["version"] = 999
    (export / "model.json").write_text(json.dumps(meta))
    assert_one_line_error(_cli("lpgb-run", _frames_dir(micro_run), "--model", export, "--out", tmp_path / "o"),
                          contains="version")


@pytest.mark.parametrize("where, value, contains", [
    ("threshold", float("nan"), "threshold is nan, not a finite number"),
    ("std", 0.0, "a finite std > 0 are needed"),
    ("mean", float("inf"), "has mean inf"),
    ("top_k", -1, "proposals.top_k must be >= 1"),
    ("smoothing_sigma", 1e9, "scoring.smoothing_sigma must be >= 0 and <= 100"),
])
def test_run_refuses_bad_numbers_in_model_json_before_scoring(micro_run, tmp_path, where, value, contains):
    """Calibration and config numbers are checked when model.json is read: one line, exit 2, no frame scored."""
    export = _export_copy(micro_run, tmp_path)
    meta = json.loads((export / "model.json").read_text())
    if where in ("mean", "std"):
        meta["calibration"]["terms"]["velocity"][where] = value
    elif where == "top_k":
        meta["config"]["proposals"]["top_k"] = value
    elif where == "smoothing_sigma":
        meta["config"]["scoring"]["smoothing_sigma"] = value
    else:
        meta["calibration"][where] = value
    (export / "model.json").write_text(json.dumps(meta))
    out = tmp_path / "o"
    assert_one_line_error(_cli("lpgb-run", _frames_dir(micro_run), "--model", export, "--out", out), contains=contains)
    assert not (out / "scores.csv").exists()


@pytest.mark.parametrize("edit, contains", [
    ("drop_entry", "branch2.onnx in"),  # the file stays: it must not be served unverified
    ("drop_terms", "terms.npz in"),
    ("escape", "files must be named relative to the model folder"),
    ("swap", "branch1.onnx changed since export (sha256 mismatch) for part 'branch1'"),
])
def test_run_and_bench_hold_the_export_to_its_model_json(micro_run, tmp_path, edit, contains):
    export = _export_copy(micro_run, tmp_path)
    meta = json.loads((export / "model.json").read_text())
    if edit == "drop_entry":
        del meta["parts"]["branch2"]
    elif edit == "drop_terms":
        meta["files"] = {}
    elif edit == "escape":
        meta["parts"]["smm"]["file"] = "../../../../../../etc/hostname"
    else:
        one, two = (export / "branch1.onnx").read_bytes(), (export / "branch2.onnx").read_bytes()
        (export / "branch1.onnx").write_bytes(two)
        (export / "branch2.onnx").write_bytes(one)
    (export / "model.json").write_text(json.dumps(meta))
    assert_one_line_error(_cli("lpgb-run", _frames_dir(micro_run), "--model", export, "--out", tmp_path / "o"),
                          contains=contains)
    assert_one_line_error(_cli("lpgb-bench", "--model", export, "--data", micro_run["data"], "--backends", "ort",
                               "--sweep", "", "--speed-frames", "5"), contains=contains)


@pytest.mark.parametrize("edit, contains", [
    ("drop_entry", "branch2.onnx in"),
    ("escape", "files must be named relative to the model folder"),
])
def test_a_run_folder_gets_the_same_model_json_checks(micro_run, tmp_path, edit, contains):
    """`--model RUN` serves RUN/export's files: the same contract as `--model RUN/export` (issue 26: run folders
    and export folders get the same checks in every command)."""
    run = tmp_path / "run"
    shutil.copytree(micro_run["run"], run, ignore=shutil.ignore_patterns("tubes", "checkpoints"))
    meta = json.loads((run / "export" / "model.json").read_text())
    if edit == "drop_entry":
        del meta["parts"]["branch2"]
    else:
        meta["parts"]["smm"]["file"] = "/etc/hostname"
    (run / "export" / "model.json").write_text(json.dumps(meta))
    assert_one_line_error(_cli("lpgb-run", _frames_dir(micro_run), "--model", run, "--out", tmp_path / "o"),
                          contains=contains)
    assert_one_line_error(_cli("lpgb-bench", "--model", run, "--data", micro_run["data"], "--backends", "ort",
                               "--sweep", "", "--speed-frames", "5"), contains=contains)
    assert not (tmp_path / "o").exists()


def test_run_tampered_onnx(micro_run, tmp_path):
    export = _export_copy(micro_run, tmp_path)
    with open(export / "smm.onnx", "ab") as f:
        f.write(b"\0tampered")
    assert_one_line_error(_cli("lpgb-run", _frames_dir(micro_run), "--model", export, "--out", tmp_path / "o"),
                          contains="sha256")


def test_run_and_bench_refuse_a_flipped_byte_and_a_foreign_engine(micro_run, tmp_path):
    """The model bundle checks hashes before loading (lpgb-run and lpgb-bench alike), and engines against
    this machine: here TensorRT is absent, so an engine sidecar is refused at load in one line."""
    export = _export_copy(micro_run, tmp_path)
    data = bytearray((export / "branch1.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (export / "branch1.onnx").write_bytes(bytes(data))
    assert_one_line_error(_cli("lpgb-run", _frames_dir(micro_run), "--model", export, "--out", tmp_path / "o"),
                          contains="sha256")
    assert_one_line_error(_cli("lpgb-bench", "--model", export, "--data", micro_run["data"], "--backends", "ort"),
                          contains="sha256")
    engine = _export_copy(micro_run, tmp_path / "e")
    (engine / "branch1.engine").write_bytes(b"plan built elsewhere")
    meta = json.loads((engine / "model.json").read_text())
    from lpgb.runtime.sidecar import sha256_file

    meta["parts"]["branch1_engine"] = {**meta["parts"]["branch1"], "file": "branch1.engine", "build": "fp32",
                                       "sha256": sha256_file(engine / "branch1.engine")}
    meta["compute_capability"], meta["versions"]["tensorrt"] = [1, 0], "10.0.0"
    (engine / "model.json").write_text(json.dumps(meta))
    assert_one_line_error(_cli("lpgb-run", _frames_dir(micro_run), "--model", engine, "--backend", "trt",
                               "--device", "cuda", "--out", tmp_path / "o2"), contains="TensorRT")


def test_run_refuses_an_edited_config(micro_run, tmp_path):
    """model.json's config must describe the graphs it ships with (checked at load, not mid-run)."""
    export = _export_copy(micro_run, tmp_path)
    meta = json.loads((export / "model.json").read_text())
    meta["config"]["spatial"]["image_size"] = 96
    (export / "model.json").write_text(json.dumps(meta))
    assert_one_line_error(_cli("lpgb-run", _frames_dir(micro_run), "--model", export, "--out", tmp_path / "o"),
                          contains="config was edited")


@pytest.mark.parametrize("make, contains", [
    (lambda p: p.write_text("0 1 1 0"), "is a text file"),  # not "pickled data" (numpy's own message)
    (lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), "not a numeric .npy"),
    (lambda p: np.save(p, np.array([0, 1, 1])), "has 3 values"),
    (lambda p: np.save(p, np.full(40, 7)), "0/1 values"),
])
def test_run_bad_labels(micro_run, tmp_path, make, contains):
    labels = tmp_path / "labels.npy"
    make(labels)
    assert_one_line_error(_cli("lpgb-run", _frames_dir(micro_run), "--model", micro_run["run"], "--labels", labels,
                               "--out", tmp_path / "o"), contains=contains)


def test_run_negative_max_frames_and_bench_bad_sweep(micro_run, tmp_path):
    assert_one_line_error(_cli("lpgb-run", _frames_dir(micro_run), "--model", micro_run["run"], "--max-frames", "-5",
                               "--out", tmp_path / "o"), contains="Invalid value for '--max-frames'")
    assert_one_line_error(_cli("lpgb-bench", "--model", micro_run["run"], "--sweep", "1,x"), contains="--sweep")


# --- option values: typer's ranges (and a finite-number callback) refuse them before anything runs ---------
@pytest.mark.parametrize("args, contains", [
    (["lpgb-train", "DATA", "--out", "RUN", "--seed", "-1"], "'--seed'"),
    (["lpgb-train", "DATA", "--out", "RUN", "--seed", str(2**64)], "'--seed'"),
    (["lpgb-train", "DATA", "--out", "RUN", "--epochs-scale", "nan"], "'--epochs-scale'"),
    (["lpgb-train", "DATA", "--out", "RUN", "--epochs-scale", "0"], "must be a finite number > 0, got 0.0"),
    (["lpgb-train", "DATA", "--out", "RUN", "--epochs-scale", "inf"], "'--epochs-scale'"),
    (["lpgb-train", "DATA", "--out", "RUN", "--max-train-videos", "-1"], "'--max-train-videos'"),
    (["lpgb-run", "SOURCE", "--max-frames", str(2**64)], "'--max-frames'"),
    (["lpgb-run", "SOURCE", "--backend", "onnx"], "'--backend'"),
    (["lpgb-data", "synth", "OUT", "--frames", str(10**9)], "'--frames'"),
    (["lpgb-data", "synth", "OUT", "--frames", "1e9"], "'--frames'"),
    (["lpgb-data", "synth", "OUT", "--seed", "-1"], "'--seed'"),
    (["lpgb-export", "RUN", "--workspace-gb", "nan"], "'--workspace-gb'"),
    (["lpgb-export", "RUN", "--opset", "16"], "'--opset'"),
    (["lpgb-bench", "--videos", "-1"], "'--videos'"),
    (["lpgb-bench", "--speed-frames", "0"], "'--speed-frames'"),
    (["lpgb-run", "SOURCE", "--no-such-option"], "No such option"),
])
def test_bad_option_values_are_one_line(args, contains, tmp_path):
    """Refused while the command line is parsed (nothing is read or written: the paths need not exist)."""
    r = _cli(args[0], *[str(tmp_path / a) if a.isupper() else a for a in args[1:]], timeout=60)
    line = assert_one_line_error(r, contains=contains)
    assert line.startswith(f"error: {args[0]}") and line.endswith("(see --help)")
    assert not any(tmp_path.iterdir())


# --- lpgb-train / lpgb-export / lpgb-bench / lpgb-data ----------------------------------------------
def test_train_wrong_dataset_layout(tmp_path):
    data = tmp_path / "data"
    (data / "random" / "stuff").mkdir(parents=True)
    (data / "random" / "stuff" / "notes.txt").write_text("not a dataset")
    assert_one_line_error(_cli("lpgb-train", data, "--out", tmp_path / "run", "--preset", "tiny"))
    assert not (tmp_path / "run").exists()


def test_train_missing_dataset(tmp_path):
    assert_one_line_error(_cli("lpgb-train", tmp_path / "nope", "--out", tmp_path / "run", "--preset", "tiny"))


def test_train_box_targets_without_box_files(micro_run, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(micro_run["data"], data)
    shutil.rmtree(data / "training" / "boxes")
    assert_one_line_error(_cli("lpgb-train", data, "--out", tmp_path / "run", "--preset", "tiny", "--stage", "rpn",
                               "--rpn-targets", "boxes"), contains="needs a box file per training video")
    assert not (tmp_path / "run").exists()


def test_train_cannot_switch_rpn_targets_of_an_existing_run(micro_run):
    before = (micro_run["run"] / "train_config.json").read_text()
    assert_one_line_error(_cli("lpgb-train", micro_run["data"], "--out", micro_run["run"], "--preset", "tiny",
                               "--stage", "rpn", "--rpn-targets", "boxes"), contains="fixed with the run")
    assert (micro_run["run"] / "train_config.json").read_text() == before


def test_export_not_a_run(tmp_path):
    assert_one_line_error(_cli("lpgb-export", tmp_path), contains="config.json")


def test_export_missing_run(tmp_path):
    assert_one_line_error(_cli("lpgb-export", tmp_path / "nope"))


def test_bench_missing_model(tmp_path):
    assert_one_line_error(_cli("lpgb-bench", "--model", tmp_path / "nope", "--backends", "ort"))


def test_bench_tampered_model(micro_run, tmp_path):
    export = _export_copy(micro_run, tmp_path)
    with open(export / "branch1.onnx", "ab") as f:
        f.write(b"\0tampered")
    assert_one_line_error(_cli("lpgb-bench", "--model", export, "--data", micro_run["data"], "--backends", "ort",
                               "--sweep", "", "--speed-frames", "5"), contains="sha256")


def test_bench_run_folder_with_a_corrupted_onnx_is_refused(micro_run, tmp_path):
    """`--model RUN` (torch reads RUN, ort reads RUN/export): a broken export is refused as lpgb-run refuses it,
    not recorded as one failed row of a benchmark that exits 0."""
    run = tmp_path / "run"
    shutil.copytree(micro_run["run"], run, ignore=shutil.ignore_patterns("tubes", "checkpoints"))
    data = bytearray((run / "export" / "smm.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (run / "export" / "smm.onnx").write_bytes(bytes(data))
    assert_one_line_error(_cli("lpgb-bench", "--model", run, "--data", micro_run["data"], "--sweep", "",
                               "--speed-frames", "5"), contains="smm.onnx changed since export (sha256 mismatch)")


def test_data_check_missing_folder(tmp_path):
    assert_one_line_error(_cli("lpgb-data", "check", tmp_path / "nope"))


def test_data_synth_into_non_empty_folder(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    assert_one_line_error(_cli("lpgb-data", "synth", tmp_path, "--videos", "1", "--train-videos", "0",
                               "--frames", "30"))


def test_bench_refuses_stale_export(micro_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(micro_run["run"], run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["proposals"]["merge_min_overlap"] = 0.5  # the run changed after it was exported
    (run / "config.json").write_text(json.dumps(cfg))
    from lpgb.runtime.run_manifest import record_run_files

    record_run_files(run)  # as lpgb-train records a refit run (a hand edit alone is refused as a changed file)
    assert_one_line_error(_cli("lpgb-bench", "--model", run, "--data", micro_run["data"], "--backends", "torch,ort",
                               "--sweep", "", "--speed-frames", "5"), contains="export is stale")


@pytest.mark.parametrize("module, args, contains", [
    ("oracle", ["nope-run", "nope-data"], "does not exist"),
    ("recall", ["nope-run", "nope-data"], "does not exist"),
    ("motion_sweep", ["nope-data"], "does not exist"),
    ("terms", ["nope-data", "--out", "x"], "does not exist"),
    ("terms", ["--bad-flag"], "see --help"),
])
def test_diagnostics_give_one_line_errors(module, args, contains, tmp_path):
    """`python -m lpgb.benchmarks.<diagnostic>`: bad input and bad flags exit 2 with one line."""
    r = subprocess.run([sys.executable, "-m", f"lpgb.benchmarks.{module}", *args], capture_output=True, text=True,
                       env=ENV, timeout=120, cwd=tmp_path)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 2, f"exit {r.returncode}; stderr: {r.stderr[-2000:]}"
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    if contains:
        assert len(lines) == 1 and lines[0].startswith("error:") and contains in lines[0], r.stderr


@pytest.mark.parametrize("args, contains", [
    (["--scoring", "bogus=1"], "unknown setting among ['bogus']"),
    (["--scoring", "knn_k=0"], "knn_k"),
    (["--terms", "velocity,bogus"], "unknown score term 'bogus'"),
])
def test_terms_diagnostic_refuses_bad_settings_before_fitting(micro_run, args, contains, tmp_path):
    r = subprocess.run([sys.executable, "-m", "lpgb.benchmarks.terms", str(micro_run["data"]), "--out",
                        str(tmp_path / "fit"), *args], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and contains in lines[0], r.stderr
    assert not (tmp_path / "fit").exists()  # refused before anything was fitted or written


def test_read_only_output_is_one_line(micro_run, tmp_path):
    """An OS error on --out (read-only filesystem, full disk, permissions) is one line and exit 2."""
    if os.geteuid() == 0:
        target = Path("/proc/lpgb-out")  # not writable even for root
    else:
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o500)
        target = target / "out"
    assert_one_line_error(_cli("lpgb-run", _frames_dir(micro_run), "--model", micro_run["run"], "--out", target))
