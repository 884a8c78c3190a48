"""FP32 ONNX -> FP16 ONNX with chosen ops kept in float32 (a "strongly typed" model for TensorRT).

Uses `onnxruntime.transformers.float16.convert_float_to_float16`, which ships with onnxruntime and is
kept up to date there (onnxconverter-common's converter is the same code, older). It converts
weights and activations to float16 and inserts Cast nodes around the ops / nodes we block, and with
`keep_io_types=True` around graph inputs and outputs, so the runtime still feeds and reads float32.

What stays float32 and why (DESIGN.md, FP16 risks): LayerNormalization and reductions (variance
sums overflow / lose precision), Softmax (exp overflow in attention logits), and every node whose
name matches a pattern in `keep_fp32_nodes_matching` (the SMM's Legendre recurrence: the TorchScript
exporter names nodes by module path, e.g. `/smm/MatMul`). onnxruntime's default block list (TopK,
NonMaxSuppression, RoiAlign, Range, CumSum, Min, Max, ...) is kept as well.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import onnx

from lpgb.runtime.atomic import atomic_path
from lpgb.runtime.errors import LpgbError

if TYPE_CHECKING:
    from lpgb.export.pipeline import ExportContext

KEEP_FP32_OPS: tuple[str, ...] = (
    "LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2",
    "Pow", "Sqrt", "Reciprocal", "Exp", "Log",
)
KEEP_FP32_NODES_MATCHING: tuple[str, ...] = ("smm",)


def blocked_node_names(model: onnx.ModelProto, patterns: Sequence[str]) -> list[str]:
    """Names of the nodes whose name contains any of `patterns` (case-insensitive)."""
    lowered = [p.lower() for p in patterns]
    return [n.name for n in model.graph.node if n.name and any(p in n.name.lower() for p in lowered)]


def to_fp16(
    onnx_path: Path,
    out_path: Path,
    keep_fp32_ops: Sequence[str] = KEEP_FP32_OPS,
    keep_fp32_nodes_matching: Sequence[str] = KEEP_FP32_NODES_MATCHING,
) -> Path:
    """Write an FP16 copy of `onnx_path` to `out_path` (atomically); inputs/outputs stay float32.

    Check the result against the FP32 model with `lpgb.export.check` (rank correlation / AUC),
    not element-wise 1e-4: FP16 differs by ~1e-3 relative by design.
    """
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if not onnx_path.is_file():
        raise LpgbError(f"no ONNX model at {onnx_path}")
    model = onnx.load(str(onnx_path))
    op_block = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(keep_fp32_ops))
    node_block = blocked_node_names(model, keep_fp32_nodes_matching)
    try:
        model16 = convert_float_to_float16(model, keep_io_types=True, op_block_list=op_block,
                                           node_block_list=node_block)
    except Exception as exc:  # the converter raises assertion/value errors with long messages
        raise LpgbError(f"FP16 conversion of {onnx_path.name} failed: {str(exc).splitlines()[0]}") from exc
    # The converter appends its input Casts at the end of the node list; ONNX requires topological order.
    OnnxModel.graph_topological_sort(model16.graph, is_deterministic=True)
    with atomic_path(out_path) as tmp:
        onnx.save(model16, str(tmp))
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise LpgbError(f"{out_path.name} failed the ONNX checker: {str(exc).splitlines()[0]}") from exc
    return out_path


def float32_nodes(model: onnx.ModelProto) -> dict[str, str]:
    """{node name: op type} for the nodes whose float inputs are all float32 after conversion.

    Used by tests and the `--check` report to show what stayed in float32.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    types.update({t.name: t.data_type for t in inferred.graph.initializer})
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16}
    result = {}
    for node in inferred.graph.node:
        float_inputs = [types[i] for i in node.input if i and types.get(i) in floats]
        if float_inputs and all(t == onnx.TensorProto.FLOAT for t in float_inputs) and node.op_type != "Cast":
            result[node.name] = node.op_type
    return result


def build_part(ctx: "ExportContext", part: str) -> None:
    """`lpgb-export --fp16`: the FP16 ONNX of `part` (the `fp16` format row) from its FP32 ONNX, the SMM core
    (the folded Legendre operator) kept in float32."""
    from lpgb.runtime.formats import FORMATS

    row = FORMATS["fp16"]
    fp32 = ctx.out / ctx.files[part]["fp32"]
    path = to_fp16(fp32, ctx.out / row.file_of(part), keep_fp32_nodes_matching=("smm",) if part == "smm" else ())
    ctx.add_onnx(part, row, path)
