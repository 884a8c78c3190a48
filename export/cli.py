"""`lpgb-export RUN`: ONNX (and FP16 ONNX, INT8 branch ONNX, TensorRT engines) for rpn, branch1, branch2, smm."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lpgb.runtime.cli_common import console, positive_finite, run_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.command()
def export(
    run: Path = typer.Argument(..., help="Run folder written by lpgb-train."),
    out: Optional[Path] = typer.Option(None, help="Export folder (default RUN/export)."),
    fp16: bool = typer.Option(False, "--fp16", help="Also write FP16 ONNX variants (and FP16 engines with --trt)."),
    int8: bool = typer.Option(False, "--int8", help="Also write static INT8 (QDQ) branch1/branch2 ONNX, calibrated on "
                              "a few hundred training-tube crops (serve with --precision int8, ort backend)."),
    trt: bool = typer.Option(False, "--trt", help="Build TensorRT engines from the ONNX (needs lpgb[trt] and a GPU)."),
    check: bool = typer.Option(False, "--check", help="Parity gates: PyTorch vs ONNX Runtime FP32 (and FP16, INT8 vs FP32); non-zero exit on failure."),
    opset: int = typer.Option(17, min=17, max=99, help="ONNX opset (>= 17 for LayerNormalization)."),
    workspace_gb: float = typer.Option(2.0, max=1024.0, callback=positive_finite,
                                       help="TensorRT builder workspace limit (GiB)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing export folder."),
) -> None:
    """Export a trained run; the folder gets model.json (the sidecar) with checksums and versions."""
    from lpgb.export.pipeline import ExportRequest, export_run

    request = ExportRequest(run=run, out=out, fp16=fp16, int8=int8, trt=trt, check=check, opset=opset,
                            workspace_gb=workspace_gb, overwrite=overwrite)
    try:
        folder = export_run(request)
    except KeyboardInterrupt:  # typer would exit 130 without a word; export_run removed its staging folder
        console.print("[yellow]interrupted:[/] lpgb-export stopped; the export folder keeps what it held before "
                      "(nothing was replaced)", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    console.print(f"[green]done[/]: export folder {folder}")


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
