"""TensorRT engine build.

Here (no TensorRT, no GPU) two tests run: the clear error when TensorRT is missing, and the build
logic against a small fake of the TensorRT 10 Python API (which path, flags, profile, timing cache,
atomic plan). The real build test skips unless `tensorrt` imports and a CUDA GPU is visible.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from lpgb.export.fp16 import to_fp16  # noqa: E402
from lpgb.export.onnx_export import export_onnx  # noqa: E402
from lpgb.export.trt_build import build_engine  # noqa: E402
from lpgb.runtime.backends.ort_backend import cpu_session  # noqa: E402
from lpgb.runtime.errors import LpgbError  # noqa: E402

PROFILE = {"crops": ((1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32))}


class Tiny(nn.Module):
    """Conv/BN/ReLU -> tokens -> LayerNorm -> self-attention (matmul + softmax)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 4, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.norm = nn.LayerNorm(16)
        self.qkv = nn.Linear(16, 48)

    def forward(self, x):
        t = self.norm(self.stem(x).flatten(2).transpose(1, 2))  # (B, 64, 16)
        q, k, v = self.qkv(t).chunk(3, dim=-1)
        return torch.softmax(q @ k.transpose(1, 2) / 4.0, dim=-1) @ v  # (B, 64, 16)


@pytest.fixture()
def onnx_pair(tmp_path):
    torch.manual_seed(0)
    fp32 = export_onnx(Tiny().eval(), (torch.randn(2, 3, 32, 32),), tmp_path / "tiny.onnx", ["crops"],
                       ["tokens"], {"crops": {0: "batch"}, "tokens": {0: "batch"}})
    return fp32, to_fp16(fp32, tmp_path / "tiny_fp16.onnx")


def test_missing_tensorrt_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    with pytest.raises(LpgbError, match=r"^TensorRT is not installed \(pip install 'lpgb\[trt\]'\)$"):
        build_engine(tmp_path / "x.onnx", tmp_path / "x.engine", PROFILE, fp16=True, workspace_gb=1.0,
                     timing_cache=tmp_path / "cache.bin")


# ---------------------------------------------------------------------------------------------
# A fake of the few TensorRT 10 calls build_engine makes, recording them.

def _fake_trt(calls: list, parse_ok: bool = True, input_shape=(-1, 3, 32, 32)):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.99.0"

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            pass

    class Tensor:
        name, shape = "crops", input_shape

    class Network:
        num_inputs = 1

        def get_input(self, i):
            return Tensor()

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls.append(("parse", path))
            return parse_ok

        def get_error(self, i):
            return "In node 3 (Foo): unsupported op"

    class Profile:
        def set_shape(self, name, low, opt, high):
            calls.append(("profile", name, low, opt, high))

    class Cache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return memoryview(self.data + b"+tuned")

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls.append(("workspace", size))

        def set_flag(self, flag):
            calls.append(("flag", flag))

        def add_optimization_profile(self, profile):
            return 0

        def create_timing_cache(self, data):
            calls.append(("cache_in", bytes(data)))
            return Cache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(("network_flags", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return memoryview(b"PLAN")

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, Parser
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    return trt


def test_build_paths_with_fake_tensorrt(tmp_path, monkeypatch, onnx_pair):
    fp32, fp16 = onnx_pair
    cache = tmp_path / "timing.cache"

    calls: list = []
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt(calls))
    info = build_engine(fp16, tmp_path / "tiny_fp16.engine", PROFILE, fp16=True, workspace_gb=0.5, timing_cache=cache)
    assert (info.path_kind, info.precision, info.trt_version) == ("strongly_typed", "fp16", "10.99.0")
    assert ("network_flags", 1 << 5) in calls and not any(c[0] == "flag" for c in calls)
    assert ("workspace", 1 << 29) in calls
    assert ("profile", "crops", (1, 3, 32, 32), (4, 3, 32, 32), (8, 3, 32, 32)) in calls
    assert ("cache_in", b"") in calls
    assert (tmp_path / "tiny_fp16.engine").read_bytes() == b"PLAN"
    assert cache.read_bytes() == b"+tuned"

    calls.clear()  # FP32 ONNX + fp16: the weakly typed flag path, reusing the timing cache
    info = build_engine(fp32, tmp_path / "tiny.engine", PROFILE, fp16=True, workspace_gb=1, timing_cache=cache)
    assert (info.path_kind, info.precision) == ("weakly_typed_fp16", "fp16")
    assert ("network_flags", 0) in calls and ("flag", "FP16") in calls and ("cache_in", b"+tuned") in calls

    calls.clear()
    info = build_engine(fp32, tmp_path / "tiny.engine", PROFILE, fp16=False, workspace_gb=1, timing_cache=cache)
    assert (info.path_kind, info.precision) == ("fp32", "fp32") and not any(c[0] == "flag" for c in calls)


def test_build_errors_with_fake_tensorrt(tmp_path, monkeypatch, onnx_pair):
    fp32, _ = onnx_pair
    args = dict(fp16=False, workspace_gb=1, timing_cache=tmp_path / "c.bin")
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt([], parse_ok=False))
    with pytest.raises(LpgbError, match=r"could not parse tiny.onnx: In node 3 \(Foo\): unsupported op"):
        build_engine(fp32, tmp_path / "e.engine", PROFILE, **args)
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt([]))
    with pytest.raises(LpgbError, match=r"input 'crops' of tiny.onnx has dynamic shape .* no \(min, opt, max\)"):
        build_engine(fp32, tmp_path / "e.engine", {}, **args)
    with pytest.raises(LpgbError, match="has no input"):
        build_engine(fp32, tmp_path / "e.engine", {**PROFILE, "image": PROFILE["crops"]}, **args)
    with pytest.raises(LpgbError, match="no ONNX model at"):
        build_engine(tmp_path / "missing.onnx", tmp_path / "e.engine", PROFILE, **args)
    assert not (tmp_path / "e.engine").exists()


# ---------------------------------------------------------------------------------------------
# Real TensorRT: only where it is installed and a GPU is visible.

def test_real_engine_matches_onnx_runtime(tmp_path, onnx_pair):
    trt = pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    fp32, fp16 = onnx_pair
    info = build_engine(fp16, tmp_path / "tiny_fp16.engine", PROFILE, fp16=True, workspace_gb=1.0,
                        timing_cache=tmp_path / "timing.cache")
    assert info.path_kind == "strongly_typed" and info.compute_capability == torch.cuda.get_device_capability()
    assert (tmp_path / "timing.cache").stat().st_size > 0

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(info.path.read_bytes())
    context = engine.create_execution_context()
    x = torch.randn(5, 3, 32, 32, device="cuda")
    context.set_input_shape("crops", tuple(x.shape))
    out = torch.empty(tuple(context.get_tensor_shape("tokens")), device="cuda", dtype=torch.float32)
    context.set_tensor_address("crops", x.data_ptr())
    context.set_tensor_address("tokens", out.data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    (ref,) = cpu_session(fp32, threads=1).run(None, {"crops": x.cpu().numpy()})
    rel = float(np.abs(out.cpu().numpy() - ref).max() / np.abs(ref).max())
    print(f"TensorRT strongly typed FP16 vs ORT FP32: max rel {rel:.2e}")
    assert rel < 1e-2
