"""The backend interface and `load_backend`, which imports each backend module lazily.

A backend runs the four exported parts of a model folder (`lpgb-export` output):
`rpn`, `branch1`, `branch2`, `smm`, stored as `<part>.onnx`, `<part>_fp16.onnx` or `<part>.engine`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from lpgb.runtime.errors import LpgbError

PARTS: tuple[str, ...] = ("rpn", "branch1", "branch2", "smm")
BackendKind = Literal["ort", "trt", "torch"]
Precision = Literal["fp32", "fp16"]
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
    if part not in PARTS:
        raise LpgbError(f"unknown model part {part!r}; parts are {', '.join(PARTS)}")


def part_path(model_dir: Path, part: str, kind: str, precision: str = "fp32") -> Path:
    """File of `part` in the export folder for a backend kind ('onnx' or 'engine') and precision."""
    check_part(part)
    if kind == "engine":
        return Path(model_dir) / f"{part}.engine"
    if precision == "fp16":
        fp16 = Path(model_dir) / f"{part}_fp16.onnx"
        # Parts exported only in FP32 (the RPN: near-tied scores make FP16 top-K unstable) run in FP32.
        return fp16 if fp16.is_file() or not (Path(model_dir) / f"{part}.onnx").is_file() else Path(model_dir) / f"{part}.onnx"
    if precision == "fp32":
        return Path(model_dir) / f"{part}.onnx"
    raise LpgbError(f"unknown precision {precision!r}; choose fp32 or fp16")


def load_backend(kind: str, model_dir: Path, precision: str = "fp32", device: str = "cpu",
                 **options: object) -> Backend:
    """Open the backend `kind` ('ort' | 'trt' | 'torch') on the export folder `model_dir`.

    `device` is 'cpu' | 'cuda' (and 'tensorrt' for ORT's TensorRT execution provider).
    For 'trt' the engines fix the precision (`precision` is not used); for 'torch' `model_dir` is
    the run folder (weights/), and device/precision are passed on.
    `options` go to the backend's constructor (e.g. `intra_op_threads` for ORT).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise LpgbError(f"model folder {model_dir} does not exist")
    if precision not in ("fp32", "fp16"):
        raise LpgbError(f"unknown precision {precision!r}; choose fp32 or fp16")
    if kind == "ort":
        from lpgb.runtime.backends.ort_backend import OrtBackend

        return OrtBackend(model_dir, precision=precision, device=device, **options)  # type: ignore[arg-type]
    if kind == "trt":
        if device != "cuda":
            raise LpgbError(f"the TensorRT backend runs on cuda only (got device {device!r})")
        from lpgb.runtime.backends.trt_backend import TrtBackend

        return TrtBackend(model_dir, **options)  # type: ignore[arg-type]
    if kind == "torch":
        try:
            import importlib

            module = importlib.import_module("lpgb.trainer.torch_backend")
        except ImportError as exc:
            raise LpgbError(f"the torch backend needs the training extras (install lpgb[train]): {exc}") from None
        return module.TorchBackend(model_dir, device=device, precision=precision, **options)
    raise LpgbError(f"unknown backend {kind!r}; choose ort, trt or torch")


__all__ = ["PARTS", "Backend", "BackendKind", "Precision", "Device", "check_part", "part_path", "load_backend"]
