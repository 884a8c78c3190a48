"""ONNX Runtime backend: one InferenceSession per exported part.

Providers: device 'cpu' -> CPU; 'cuda' -> CUDA, CPU; 'tensorrt' -> TensorRT, CUDA, CPU. ORT falls
back to CPU silently when a provider is missing or fails to start; this backend refuses that.
Float16 inputs/outputs of `*_fp16.onnx` graphs are converted, so callers always see float32.
Precision int8 loads `<part>_int8.onnx` for the branch parts (QDQ graphs, float32 in and out) and the
FP32 files of rpn and smm (`part_files`: the paths model.json lists); the tensorrt device, which builds
its engines from the FP32 graphs, refuses int8 rather than serve FP32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from lpgb.runtime.backends.base import check_part, part_files
from lpgb.runtime.errors import LpgbError

PROVIDERS: dict[str, list[str]] = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_HINT = {
    "CUDAExecutionProvider": "install lpgb[gpu]",
    "TensorrtExecutionProvider": "install lpgb[gpu] and TensorRT",
}
_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def _np_type(ort_type: str) -> type:
    try:
        return _ORT_TYPES[ort_type]
    except KeyError:
        raise LpgbError(f"ONNX tensor type {ort_type} is not supported by the lpgb runtime") from None


def _onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError:
        raise LpgbError("the ort backend needs onnxruntime (pip install onnxruntime)") from None
    return ort


def session_options(threads: Optional[int] = None):
    """`onnxruntime.SessionOptions` with `threads` intra-op threads (None or 0: ORT's default, one per
    core) and one inter-op thread; every lpgb session starts from these."""
    ort = _onnxruntime()
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    return opts


def cpu_session(model: Path | str | bytes, threads: Optional[int] = None):
    """A CPU `onnxruntime.InferenceSession` of an ONNX file or a serialised model (export checks,
    benchmarks, measurements); `threads` as in `session_options`. Serving uses `OrtBackend`."""
    ort = _onnxruntime()
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=session_options(threads), providers=["CPUExecutionProvider"])


class OrtBackend:
    """`Backend` over ONNX Runtime. Loads the parts present in `model_dir` (`parts` to restrict)."""

    name = "ort"

    def __init__(self, model_dir: Path, precision: str = "fp32", device: str = "cpu",
                 intra_op_threads: int | None = None, parts: tuple[str, ...] | None = None) -> None:
        ort = _onnxruntime()
        if device not in PROVIDERS:
            raise LpgbError(f"unknown device {device!r} for the ort backend; choose {', '.join(PROVIDERS)}")
        if device == "tensorrt" and precision == "int8":
            raise LpgbError("the ort backend's tensorrt device builds engines from the FP32 graphs and cannot "
                            "serve the INT8 parts: run --precision int8 on --device cpu (or cuda)")
        self.model_dir = Path(model_dir)
        self.precision = precision
        self.device = device
        wanted = PROVIDERS[device][0]
        available = ort.get_available_providers()
        if wanted not in available:
            raise LpgbError(f"{wanted} requested but onnxruntime {ort.__version__} has no "
                            f"{wanted.replace('ExecutionProvider', '')} ({_HINT.get(wanted, 'check the install')})")
        opts = session_options(intra_op_threads)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # One session per part, each with its own thread pool: spinning idle workers of one session
        # steal the cores of the next (measured on 2 cores, tiny branch at 18 crops: 51.6 ms with
        # spinning, 17.8 ms without).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers: list = list(PROVIDERS[device])
        if device == "tensorrt":
            # TensorRT builds its own FP16 engines from the FP32 graph; cache them beside the model.
            providers[0] = (wanted, {
                "trt_fp16_enable": precision == "fp16",
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(self.model_dir / "ort_trt_cache"),
            })
        file_precision = "fp32" if device == "tensorrt" else precision
        self._sessions: dict[str, object] = {}
        for part, path in part_files(self.model_dir, "onnx", file_precision, parts).items():
            try:
                sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
            except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise LpgbError(f"onnxruntime cannot load {path}: {msg}") from None
            if wanted not in sess.get_providers():
                raise LpgbError(f"{wanted} requested but onnxruntime fell back to {sess.get_providers()[0]} "
                                f"for {path.name} (check the CUDA/cuDNN/TensorRT libraries)")
            self._sessions[part] = sess
        if not self._sessions:
            raise LpgbError(f"model folder {self.model_dir} lists no {file_precision} ONNX parts in its model.json")
        first = next(iter(self._sessions.values()))
        self._providers: list[str] = list(first.get_providers())  # type: ignore[attr-defined]

    @property
    def providers(self) -> list[str]:
        return list(self._providers)

    @property
    def parts(self) -> list[str]:
        return list(self._sessions)

    def _session(self, part: str):
        check_part(part)
        sess = self._sessions.get(part)
        if sess is None:
            raise LpgbError(f"model folder {self.model_dir} has no {part} part for the ort backend")
        return sess

    def input_names(self, part: str) -> list[str]:
        return [i.name for i in self._session(part).get_inputs()]

    def output_names(self, part: str) -> list[str]:
        return [o.name for o in self._session(part).get_outputs()]

    def run(self, part: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess = self._session(part)
        feed: dict[str, np.ndarray] = {}
        empty = False
        for meta in sess.get_inputs():
            if meta.name not in inputs:
                raise LpgbError(f"{part}: missing input {meta.name!r} (got {', '.join(inputs) or 'none'})")
            arr = np.ascontiguousarray(inputs[meta.name], dtype=_np_type(meta.type))
            batch_dynamic = len(meta.shape) > 0 and not isinstance(meta.shape[0], int)
            if batch_dynamic and arr.ndim > 0 and arr.shape[0] == 0:
                empty = True
            feed[meta.name] = arr
        outputs = sess.get_outputs()
        if empty:
            # ORT kernels do not all accept zero-sized batches; answer without running.
            return {o.name: np.zeros([d if isinstance(d, int) else 0 for d in o.shape],
                                     dtype=_out_type(o.type)) for o in outputs}
        results = sess.run(None, feed)
        return {o.name: (r.astype(np.float32) if r.dtype == np.float16 else r) for o, r in zip(outputs, results)}

    def close(self) -> None:
        self._sessions.clear()


def _out_type(ort_type: str) -> type:
    t = _np_type(ort_type)
    return np.float32 if t is np.float16 else t


__all__ = ["OrtBackend", "PROVIDERS", "cpu_session", "session_options"]
