"""Box geometry for grouping proposals into tube regions (paper 3.1, 4.2; docs/ARCHITECTURE.md stage 2).

Boxes are float32 `(K, 4)` arrays of `x1, y1, x2, y2` in frame pixels, scores float32 `(K,)`.
Regions are int `(K, 4)` arrays `x1, y1, x2, y2` with `x2` / `y2` exclusive, always square
(`x2 - x1 == y2 - y1 >= 1`), and may leave the frame: `crop_region` pads with zeros.
Pure numpy (plus cv2 for the crop resize); never torch.
"""

from __future__ import annotations

import cv2
import numpy as np

from lpgb.runtime.config import ProposalConfig
from lpgb.runtime.errors import LpgbError

__all__ = [
    "as_boxes", "as_scores", "empty_boxes", "empty_scores", "box_area", "iou_matrix",
    "overlap_matrix", "centres_inside", "merge_overlapping", "make_square", "enlarge", "box_window", "clip_boxes",
    "square_regions", "snap_regions", "group_boxes", "tube_regions", "crop_region",
]


def empty_boxes() -> np.ndarray:
    """A float32 `(0, 4)` box array."""
    return np.zeros((0, 4), np.float32)


def empty_scores() -> np.ndarray:
    """A float32 `(0,)` score array."""
    return np.zeros((0,), np.float32)


def as_boxes(boxes: np.ndarray | list) -> np.ndarray:
    """Validate and convert to float32 `(K, 4)`; raises LpgbError on any other shape."""
    arr = np.asarray(boxes, dtype=np.float32)
    if arr.size == 0:
        return empty_boxes()
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise LpgbError(f"boxes must have shape (K, 4) as x1,y1,x2,y2; got {arr.shape}")
    return arr


def as_scores(scores: np.ndarray | list, count: int) -> np.ndarray:
    """Validate and convert to float32 `(count,)`."""
    arr = np.asarray(scores, dtype=np.float32).reshape(-1)
    if arr.shape[0] != count:
        raise LpgbError(f"got {arr.shape[0]} scores for {count} boxes")
    return arr


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas `(K,)` of boxes `(K, 4)`; negative extents count as zero."""
    w = np.clip(boxes[:, 2] - boxes[:, 0], 0, None)
    h = np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    return (w * h).astype(np.float32)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection areas `(Ka, Kb)` of boxes `a (Ka, 4)` and `b (Kb, 4)`."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    return np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU `(Ka, Kb)` of boxes `a (Ka, 4)` and `b (Kb, 4)`."""
    a, b = as_boxes(a), as_boxes(b)
    inter = _intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def centres_inside(boxes: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """`(K,)` bool: whether the centre of each box `(K, 4)` lies inside any of `regions` `(R, 4)` (xyxy)."""
    b, r = as_boxes(boxes), as_boxes(regions)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    return ((cx[:, None] >= r[None, :, 0]) & (cx[:, None] <= r[None, :, 2])
            & (cy[:, None] >= r[None, :, 1]) & (cy[:, None] <= r[None, :, 3])).any(axis=1)


def overlap_matrix(boxes: np.ndarray, min_overlap: float = 0.0) -> np.ndarray:
    """Boolean `(K, K)`: True where two boxes share a region of positive area (touching is not overlap)
    that is more than `min_overlap` of the smaller box's area."""
    boxes = as_boxes(boxes)
    inter = _intersection(boxes, boxes)
    if min_overlap <= 0:
        return inter > 0
    area = box_area(boxes)
    smaller = np.minimum(area[:, None], area[None, :])
    return (inter > 0) & (inter > min_overlap * smaller)


def _components(adjacency: np.ndarray) -> np.ndarray:
    """Connected-component label `(K,)` of each node of a symmetric boolean adjacency `(K, K)`."""
    k = adjacency.shape[0]
    labels = np.full(k, -1, np.int64)
    current = 0
    for start in range(k):
        if labels[start] >= 0:
            continue
        stack = [start]
        labels[start] = current
        while stack:
            node = stack.pop()
            for nxt in np.flatnonzero(adjacency[node] & (labels < 0)):
                labels[nxt] = current
                stack.append(int(nxt))
        current += 1
    return labels


def merge_overlapping(boxes: np.ndarray, scores: np.ndarray, min_overlap: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Merge every group of transitively overlapping boxes into their union box.

    boxes `(K, 4)`, scores `(K,)` -> boxes `(M, 4)`, scores `(M,)` with M <= K. Groups are the
    connected components of the "intersection area > 0" graph, so chains A-B-C merge even when
    A and C do not touch. The merged score is the group's max. Output order follows each
    group's first box in the input; a box with no overlapping neighbour is returned unchanged.
    `min_overlap` > 0 links two boxes only when their intersection exceeds that fraction of the
    smaller box (so a chain of slightly touching proposals does not swallow a whole crowd).
    """
    boxes = as_boxes(boxes)
    scores = as_scores(scores, len(boxes))
    if len(boxes) == 0:
        return empty_boxes(), empty_scores()
    labels = _components(overlap_matrix(boxes, min_overlap))
    n = int(labels.max()) + 1
    out_boxes = np.empty((n, 4), np.float32)
    out_scores = np.empty((n,), np.float32)
    for g in range(n):
        member = labels == g
        group = boxes[member]
        out_boxes[g] = (group[:, 0].min(), group[:, 1].min(), group[:, 2].max(), group[:, 3].max())
        out_scores[g] = scores[member].max()
    return out_boxes, out_scores


def make_square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box's short side symmetrically about the centre to its long side. `(K,4) -> (K,4)`."""
    boxes = as_boxes(boxes)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    half = side / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1).astype(np.float32)


def enlarge(boxes: np.ndarray, scale: float) -> np.ndarray:
    """Scale width and height about each box's centre (25% larger -> scale 1.25). `(K,4) -> (K,4)`."""
    if scale <= 0:
        raise LpgbError(f"enlarge scale must be positive, got {scale}")
    boxes = as_boxes(boxes)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    hw = (boxes[:, 2] - boxes[:, 0]) * scale / 2
    hh = (boxes[:, 3] - boxes[:, 1]) * scale / 2
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1).astype(np.float32)


