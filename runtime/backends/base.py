"""The backend interface and `load_backend`, which imports each backend module lazily.

A backend runs the four exported parts of a model folder (`lpgb-export` output):
`rpn`, `branch1`, `branch2`, `smm`, stored as `<part>.onnx`, `<part>_fp16.onnx`, `<part>_int8.onnx`
(branch parts only, `INT8_PARTS`) or `<part>.engine`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Protocol, runtime_checkable

import numpy as np

from lpgb.runtime.errors import LpgbError
from lpgb.runtime.parts import INT8_PARTS, ONNX_SUFFIXES, PARTS, part_spec

BackendKind = Literal["ort", "trt", "torch", "openvino"]
Precision = Literal["fp32", "fp16", "int8"]
Device = Literal["cpu", "cuda", "tensorrt"]


@runtime_checkable
class Backend(Protocol):
    """Runs one exported part on named numpy inputs and returns its named numpy outputs."""

    name: str

    @property
    def providers(self) -> list[str]:
        """What really executes the parts (e.g. ORT providers in priority order, or ["TensorRT"])."""
        ...

    def run(self, part: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


def check_part(part: str) -> None:
    part_spec(part)


def part_path(model_dir: Path, part: str, kind: str, precision: str = "fp32") -> Path:
    """File of `part` in the export folder for a backend kind ('onnx' or 'engine') and precision."""
    check_part(part)
    if kind == "engine":
        return Path(model_dir) / f"{part}.engine"
    if precision not in ONNX_SUFFIXES:
        raise LpgbError(f"unknown precision {precision!r}; choose {', '.join(ONNX_SUFFIXES)}")
    fp32 = Path(model_dir) / f"{part}.onnx"
    if precision == "fp32" or (precision == "int8" and part not in INT8_PARTS):
        return fp32  # rpn and smm have no INT8 variant: an int8 model runs them in FP32 (recorded in model.json)
    variant = Path(model_dir) / f"{part}{ONNX_SUFFIXES[precision]}"
    if not variant.is_file():
        # The RPN is exported in FP32 only (near-tied scores make FP16 top-K unstable) and runs in FP32.
        if precision == "fp16" and part == "rpn":
            return fp32
        # a missing variant is refused, never replaced by its FP32 file
        if fp32.is_file():
            raise LpgbError(f"{model_dir} has no {precision.upper()} parts ({variant.name}): export them with "
                            f"lpgb-export RUN --{precision}, or run --precision fp32")
    return variant


@dataclass(frozen=True)
class BackendEntry:
    """One row of the backend registry: what `--backend NAME` means everywhere (run, bench, reports).

    `factory(model_dir, precision, device, **options) -> Backend` imports its library lazily; `reads` is
    "export" (the export folder with model.json) or "run" (the training run's weights/)."""

    name: str
    factory: Callable[..., Backend]
    reads: str
    devices: tuple[str, ...]
    precisions: tuple[str, ...]
    files: tuple[str, ...]  # what it loads, for reports and errors
    help: str


def _ort(model_dir: Path, precision: str, device: str, **options: object) -> Backend:
    from lpgb.runtime.backends.ort_backend import OrtBackend

    return OrtBackend(model_dir, precision=precision, device=device, **options)  # type: ignore[arg-type]


def _trt(model_dir: Path, precision: str, device: str, **options: object) -> Backend:
    # the engines fix the precision
    from lpgb.runtime.backends.trt_backend import TrtBackend

    return TrtBackend(model_dir, **options)  # type: ignore[arg-type]


def _openvino_factory(model_dir: Path, precision: str, device: str, **options: object) -> Backend:
    from lpgb.runtime.backends.openvino_backend import OpenVinoBackend

    return OpenVinoBackend(model_dir, precision=precision, device=device, **options)  # type: ignore[arg-type]


def _torch(model_dir: Path, precision: str, device: str, **options: object) -> Backend:
    try:
        import importlib

        module = importlib.import_module("lpgb.trainer.torch_backend")
    except ImportError as exc:
        raise LpgbError(f"the torch backend needs the training extras (install lpgb[train]): {exc}") from None
    return module.TorchBackend(model_dir, device=device, precision=precision, **options)


BACKENDS: dict[str, BackendEntry] = {}


def register_backend(entry: BackendEntry) -> BackendEntry:
    """Add (or replace) a registry row; CLI choices, bench specs and reports read the registry."""
    BACKENDS[entry.name] = entry
    return entry


for _entry in (
    BackendEntry("ort", _ort, "export", ("cpu", "cuda", "tensorrt"), ("fp32", "fp16", "int8"),
                 ("<part>.onnx", "<part>_fp16.onnx", "<part>_int8.onnx"), "ONNX Runtime"),
    BackendEntry("trt", _trt, "export", ("cuda",), ("fp32", "fp16"), ("<part>.engine",), "TensorRT 10 engines"),
    BackendEntry("torch", _torch, "run", ("cpu", "cuda"), ("fp32", "fp16"), ("weights/<part>.pt",),
                 "PyTorch reference (lpgb[train])"),
    BackendEntry("openvino", _openvino_factory, "export", ("cpu",), ("fp32", "fp16"), ("<part>.onnx", "<part>_fp16.onnx"),
                 "OpenVINO (Intel CPUs)"),
):
    register_backend(_entry)


def backend_entry(kind: str) -> BackendEntry:
    if kind not in BACKENDS:
        raise LpgbError(f"unknown backend {kind!r}; choose {', '.join(BACKENDS)}")
    return BACKENDS[kind]


def load_backend(kind: str, model_dir: Path, precision: str = "fp32", device: str = "cpu",
                 **options: object) -> Backend:
    """Open the registered backend `kind` on `model_dir` (the export folder, or the run folder for
    backends that read the run). `options` go to the backend's factory (e.g. `intra_op_threads` for ORT)."""
    entry = backend_entry(kind)
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise LpgbError(f"model folder {model_dir} does not exist")
    if precision not in entry.precisions:
        raise LpgbError(f"backend {kind} runs {', '.join(entry.precisions)}, not {precision!r}")
    if device not in entry.devices:
        raise LpgbError(f"backend {kind} runs on {', '.join(entry.devices)} only (got device {device!r})")
    return entry.factory(model_dir, precision, device, **options)


__all__ = ["PARTS", "Backend", "BackendKind", "Precision", "Device", "check_part", "part_path", "load_backend",
           "BackendEntry", "BACKENDS", "register_backend", "backend_entry"]
