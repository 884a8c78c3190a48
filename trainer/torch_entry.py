"""The torch backend's row of the runtime's backend registry, published through the `lpgb.backends` entry
point group (pyproject.toml): the runtime finds it there and names no trainer module.

Torch-free on purpose: loading the row costs nothing; torch is imported when the backend is opened.
"""

from __future__ import annotations

from pathlib import Path

from lpgb.runtime.backends.base import Backend, BackendEntry
from lpgb.runtime.errors import LpgbError


def open_torch(model_dir: Path, precision: str, device: str, **options: object) -> Backend:
    try:
        from lpgb.trainer.torch_backend import TorchBackend
    except ImportError as exc:
        raise LpgbError(f"the torch backend needs the training extras (install lpgb[train]): {exc}") from None
    return TorchBackend(model_dir, device=device, precision=precision, **options)  # type: ignore[arg-type]


ENTRY = BackendEntry("torch", open_torch, "run", ("cpu", "cuda"), ("fp32", "fp16"), ("weights",),
                     "PyTorch reference (lpgb[train])")