def box_window(box: np.ndarray, height: int, width: int, scale: float = 1.0) -> tuple[slice, slice]:
    """Rows and columns of a `(height, width)` array that one box `(x1, y1, x2, y2)` covers once scaled by
    `scale` (frame pixels -> array pixels); clipped to the array and never empty."""
    x1, y1, x2, y2 = (np.asarray(box, np.float64) * scale).tolist()
    c1, r1 = int(np.clip(np.floor(x1), 0, width - 1)), int(np.clip(np.floor(y1), 0, height - 1))
    c2, r2 = int(np.clip(np.ceil(x2), c1 + 1, width)), int(np.clip(np.ceil(y2), r1 + 1, height))
    return slice(r1, r2), slice(c1, c2)


def clip_boxes(boxes: np.ndarray, frame_shape: tuple[int, ...]) -> np.ndarray:
    """Clip boxes `(K, 4)` to a frame of shape `(H, W, ...)`."""
    boxes = as_boxes(boxes).copy()
    h, w = int(frame_shape[0]), int(frame_shape[1])
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
    return boxes


def square_regions(boxes: np.ndarray) -> np.ndarray:
    """Round (near-)square float boxes `(K, 4)` to exact integer square regions `(K, 4)` int64.

    Side = round(max(w, h)) (at least 1); the region is centred on the box centre.
    """
    boxes = as_boxes(boxes)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    side = np.maximum(np.rint(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])), 1)
    x1 = np.floor(cx - side / 2 + 0.5)
    y1 = np.floor(cy - side / 2 + 0.5)
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1).astype(np.int64).reshape(-1, 4)


