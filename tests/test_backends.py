"""Backends: ORT on tiny ONNX graphs built with onnx.helper; TensorRT only where installed."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lpgb.runtime.backends.base import PARTS, load_backend, part_files
from lpgb.runtime.errors import LpgbError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RNG = np.random.default_rng(0)
W = RNG.standard_normal((4, 3)).astype(np.float32)
B = RNG.standard_normal(3).astype(np.float32)


def _linear_model(path: Path, fp16: bool = False) -> None:
    """y = x @ W + b and s = sum(y, axis=1) with a dynamic batch dim 'B' (optionally float16 I/O)."""
    t = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    dt = np.float16 if fp16 else np.float32
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["y"]),
        helper.make_node("ReduceSum", ["y", "axes"], ["s"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info("x", t, ["B", 4])],
        [helper.make_tensor_value_info("y", t, ["B", 3]), helper.make_tensor_value_info("s", t, ["B"])],
        initializer=[numpy_helper.from_array(W.astype(dt), "W"), numpy_helper.from_array(B.astype(dt), "b"),
                     numpy_helper.from_array(np.array([1], np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _sidecar(folder: Path, files: dict[str, dict[str, str]]) -> None:
    """model.json listing `files` ({part: {precision: file}}) as lpgb-export writes it."""
    from lpgb.runtime.config import LpgbConfig
    from lpgb.runtime.sidecar import build_sidecar, write_sidecar

    write_sidecar(folder, build_sidecar(folder, LpgbConfig().to_dict(), {}, files))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("export")
    for part in ("branch1", "smm"):
        _linear_model(d / f"{part}.onnx")
        _linear_model(d / f"{part}_fp16.onnx", fp16=True)
    _sidecar(d, {p: {"fp32": f"{p}.onnx", "fp16": f"{p}_fp16.onnx"} for p in ("branch1", "smm")})
    return d


def test_part_files_come_from_model_json(model_dir, tmp_path):
    assert part_files(model_dir, "onnx") == {"branch1": model_dir / "branch1.onnx", "smm": model_dir / "smm.onnx"}
    assert part_files(model_dir, "onnx", "fp16")["smm"].name == "smm_fp16.onnx"
    assert part_files(model_dir, "onnx", "int8", parts=("smm",))["smm"].name == "smm.onnx"  # smm: no INT8 variant
    with pytest.raises(LpgbError, match="no INT8 parts .branch1_int8.onnx."):
        part_files(model_dir, "onnx", "int8")  # never served by the FP32 file
    with pytest.raises(LpgbError, match="unknown model part"):
        part_files(model_dir, "onnx", parts=("head",))
    with pytest.raises(LpgbError, match="has no rpn.onnx"):
        part_files(model_dir, "onnx", parts=("rpn",))
    with pytest.raises(LpgbError, match="no model.json"):
        part_files(tmp_path, "onnx")  # bare ONNX files are never served unverified
    assert PARTS == ("rpn", "branch1", "branch2", "smm")


def test_ort_cpu_runs_named_outputs(model_dir):
    be = load_backend("ort", model_dir, "fp32", "cpu", intra_op_threads=1)
    try:
        assert be.name == "ort" and be.providers == ["CPUExecutionProvider"]
        assert be.parts == ["branch1", "smm"]
        x = RNG.standard_normal((5, 4)).astype(np.float32)
        out = be.run("branch1", {"x": x})
        assert set(out) == {"y", "s"}
        np.testing.assert_allclose(out["y"], x @ W + B, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["s"], (x @ W + B).sum(1), rtol=1e-5, atol=1e-5)
        # float64 input is converted to the graph's float32
        out64 = be.run("branch1", {"x": x.astype(np.float64)})
        np.testing.assert_allclose(out64["y"], out["y"])
    finally:
        be.close()


def test_ort_empty_batch_not_sent(model_dir):
    be = load_backend("ort", model_dir, "fp32", "cpu")
    out = be.run("smm", {"x": np.zeros((0, 4), np.float32)})
    assert out["y"].shape == (0, 3) and out["y"].dtype == np.float32
    assert out["s"].shape == (0,)


def test_ort_fp16_converts_io(model_dir):
    be = load_backend("ort", model_dir, "fp16", "cpu")
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    out = be.run("branch1", {"x": x})
    assert out["y"].dtype == np.float32
    np.testing.assert_allclose(out["y"], x @ W + B, rtol=2e-2, atol=2e-2)
    empty = be.run("branch1", {"x": np.zeros((0, 4), np.float32)})
    assert empty["y"].shape == (0, 3) and empty["y"].dtype == np.float32


def test_ort_errors(model_dir, tmp_path):
    be = load_backend("ort", model_dir, "fp32", "cpu")
    with pytest.raises(LpgbError, match="no rpn part"):
        be.run("rpn", {"image": np.zeros((1, 3, 8, 8), np.float32)})
    with pytest.raises(LpgbError, match="missing input 'x'"):
        be.run("branch1", {"crops": np.zeros((1, 4), np.float32)})
    with pytest.raises(LpgbError, match="no model.json"):
        load_backend("ort", tmp_path, "fp32", "cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    _sidecar(empty, {})
    with pytest.raises(LpgbError, match="lists no fp32 ONNX parts"):
        load_backend("ort", empty, "fp32", "cpu")
    with pytest.raises(LpgbError, match="unknown backend"):
        load_backend("onnx", model_dir)
    with pytest.raises(LpgbError, match="runs on cpu, cuda, tensorrt"):
        load_backend("ort", model_dir, device="tpu")
    bad = tmp_path / "bad"
    bad.mkdir()
    _linear_model(bad / "smm.onnx")
    _sidecar(bad, {"smm": {"fp32": "smm.onnx"}})
    (bad / "smm.onnx").write_bytes(b"not a model")
    with pytest.raises(LpgbError, match="smm.onnx changed since export .sha256 mismatch. for part 'smm'"):
        load_backend("ort", bad)
    from lpgb.runtime.sidecar import load_sidecar, sha256_file, write_sidecar

    sidecar = load_sidecar(bad, verify_hashes=False)  # the broken file re-listed: loading is what fails
    relisted = replace(sidecar.parts["smm"], sha256=sha256_file(bad / "smm.onnx"))
    write_sidecar(bad, replace(sidecar, parts={"smm": relisted}))
    with pytest.raises(LpgbError, match="onnxruntime cannot load"):
        load_backend("ort", bad)


def test_ort_cuda_request_refused_without_cuda(model_dir):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(LpgbError) as info:
        load_backend("ort", model_dir, "fp32", "cuda")
    msg = str(info.value)
    assert "CUDAExecutionProvider requested" in msg and "lpgb[gpu]" in msg and "\n" not in msg


def test_trt_missing_gives_one_line_error(model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    with pytest.raises(LpgbError) as info:
        load_backend("trt", model_dir, "fp16", "cuda")
    msg = str(info.value)
    assert "TensorRT" in msg and "\n" not in msg


def test_trt_needs_cuda_device(model_dir):
    with pytest.raises(LpgbError, match="cuda only"):
        load_backend("trt", model_dir, "fp16", "cpu")


def test_trt_matches_ort(model_dir, tmp_path):
    trt = pytest.importorskip("tensorrt")
    pytest.importorskip("pycuda.driver")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse((model_dir / "branch1.onnx").read_bytes())
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("x", (1, 4), (4, 4), (8, 4))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    (tmp_path / "branch1.engine").write_bytes(bytes(plan))
    from lpgb.runtime.sidecar import PartInfo, load_sidecar, sha256_file, write_sidecar

    listed = load_sidecar(model_dir)
    engine = PartInfo("branch1.engine", [], [], "fp32", 17, sha256_file(tmp_path / "branch1.engine"), "fp32")
    write_sidecar(tmp_path, replace(listed, parts={"branch1_engine": engine}))
    be = load_backend("trt", tmp_path, "fp32", "cuda")
    try:
        x = RNG.standard_normal((5, 4)).astype(np.float32)
        out = be.run("branch1", {"x": x})
        np.testing.assert_allclose(out["y"], x @ W + B, rtol=1e-3, atol=1e-3)
        assert be.run("branch1", {"x": np.zeros((0, 4), np.float32)})["y"].shape == (0, 3)
        with pytest.raises(LpgbError, match="profile"):
            be.run("branch1", {"x": np.zeros((9, 4), np.float32)})
    finally:
        be.close()


def test_fp16_request_without_fp16_files_is_refused(tmp_path):
    """No silent FP32 when FP16 was asked for (the RPN alone is FP32-only by design)."""
    _linear_model(tmp_path / "branch1.onnx")
    _linear_model(tmp_path / "rpn.onnx")
    _sidecar(tmp_path, {"branch1": {"fp32": "branch1.onnx"}, "rpn": {"fp32": "rpn.onnx"}})
    with pytest.raises(LpgbError, match="no FP16 parts .*lpgb-export RUN --fp16"):
        load_backend("ort", tmp_path, "fp16", "cpu")
    assert part_files(tmp_path, "onnx", "fp16", parts=("rpn",))["rpn"].name == "rpn.onnx"
