"""Frame-level AUC per backend and score parity with the PyTorch reference.

Every labelled test video is scored by a fresh Detector (so no state leaks between videos).
AUC is reported raw and smoothed; the smoothing for evaluation is the centred Gaussian with
sigma = `cfg.scoring.smoothing_sigma` (the runtime's live display smoothing is causal; evaluation
may look ahead, as in the literature).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from lpgb.runtime.errors import LpgbError

SMOOTHING = "centred Gaussian (scipy gaussian_filter1d, mode=nearest)"


def align(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut scores and labels to the same length (a container may report more frames than decode)."""
    n = min(len(scores), len(labels))
    return np.asarray(scores[:n], np.float64), np.asarray(labels[:n]).astype(np.uint8)


def auc_summary(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray], sigma: float) -> dict:
    """micro/macro AUC, raw and smoothed; a value is None (with `errors`) when it is undefined."""
    from lpgb.runtime.metrics import gaussian_smooth, macro_auc, micro_auc

    out: dict = {"n_videos": len(scores), "n_frames": int(sum(len(s) for s in scores)), "errors": {}}
    smoothed = [gaussian_smooth(np.asarray(s, np.float64), sigma, causal=False) for s in scores]
    for suffix, curves in (("", scores), ("_smoothed", smoothed)):
        try:
            out[f"micro_auc{suffix}"] = micro_auc(curves, labels)
        except LpgbError as exc:
            out[f"micro_auc{suffix}"] = None
            out["errors"][f"micro_auc{suffix}"] = str(exc)
        try:
            macro = macro_auc(curves, labels)
            out[f"macro_auc{suffix}"] = macro.value
            out["n_single_class"] = macro.n_single_class
            out[f"per_video_auc{suffix}"] = list(macro.per_video)
        except LpgbError as exc:
            out[f"macro_auc{suffix}"] = None
            out["errors"][f"macro_auc{suffix}"] = str(exc)
            out.setdefault("n_single_class", sum(1 for y in labels if 0 in (int(np.sum(y)), len(y) - int(np.sum(y)))))
    if not out["errors"]:
        del out["errors"]
    return out


