"""Native TensorRT 10 backend (engines from `lpgb-export --trt`), device memory through pycuda.

Per part: the deserialised engine, one execution context, device buffers allocated once at the
largest shape of optimisation profile 0 with page-locked host mirrors. All parts share one CUDA
stream. Per call: set input shapes, copy in, `execute_async_v3`, copy out, synchronise.
Outputs are returned as float32 for float16 engine outputs, like the ORT backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lpgb.runtime.backends.base import check_part, part_files
from lpgb.runtime.errors import LpgbError


def _import_trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise LpgbError("the trt backend needs TensorRT 10 and pycuda (install lpgb[trt] on a machine with "
                        "an NVIDIA GPU), or use --backend ort") from None
    try:
        import pycuda.driver as cuda
    except ImportError:
        raise LpgbError("the trt backend needs pycuda (pip install pycuda), or use --backend ort") from None
    if int(trt.__version__.split(".")[0]) < 10:
        raise LpgbError(f"the trt backend needs TensorRT >= 10 (found {trt.__version__})")
    return trt, cuda


@dataclass
class _Tensor:
    name: str
    is_input: bool
    dtype: np.dtype
    max_shape: tuple[int, ...]
    host: np.ndarray  # page-locked, flat, sized for max_shape
    device: object  # pycuda DeviceAllocation


@dataclass
class _Part:
    engine: object
    context: object
    tensors: list[_Tensor]


class TrtBackend:
    """`Backend` over native TensorRT engines in `model_dir` (the `<part>_engine` files its model.json lists)."""

    name = "trt"

    def __init__(self, model_dir: Path, device_index: int = 0, parts: tuple[str, ...] | None = None) -> None:
        trt, cuda = _import_trt()
        self._trt, self._cuda = trt, cuda
        self.model_dir = Path(model_dir)
        self._closed = False
        cuda.init()
        self._ctx = cuda.Device(device_index).retain_primary_context()
        self._ctx.push()
        try:
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self._stream = cuda.Stream()
            self._parts: dict[str, _Part] = {}
            for part, path in part_files(self.model_dir, "engine", parts=parts).items():
                self._parts[part] = self._load(path)
            if not self._parts:
                raise LpgbError(f"model folder {self.model_dir} has no TensorRT engines (*.engine); "
                                f"build them with lpgb-export --trt")
        except BaseException:
            self._ctx.pop()
            self._ctx.detach()
            raise
        self._ctx.pop()

    def _load(self, path: Path) -> _Part:
        trt, cuda = self._trt, self._cuda
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise LpgbError(f"TensorRT cannot load {path} (built for another TensorRT version or GPU? "
                            f"rebuild it with lpgb-export --trt on this machine)")
        context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        for n in inputs:  # largest profile shape so output buffers can be sized once
            shape = tuple(engine.get_tensor_shape(n))
            if -1 in shape:
                shape = tuple(engine.get_tensor_profile_shape(n, 0)[2])
            context.set_input_shape(n, shape)
        tensors = []
        for n in names:
            is_input = n in inputs
            shape = tuple(context.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise LpgbError(f"{path.name}: output {n} has a data-dependent shape {shape}, "
                                f"which the trt backend does not support")
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(n)))
            size = max(int(np.prod(shape)), 1)
            host = cuda.pagelocked_empty(size, dtype)
            dev = cuda.mem_alloc(host.nbytes)
            context.set_tensor_address(n, int(dev))
            tensors.append(_Tensor(n, is_input, dtype, shape, host, dev))
        return _Part(engine, context, tensors)

    @property
    def providers(self) -> list[str]:
        return ["TensorRT"]

    @property
    def parts(self) -> list[str]:
        return list(self._parts)

    def run(self, part: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_part(part)
        p = self._parts.get(part)
        if p is None:
            raise LpgbError(f"model folder {self.model_dir} has no {part}.engine")
        cuda = self._cuda
        arrays: dict[str, np.ndarray] = {}
        for t in p.tensors:
            if not t.is_input:
                continue
            if t.name not in inputs:
                raise LpgbError(f"{part}: missing input {t.name!r} (got {', '.join(inputs) or 'none'})")
            arr = np.ascontiguousarray(inputs[t.name], dtype=t.dtype)
            if arr.ndim != len(t.max_shape) or any(a > m for a, m in zip(arr.shape, t.max_shape)):
                raise LpgbError(f"{part}: input {t.name} shape {arr.shape} exceeds the engine's profile "
                                f"maximum {t.max_shape}; rebuild the engine with a larger profile")
            arrays[t.name] = arr
        if any(a.ndim > 0 and a.shape[0] == 0 for a in arrays.values()):
            return {t.name: np.zeros((0,) + t.max_shape[1:], dtype=_out(t.dtype)) for t in p.tensors if not t.is_input}
        self._ctx.push()
        try:
            for t in p.tensors:
                if t.is_input:
                    arr = arrays[t.name]
                    p.context.set_input_shape(t.name, arr.shape)
                    t.host[: arr.size] = arr.ravel()
                    cuda.memcpy_htod_async(t.device, t.host[: arr.size], self._stream)
            if not p.context.execute_async_v3(self._stream.handle):
                raise LpgbError(f"TensorRT failed to run {part}")
            shapes = {}
            for t in p.tensors:
                if not t.is_input:
                    shapes[t.name] = tuple(p.context.get_tensor_shape(t.name))
                    n = int(np.prod(shapes[t.name]))
                    cuda.memcpy_dtoh_async(t.host[:n], t.device, self._stream)
            self._stream.synchronize()
        finally:
            self._ctx.pop()
        out = {}
        for t in p.tensors:
            if not t.is_input:
                n = int(np.prod(shapes[t.name]))
                out[t.name] = t.host[:n].reshape(shapes[t.name]).astype(_out(t.dtype), copy=True)
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ctx.push()
        try:
            for p in self._parts.values():
                for t in p.tensors:
                    t.device.free()  # type: ignore[attr-defined]
            self._parts.clear()
        finally:
            self._ctx.pop()
            self._ctx.detach()


def _out(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dtype == np.float16 else dtype


__all__ = ["TrtBackend"]
