"""The OpenVINO backend against ONNX Runtime on the tiny trained model (`micro_run`): per-part parity,
the Detector end to end, lpgb-bench with both backends, and the one-line error without OpenVINO."""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lpgb.runtime.config import LpgbConfig
from lpgb.runtime.errors import LpgbError

try:
    import openvino  # noqa: F401

    OV_MISSING = ""
except Exception as exc:  # noqa: BLE001 - ImportError, or its libraries fail to load
    OV_MISSING = f"openvino cannot be imported ({type(exc).__name__}: {exc}); pip install 'lpgb[openvino]'"

needs_openvino = pytest.mark.skipif(bool(OV_MISSING), reason=OV_MISSING or "openvino is installed")

BIN = Path(sys.executable).parent
# Tolerances, OpenVINO vs ONNX Runtime on the same files (max |a - b| / max |a| per output), measured on micro
# runs (tests/conftest.py) of seeds 0, 1 and 2 (the same seed trains another model on another CPU: issue 26):
# - FP32: the export's own FP32 gate (lpgb.export.check, imported in the test since it needs torch): rel
#   FP32_RTOL (1e-4) unless |a - b| <= FP32_ATOL (1e-6). Branch and smm outputs differ by 0 to 6.2e-7 relative
#   (160x under the bound); the RPN's objectness by 4.2e-5, 3.6e-3 and 13.4 relative, being all but 0 (peaks
#   near 1e-12: why the export has FP32_ATOL), so without the absolute floor seeds 1 and 2 failed here.
# - FP16 (the RPN still serves from its FP32 file, with the FP32 bounds): ORT computes some FP16 ops in FP16,
#   OpenVINO in F32; measured 7e-5 to 4.8e-4 over the three seeds, the bound 5e-3 10x above the worst.
# - Detector scores end to end: max |ov - ort| 1.9e-6 to 4.3e-6 over the three seeds (scores 0.3 to 26), the
#   atol 1e-4 23x above the worst.
FP16_RTOL = 5e-3
SCORE_ATOL = 1e-4


def _cfg(export: Path) -> LpgbConfig:
    from lpgb.runtime.sidecar import load_sidecar

    return LpgbConfig.from_dict(load_sidecar(export).config)


def _max_rel(ref: np.ndarray, got: np.ndarray) -> float:
    """As `lpgb.export.onnx_export.compare_outputs`: max |ref - got| over max |ref|."""
    if ref.size == 0:
        return 0.0
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    return float(np.abs(ref64 - got64).max() / max(float(np.abs(ref64).max()), 1e-12))


def _max_abs(ref: np.ndarray, got: np.ndarray) -> float:
    return float(np.abs(ref.astype(np.float64) - got.astype(np.float64)).max()) if ref.size else 0.0


def _part_inputs(cfg: LpgbConfig, rng: np.random.Generator) -> list[tuple[str, dict[str, np.ndarray]]]:
    side = cfg.spatial.image_size
    length = cfg.smm.window + 1
    nq, ed = cfg.spatial.num_queries, cfg.spatial.embed_dim
    h, w = cfg.proposals.rpn_input_size
    crops6 = rng.standard_normal((6, 3, side, side)).astype(np.float32)
    crops0 = np.zeros((0, 3, side, side), np.float32)
    tubes = {n: rng.standard_normal((2, length, nq, ed)).astype(np.float32) for n in ("f1", "f2")}
    return [
        ("branch1", {"crops": crops6}), ("branch1", {"crops": crops0}),
        ("branch2", {"crops": crops6}), ("branch2", {"crops": crops0}),
        ("smm", tubes), ("smm", {n: np.zeros((0, length, nq, ed), np.float32) for n in ("f1", "f2")}),
        ("rpn", {"image": rng.random((1, 3, h, w), dtype=np.float32)}),
    ]


