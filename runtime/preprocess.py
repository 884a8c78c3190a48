"""Crops -> network input (shared by training and serving). Torch-free."""

from __future__ import annotations

import numpy as np

from lpgb.runtime.errors import LpgbError

__all__ = ["MEAN", "STD", "crops_to_input"]

MEAN: np.ndarray = np.array([0.485, 0.456, 0.406], np.float32)  # ImageNet, RGB order
STD: np.ndarray = np.array([0.229, 0.224, 0.225], np.float32)

_SCALE = (1.0 / (255.0 * STD)).astype(np.float32)
_SHIFT = (-MEAN / STD).astype(np.float32)


def crops_to_input(crops: np.ndarray) -> np.ndarray:
    """uint8 BGR crops `(..., S, S, 3)` -> float32 `(B, 3, S, S)` RGB, (x/255 - MEAN) / STD.

    All leading dimensions are flattened into B (e.g. `(K, L+1, S, S, 3)` -> `(K*(L+1), 3, S, S)`).
    """
    crops = np.asarray(crops)
    if crops.ndim < 3 or crops.shape[-1] != 3 or crops.shape[-2] != crops.shape[-3]:
        raise LpgbError(f"crops must have shape (..., S, S, 3); got {crops.shape}")
    if crops.dtype != np.uint8:
        raise LpgbError(f"crops must be uint8 BGR; got {crops.dtype}")
    size = crops.shape[-2]
    # channel flip + transpose on uint8 (cheap), then one float pass done in place
    chw = np.ascontiguousarray(crops.reshape(-1, size, size, 3).transpose(0, 3, 1, 2)[:, ::-1])
    out = chw.astype(np.float32)
    out *= _SCALE[None, :, None, None]
    out += _SHIFT[None, :, None, None]
    return out
