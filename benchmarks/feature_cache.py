"""Branch-feature cache and region snapping: `python -m lpgb.benchmarks.feature_cache DATA --model RUN --snap S`.

Scores DATA's labelled test videos three times with the model's own terms (use a model whose terms run
the network, e.g. `smm`, `appearance`; velocity/shape run no branch): feature cache off (every tube
crop through branch1/branch2 every frame, as before the cache), cache on with the model's regions, and
cache on with `proposals.region_snap = S` (serving only: the calibration and the fitted terms stay the
model's, made with its own regions). Per setting: cache hit rate, crops run per frame, branch+SMM
GFLOP per frame (`benchmarks/cost.py` per-call counts, needs torch), ms per frame (whole frame and
the tube stage: crops + branches + SMM), micro AUC of the model's frame score and of each term alone,
and the largest frame-score difference to the cache-off pass (0 = bit-identical).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np

from lpgb.runtime.cli_common import run_diagnostic
from lpgb.runtime.errors import LpgbError

__all__ = ["Setting", "measure", "main"]

TUBE_STAGES = ("tubes", "branch1", "branch2", "smm")


@dataclass(frozen=True)
class Setting:
    """One pass: a name, whether the feature cache is used, and the region snap served with."""

    name: str
    cache: bool
    snap: float


def measure(bundle, backend_name: str, videos: list, setting: Setting, max_frames: int = 0, progress=None) -> dict:
    """Score `videos` (VideoItems with labels) with one setting; returns counts, times and per-video curves.

    Keys: frames, tubes, lookups, hits, crops_run, seconds, tube_seconds, curves (per video (T,)),
    term_curves (per video {term: (T,)}), labels (per video (T,) uint8). `progress(done, total, info)`
    is called after each video."""
    from lpgb.runtime.backends.base import load_backend
    from lpgb.runtime.pipeline import Detector
    from lpgb.runtime.video_scores import score_video

    cfg = bundle.cfg
    served = replace(bundle, cfg=replace(cfg, proposals=replace(cfg.proposals, region_snap=setting.snap)))
    out = {"frames": 0, "tubes": 0, "lookups": 0, "hits": 0, "crops_run": 0, "seconds": 0.0, "tube_seconds": 0.0,
           "curves": [], "term_curves": [], "labels": []}
    for n, item in enumerate(videos):
        detector = Detector(served, load_backend(backend_name, served.folder), feature_cache=setting.cache)
        if detector.tube_scorer is None:
            raise LpgbError(f"the model's terms ({', '.join(cfg.scoring.terms)}) run no branch network: nothing to "
                            "cache; refit it with a network term (lpgb-train DATA --out RUN --stage calibrate "
                            "--terms smm,appearance) and re-export")
        terms: dict[str, list[float]] = {}
        times: dict[str, list[float]] = {}
        start = time.perf_counter()
        scores = score_video(detector, item.source, max_frames, term_curves=terms, stage_times=times)
        out["seconds"] += time.perf_counter() - start
        out["tube_seconds"] += float(sum(sum(times.get(stage, [])) for stage in TUBE_STAGES))
        scorer = detector.tube_scorer
        out["crops_run"] += scorer.crops_run
        if scorer.cache is not None:
            out["lookups"] += scorer.cache.stats.lookups
            out["hits"] += scorer.cache.stats.hits
        count = min(len(scores), len(item.labels))
        out["frames"] += len(scores)
        out["curves"].append(scores[:count])
        out["term_curves"].append({name: np.asarray(v[:count]) for name, v in terms.items()})
        out["labels"].append(np.asarray(item.labels[:count]).astype(np.uint8))
        if progress:
            progress(n + 1, len(videos), item.name)
    return out


def summarise(result: dict, reference: Optional[dict], length: int, parts, sigma: float) -> dict:
    """One table row from `measure`'s result (`reference`: the cache-off pass, for the score difference)."""
    from lpgb.benchmarks.accuracy import auc_summary

    frames = max(result["frames"], 1)
    crops = result["crops_run"] / frames
    row = {
        "frames": result["frames"],
        "hit_rate": result["hits"] / result["lookups"] if result["lookups"] else None,
        "crops_per_frame": crops,
        "tube_crops_per_frame": (result["lookups"] or result["crops_run"]) / frames,  # K * (L+1): what the tubes read
        "ms_per_frame": 1000 * result["seconds"] / frames,
        "tube_ms_per_frame": 1000 * result["tube_seconds"] / frames,
        "micro_auc": auc_summary(result["curves"], result["labels"], sigma).get("micro_auc"),
        "term_micro_auc": {name: auc_summary([v[name] for v in result["term_curves"]], result["labels"], sigma)
                           .get("micro_auc") for name in (result["term_curves"][0] if result["term_curves"] else {})},
    }
    if parts is not None:
        tubes = row["tube_crops_per_frame"] / length
        row["gflop_per_frame"] = (2 * crops * parts.branch_flops + tubes * parts.smm_flops) / 1e9
    if reference is not None:
        diffs = [float(np.max(np.abs(a - b))) if len(a) else 0.0 for a, b in zip(result["curves"], reference["curves"])]
        row["max_score_diff"] = max(diffs, default=0.0)
    return row