def snap_regions(boxes: np.ndarray, snap: float) -> np.ndarray:
    """Snap square float boxes `(K, 4)` to integer square regions `(K, 4)` int64 on a scale ladder and a
    position grid, so that a box moving or jittering a little keeps the same region.

    The side is the smallest ladder level `ceil((1 + snap) ** k)` (integer k) that holds the box side
    (so it grows by a factor in [1, 1 + snap)); the top-left corner is the box's centred corner rounded
    to a grid of step `max(1, round(snap * side))` pixels anchored at the frame origin, so the centre
    moves by at most half a step (`snap / 2` of the side). An object box enlarged by `context_scale`
    therefore stays inside its region when `snap <= 1 - 1 / context_scale` (0.2 at 1.25).
    """
    if not 0.0 < snap < 1.0:
        raise LpgbError(f"region snap must be in (0, 1), got {snap}")
    boxes = as_boxes(boxes)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    need = np.maximum(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).astype(np.float64), 1.0)
    ratio = 1.0 + snap
    level = np.ceil(np.log(need) / np.log(ratio) - 1e-9)
    side = np.maximum(np.ceil(ratio ** level - 1e-6), 1.0)
    side = np.where(side < need, np.ceil(need), side)  # float rounding at a level's edge
    step = np.maximum(np.rint(snap * side), 1.0)
    x1 = np.floor((cx - side / 2) / step + 0.5) * step
    y1 = np.floor((cy - side / 2) / step + 0.5) * step
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1).astype(np.int64).reshape(-1, 4)


def group_boxes(
    boxes: np.ndarray, scores: np.ndarray, frame_shape: tuple[int, ...], cfg: ProposalConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group proposals into square tube regions (paper 3.1), keeping the grouped boxes.

    boxes `(K, 4)`, scores `(K,)`, frame_shape `(H, W, ...)` -> (grouped boxes `(M, 4)` float32,
    grouped scores `(M,)` float32, regions `(M, 4)` int64). Boxes are clipped to the frame, merged
    when `cfg.merge_overlapping`, made square, enlarged by `cfg.context_scale`, and rounded to
    integer squares (`x2`, `y2` exclusive), or snapped to a ladder and grid when `cfg.region_snap` > 0
    (`snap_regions`). Regions may leave the frame.
    """
    boxes = clip_boxes(boxes, frame_shape)
    scores = as_scores(scores, len(boxes))
    if cfg.merge_overlapping:
        boxes, scores = merge_overlapping(boxes, scores, cfg.merge_min_overlap)
    squares = enlarge(make_square(boxes), cfg.context_scale)
    regions = snap_regions(squares, cfg.region_snap) if cfg.region_snap > 0 else square_regions(squares)
    return boxes, scores, regions


def tube_regions(boxes: np.ndarray, frame_shape: tuple[int, ...], cfg: ProposalConfig) -> np.ndarray:
    """Square enlarged integer tube regions `(M, 4)` int64 for boxes `(K, 4)` (see `group_boxes`)."""
    boxes = as_boxes(boxes)
    return group_boxes(boxes, np.ones(len(boxes), np.float32), frame_shape, cfg)[2]


def crop_region(frame: np.ndarray, region: np.ndarray | tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop an integer region `(x1, y1, x2, y2)` (x2/y2 exclusive) from frame `(H, W, C)`, resize to `size`.

    Parts of the region outside the frame are filled with zeros. Returns `(size, size, C)` with
    the frame's dtype. INTER_AREA when shrinking, INTER_LINEAR when growing.
    """
    if frame.ndim != 3:
        raise LpgbError(f"frame must have shape (H, W, C); got {frame.shape}")
    x1, y1, x2, y2 = (int(v) for v in np.asarray(region).reshape(4))
    rw, rh = x2 - x1, y2 - y1
    if rw <= 0 or rh <= 0:
        raise LpgbError(f"empty crop region {(x1, y1, x2, y2)}")
    h, w = frame.shape[:2]
    fx1, fy1, fx2, fy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if fx1 == x1 and fy1 == y1 and fx2 == x2 and fy2 == y2:
        patch = frame[y1:y2, x1:x2]
    else:
        patch = np.zeros((rh, rw, frame.shape[2]), frame.dtype)
        if fx2 > fx1 and fy2 > fy1:
            patch[fy1 - y1 : fy2 - y1, fx1 - x1 : fx2 - x1] = frame[fy1:fy2, fx1:fx2]
    if rw == size and rh == size:
        return np.ascontiguousarray(patch)
    interp = cv2.INTER_AREA if (rw > size or rh > size) else cv2.INTER_LINEAR
    out = cv2.resize(patch, (size, size), interpolation=interp)
    return out.reshape(size, size, frame.shape[2])
