"""OpenCV drawing for the runtime outputs: annotated frames, live score strip, score-curve plot."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

STRIP_HEIGHT = 64
_BG = (24, 24, 24)
_THRESHOLD = (0, 215, 255)  # amber (BGR)
_SCORE = (200, 200, 200)


def score_colour(score: float, lo: float, hi: float) -> tuple[int, int, int]:
    """BGR colour from green (score <= lo) through yellow to red (score >= hi)."""
    t = 0.0 if hi <= lo else float(np.clip((score - lo) / (hi - lo), 0.0, 1.0))
    if t < 0.5:
        return (0, 255, int(round(510 * t)))
    return (0, int(round(255 * (2.0 - 2.0 * t))), 255)


def draw_boxes(frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray, lo: float, hi: float,
               tags: Sequence[str] = ()) -> np.ndarray:
    """Copy of `frame` with each box drawn in its score colour and labelled with the score (and its
    tag, e.g. the dominant score term, when given)."""
    out = frame.copy()
    h, w = out.shape[:2]
    thick = max(1, round(min(h, w) / 240))
    for i, (box, s) in enumerate(zip(np.asarray(boxes).reshape(-1, 4), np.asarray(scores).reshape(-1))):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        colour = score_colour(float(s), lo, hi)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        text = f"{s:.1f} {tags[i]}" if i < len(tags) else f"{s:.1f}"
        cv2.putText(out, text, (x1, max(y1 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    return out


def _y(values: np.ndarray, lo: float, hi: float, top: int, height: int) -> np.ndarray:
    t = (np.asarray(values, dtype=np.float64) - lo) / max(hi - lo, 1e-9)
    return (top + (1.0 - np.clip(t, 0.0, 1.0)) * (height - 1)).round().astype(np.int32)


def draw_score_strip(width: int, history: Sequence[float], threshold: float | None, lo: float, hi: float,
                     height: int = STRIP_HEIGHT) -> np.ndarray:
    """A (height, width, 3) strip with the last `width` scores (newest at the right) and the threshold."""
    strip = np.full((height, width, 3), _BG, np.uint8)
    vals = np.asarray(history, dtype=np.float64)[-width:]
    if threshold is not None:
        ty = int(_y([threshold], lo, hi, 2, height - 4)[0])
        cv2.line(strip, (0, ty), (width - 1, ty), _THRESHOLD, 1)
    if vals.size:
        xs = np.arange(width - vals.size, width, dtype=np.int32)
        ys = _y(vals, lo, hi, 2, height - 4)
        cv2.polylines(strip, [np.stack([xs, ys], 1).reshape(-1, 1, 2)], False, _SCORE, 1, cv2.LINE_AA)
        cv2.putText(strip, f"score {vals[-1]:.2f}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    score_colour(vals[-1], lo, hi), 1, cv2.LINE_AA)
    return strip


def annotate_frame(frame: np.ndarray, boxes: np.ndarray, scores: np.ndarray, history: Sequence[float],
                   threshold: float | None, lo: float, hi: float, label: str = "",
                   strip_height: int = STRIP_HEIGHT, tags: Sequence[str] = ()) -> np.ndarray:
    """Frame with coloured boxes (tagged with `tags`) on top of a live score strip: (H + strip_height, W, 3)."""
    top = draw_boxes(frame, boxes, scores, lo, hi, tags)
    if label:
        cv2.putText(top, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    # headroom above the threshold so the line sits at 2/3 of the strip and peaks stay visible
    strip = draw_score_strip(frame.shape[1], history, threshold, lo, hi + 0.5 * (hi - lo), strip_height)
    return np.vstack([top, strip])


def plot_scores(scores: np.ndarray, smoothed: np.ndarray | None = None, threshold: float | None = None,
                labels: np.ndarray | None = None, size: tuple[int, int] = (1000, 320),
                title: str = "") -> np.ndarray:
    """Score curve plot (BGR image, `size` = (width, height)): raw score, smoothed score,
    threshold line and, when `labels` (1 = abnormal per frame) are given, shaded ground truth."""
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 48, 12, 22, 24
    pw, ph = w - left - right, h - top - bottom
    s = np.asarray(scores, dtype=np.float64).ravel()
    n = max(s.size, 1)
    parts = [s, np.asarray(smoothed if smoothed is not None else [], float).ravel()]
    if threshold is not None:
        parts.append(np.array([threshold], float))
    allv = np.concatenate(parts)
    allv = allv[np.isfinite(allv)]
    lo, hi = (float(allv.min()), float(allv.max())) if allv.size else (0.0, 1.0)
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    lo, hi = lo - pad, hi + pad

    def xs(count: int) -> np.ndarray:
        return (left + np.arange(count) * (pw - 1) / max(n - 1, 1)).round().astype(np.int32)

    if labels is not None:
        lab = np.asarray(labels).ravel()[:n] > 0
        x = xs(lab.size)
        for i in np.flatnonzero(lab):
            x0 = x[i]
            x1 = x[i + 1] if i + 1 < x.size else left + pw - 1
            cv2.rectangle(img, (int(x0), top), (int(max(x1, x0)), top + ph - 1), (215, 205, 245), -1)
    cv2.rectangle(img, (left, top), (left + pw - 1, top + ph - 1), (0, 0, 0), 1)
    for v in (lo + pad, hi - pad):
        y = int(_y([v], lo, hi, top, ph)[0])
        cv2.putText(img, f"{v:.2f}", (2, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    if threshold is not None:
        y = int(_y([threshold], lo, hi, top, ph)[0])
        cv2.line(img, (left, y), (left + pw - 1, y), (0, 140, 255), 1, cv2.LINE_AA)
        cv2.putText(img, f"{threshold:.2f}", (2, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 140, 255), 1, cv2.LINE_AA)
    for values, colour, thick in ((s, (150, 150, 150), 1), (smoothed, (200, 80, 0), 2)):
        if values is None:
            continue
        v = np.asarray(values, dtype=np.float64).ravel()
        if v.size == 0:
            continue
        pts = np.stack([xs(v.size), _y(np.nan_to_num(v, nan=lo), lo, hi, top, ph)], 1).reshape(-1, 1, 2)
        cv2.polylines(img, [pts], False, colour, thick, cv2.LINE_AA)
    legend = title or "score (grey), smoothed (blue), threshold (orange)" + (", ground truth (shaded)" if labels is not None else "")
    cv2.putText(img, legend, (left, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"frame 0..{n - 1}", (left, h - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return img


__all__ = ["STRIP_HEIGHT", "score_colour", "draw_boxes", "draw_score_strip", "annotate_frame", "plot_scores"]