def parity(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> dict:
    """Spearman rank correlation and max |difference| of the concatenated per-frame scores."""
    from lpgb.runtime.metrics import rank_correlation

    a = np.concatenate([np.asarray(s, np.float64).reshape(-1) for s in reference]) if reference else np.zeros(0)
    b = np.concatenate([np.asarray(s, np.float64).reshape(-1) for s in other]) if other else np.zeros(0)
    n = min(a.size, b.size)
    if n == 0:
        return {"spearman": None, "max_abs": None, "n_frames": 0}
    a, b = a[:n], b[:n]
    rho = rank_correlation(a, b) if (np.ptp(a) > 0 and np.ptp(b) > 0) or np.array_equal(a, b) else None
    return {"spearman": rho, "max_abs": float(np.max(np.abs(a - b))), "n_frames": int(n)}


def segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of 1 in a label vector as (first, last) frame pairs, inclusive."""
    y = np.concatenate([[0], np.asarray(labels).astype(np.int8).reshape(-1), [0]])
    edges = np.flatnonzero(np.diff(y))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


def event_metrics(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray], cal, scoring) -> dict:
    """The events `lpgb-run` would raise (streaming `EventDetector` on each video's frame scores, the
    threshold from training statistics) against the labelled anomalous segments: precision = events that
    overlap an anomalous segment / events; recall = segments overlapped by an event / segments."""
    from lpgb.runtime.events import EventDetector

    n_events = n_true = n_segments = n_found = 0
    for s, y in zip(scores, labels):
        detector = EventDetector(cal, scoring)
        for i, v in enumerate(np.asarray(s, np.float64)):
            detector.push(i, float(i), float(v))
        events = detector.finish()
        segs = segments(y)
        hit = lambda a, b: any(a <= e.end_frame and e.start_frame <= b for e in events)  # noqa: E731
        n_events += len(events)
        n_true += sum(1 for e in events if np.asarray(y)[e.start_frame:e.end_frame + 1].any())
        n_segments += len(segs)
        n_found += sum(1 for a, b in segs if hit(a, b))
    return {"threshold": float(cal.threshold), "events": n_events, "true_events": n_true, "segments": n_segments,
            "segments_found": n_found, "precision": n_true / n_events if n_events else None,
            "recall": n_found / n_segments if n_segments else None}


def frame_anomalies(item, n_frames: int) -> Optional[list[frozenset[str]]]:
    """Anomaly kinds present in each of the first `n_frames` frames of a test video, from its
    ground-truth boxes (`VideoItem.boxes`, e.g. the synthetic set's `testing/boxes/NN.json`).

    Returns one frozenset per frame (empty: no anomalous object), or None when the video has no
    box file or the file is shorter than the labels.
    """
    from lpgb.benchmarks.recall import load_gt

    if getattr(item, "boxes", None) is None:
        return None
    gt = load_gt(item.boxes)
    if len(gt) < n_frames:
        return None
    return [frozenset(str(o.get("anomaly", "none")) for o in (gt[i] or [])) - {"none"} for i in range(n_frames)]


def per_anomaly_auc(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                    anomalies: Sequence[Sequence[frozenset[str]]], sigma: float) -> dict:
    """Frame AUC per anomaly kind, micro over videos: the abnormal-labelled frames that show that
    kind (positives) against all normal-labelled frames (negatives); raw and smoothed as in
    `auc_summary`. A frame showing two kinds counts for both.

    Returns `{kind: {"frames": n_positive, "auc": float, "auc_smoothed": float}}`, kinds sorted.
    """
    from lpgb.runtime.metrics import gaussian_smooth, micro_auc

    raw = np.concatenate([np.asarray(s, np.float64) for s in scores])
    smooth = np.concatenate([gaussian_smooth(np.asarray(s, np.float64), sigma, causal=False) for s in scores])
    y = np.concatenate([np.asarray(v).astype(bool) for v in labels])
    kinds_per_frame = [k for video in anomalies for k in video]
    if not (len(raw) == len(y) == len(kinds_per_frame)):
        raise LpgbError(f"per-anomaly AUC: {len(raw)} scores, {len(y)} labels, {len(kinds_per_frame)} box frames")
    normal = ~y
    out: dict = {}
    for kind in sorted(set().union(*kinds_per_frame)) if kinds_per_frame else []:
        positive = y & np.array([kind in k for k in kinds_per_frame], bool)
        if not positive.any() or not normal.any():
            continue
        used = positive | normal
        out[kind] = {"frames": int(positive.sum()),
                     "auc": micro_auc([raw[used]], [positive[used]]),
                     "auc_smoothed": micro_auc([smooth[used]], [positive[used]])}
    return out


def labelled_videos(dataset_root, limit: int = 0) -> list:
    """Test videos that have labels (at most `limit` when > 0); LpgbError when there are none."""
    from lpgb.runtime.datasets import open_dataset

    items = [v for v in open_dataset(dataset_root).test_videos() if v.labels is not None]
    if not items:
        raise LpgbError(f"dataset {dataset_root} has no test videos with frame labels; "
                        "pass --data with a labelled dataset (e.g. lpgb-data synth OUT)")
    return items[:limit] if limit > 0 else items


def measure_accuracy(model, specs: Sequence, videos: Sequence, sigma: float, device: str = "cpu",
                     reference: str = "torch", on_video: Optional[Callable[[str, str], None]] = None,
                     on_error: Optional[Callable[[str, Exception], None]] = None) -> dict:
    """Score `videos` with each backend spec; returns the `accuracy` section of the report.

    A backend that raises is recorded under `failed` (via `on_error`) and left out of the numbers.
    """
    from lpgb.runtime.pipeline import open_detector
    from lpgb.runtime.video_scores import score_video

    per_backend: dict[str, dict] = {}
    raw_scores: dict[str, list[np.ndarray]] = {}
    labels_by: dict[str, list[np.ndarray]] = {}
    term_scores: dict[str, dict[str, list[np.ndarray]]] = {}
    failed: dict[str, str] = {}
    for spec in specs:
        try:
            scores, labels, terms = [], [], {}
            for item in videos:
                curves: dict[str, list[float]] = {}
                detector = open_detector(model, spec.backend, spec.precision, device)  # fresh per video
                s, y = align(score_video(detector, item.source, term_curves=curves), item.labels)
                scores.append(s)
                labels.append(y)
                for name, c in curves.items():
                    terms.setdefault(name, []).append(align(np.asarray(c), y)[0])
                if on_video:
                    on_video(spec.name, item.name)
            summary = auc_summary(scores, labels, sigma)
        except Exception as exc:  # one failing backend must not stop the report
            failed[spec.name] = one_line(exc)
            if on_error:
                on_error(spec.name, exc)
            continue
        summary["scores"] = {item.name: [float(v) for v in s] for item, s in zip(videos, scores)}
        per_backend[spec.name] = summary
        raw_scores[spec.name] = scores
        term_scores[spec.name] = terms
        labels_by[spec.name] = labels
    ref_name = reference if reference in per_backend else next(iter(per_backend), None)
    if reference in per_backend:
        for name in per_backend:
            per_backend[name]["parity"] = parity(raw_scores[reference], raw_scores[name])
    result: dict = {"reference": ref_name, "sigma": float(sigma), "smoothing": SMOOTHING,
                    "videos": [item.name for item in videos], "per_backend": per_backend}
    if failed:
        result["failed"] = failed
    if ref_name is not None:
        ref = per_backend[ref_name]
        for key in ("micro_auc", "macro_auc", "micro_auc_smoothed", "macro_auc_smoothed", "n_videos",
                    "n_single_class"):
            result[key] = ref.get(key)
        ref_labels = labels_by[ref_name]
        # each score term alone (its standardised box value, max over the frame) beside the combination
        result["per_term"] = {name: {k: v for k, v in auc_summary(c, ref_labels, sigma).items()
                                     if not k.startswith("per_video") or k == "per_video_auc"}
                              for name, c in term_scores[ref_name].items() if len(c) == len(ref_labels)}
        result["labels"] = {item.name: [int(v) for v in y] for item, y in zip(videos, ref_labels)}
        try:
            from lpgb.runtime.bundle import ModelBundle

            ref_spec = next(spec for spec in specs if spec.name == ref_name)
            bundle = ModelBundle.open(model, ref_spec.backend)
            result["events"] = event_metrics(raw_scores[ref_name], ref_labels, bundle.calibration, bundle.cfg.scoring)
        except LpgbError as exc:
            result["events"] = {"error": str(exc)}
        anomalies = [frame_anomalies(item, len(y)) for item, y in zip(videos, ref_labels)]
        if anomalies and all(a is not None for a in anomalies):
            result["per_anomaly"] = per_anomaly_auc(raw_scores[ref_name], ref_labels, anomalies, sigma)
    return result


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message` (LpgbError: just the message)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, LpgbError):
        return text or "error"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["SMOOTHING", "align", "auc_summary", "parity", "labelled_videos",
           "measure_accuracy", "one_line"]
