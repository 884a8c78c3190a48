"""The scene's person-size prior and the crowd split of motion blobs (torch-free).

A fixed camera sees a person smaller the further up the frame they stand, close to linearly in the row
of their feet. `fit_size_prior` learns that line from the motion blobs of normal training video: the
blobs' bottom rows are cut into bands of equal counts, each band gives the lower quartile (`QUANTILE`)
of its blob heights and of its blob widths (a blob of several people is at least as large as one of
them, so where people walk close together the larger blobs are merges: the median of a crowded
scene's blobs measured two people, its lower quartile one), and a line through the band values
(weighted by the square root of their counts) gives `ProposalConfig.size_prior = (h0, h1, w0, w1)`,
in units of the frame height H:
expected height / H = h0 + h1 * bottom / H, expected width / H = w0 + w1 * bottom / H.

`split_blobs` cuts a motion blob that is more than `split_factor` times wider (taller) than one person
at its bottom row in two, at the emptiest column (row) near a multiple of the expected width (height),
only where the foreground has a valley there (`_best_cut`, `split_valley`), tightens both halves to
their foreground pixels and judges each again at its own bottom row (far people inside a blob are
smaller), at most `MAX_DEPTH` cuts deep.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

import numpy as np

from lpgb.runtime.config import ProposalConfig
from lpgb.runtime.errors import LpgbError

__all__ = ["fit_size_prior", "with_size_prior", "expected_size", "split_blobs", "BANDS", "MIN_BLOBS", "QUANTILE", "prior_from_blobs"]

BANDS = 8  # row bands of equal blob counts
QUANTILE = 0.25  # of the blob heights and widths in a band
MIN_BLOBS = 30  # training blobs needed to fit the prior
MAX_DEPTH = 6  # cuts per blob, nested (up to 2**6 pieces)
FRAME_STEP = 2  # blobs are collected from every FRAME_STEP-th frame (MOG2 still sees every frame)


def expected_size(bottom: np.ndarray, height: int, prior: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Expected person (height, width) in pixels for bottom rows `bottom` `(K,)` in a frame `height` rows
    tall, from `prior` = (h0, h1, w0, w1); both at least 2 pixels."""
    h0, h1, w0, w1 = (float(v) for v in prior)
    y = np.asarray(bottom, np.float64) / height
    return np.maximum((h0 + h1 * y) * height, 2.0), np.maximum((w0 + w1 * y) * height, 2.0)


