"""Proposal recall against ground-truth boxes (torch-free; used by lpgb-bench and the RPN stage)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lpgb.runtime.errors import LpgbError
from lpgb.runtime.geometry import as_boxes, iou_matrix

__all__ = ["covered", "recall_at_iou"]


def covered(pred: np.ndarray, gt: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """Boolean `(G,)`: ground-truth box g has a predicted box with IoU >= `iou` (boxes `(K, 4)` xyxy)."""
    gt, pred = as_boxes(gt), as_boxes(pred)
    if len(gt) == 0 or len(pred) == 0:
        return np.zeros(len(gt), bool)
    return iou_matrix(gt, pred).max(axis=1) >= iou


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