@needs_openvino
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_parts_match_onnx_runtime(micro_run, precision):
    from lpgb.export.check import FP32_ATOL, FP32_RTOL
    from lpgb.runtime.backends.base import load_backend
    from lpgb.runtime.parts import PART_SPECS

    export = micro_run["export"]
    ort_be = load_backend("ort", export, precision)
    ov_be = load_backend("openvino", export, precision, inference_num_threads=2)
    assert ov_be.name == "openvino" and ov_be.providers[0].startswith("OpenVINO") and ov_be.threads == 2
    assert set(ov_be.parts) == {"rpn", "branch1", "branch2", "smm"}
    worst: dict[str, float] = {}
    worst_abs: dict[str, float] = {}
    for part, inputs in _part_inputs(_cfg(export), np.random.default_rng(0)):
        ref, got = ort_be.run(part, inputs), ov_be.run(part, inputs)
        assert list(got) == list(PART_SPECS[part].outputs)
        for name in PART_SPECS[part].outputs:
            assert got[name].dtype == np.float32 and got[name].shape == ref[name].shape, (part, name)
            assert np.isfinite(got[name]).all()
            if part == "rpn" and name == "boxes":
                continue  # rows at the top-K cut may differ (near-tied scores): compared below, clear of the cut
            a, b = ref[name], got[name]
            if part == "rpn":  # top-K ties may reorder (export/onnx_export.py::_clear_of_topk_cut)
                a, b = np.sort(a.reshape(-1)), np.sort(b.reshape(-1))
            worst[f"{part}.{name}"] = max(worst.get(f"{part}.{name}", 0.0), _max_rel(a, b))
            worst_abs[f"{part}.{name}"] = max(worst_abs.get(f"{part}.{name}", 0.0), _max_abs(a, b))
        if len(next(iter(inputs.values()))) == 0:  # no crops / no tubes: empty outputs, right trailing dims
            assert all(v.shape[0] == 0 for v in got.values())
    rpn_in = _part_inputs(_cfg(export), np.random.default_rng(0))[-1][1]
    ref, got = ort_be.run("rpn", rpn_in), ov_be.run("rpn", rpn_in)
    scores = ref["scores"]
    clear = scores > scores.min() + 1e-3  # as TOPK_TIE_MARGIN: rows clear of the top-K cut
    if clear.any():
        from scipy.optimize import linear_sum_assignment
        from scipy.spatial.distance import cdist

        keep = ref["boxes"][clear]
        rows, cols = linear_sum_assignment(cdist(keep.astype(np.float64), got["boxes"].astype(np.float64)))
        worst["rpn.boxes"] = _max_rel(keep[rows], got["boxes"][cols])
        worst_abs["rpn.boxes"] = _max_abs(keep[rows], got["boxes"][cols])

    def bound(key: str) -> tuple[float, float]:  # (rtol, atol) of the file that serves the part
        from lpgb.runtime.formats import served_format

        fp32 = served_format("onnx", precision, key.split(".")[0]).precision == "fp32"
        return (FP32_RTOL, FP32_ATOL) if fp32 else (FP16_RTOL, 0.0)

    bad = {k: v for k, v in worst.items() if v > bound(k)[0] and worst_abs[k] > bound(k)[1]}
    assert not bad, (f"{precision}: OpenVINO differs from ONNX Runtime beyond (rtol, atol) "
                     f"{[bound(k) for k in bad]}: {bad} (all: {worst}, abs {worst_abs})")
    ov_be.close()
    ort_be.close()


@needs_openvino
def test_detector_end_to_end_matches_ort(micro_run):
    from lpgb.runtime.pipeline import open_detector, score_frames
    from lpgb.runtime.video import open_source

    folder = sorted(p for p in (micro_run["data"] / "testing" / "frames").iterdir() if p.is_dir())[0]
    scores = {}
    for backend in ("ort", "openvino"):
        detector = open_detector(micro_run["export"], backend)
        with open_source(folder) as src:
            scores[backend], times = score_frames(detector, src)
        if backend == "openvino":
            assert times.get("smm"), "no frame ran the branches and smm: the test would prove little"
        detector.backend.close()
    assert len(scores["openvino"]) == len(scores["ort"]) > 0
    assert np.isfinite(scores["openvino"]).all()
    np.testing.assert_allclose(scores["openvino"], scores["ort"], rtol=0, atol=SCORE_ATOL)


@needs_openvino
def test_bench_runs_ort_and_openvino(micro_run, tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run([str(BIN / "lpgb-bench"), "--model", str(micro_run["run"]), "--data", str(micro_run["data"]),
                        "--backends", "ort,openvino", "--speed-frames", "10", "--sweep", "1", "--paired-rounds", "2",
                        "--json", str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["accuracy"]["per_backend"]) == {"ort", "openvino"}
    assert all(not b["errors"] for b in report["backends"]), report["backends"]
    paired = report["paired"]
    assert set(paired["fps"]) == {"ort", "openvino"} and all(v > 0 for v in paired["fps"].values())
    ratio = float(np.median([rnd["openvino"] / rnd["ort"] for rnd in paired["per_round"]]))
    assert np.isfinite(ratio) and ratio > 0
    speed = {s["backend"]: s for s in report["speed"]}
    assert speed["openvino"]["providers"][0].startswith("OpenVINO")


def test_missing_openvino_is_one_line_error(tmp_path, monkeypatch):
    """Without OpenVINO the runtime still imports and the backend says what to install, in one line."""
    from lpgb.runtime.backends.base import backends, load_backend

    assert backends()["openvino"].devices == ("cpu",) and backends()["openvino"].precisions == ("fp32", "fp16")
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    monkeypatch.delitem(sys.modules, "lpgb.runtime.backends.openvino_backend", raising=False)
    import lpgb.runtime.backends.openvino_backend as module  # imports without OpenVINO

    with pytest.raises(LpgbError) as info:
        load_backend("openvino", tmp_path, "fp32", "cpu")
    message = str(info.value)
    assert message == "the openvino backend needs OpenVINO: pip install 'lpgb[openvino]'" == module.MISSING
    assert "\n" not in message and info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(LpgbError, match="runs on cpu only"):
        load_backend("openvino", tmp_path, "fp32", "cuda")
