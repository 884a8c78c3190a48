"""Resumable training checkpoints shared by all stages (RUN/checkpoints/<stage>.pt).

`save_checkpoint(path, **state)` writes atomically (torch.save to a temporary file in the same
folder, then os.replace), so an interrupted run never leaves a half-written checkpoint.
`load_checkpoint(path)` returns the saved dict, or None when there is no checkpoint yet.
Final weights (RUN/weights/<part>.pt) are plain state dicts, written with
`save_checkpoint(path, **model.state_dict())` and read with `load_weights(path)`.
State should hold tensors, state dicts, numbers, strings, lists and dicts (it is loaded with
`weights_only=True`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lpgb.runtime.atomic import atomic_path
from lpgb.runtime.errors import LpgbError

__all__ = ["save_checkpoint", "load_checkpoint", "load_weights"]


def save_checkpoint(path: Path, **state: Any) -> None:
    """Atomically save `state` (a dict of keyword arguments) to `path`; creates the folder."""
    with atomic_path(Path(path), suffix=".tmp") as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The dict saved by `save_checkpoint`, on CPU; None if `path` does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt / foreign file: one clear line for the user
        raise LpgbError(f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        " (delete it to start the stage again)") from None
    if not isinstance(state, dict):
        raise LpgbError(f"checkpoint {path} does not hold a dict (was it written by lpgb?)")
    return state


def load_weights(path: Path) -> dict[str, Any]:
    """A state dict saved as RUN/weights/<part>.pt; LpgbError when missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise LpgbError(f"no weights at {path}: has this training stage run?")
    state = load_checkpoint(path)
    assert state is not None
    return dict(state)
