"""`lpgb-export --int8`: static INT8 branch parts, their sidecar entries, ORT serving and the --check gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lpgb.runtime.errors import LpgbError

from lpgb.export.check import INT8_MIN_COSINE

# int8 vs fp32 branch features on real training-tube crops. The bounds are the export's own INT8 gate
# (lpgb-export --int8 --check refuses a crop whose features' cosine falls below INT8_MIN_COSINE = 0.99),
# not one machine's numbers: the same seed trains a different model on another CPU, and the relative L2
# error of the micro run's features was 0.010-0.030 here (2 cores, micro runs of seeds 0-7; min cosine
# 0.9981-0.9999, norm ratios int8/fp32 0.983-1.006) but 0.062 on another 2-core CPU (issue 26).
# The relative L2 bound follows from the gate: two vectors of equal norm at cosine c lie sqrt(2 (1 - c))
# apart relative to their norm, 0.141 at the gate (4.7x the worst seed here, 2.3x the other CPU); unequal
# norms add (1 - ratio)^2 under the root, at most 3e-4 measured beside 2 (1 - c) = 0.02.
MIN_COSINE = INT8_MIN_COSINE
MAX_REL_L2 = float(np.sqrt(2.0 * (1.0 - INT8_MIN_COSINE)))


@pytest.fixture(scope="module")
def int8_export(micro_run, tmp_path_factory) -> tuple[Path, Path]:
    """(run, export): a copy of the micro run (its export left out) exported with --int8 only."""
    from lpgb.export.pipeline import ExportRequest, export_run

    run = tmp_path_factory.mktemp("int8") / "run"
    shutil.copytree(micro_run["run"], run, ignore=shutil.ignore_patterns("export"))
    return run, export_run(ExportRequest(run=run, int8=True))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


def test_int8_files_and_sidecar(int8_export):
    from lpgb.runtime.bundle import ModelBundle
    from lpgb.runtime.formats import INT8_PARTS

    _, export = int8_export
    sidecar = json.loads((export / "model.json").read_text())
    for part in INT8_PARTS:
        assert (export / f"{part}_int8.onnx").is_file()
        entry = sidecar["parts"][f"{part}_int8"]
        assert entry["file"] == f"{part}_int8.onnx" and entry["precision"] == "int8"
        assert "QDQ" in entry["build"] and "training crops" in entry["build"]
        assert [t["dtype"] for t in entry["inputs"] + entry["outputs"]] == ["float32", "float32"]
        assert sidecar["parts"][part]["precision"] == "fp32"
    assert not any(name.startswith(("rpn_", "smm_")) for name in sidecar["parts"])  # those serve in FP32
    assert not list(export.glob("*_fp16.onnx"))
    assert ModelBundle.open(export, "ort").sidecar.parts["branch1_int8"].precision == "int8"


def test_ort_serves_int8_close_to_fp32(int8_export):
    from lpgb.export.check import load_tube_crops
    from lpgb.runtime.backends.base import load_backend
    from lpgb.runtime.bundle import ModelBundle
    from lpgb.runtime.formats import INT8_PARTS
    from lpgb.runtime.preprocess import crops_to_input

    run, export = int8_export
    bundle = ModelBundle.open(export, "ort")
    crops, _ = load_tube_crops(run, bundle.cfg, 8)
    x = crops_to_input(crops)
    fp32, int8 = load_backend("ort", export, "fp32"), load_backend("ort", export, "int8")
    for part in INT8_PARTS:
        a = fp32.run(part, {"crops": x})["features"].reshape(len(x), -1).astype(np.float64)
        b = int8.run(part, {"crops": x})["features"].reshape(len(x), -1).astype(np.float64)
        assert np.isfinite(b).all()
        assert not np.array_equal(a, b)  # the INT8 file was loaded, not the FP32 one
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cos.min() >= MIN_COSINE, (part, cos.min())
        rel_l2 = np.linalg.norm(b - a) / np.linalg.norm(a)
        assert rel_l2 <= MAX_REL_L2, (part, rel_l2)
    # rpn and smm serve from their FP32 files in an int8 model: identical outputs
    f = np.random.default_rng(0).standard_normal((2, bundle.cfg.smm.window + 1, bundle.cfg.spatial.num_queries,
                                                  bundle.cfg.spatial.embed_dim)).astype(np.float32)
    np.testing.assert_array_equal(fp32.run("smm", {"f1": f, "f2": f})["error"], int8.run("smm", {"f1": f, "f2": f})["error"])
    with pytest.raises(LpgbError) as exc:
        load_backend("ort", export, "int8", device="tensorrt")
    assert "INT8" in _one_line(exc) or "int8" in _one_line(exc)


def test_int8_gate_passes_and_fails_with_one_line(int8_export, monkeypatch):
    import lpgb.export.check as check

    run, export = int8_export
    # both test videos (80 frames): on 30 frames one reordered frame pair moves the AUC by ~0.005.
    # The gates are the export's (INT8_MIN_RANK_CORR 0.99, INT8_MAX_AUC_DIFF 0.005, INT8_MIN_COSINE 0.99); these
    # rows on micro runs of seeds 0, 1 and 2 (the same seed trains another model on another CPU): rank corr
    # 0.9993-0.9998 (1 - rho 14x under the gate's 0.01), |AUC diff| 0-0.0006 (8x under), min cosine 0.9980-0.9999
    rows = check.int8_rows(run, export, videos=2, max_frames=40)
    checks = {r.check: r for r in rows}
    assert all(r.ok for r in rows), check.parity_table(rows)
    assert checks["int8 smm score rank corr"].value >= 0.99 and "2 test videos, 80 frames" in checks[
        "int8 smm score rank corr"].note
    assert checks["int8 smm |micro AUC diff|"].gated  # the micro test video holds both classes
    # the micro model's terms read the branches, so its served score is gated too (seed 0: rank corr 0.9995,
    # |AUC diff| 0; measured on this seed only, the limits are the export's gate as above)
    assert checks["int8 frame-score rank corr"].value >= 0.99
    assert sum(r.check == "int8 vs fp32 min cosine" for r in rows) == 2
    monkeypatch.setattr(check, "INT8_MIN_COSINE", 1.01)  # no real model reaches it
    failed = check.int8_feature_rows(run, export)
    assert not any(r.ok for r in failed if r.gated)
    reason = check.failure_reason(failed)
    assert "\n" not in reason and "branch1 int8 vs fp32 min cosine" in reason and "limit 1.01" in reason


def test_corrupt_missing_or_unlisted_int8_part_is_refused(int8_export, micro_run, tmp_path):
    from lpgb.runtime.backends.base import load_backend
    from lpgb.runtime.bundle import ModelBundle

    _, export = int8_export
    corrupt = tmp_path / "corrupt"
    shutil.copytree(export, corrupt)
    data = bytearray((corrupt / "branch2_int8.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (corrupt / "branch2_int8.onnx").write_bytes(bytes(data))
    with pytest.raises(LpgbError) as exc:
        ModelBundle.open(corrupt, "ort")
    assert "branch2_int8.onnx changed since export (sha256 mismatch)" in _one_line(exc)

    missing = tmp_path / "missing"
    shutil.copytree(export, missing)
    (missing / "branch1_int8.onnx").unlink()
    with pytest.raises(LpgbError) as exc:
        ModelBundle.open(missing, "ort")
    assert "branch1_int8.onnx (part 'branch1_int8') is missing" in _one_line(exc)

    # an export without INT8 parts: int8 is refused, never served by the FP32 files; a stray file is refused
    plain = tmp_path / "plain"
    shutil.copytree(micro_run["export"], plain)
    with pytest.raises(LpgbError) as exc:
        load_backend("ort", plain, "int8")
    assert "no INT8 parts (branch1_int8.onnx)" in _one_line(exc)
    shutil.copyfile(export / "branch1_int8.onnx", plain / "branch1_int8.onnx")
    with pytest.raises(LpgbError) as exc:
        ModelBundle.open(plain, "ort")
    assert "branch1_int8.onnx" in _one_line(exc) and "not listed in model.json" in _one_line(exc)


def test_calibration_reader_batches_training_crops(int8_export):
    from lpgb.export.int8 import CropCalibrationReader, calibration_crops
    from lpgb.runtime.config import LpgbConfig

    run, _ = int8_export
    cfg = LpgbConfig.load(run / "config.json")
    crops, note = calibration_crops(run, cfg, n=40)  # cut to whole batches of 32
    s = cfg.spatial.image_size
    assert crops.shape == (32, s, s, 3) and crops.dtype == np.uint8 and "not the --check tubes" in note
    reader = CropCalibrationReader(crops[:30], batch=8)  # histogram calibrators need equal batches
    shapes = []
    while (batch := reader.get_next()) is not None:
        shapes.append(batch["crops"].shape)
    assert shapes == [(8, 3, s, s)] * 3 and len(reader) == 3
    reader.rewind()
    assert reader.get_next()["crops"].dtype == np.float32
    assert len(CropCalibrationReader(crops[:5], batch=8)) == 1  # fewer crops than a batch: one batch
    with pytest.raises(LpgbError):
        CropCalibrationReader(crops[:0])


def test_lpgb_run_int8_without_int8_parts_is_one_line(micro_run, tmp_path):
    from cli_helpers import _cli, assert_one_line_error

    source = next((Path(micro_run["data"]) / "testing" / "frames").iterdir())
    r = _cli("lpgb-run", source, "--model", micro_run["export"], "--precision", "int8", "--max-frames", 2,
             "--out", tmp_path / "out")
    assert_one_line_error(r, "no INT8 parts (branch1_int8.onnx)")


def test_motion_input_branches_keep_their_convolutions_float(tmp_path):
    """Motion crops: only the matrix ops of the attention are quantised (the convolutions on the difference
    channels cost branch 1 the cosine gate on Ped2); rgb models quantise the convolutions too. The graph
    written for a motion model has no quantised Conv."""
    from dataclasses import replace

    import onnx
    import torch

    from lpgb.export.int8 import quantise_int8, quantisation_note, quantised_ops
    from lpgb.export.onnx_export import export_onnx
    from lpgb.runtime.config import preset
    from lpgb.trainer.models.branch import Branch

    rgb = preset("tiny")
    motion = replace(rgb, spatial=replace(rgb.spatial, input_form="motion"))
    assert "Conv" in quantised_ops(rgb) and "Conv" not in quantised_ops(motion)
    assert quantised_ops(motion) == ("MatMul", "Gemm") and "ops MatMul/Gemm" in quantisation_note(8, quantised_ops(motion))
    torch.manual_seed(0)
    s = motion.spatial.image_size
    branch = Branch(motion.spatial).eval()
    fp32 = tmp_path / "branch1.onnx"
    export_onnx(branch, (torch.zeros(2, 3, s, s),), fp32, ["crops"], ["features"],
                {"crops": {0: "n"}, "features": {0: "n"}})
    crops = np.random.default_rng(0).integers(0, 255, size=(32, s, s, 3), dtype=np.uint8)
    graph = onnx.load(str(quantise_int8(fp32, tmp_path / "branch1_int8.onnx", crops, quantised_ops(motion)))).graph
    dequantised = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    assert not [n for n in graph.node if n.op_type == "Conv" and set(n.input) & dequantised]
    assert [n for n in graph.node if n.op_type == "MatMul" and set(n.input) & dequantised]