def main(argv: list[str] | None = None) -> None:
    from lpgb.runtime.cli_common import OneLineArgumentParser

    parser = OneLineArgumentParser(prog="python -m lpgb.benchmarks.feature_cache", description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="dataset folder with labelled test videos")
    parser.add_argument("--model", type=Path, required=True, help="trained run or export folder whose terms run the "
                                                                  "branch network (e.g. smm, appearance)")
    parser.add_argument("--snap", type=float, required=True, help="proposals.region_snap of the snapped pass, in (0, 1)")
    parser.add_argument("--backend", default="ort", help="backend (default ort)")
    parser.add_argument("--max-videos", type=int, default=0, help="score at most this many test videos (0 = all)")
    parser.add_argument("--max-frames", type=int, default=0, help="score at most this many frames per video (0 = all)")
    parser.add_argument("--no-flops", action="store_true", help="skip the GFLOP column (it builds torch modules)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if not 0.0 < args.snap < 1.0:
        raise LpgbError(f"--snap must be in (0, 1), got {args.snap}")
    if args.max_videos < 0 or args.max_frames < 0:
        raise LpgbError("--max-videos and --max-frames must be >= 0 (0 = all)")
    from lpgb.benchmarks.accuracy import labelled_videos
    from lpgb.runtime.bundle import ModelBundle
    from lpgb.runtime.progress import progress_bar

    bundle = ModelBundle.open(args.model, args.backend)
    if bundle.cfg.proposals.region_snap > 0:
        raise LpgbError(f"{args.model} already snaps its regions (region_snap {bundle.cfg.proposals.region_snap}); "
                        "this compares against exact regions: use a model made without snapping")
    videos = labelled_videos(args.data, args.max_videos)
    parts = None
    if not args.no_flops:
        from lpgb.benchmarks.cost import count_parts

        parts = count_parts(bundle.cfg, use_rpn=False)
    length = bundle.cfg.smm.window + 1
    sigma = bundle.cfg.scoring.smoothing_sigma
    settings = (Setting("cache off", False, 0.0), Setting("cache on", True, 0.0),
                Setting(f"cache on, snap {args.snap:g}", True, args.snap))
    rows, reference = [], None
    print(f"{len(videos)} test videos ({', '.join(v.name for v in videos)}), max {args.max_frames or 'all'} frames each; "
          f"terms {'+'.join(bundle.cfg.scoring.terms)} ({bundle.cfg.scoring.combine}); L+1 = {length}", flush=True)
    print(f"{'setting':<22} {'hit':>5} {'crops/f':>7} {'tubecrops/f':>11} {'GFLOP/f':>7} {'ms/f':>7} {'tube ms/f':>9} "
          f"{'micro':>6} {'max|d|':>8}  per term", flush=True)
    for setting in settings:
        with progress_bar() as bar:
            task = bar.add_task(setting.name, total=len(videos), info="")
            result = measure(bundle, args.backend, videos, setting, args.max_frames,
                             lambda d, t, info="": bar.update(task, completed=d, total=t, info=str(info)))
        row = {"setting": setting.name, "cache": setting.cache, "snap": setting.snap,
               **summarise(result, reference, length, parts, sigma)}
        if reference is None:
            reference = result
        rows.append(row)
        terms = " ".join(f"{n} {_f(v)}" for n, v in row["term_micro_auc"].items())
        print(f"{setting.name:<22} {_f(row['hit_rate'], 5, 2)} {row['crops_per_frame']:7.1f} "
              f"{row['tube_crops_per_frame']:11.1f} {_f(row.get('gflop_per_frame'), 7, 2)} {row['ms_per_frame']:7.1f} "
              f"{row['tube_ms_per_frame']:9.1f} {_f(row['micro_auc'])} {row.get('max_score_diff', 0.0):8.2g}  {terms}",
              flush=True)
    if args.json:
        from lpgb.runtime.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps({"videos": [v.name for v in videos], "max_frames": args.max_frames,
                                                 "rows": rows}, indent=2))


def _f(v: Optional[float], width: int = 6, digits: int = 3) -> str:
    return "-".rjust(width) if v is None else f"{v:{width}.{digits}f}"


if __name__ == "__main__":
    run_diagnostic(main)
