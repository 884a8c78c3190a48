"""OpenVINO backend: the export folder's ONNX parts compiled for the CPU by OpenVINO (Intel edge boxes).

One compiled model and one infer request per part, read from `<part>.onnx` (fp32) or
`<part>_fp16.onnx` (fp16; the RPN stays FP32), as model.json lists them (`part_files`). The branch
parts keep their dynamic crop axis and `smm` its dynamic tube axis, so one compiled model serves every count; the RPN is
static. Zero-size batches (a frame without boxes) are answered with empty outputs of the right shape
without calling OpenVINO, as the ort backend does.

Execution precision is pinned to f32: OpenVINO's CPU plugin otherwise picks bf16 (or f16) on CPUs
that have it, which would change the scores. `fp16` therefore means the FP16 weights of the
`_fp16.onnx` files, computed in f32, like ONNX Runtime on a CPU. Threads: `inference_num_threads`
(else a positive `OMP_NUM_THREADS`, else OpenVINO's choice: the physical cores).
OpenVINO is imported here, at construction, so the runtime package imports without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lpgb.runtime.backends.base import check_part, part_files
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.parts import part_spec

MISSING = "the openvino backend needs OpenVINO: pip install 'lpgb[openvino]'"
DEVICES: dict[str, str] = {"cpu": "CPU"}


def _import_openvino():
    try:
        import openvino
    except (ImportError, OSError):  # not installed, or its shared libraries do not load
        raise LpgbError(MISSING) from None
    return openvino


def _threads(option: int | None) -> int | None:
    if option is not None:
        if int(option) <= 0:
            raise LpgbError(f"inference_num_threads must be positive, got {option}")
        return int(option)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Part:
    """A compiled part: its infer request and, per spec name, the compiled input/output ports."""

    def __init__(self, part: str, path: Path, compiled) -> None:
        spec = part_spec(part)
        self.path = path
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.inputs = {name: _port(compiled.inputs, name, part, path, "input") for name in spec.inputs}
        self.outputs = {name: _port(compiled.outputs, name, part, path, "output") for name in spec.outputs}
        self.dtypes = {name: port.get_element_type().to_dtype() for name, port in self.inputs.items()}
        self.dynamic = {name: port.get_partial_shape()[0].is_dynamic
                        for name, port in self.inputs.items() if port.get_partial_shape().rank.get_length() > 0}


def _port(ports, name: str, part: str, path: Path, kind: str):
    for port in ports:
        if name in port.get_names():
            return port
    names = ", ".join(sorted(n for p in ports for n in p.get_names()))
    raise LpgbError(f"{path.name}: the {part} part has no {kind} {name!r} (it has {names or 'none'}); "
                    "re-export it with lpgb-export")


class OpenVinoBackend:
    """`Backend` over OpenVINO on the CPU. Loads the parts present in `model_dir` (`parts` to restrict)."""

    name = "openvino"

    def __init__(self, model_dir: Path, precision: str = "fp32", device: str = "cpu",
                 inference_num_threads: int | None = None, parts: tuple[str, ...] | None = None) -> None:
        ov = _import_openvino()
        if device not in DEVICES:
            raise LpgbError(f"unknown device {device!r} for the openvino backend; choose {', '.join(DEVICES)}")
        if precision not in ("fp32", "fp16"):
            raise LpgbError(f"unknown precision {precision!r}; choose fp32 or fp16")
        self.model_dir = Path(model_dir)
        self.precision = precision
        self.device = device
        self.version = ov.get_version()
        core = ov.Core()
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        threads = _threads(inference_num_threads)
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self._parts: dict[str, _Part] = {}
        for part, path in part_files(self.model_dir, "onnx", precision, parts).items():
            try:
                compiled = core.compile_model(core.read_model(str(path)), DEVICES[device], config)
            except Exception as exc:  # OpenVINO raises RuntimeError / its own types for bad graphs
                raise LpgbError(f"openvino cannot load {path}: {_first_line(exc)}") from None
            self._parts[part] = _Part(part, path, compiled)
        if not self._parts:
            raise LpgbError(f"model folder {self.model_dir} lists no {precision} ONNX parts in its model.json")
        self.threads = int(next(iter(self._parts.values())).compiled.get_property("INFERENCE_NUM_THREADS"))

    @property
    def providers(self) -> list[str]:
        return [f"OpenVINO {self.version.split('-')[0]} {DEVICES[self.device]}"]

    @property
    def parts(self) -> list[str]:
        return list(self._parts)

    def _part(self, part: str) -> _Part:
        check_part(part)
        compiled = self._parts.get(part)
        if compiled is None:
            raise LpgbError(f"model folder {self.model_dir} has no {part} part for the openvino backend")
        return compiled

    def run(self, part: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        p = self._part(part)
        feed: dict[str, np.ndarray] = {}
        empty = False
        for name in p.inputs:
            if name not in inputs:
                raise LpgbError(f"{part}: missing input {name!r} (got {', '.join(inputs) or 'none'})")
            arr = np.ascontiguousarray(inputs[name], dtype=p.dtypes[name])
            if p.dynamic.get(name) and arr.ndim > 0 and arr.shape[0] == 0:
                empty = True
            feed[name] = arr
        if empty:
            # nothing to compute: empty outputs shaped like the part's (dynamic dims -> 0)
            return {name: np.zeros([0 if d.is_dynamic else d.get_length() for d in port.get_partial_shape()],
                                   dtype=np.float32 if port.get_element_type().to_dtype() == np.float16
                                   else port.get_element_type().to_dtype())
                    for name, port in p.outputs.items()}
        try:
            results = p.request.infer(feed)  # copies the outputs (share_outputs=False)
        except Exception as exc:
            raise LpgbError(f"openvino failed on {part} ({p.path.name}) with inputs "
                            f"{ {k: tuple(v.shape) for k, v in feed.items()} }: {_first_line(exc)}") from None
        out: dict[str, np.ndarray] = {}
        for name, port in p.outputs.items():
            arr = np.asarray(results[port])
            out[name] = arr.astype(np.float32) if arr.dtype == np.float16 else arr
        return out

    def close(self) -> None:
        self._parts.clear()


__all__ = ["OpenVinoBackend", "MISSING"]
