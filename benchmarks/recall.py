"""Proposal recall on ground-truth boxes: motion proposals, the trained RPN, and their union.

`measure_recall(model, data)` runs, frame by frame over every test video that has per-frame
ground-truth boxes (`VideoItem.boxes`, e.g. the synthetic set's `testing/boxes/NN.json`), the RPN
(ONNX Runtime FP32 on the export; the torch reference when the model has no export) and a fresh
`MotionProposer` per video, then the serving post-processing `combine_proposals` once per source
(`dataclasses.replace(cfg.proposals, source=...)`). A ground-truth box counts as found when a final
proposal of that frame has IoU >= 0.5 with it.

Reported per source (`motion`, `rpn`, `union`) and for `union grouped`, the merged boxes the tubes
are cut around (`geometry.group_boxes`, i.e. what the temporal model actually sees):
recall over all frames, over frames after the motion warm-up (`cfg.proposals.motion_warmup`: motion
proposes nothing before it), for anomalous objects only, per anomaly kind, proposals per frame and
ms per frame (the RPN time includes letterboxing; every source includes `combine_proposals`).
The raw RPN and motion outputs are kept (`collect_raw`) so that other proposal settings can be
evaluated without running the models again (`evaluate(raw, proposal_cfg)`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from lpgb.runtime.boxfiles import box_array, load_box_file
from lpgb.runtime.config import ProposalConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.proposer import Proposer, RpnFn, backend_rpn

IOU = 0.5
SOURCES = ("motion", "rpn", "union", "union grouped")


@dataclass
class RawFrame:
    shape: tuple[int, int]
    gt: np.ndarray  # (G, 4)
    anomaly: list[str]  # per GT object: none | running | ...
    kind: list[str]  # per GT object: walker | bicycle | ...
    rpn: Optional[tuple[np.ndarray, np.ndarray]]  # raw RPN boxes (frame pixels) and scores, or None
    motion: tuple[np.ndarray, np.ndarray]
    index: int  # frame index in its video
    rpn_fill: Optional[np.ndarray] = None  # (K,) foreground fraction of each raw RPN box, None in warm-up


@dataclass
class RawRecall:
    frames: list[RawFrame] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    rpn_ms: list[float] = field(default_factory=list)
    motion_ms: list[float] = field(default_factory=list)
    rpn_backend: Optional[str] = None


def load_gt(path: Path) -> list[list[dict]]:
    """`testing/boxes/NN.json`: one list per frame of `{"box": [x1,y1,x2,y2], "kind", "anomaly", ...}`."""
    return load_box_file(path)


def boxed_videos(data: Path, videos: int = 0) -> list:
    """Test videos of `data` that have ground-truth boxes (at most `videos`, 0 = all)."""
    from lpgb.runtime.datasets import open_dataset

    items = [v for v in open_dataset(data).test_videos() if v.boxes is not None]
    return items[:videos] if videos else items


def rpn_function(model: Path) -> tuple[Optional[RpnFn], Optional[str]]:
    """(the model's RPN as an RpnFn, backend name): ORT on the export, else torch, else (None, None)."""
    from lpgb.runtime.bundle import ModelBundle

    try:
        info = ModelBundle.open(model, "ort")
        if info.has_rpn:
            from lpgb.runtime.backends.ort_backend import OrtBackend

            return backend_rpn(OrtBackend(info.folder, "fp32", parts=("rpn",))), "ort"
    except LpgbError:
        pass
    try:
        info = ModelBundle.open(model, "torch")
    except LpgbError:
        return None, None
    if not info.has_rpn:
        return None, None
    from lpgb.runtime.backends.base import load_backend

    return backend_rpn(load_backend("torch", info.folder)), "torch"


def collect_raw(model: Path, data: Path, videos: int = 0, max_frames: int = 0,
                on_video: Optional[Callable[[str], None]] = None) -> tuple[RawRecall, object]:
    """Run the RPN and motion proposals over the boxed test videos; returns (raw outputs, LpgbConfig)."""
    from lpgb.runtime.bundle import ModelBundle

    items = boxed_videos(Path(data), videos)
    if not items:
        raise LpgbError(f"{data} has no test videos with ground-truth boxes (testing/boxes/NN.json)")
    try:
        cfg = ModelBundle.open(model, "ort").cfg
    except LpgbError:
        cfg = ModelBundle.open(model, "torch").cfg
    rpn, backend = rpn_function(Path(model))
    return collect_frames(items, cfg.proposals, rpn, backend, max_frames, on_video), cfg


def collect_frames(items: list, proposals: ProposalConfig, rpn: Optional[RpnFn], backend: Optional[str],
                   max_frames: int = 0, on_video: Optional[Callable[[str], None]] = None) -> RawRecall:
    """Raw RPN (when `rpn` is given) and motion outputs, timed, for every frame of the boxed videos `items`
    (`VideoItem`s with `.boxes`); a fresh `MotionProposer(proposals)` per video."""
    from lpgb.runtime.motion import MotionProposer
    from lpgb.runtime.video import open_source

    # the serving Proposer's RPN step (letterbox, run, back to frame pixels); motion runs apart, timed alone
    proposer = Proposer(replace(proposals, source="rpn"), rpn) if rpn is not None else None
    raw = RawRecall(rpn_backend=backend)
    for item in items:
        gt = load_gt(item.boxes)
        motion = MotionProposer(proposals)
        with open_source(item.source) as src:
            for i, frame in enumerate(src):
                if (max_frames and i >= max_frames) or i >= len(gt):
                    break
                objects = gt[i] or []
                rpn_out = None
                if proposer is not None:
                    start = time.perf_counter()
                    rpn_out = proposer.rpn_boxes(frame)
                    raw.rpn_ms.append(1e3 * (time.perf_counter() - start))
                start = time.perf_counter()
                motion_out = motion.update(frame)
                raw.motion_ms.append(1e3 * (time.perf_counter() - start))
                raw.frames.append(RawFrame(
                    frame.shape[:2], box_array(objects),
                    [str(o.get("anomaly", "none")) for o in objects], [str(o.get("kind", "")) for o in objects],
                    rpn_out, motion_out, i, motion.box_fill(rpn_out[0]) if rpn_out is not None else None))
        raw.videos.append(item.name)
        if on_video:
            on_video(item.name)
    return raw


def _rate(hits: np.ndarray) -> Optional[float]:
    return float(hits.mean()) if hits.size else None


def evaluate(raw: RawRecall, proposals: ProposalConfig, iou: float = IOU) -> dict:
    """Recall of every source for the proposal settings `proposals` on the collected raw outputs."""
    from lpgb.runtime.geometry import group_boxes
    from lpgb.runtime.proposals import combine_proposals
    from lpgb.runtime.recall import covered

    sources = [s for s in SOURCES if raw.rpn_backend is not None or s == "motion"]
    cfgs = {s: replace(proposals, source=s.split()[0]) for s in sources}
    anomaly = np.asarray([a for f in raw.frames for a in f.anomaly], dtype=object)
    kind = np.asarray([k for f in raw.frames for k in f.kind], dtype=object)
    late = np.asarray([f.index >= proposals.motion_warmup for f in raw.frames for _ in f.anomaly], bool)
    out: dict = {}
    for s in sources:
        hits, counts, ms = [], [], []
        for f in raw.frames:
            start = time.perf_counter()
            fill = f.rpn_fill if proposals.rpn_fill_power > 0 else None
            boxes, scores = combine_proposals(f.rpn, f.motion, (*f.shape, 3), cfgs[s], fill)
            if s == "union grouped":
                boxes = group_boxes(boxes, scores, (*f.shape, 3), cfgs[s])[0]
            ms.append(1e3 * (time.perf_counter() - start))
            counts.append(len(boxes))
            hits.append(covered(boxes, f.gt, iou))
        hit = np.concatenate(hits) if hits else np.zeros(0, bool)
        abnormal = anomaly != "none"
        model_ms = {"motion": raw.motion_ms, "rpn": raw.rpn_ms}
        used = [k for k in ("motion", "rpn") if k in s or s.startswith("union")]
        row = {
            "recall": _rate(hit), "recall_after_warmup": _rate(hit[late]),
            "recall_anomalous": _rate(hit[abnormal]), "recall_anomalous_after_warmup": _rate(hit[abnormal & late]),
            "per_anomaly": {a: _rate(hit[anomaly == a]) for a in sorted(set(anomaly))},
            "per_kind": {k: _rate(hit[kind == k]) for k in sorted(set(kind))},
            "proposals_per_frame": float(np.mean(counts)) if counts else 0.0,
            "ms_per_frame": float(np.mean(ms) + sum(np.mean(model_ms[k]) for k in used if model_ms[k])),
        }
        out[s] = row
    return out


def summary(raw: RawRecall, proposals: ProposalConfig, iou: float = IOU) -> dict:
    anomaly = [a for f in raw.frames for a in f.anomaly]
    return {
        "iou": iou, "videos": list(raw.videos), "frames": len(raw.frames), "gt_boxes": len(anomaly),
        "gt_anomalous": sum(a != "none" for a in anomaly), "motion_warmup": proposals.motion_warmup,
        "rpn_backend": raw.rpn_backend,
        "settings": {k: getattr(proposals, k) for k in ("score_threshold", "top_k", "min_box_size", "nms_iou",
                                                         "merge_overlapping", "motion_warmup", "motion_min_area",
                                                         "motion_persistence", "union_priority", "rpn_fill_power")},
        "sources": evaluate(raw, proposals, iou),
        "method": ("recall = fraction of ground-truth boxes with a proposal of IoU >= "
                   f"{iou} in the same frame; all frames, and frames >= motion_warmup; 'union grouped' = "
                   "the merged boxes tubes are cut around; ms include combine_proposals, RPN ms include "
                   f"letterboxing ({raw.rpn_backend or 'no RPN'} backend)"),
    }


def measure_recall(model_dir: Path, data_dir: Path, videos: int = 0, max_frames: int = 0,
                   proposals: Optional[ProposalConfig] = None,
                   on_video: Optional[Callable[[str], None]] = None) -> dict:
    """Proposal recall @ IoU 0.5 of motion, RPN, union (and union grouped) on the boxed test videos.

    `proposals` overrides the model's proposal settings for the post-processing (not the motion
    model itself: its parameters are read from the model's config during the run).
    """
    raw, cfg = collect_raw(Path(model_dir), Path(data_dir), videos, max_frames, on_video)
    return summary(raw, proposals or cfg.proposals)


def candidate_recall(raw: RawRecall, warmup: int, iou: float = IOU) -> dict:
    """Recall of every raw candidate (all RPN boxes before score threshold / NMS / top-K, plus the
    motion boxes): the ceiling any post-processing of these outputs can reach. Over all frames and
    over frames >= `warmup`; `candidates_per_frame` is the mean pool size."""
    from lpgb.runtime.recall import covered

    hits, late, sizes = [], [], []
    for f in raw.frames:
        pool = [np.asarray(f.motion[0], np.float32).reshape(-1, 4)]
        if f.rpn is not None:
            pool.append(np.asarray(f.rpn[0], np.float32).reshape(-1, 4))
        boxes = np.concatenate(pool)
        hits.append(covered(boxes, f.gt, iou))
        late.append(np.full(len(f.gt), f.index >= warmup, bool))
        sizes.append(len(boxes))
    hit = np.concatenate(hits) if hits else np.zeros(0, bool)
    after = np.concatenate(late) if late else np.zeros(0, bool)
    return {"recall": _rate(hit), "recall_after_warmup": _rate(hit[after]),
            "candidates_per_frame": float(np.mean(sizes)) if sizes else 0.0}


def has_boxes(data: Path) -> bool:
    try:
        return bool(boxed_videos(Path(data)))
    except LpgbError:
        return False


def recall_rows(result: dict) -> list[list[str]]:
    """Rows for the report: source, recall, after warm-up, anomalous, anomalous after warm-up, props/frame, ms."""
    def pct(v) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    rows = []
    for name, r in (result.get("sources") or {}).items():
        rows.append([name, pct(r.get("recall")), pct(r.get("recall_after_warmup")), pct(r.get("recall_anomalous")),
                     pct(r.get("recall_anomalous_after_warmup")), f"{r.get('proposals_per_frame', 0):.1f}",
                     f"{r.get('ms_per_frame', 0):.2f}"])
    return rows


RECALL_HEADERS = ["source", "recall %", "after warm-up %", "anomalous %", "anom. after warm-up %", "props/frame",
                  "ms/frame"]

def main(argv: list[str] | None = None) -> None:
    from lpgb.runtime.cli_common import OneLineArgumentParser

    """`python -m lpgb.benchmarks.recall RUN DATA [--nms-iou 0.5,0.6] [--score-threshold 0.5]`."""

    from lpgb.runtime.progress import progress_bar

    parser = OneLineArgumentParser(
        description="Proposal recall @ IoU 0.5 for several post-processing settings, from one run of the models, "
                    "and the recall of all raw candidates (the ceiling of any post-processing).")
    parser.add_argument("model", type=Path, help="run folder (lpgb-train output; ONNX RPN when exported)")
    parser.add_argument("data", type=Path, help="dataset with testing/boxes/NN.json (e.g. lpgb-data synth output)")
    parser.add_argument("--nms-iou", default="", help="comma-separated NMS IoUs to evaluate (default: the model's)")
    parser.add_argument("--score-threshold", type=float, default=None, help="RPN score threshold (default: the model's)")
    parser.add_argument("--videos", type=int, default=0, help="at most this many test videos (0 = all)")
    args = parser.parse_args(argv)
    try:
        nms_values = [float(v) for v in args.nms_iou.split(",") if v.strip()]
    except ValueError:
        raise LpgbError(f"--nms-iou must be comma-separated numbers, got {args.nms_iou!r}") from None
    count = len(boxed_videos(args.data, args.videos))
    with progress_bar() as bar:
        task = bar.add_task("recall", total=count, info="")
        raw, cfg = collect_raw(args.model, args.data, args.videos,
                               on_video=lambda name: bar.update(task, advance=1, info=f"video {name}"))
    base = cfg.proposals if args.score_threshold is None else replace(cfg.proposals, score_threshold=args.score_threshold)
    ceiling = candidate_recall(raw, base.motion_warmup)
    print(f"raw candidates (RPN before threshold/NMS/top-K + motion, {ceiling['candidates_per_frame']:.0f}/frame): "
          f"recall {ceiling['recall']:.3f}, after warm-up {ceiling['recall_after_warmup']:.3f}")
    print("| score threshold | NMS IoU | union recall | after warm-up | anomalous | RPN recall | union props/frame | grouped |")
    print("|---|---|---|---|---|---|---|---|")
    for nms_iou in nms_values or [base.nms_iou]:
        r = evaluate(raw, replace(base, nms_iou=nms_iou))
        union, rpn = r.get("union", r["motion"]), r.get("rpn", {})
        grouped = r.get("union grouped", {}).get("recall")
        print(f"| {base.score_threshold:g} | {nms_iou:g} | {union['recall']:.3f} | {union['recall_after_warmup']:.3f} | "
              f"{union['recall_anomalous']:.3f} | {rpn.get('recall', float('nan')):.3f} | "
              f"{union['proposals_per_frame']:.1f} | {float('nan') if grouped is None else grouped:.3f} |")


__all__ = ["measure_recall", "collect_raw", "collect_frames", "rpn_function", "evaluate", "summary", "candidate_recall", "has_boxes", "recall_rows",
           "RECALL_HEADERS", "load_gt", "boxed_videos", "main"]


if __name__ == "__main__":
    from lpgb.runtime.cli_common import run_diagnostic

    run_diagnostic(main)
