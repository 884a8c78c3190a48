"""Motion-proposal recall for several mask clean-ups: `python -m lpgb.benchmarks.motion_sweep DATA`.

For each `(open, close, dilate)` kernel triple (`ProposalConfig.motion_open/close/dilate`) a fresh
`MotionProposer` runs over every test video of DATA that has ground-truth boxes; recall @ IoU 0.5
is counted over the frames after `motion_warmup` (motion proposes nothing before). Misses are
split into "too big" (the best-overlapping blob is larger than the GT box: usually neighbours
joined into one blob), "too small" and "none" (no blob touches the box). Torch-free, no model.
The numbers behind docs/decisions.md (Proposals, motion mask clean-up).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from lpgb.runtime.config import ProposalConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.geometry import box_area, iou_matrix

DEFAULT_SETTINGS: tuple[tuple[int, int, int], ...] = ((3, 7, 3), (0, 0, 0), (3, 0, 0), (3, 3, 0), (3, 5, 0), (3, 7, 0))


def _load(data: Path) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """[(frames, per-frame GT boxes (G, 4))] of the boxed test videos of `data`."""
    from lpgb.benchmarks.recall import boxed_videos, load_gt
    from lpgb.runtime.boxfiles import box_array
    from lpgb.runtime.video import open_source

    videos = []
    for item in boxed_videos(data):
        gt = load_gt(item.boxes)
        with open_source(item.source) as source:
            frames = [frame for frame, _ in zip(source, range(len(gt)))]
        boxes = [box_array(objects) for objects in gt]
        videos.append((frames, boxes))
    return videos


def motion_recall(videos: list[tuple[list[np.ndarray], list[np.ndarray]]], cfg: ProposalConfig,
                  iou: float = 0.5) -> dict[str, float]:
    """Recall after warm-up and the miss breakdown (fractions of all GT boxes) for one setting."""
    from lpgb.runtime.motion import MotionProposer

    counts = {"hit": 0, "too_big": 0, "too_small": 0, "none": 0}
    for frames, gts in videos:
        proposer = MotionProposer(cfg)
        for index, (frame, gt) in enumerate(zip(frames, gts)):
            boxes, _ = proposer.update(frame)
            if index < cfg.motion_warmup or len(gt) == 0:
                continue
            if len(boxes) == 0:
                counts["none"] += len(gt)
                continue
            overlap = iou_matrix(gt, boxes)
            best = overlap.argmax(axis=1)
            for g, b in enumerate(best):
                if overlap[g, b] >= iou:
                    counts["hit"] += 1
                elif overlap[g, b] == 0:
                    counts["none"] += 1
                elif box_area(boxes[b : b + 1])[0] > box_area(gt[g : g + 1])[0]:
                    counts["too_big"] += 1
                else:
                    counts["too_small"] += 1
    total = max(sum(counts.values()), 1)
    return {"recall": counts["hit"] / total, **{k: v / total for k, v in counts.items() if k != "hit"}, "gt": total}


def main(argv: list[str] | None = None) -> None:
    from lpgb.runtime.cli_common import OneLineArgumentParser

    parser = OneLineArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="dataset with testing/boxes/NN.json (e.g. lpgb-data synth output)")
    parser.add_argument("--settings", default=";".join(",".join(map(str, s)) for s in DEFAULT_SETTINGS),
                        help="semicolon-separated open,close,dilate kernel sizes")
    args = parser.parse_args(argv)
    try:
        triples = [tuple(int(v) for v in t.split(",")) for t in args.settings.split(";")]
        if any(len(t) != 3 or min(t) < 0 for t in triples):
            raise ValueError
    except ValueError:
        raise LpgbError(f"--settings must be 'open,close,dilate;...' with sizes >= 0, got {args.settings!r}") from None
    videos = _load(args.data)
    if not videos:
        raise LpgbError(f"{args.data} has no test videos with ground-truth boxes (testing/boxes/NN.json)")
    base = ProposalConfig()
    print("| open | close | dilate | recall after warm-up | miss: too big | too small | none | GT boxes |")
    print("|---|---|---|---|---|---|---|---|")
    for o, c, d in triples:
        r = motion_recall(videos, replace(base, motion_open=o, motion_close=c, motion_dilate=d))
        print(f"| {o} | {c} | {d} | {r['recall']:.3f} | {r['too_big']:.3f} | {r['too_small']:.3f} | {r['none']:.3f} | {r['gt']} |",
              flush=True)


if __name__ == "__main__":
    from lpgb.runtime.cli_common import run_diagnostic

    run_diagnostic(main)