def _line(x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """(intercept, slope) of a weighted least-squares line; a flat line through the weighted mean when x is constant."""
    if np.ptp(x) < 1e-9:
        return float(np.average(y, weights=weight)), 0.0
    slope, intercept = np.polyfit(x, y, 1, w=weight)
    return float(intercept), float(slope)


def prior_from_blobs(boxes: np.ndarray, height: int) -> tuple[float, float, float, float]:
    """`size_prior` from training motion blobs `(N, 4)` (frame pixels) of frames `height` rows tall."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) < MIN_BLOBS:
        raise LpgbError(f"the size prior needs at least {MIN_BLOBS} motion blobs in the training videos, "
                        f"found {len(boxes)}")
    bottom, h, w = boxes[:, 3] / height, (boxes[:, 3] - boxes[:, 1]) / height, (boxes[:, 2] - boxes[:, 0]) / height
    edges = np.unique(np.quantile(bottom, np.linspace(0, 1, BANDS + 1)))
    band = np.clip(np.searchsorted(edges, bottom, side="right") - 1, 0, max(len(edges) - 2, 0))
    rows = []
    for b in np.unique(band):
        inside = band == b
        rows.append((np.median(bottom[inside]), np.quantile(h[inside], QUANTILE), np.quantile(w[inside], QUANTILE),
                     np.sqrt(inside.sum())))
    a = np.asarray(rows)
    h0, h1 = _line(a[:, 0], a[:, 1], a[:, 3])
    w0, w1 = _line(a[:, 0], a[:, 2], a[:, 3])
    return (round(h0, 5), round(h1, 5), round(w0, 5), round(w1, 5))


def fit_size_prior(videos: Sequence, cfg: ProposalConfig, max_frames: int = 0) -> tuple[float, float, float, float]:
    """`size_prior` fitted on the motion blobs (no split) of normal training `videos` (`VideoItem`s)."""
    from lpgb.runtime.motion import MotionProposer
    from lpgb.runtime.video import open_source

    if not videos:
        raise LpgbError("the size prior is fitted on training videos, and there are none")
    plain = replace(cfg, motion_split=False, size_prior=())
    blobs, height = [], None
    for item in videos:
        motion = MotionProposer(plain)
        with open_source(item.source) as src:
            for i, frame in enumerate(src):
                if max_frames and i >= max_frames:
                    break
                if height is not None and frame.shape[0] != height:
                    raise LpgbError(f"training video {item.name} has {frame.shape[0]} rows, others {height}: "
                                    "one size prior needs one camera")
                height = frame.shape[0]
                boxes, _ = motion.update(frame)
                if i % FRAME_STEP == 0 and len(boxes):
                    blobs.append(boxes)
    return prior_from_blobs(np.concatenate(blobs) if blobs else np.zeros((0, 4)), int(height or 1))


def with_size_prior(cfg: ProposalConfig, videos: Sequence) -> ProposalConfig:
    """`cfg` with its `size_prior` fitted on the training `videos` when `motion_split` asks for one it lacks."""
    if not cfg.motion_split or cfg.size_prior:
        return cfg
    return replace(cfg, size_prior=fit_size_prior(videos, cfg))


def _best_cut(profile: np.ndarray, expected: float, valley: float) -> Optional[int]:
    """The cut along a 1-D foreground `profile` (a blob's column or row sums) that separates one person's
    length `expected` from the rest: candidates near every multiple of `expected` (within a third of it),
    each at the emptiest position there; kept only in a valley (at most `valley` times the lower of the
    profile's maxima on its two sides: two people side by side leave one, a cart or a bicycle with its
    rider does not); the deepest one, or None."""
    n = len(profile)
    pieces = max(int(round(n / expected)), 2)
    window = max(int(expected / 3), 1)
    best, best_depth = None, valley
    for k in range(1, pieces):
        centre = int(round(k * n / pieces))
        lo, hi = max(centre - window, 1), min(centre + window, n - 1)
        if hi <= lo:
            continue
        cut = lo + int(np.argmin(profile[lo:hi]))
        depth = profile[cut] / max(min(profile[:cut].max(), profile[cut:].max()), 1)
        if depth <= best_depth:
            best, best_depth = cut, depth
    return best


def _split_one(mask: np.ndarray, box: tuple[int, int, int, int], cfg: ProposalConfig, depth: int) -> list:
    """One blob box -> its pieces: cut in two along the axis most oversized for a person at the box's
    bottom row (the other axis when that one has no valley), then each tightened half in turn, judged at
    its own bottom row (perspective inside a blob), at most `MAX_DEPTH` cuts deep."""
    x1, y1, x2, y2 = box
    eh, ew = (float(v[0]) for v in expected_size(np.array([y2]), mask.shape[0], cfg.size_prior))
    w, h = x2 - x1, y2 - y1
    if depth >= MAX_DEPTH:
        return [box]
    blob = mask[y1:y2, x1:x2] > 0
    for ratio, axis, expected in sorted(((w / ew, 0, ew), (h / eh, 1, eh)), reverse=True):
        if ratio <= cfg.split_factor:
            continue
        cut = _best_cut(blob.sum(axis=axis), expected, cfg.split_valley)
        if cut is None:
            continue
        halves = ((x1, y1, x1 + cut, y2), (x1 + cut, y1, x2, y2)) if axis == 0 else \
            ((x1, y1, x2, y1 + cut), (x1, y1 + cut, x2, y2))
        pieces = []
        for half in halves:
            tight = _tight(mask, *half)
            if tight is not None and _area(mask, tight) >= cfg.motion_min_area:
                pieces += _split_one(mask, tight, cfg, depth + 1)
        if pieces:
            return pieces
    return [box]


def _tight(mask: np.ndarray, x1: int, y1: int, x2: int, y2: int) -> Optional[tuple[int, int, int, int]]:
    """The bounding box of the foreground in mask[y1:y2, x1:x2], or None when it holds none."""
    part = mask[y1:y2, x1:x2] > 0
    cols, rows = np.flatnonzero(part.any(axis=0)), np.flatnonzero(part.any(axis=1))
    if not len(cols):
        return None
    return x1 + int(cols[0]), y1 + int(rows[0]), x1 + int(cols[-1]) + 1, y1 + int(rows[-1]) + 1


def split_blobs(boxes: np.ndarray, mask: np.ndarray, cfg: ProposalConfig) -> tuple[np.ndarray, np.ndarray]:
    """Motion blobs `(K, 4)` and the cleaned mask `(H, W)` -> boxes `(M, 4)` float32 with the blobs that are
    too wide or tall for one person cut into pieces (see the module docstring), and their fill `(M,)`."""
    if len(cfg.size_prior) != 4:
        raise LpgbError("proposals.motion_split needs proposals.size_prior (fit_size_prior on the training videos)")
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    out: list[tuple[int, int, int, int]] = []
    for box in boxes.astype(np.int64):
        out += _split_one(mask, tuple(int(v) for v in box), cfg, 0)
    if not out:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
    result = np.asarray(out, np.float32)
    return result, _fill(mask, result)


def _area(mask: np.ndarray, box: tuple[int, int, int, int]) -> int:
    """Foreground pixels of `mask` inside an integer box."""
    x1, y1, x2, y2 = box
    return int(np.count_nonzero(mask[y1:y2, x1:x2]))


def _fill(mask: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Foreground fraction of each integer box `(K, 4)` in `mask`, float32 `(K,)`."""
    fg = mask > 0
    return np.asarray([fg[int(y1):int(y2), int(x1):int(x2)].mean() if x2 > x1 and y2 > y1 else 0.0
                       for x1, y1, x2, y2 in boxes], np.float32)
