"""What machine a benchmark ran on: CPU, threads, GPU, library versions, ONNX Runtime providers.

Nothing here is required: every probe that fails leaves its field None, so a report can always be
written. torch is imported only when it is already installed (and only to ask about CUDA).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
from pathlib import Path
from typing import Any

LIBRARIES: tuple[str, ...] = ("numpy", "cv2", "onnxruntime", "onnx", "torch", "tensorrt")


def cpu_model() -> str:
    """'model name' from /proc/cpuinfo (Linux), else platform.processor() / machine()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Processor", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cpus() -> int | None:
    """CPUs this process may run on (affinity mask), which can be fewer than os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """`__version__` of each library that imports; None when it is not installed or fails to import."""
    found: dict[str, str | None] = {}
    for name in names:
        if importlib.util.find_spec(name) is None:
            found[name] = None
            continue
        try:
            found[name] = str(getattr(importlib.import_module(name), "__version__", "unknown"))
        except Exception:  # a broken install (e.g. tensorrt without its CUDA libs) is "absent" here
            found[name] = None
    return found


def ort_info() -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"available_providers": [], "device": None}
    return {"available_providers": list(ort.get_available_providers()), "device": ort.get_device()}


def torch_info() -> dict[str, Any]:
    """torch threads and CUDA GPUs; empty when torch is not installed."""
    if importlib.util.find_spec("torch") is None:
        return {}
    try:
        import torch
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    info: dict[str, Any] = {"threads": torch.get_num_threads(), "cuda_available": torch.cuda.is_available(),
                            "cuda_version": torch.version.cuda, "gpus": []}
    if info["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            info["gpus"].append({"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
                                 "memory_gb": round(props.total_memory / 2**30, 1)})
    return info


def ort_default_threads() -> int | None:
    """Intra-op threads an ORT session uses when none are set: about one per usable CPU
    (ORT picks physical cores; this reports the affinity count as the upper bound)."""
    return usable_cpus()


def collect() -> dict[str, Any]:
    """Everything above as one JSON-ready dict."""
    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "env_threads": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
        "ort_threads_default": ort_default_threads(),
        "torch": torch_info(),
        "onnxruntime": ort_info(),
        "versions": library_versions(),
    }


def describe(info: dict[str, Any]) -> str:
    """One line for the terminal: CPU, threads, GPU."""
    gpus = (info.get("torch") or {}).get("gpus") or []
    gpu = ", ".join(f"{g['name']} (sm {g['compute_capability']})" for g in gpus) or "no GPU"
    threads = (info.get("torch") or {}).get("threads")
    return (f"{info.get('cpu')} | {info.get('usable_cpus')}/{info.get('cpu_count')} CPUs usable"
            f"{f', torch threads {threads}' if threads else ''} | {gpu}")


__all__ = ["collect", "describe", "cpu_model", "usable_cpus", "library_versions", "ort_info", "torch_info"]
