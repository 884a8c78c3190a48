"""Accuracy on ground-truth tubes: `python -m lpgb.benchmarks.oracle RUN DATA [--backend ort]`.

Is the AUC lost in the proposals or in the features? For every test video of DATA with per-frame
ground-truth boxes (`testing/boxes/NN.json`), tubes are cut around the ground-truth boxes instead of
the proposals, once per object ("solo", no grouping) and once grouped as served, and scored by the
model's own parts (`TubeScorer`, any backend). Reported: the object AUC (tube error of
anomalous vs normal objects, overall and per anomaly kind, solo tubes) and the frame micro AUC of
each (frame score = max tube error; frames before the tube window is full are skipped, frames
without objects are left out). Compare with `lpgb-bench`'s served AUC. The numbers behind
docs/decisions.md ("Scoring: where the AUC is lost").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from lpgb.runtime.errors import LpgbError

__all__ = ["OracleErrors", "collect_oracle_errors", "summarise", "main"]


@dataclass
class OracleErrors:
    """Per object (solo tubes): `anomaly` kind or "none", `error`; per frame: `label`, max errors."""

    anomaly: list[str] = field(default_factory=list)
    error: list[float] = field(default_factory=list)
    frame_label: list[int] = field(default_factory=list)
    frame_solo: list[float] = field(default_factory=list)
    frame_grouped: list[float] = field(default_factory=list)


def collect_oracle_errors(model: Path, data: Path, backend: str = "ort", videos: int = 0, max_frames: int = 0,
                          on_video: Optional[Callable[[str], None]] = None) -> OracleErrors:
    """Score ground-truth tubes of the boxed test videos of `data` with the model's parts."""
    from lpgb.benchmarks.recall import boxed_videos, load_gt
    from lpgb.runtime.boxfiles import box_array
    from lpgb.runtime.pipeline import TubeScorer, open_detector
    from lpgb.runtime.tubes import TubeBuilder
    from lpgb.runtime.video import open_source

    items = boxed_videos(Path(data), videos)
    if not items:
        raise LpgbError(f"{data} has no test videos with ground-truth boxes (testing/boxes/NN.json)")
    detector = open_detector(Path(model), backend)
    cfg = detector.cfg
    solo_cfg = replace(cfg, proposals=replace(cfg.proposals, merge_overlapping=False))
    out = OracleErrors()
    for item in items:
        gt = load_gt(item.boxes)
        solo, grouped = TubeBuilder(solo_cfg), TubeBuilder(cfg)
        with open_source(item.source) as source:
            for index, frame in enumerate(source):
                if index >= len(gt) or (max_frames and index >= max_frames):
                    break
                objects = gt[index] or []
                boxes = box_array(objects)
                ones = np.ones(len(boxes), np.float32)
                solo_batch, grouped_batch = solo.push(frame, boxes, ones), grouped.push(frame, boxes, ones)
                if index < cfg.smm.window or not objects:
                    continue
                solo_error = TubeScorer(detector.backend)(solo_batch.crops, {})["tube_error"]
                grouped_error = TubeScorer(detector.backend)(grouped_batch.crops, {})["tube_error"]
                out.anomaly += [str(o.get("anomaly", "none")) for o in objects]
                out.error += [float(e) for e in solo_error]
                out.frame_label.append(int(any(o.get("anomaly", "none") != "none" for o in objects)))
                out.frame_solo.append(float(solo_error.max()))
                out.frame_grouped.append(float(grouped_error.max()))
        if on_video:
            on_video(item.name)
    return out


def _auc(labels: np.ndarray, scores: np.ndarray) -> Optional[float]:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else None


def summarise(errors: OracleErrors) -> dict:
    """Object AUC (overall, per kind) and frame micro AUC of solo and grouped ground-truth tubes."""
    kinds = np.asarray(errors.anomaly, dtype=object)
    error = np.asarray(errors.error, np.float64)
    abnormal = kinds != "none"
    per_kind = {}
    for kind in sorted(set(errors.anomaly) - {"none"}):
        keep = (kinds == kind) | ~abnormal
        per_kind[kind] = {"auc": _auc(abnormal[keep], error[keep]), "objects": int((kinds == kind).sum())}
    labels = np.asarray(errors.frame_label, np.int64)
    return {
        "objects": int(len(error)), "anomalous_objects": int(abnormal.sum()), "frames": int(len(labels)),
        "object_auc": _auc(abnormal, error), "object_auc_per_kind": per_kind,
        "frame_micro_auc_solo": _auc(labels, np.asarray(errors.frame_solo)),
        "frame_micro_auc_grouped": _auc(labels, np.asarray(errors.frame_grouped)),
    }


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> None:
    from lpgb.runtime.cli_common import OneLineArgumentParser

    parser = OneLineArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="run folder (lpgb-train output; exported for ort)")
    parser.add_argument("data", type=Path, help="dataset with testing/boxes/NN.json (e.g. lpgb-data synth output)")
    parser.add_argument("--backend", default="ort", choices=("ort", "torch", "trt"))
    parser.add_argument("--videos", type=int, default=0, help="at most this many test videos (0 = all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary as JSON")
    args = parser.parse_args(argv)
    from lpgb.benchmarks.recall import boxed_videos
    from lpgb.runtime.progress import progress_bar

    count = len(boxed_videos(args.data, args.videos))
    with progress_bar() as bar:
        task = bar.add_task("oracle", total=count, info="")
        errors = collect_oracle_errors(args.model, args.data, args.backend, args.videos,
                                       on_video=lambda name: bar.update(task, advance=1, info=f"video {name}"))
    result = summarise(errors)
    print(f"{result['objects']} objects ({result['anomalous_objects']} anomalous), {result['frames']} frames")
    print(f"object AUC (ground-truth tubes, one per object): {_fmt(result['object_auc'])}")
    for kind, row in result["object_auc_per_kind"].items():
        print(f"  {kind}: {_fmt(row['auc'])} ({row['objects']} objects)")
    print(f"frame micro AUC, max over ground-truth tubes: solo {_fmt(result['frame_micro_auc_solo'])}, "
          f"grouped {_fmt(result['frame_micro_auc_grouped'])}")
    if args.json:
        from lpgb.runtime.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(result, indent=2))


if __name__ == "__main__":
    from lpgb.runtime.cli_common import run_diagnostic

    run_diagnostic(main)
