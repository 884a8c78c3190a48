"""The model formats lpgb exports and serves, one table (as ultralytics' `export_formats()`).

Each `ModelFormat` row says what a format's files are called (`file`, the model.json role `role`), which
parts have one, the precision it serves, the `lpgb-export` option that writes it (`flag`, also the
`ExportRequest` field), the function that builds a part's file and the function that gates it
(`lpgb-export --check`). Readers: the export loop and its parity checks (`lpgb.export`), model.json's
roles and the files a backend opens (`lpgb.runtime.sidecar`), the backend registry (each `BackendEntry`
names the formats it serves) and from it `lpgb-bench`'s backend rows and their model-file listings. A new
format is a row here plus its build (and gate) function.

`build` and `gate` name functions of the torch-side export package as "module:function" and are imported
only when an export runs (`resolve`): this module, like the whole runtime, imports neither torch nor the
exporter.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Optional

from lpgb.runtime.errors import LpgbError
from lpgb.runtime.parts import PARTS

__all__ = ["ModelFormat", "FORMATS", "PRECISIONS", "INT8_PARTS", "format_row", "served_format", "selected_formats",
           "resolve"]

PRECISIONS = ("fp32", "fp16", "int8")
# Parts with an INT8 variant. An int8 model serves `rpn` and `smm` in FP32 by design (the RPN's top-K
# near-ties, the SMM's folded Legendre operator); the sidecar lists each file.
INT8_PARTS: tuple[str, ...] = ("branch1", "branch2")


@dataclass(frozen=True)
class ModelFormat:
    name: str  # the row's name (bench rows: backend, or backend-<precision> for a backend's further formats)
    kind: str  # "onnx" | "engine" (export folder, listed in model.json) | "weights" (the run folder)
    file: str  # a part's file, "{part}" filled in (relative to the folder the backend reads)
    role: Optional[str]  # its key in model.json `parts` ("{part}_fp16"); None: not in model.json (run weights)
    precision: Optional[str]  # what it serves; None: fixed when built (engines: FP16 with --fp16, else FP32)
    parts: tuple[str, ...]  # the parts that have it; serving takes the others' FP32 ONNX (`served_format`)
    flag: Optional[str]  # the lpgb-export option (`--fp16`) and ExportRequest field; None: always written
    build: Optional[str]  # "module:function" writing one part's file (`lpgb.export.pipeline.ExportContext`)
    gate: Optional[str]  # "module:function" giving its parity rows (`lpgb.export.check.run_checks`); None: ungated
    help: str

    def file_of(self, part: str) -> str:
        return self.file.format(part=part)

    def role_of(self, part: str) -> str:
        if self.role is None:
            raise LpgbError(f"the {self.name} format has no model.json role")
        return self.role.format(part=part)


FORMATS: dict[str, ModelFormat] = {f.name: f for f in (
    ModelFormat("onnx", "onnx", "{part}.onnx", "{part}", "fp32", PARTS, None,
                "lpgb.export.pipeline:build_onnx", "lpgb.export.check:fp32_gate",
                "ONNX opset 17, compared with PyTorch in ONNX Runtime"),
    # The RPN stays FP32: near-tied scores make FP16 pick different top-K boxes (measured 3.6% rel).
    ModelFormat("fp16", "onnx", "{part}_fp16.onnx", "{part}_fp16", "fp16", ("branch1", "branch2", "smm"), "fp16",
                "lpgb.export.fp16:build_part", "lpgb.export.check:fp16_gate",
                "FP16 weights, float32 I/O; the SMM core stays FP32"),
    ModelFormat("int8", "onnx", "{part}_int8.onnx", "{part}_int8", "int8", INT8_PARTS, "int8",
                "lpgb.export.int8:build_part", "lpgb.export.check:int8_gate",
                "static INT8 (QDQ) branches calibrated on training-tube crops"),
    # engines are not gated by --check: TensorRT needs a GPU; `lpgb-bench` compares their scores with torch
    ModelFormat("engine", "engine", "{part}.engine", "{part}_engine", None, PARTS, "trt",
                "lpgb.export.trt_build:build_part", None,
                "TensorRT 10 engines built from the (FP16 with --fp16) ONNX"),
    ModelFormat("weights", "weights", "weights/{part}.pt", None, "fp32", PARTS, None, None, None,
                "the run's PyTorch weights (lpgb-train)"),
)}


def format_row(name: str) -> ModelFormat:
    if name not in FORMATS:
        raise LpgbError(f"unknown model format {name!r}; formats are {', '.join(FORMATS)}")
    return FORMATS[name]


def served_format(kind: str, precision: str = "fp32", part: Optional[str] = None) -> ModelFormat:
    """The row a backend reading `kind` files ("onnx" or "engine") at `precision` opens; with `part`, the row
    of that part's file: a part the format lacks is served from its FP32 ONNX (the RPN in FP16, rpn and smm
    in INT8)."""
    if kind == "engine":
        return FORMATS["engine"]
    rows = [f for f in FORMATS.values() if f.kind == kind and f.precision == precision]
    if not rows:
        known = sorted({f.precision for f in FORMATS.values() if f.kind == kind and f.precision})
        raise LpgbError(f"unknown precision {precision!r}; choose {', '.join(known)}")
    if part is not None and part not in rows[0].parts:
        return FORMATS["onnx"]
    return rows[0]


def selected_formats(options: object) -> tuple[ModelFormat, ...]:
    """The rows an export writes: those without a flag, and those whose flag is true on `options` (an
    `ExportRequest`, or anything with those boolean attributes; a missing one counts as false)."""
    return tuple(f for f in FORMATS.values() if f.build is not None
                 and (f.flag is None or bool(getattr(options, f.flag, False))))


def resolve(reference: str) -> Callable:
    """The function a "module:function" reference of a row names (imported now)."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)
