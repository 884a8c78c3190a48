"""Crops -> network input (shared by training and serving). Torch-free."""

from __future__ import annotations

import numpy as np

from lpgb.runtime.config import BRANCH_INPUTS
from lpgb.runtime.errors import LpgbError

__all__ = ["MEAN", "STD", "MOTION_GAIN", "crops_to_input", "encode_tubes", "tubes_to_input"]

# Temporal differences are small (a walker's edge moves by 10-60 grey levels between Ped2 frames); the gain
# spreads them over the uint8 range around 128 (differences beyond +-127/MOTION_GAIN saturate).
MOTION_GAIN = 2.0
_GRAY = np.array([0.114, 0.587, 0.299], np.float32)  # BGR weights (ITU-R BT.601, as cv2.COLOR_BGR2GRAY)

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


def encode_tubes(crops: np.ndarray, form: str) -> np.ndarray:
    """Tube crops `(..., T, S, S, 3)` uint8 BGR -> what the branches see, same shape and dtype.

    `rgb`: unchanged. `motion`: the object's appearance and how it moves, in the three channels of each step j
    (B, G, R order): grey(j), 128 + g (grey(j) - grey(j-1)), 128 + g (grey(j) - grey(j-2)), g = MOTION_GAIN,
    earlier steps clamped to the tube's first (so step 0 has no motion and step 1 only the one-frame
    difference). The newest step, the one the `patterns` term reads, always has both differences.
    """
    crops = np.asarray(crops)
    if form == "rgb":
        return crops
    if form != "motion":
        raise LpgbError(f"spatial.input_form must be one of {', '.join(BRANCH_INPUTS)}; got {form!r}")
    if crops.ndim < 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
        raise LpgbError(f"tube crops must be uint8 (..., T, S, S, 3); got {crops.dtype} {crops.shape}")
    grey = crops.astype(np.float32) @ _GRAY  # (..., T, S, S)
    t = grey.shape[-3]
    prev1 = grey[..., np.maximum(np.arange(t) - 1, 0), :, :]
    prev2 = grey[..., np.maximum(np.arange(t) - 2, 0), :, :]
    out = np.empty(crops.shape, np.uint8)
    out[..., 0] = np.clip(np.rint(grey), 0, 255)
    out[..., 1] = np.clip(np.rint(128.0 + MOTION_GAIN * (grey - prev1)), 0, 255)
    out[..., 2] = np.clip(np.rint(128.0 + MOTION_GAIN * (grey - prev2)), 0, 255)
    return out


def tubes_to_input(crops: np.ndarray, form: str) -> np.ndarray:
    """Tube crops `(..., T, S, S, 3)` uint8 BGR -> float32 `(B, 3, S, S)` branch input (B = all leading
    dims x T): `encode_tubes` then `crops_to_input`."""
    return crops_to_input(encode_tubes(crops, form))
