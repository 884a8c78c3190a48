"""Proposal recall against ground-truth boxes (torch-free; used by lpgb-bench and the RPN stage)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lpgb.runtime.errors import LpgbError

__all__ = ["covered", "recall_at_iou"]


def covered(pred: np.ndarray, gt: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """Boolean `(G,)`: ground-truth box g has a predicted box with IoU >= `iou` (boxes `(K, 4)` xyxy)."""
    gt = np.asarray(gt, np.float64).reshape(-1, 4)
    pred = np.asarray(pred, np.float64).reshape(-1, 4)
    if len(gt) == 0 or len(pred) == 0:
        return np.zeros(len(gt), bool)
    lt = np.maximum(gt[:, None, :2], pred[None, :, :2])
    rb = np.minimum(gt[:, None, 2:], pred[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_g = np.prod(np.clip(gt[:, 2:] - gt[:, :2], 0, None), axis=1)
    area_p = np.prod(np.clip(pred[:, 2:] - pred[:, :2], 0, None), axis=1)
    union = area_g[:, None] + area_p[None, :] - inter
    overlap = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    return overlap.max(axis=1) >= iou


def recall_at_iou(pred_boxes_per_frame: Sequence[np.ndarray], gt_boxes_per_frame: Sequence[np.ndarray],
                  iou: float = 0.5) -> float:
    """Fraction of ground-truth boxes (over all frames) covered by a predicted box with IoU >= `iou`.

    Boxes are `(K, 4)` xyxy per frame. NaN when there is no ground-truth box at all.
    """
    if len(pred_boxes_per_frame) != len(gt_boxes_per_frame):
        raise LpgbError(f"{len(pred_boxes_per_frame)} prediction frames but {len(gt_boxes_per_frame)} "
                        "ground-truth frames")
    found = total = 0
    for pred, gt in zip(pred_boxes_per_frame, gt_boxes_per_frame):
        hit = covered(pred, gt, iou)
        total += len(hit)
        found += int(hit.sum())
    return float("nan") if total == 0 else found / total
