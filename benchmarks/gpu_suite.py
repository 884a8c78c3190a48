"""`lpgb-bench --suite gpu`: the GPU rows (torch-CUDA, ORT-CUDA, TensorRT where installed) on one model,
sized to finish in a few minutes, refused at once where a provider would silently fall back to the CPU.

The checks happen before anything loads: torch must see a CUDA device, ONNX Runtime must offer the
CUDAExecutionProvider (onnxruntime-gpu), and the TensorRT row is added only when TensorRT is installed
and the export holds engines. The backends themselves also refuse a fallback at load (OrtBackend checks
the provider a session really got), so a row never reports CPU numbers as GPU numbers.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from pathlib import Path

from lpgb.runtime.errors import LpgbError

__all__ = ["gpu_readiness", "gpu_request"]

# a budget that keeps the whole suite well under 8 minutes on a desktop GPU
GPU_SPEED_FRAMES = 100
GPU_SWEEP = (1, 4, 16, 64)
GPU_VIDEOS = 6


def gpu_readiness() -> dict[str, str]:
    """{check: problem} for what would make a GPU row fall back to the CPU; empty when all is ready."""
    problems: dict[str, str] = {}
    if importlib.util.find_spec("torch") is None:
        problems["torch"] = "torch is not installed (pip install 'lpgb[train]')"
    else:
        import torch

        if not torch.cuda.is_available():
            problems["torch"] = "torch sees no CUDA GPU"
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            problems["ort"] = "onnxruntime has no CUDAExecutionProvider (pip install 'lpgb[gpu]')"
    except ImportError:
        problems["ort"] = "onnxruntime is not installed"
    return problems


def gpu_request(request, model: Path):
    """The BenchRequest of the GPU suite for `request` (its model, data, outputs kept); LpgbError at once
    when the machine cannot run it on the GPU."""
    problems = gpu_readiness()
    if problems:
        raise LpgbError("--suite gpu refused, a GPU row would fall back to the CPU: " + "; ".join(problems.values()))
    backends = ["torch", "ort", "ort-fp16"]
    export = Path(model) if (Path(model) / "model.json").is_file() else Path(model) / "export"
    if importlib.util.find_spec("tensorrt") is not None and any(export.glob("*.engine")):
        backends.append("trt")
    return replace(request, device="cuda", backends=tuple(backends), speed_frames=GPU_SPEED_FRAMES,
                   sweep=GPU_SWEEP, videos=request.videos or GPU_VIDEOS)
