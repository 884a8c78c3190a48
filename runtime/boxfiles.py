"""Per-frame box files (`training/boxes/NN.json`, `testing/boxes/NN.json`), torch-free.

A box file is a JSON list with one entry per frame; an entry lists that frame's objects, each
either `{"box": [x1, y1, x2, y2], ...}` (the synthetic set's format, with `kind`, `anomaly`,
`attributes`) or a bare `[x1, y1, x2, y2]` (read as `{"box": [...]}`). Read by the RPN's box
targets (trainer) and by the recall / accuracy / oracle benchmarks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lpgb.runtime.errors import LpgbError

__all__ = ["load_box_file", "box_array"]


def load_box_file(path: Path) -> list[list[dict]]:
    """One list of object dicts per frame; LpgbError (one line) for unreadable or malformed files."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LpgbError(f"cannot read box file {path}: {exc}") from None
    if not isinstance(data, list):
        raise LpgbError(f"box file {path}: expected a list with one entry per frame")
    frames = []
    for index, objects in enumerate(data):
        objects = [o if isinstance(o, dict) else {"box": o} for o in (objects or [])]
        try:
            boxes = np.asarray([o["box"] for o in objects], np.float32).reshape(-1, 4)
        except (KeyError, TypeError, ValueError):
            raise LpgbError(f"box file {path}, frame {index}: objects must be {{\"box\": [x1, y1, x2, y2]}} "
                            "or [x1, y1, x2, y2]") from None
        if len(boxes) != len(objects) or not np.isfinite(boxes).all() or (boxes[:, 2:] < boxes[:, :2]).any():
            raise LpgbError(f"box file {path}, frame {index}: boxes must be 4 finite numbers with x2 >= x1 and y2 >= y1")
        frames.append(objects)
    return frames


def box_array(objects: list[dict]) -> np.ndarray:
    """A frame's objects (from `load_box_file`) -> float32 `(K, 4)` boxes x1, y1, x2, y2."""
    return np.asarray([o["box"] for o in objects], np.float32).reshape(-1, 4)
