"""A toy backend in one file (for the registry test): ONNX Runtime underneath, counting its calls."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from lpgb.runtime.backends.base import BackendEntry, register_backend

CALLS: Counter = Counter()


class CountingBackend:
    name = "toy"

    def __init__(self, model_dir: Path, precision: str) -> None:
        from lpgb.runtime.backends.ort_backend import OrtBackend

        self._inner = OrtBackend(model_dir, precision=precision)

    @property
    def providers(self) -> list[str]:
        return ["toy"] + self._inner.providers

    def run(self, part: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        CALLS[part] += 1
        return self._inner.run(part, inputs)

    def close(self) -> None:
        self._inner.close()


ENTRY = register_backend(BackendEntry(
    "toy", lambda model_dir, precision, device, **options: CountingBackend(model_dir, precision), "export",
    ("cpu",), ("fp32",), ("onnx",), "toy: ONNX Runtime, counting calls"))
