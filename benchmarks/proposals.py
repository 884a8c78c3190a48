"""Proposal quality on data with ground-truth boxes: recall and merge rate, sparse vs crowd, per source.

`python -m lpgb.benchmarks.proposals DATA [DATA ...] [--model RUN] [--out F.md|F.json]` runs the motion
proposer (and, with `--model` whose run has an RPN, the RPN) over every test video with per-frame
ground-truth boxes (`testing/boxes/NN.json`, e.g. `lpgb-data synth` and `lpgb-data synth --crowd N`), then
the serving post-processing `combine_proposals` once per source (`motion`; `rpn` and `union` with an RPN)
and reports, on the frames after the motion warm-up (`proposals.motion_warmup`: motion proposes nothing
before it), split into sparse and crowd frames:

- recall: share of ground-truth objects with a proposal of IoU >= 0.5 in the same frame; `anomalous
  recall` the same over the objects whose `anomaly` is not `none`;
- merge rate: share of proposals that are merges: a merge covers two or more ground-truth objects,
  where a proposal P covers an object G when area(P ∩ G) >= 0.5 area(G) (half of the object lies inside
  the proposal), and matches none of them (IoU < 0.5 with each): a box about several objects and about
  none in particular. (A tight box on an object half hidden behind another covers both but matches one,
  so it is no merge: the ground-truth boxes themselves have merge rate 0.)
- a crowd frame has at least `--crowd-min` ground-truth objects (10 by default), a sparse frame fewer.

Without `--model` the proposal settings are the `--preset`'s (edge) with `source = motion`, changed by
`--proposals key=value,...` (the same syntax as `python -m lpgb.benchmarks.terms`; given several times,
each setting is measured and labelled); with `--model` the run's own (a finished run or export, or a
run trained only with `lpgb-train --stage rpn`, whose RPN then runs in torch). `--proposals motion_split=true` fits the motion split's size prior on each DATA's training
videos first (`lpgb.runtime.size_prior`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from lpgb.runtime.config import ProposalConfig
from lpgb.runtime.errors import LpgbError

IOU = 0.5
COVER = 0.5  # a proposal covers an object holding at least this share of the object's area
CROWD_MIN = 10
DENSITIES = ("all", "sparse", "crowd")

__all__ = ["merge_counts", "merges", "proposal_quality", "quality_rows", "markdown", "main", "COVER", "CROWD_MIN"]


def merge_counts(boxes: np.ndarray, gt: np.ndarray, cover: float = COVER) -> np.ndarray:
    """Per proposal `(K, 4)`: how many ground-truth boxes `(G, 4)` it covers (area(P ∩ G) >= cover area(G)),
    int64 `(K,)`."""
    from lpgb.runtime.geometry import as_boxes

    boxes, gt = as_boxes(boxes), as_boxes(gt)
    if len(boxes) == 0 or len(gt) == 0:
        return np.zeros(len(boxes), np.int64)
    ix = np.minimum(boxes[:, None, 2], gt[None, :, 2]) - np.maximum(boxes[:, None, 0], gt[None, :, 0])
    iy = np.minimum(boxes[:, None, 3], gt[None, :, 3]) - np.maximum(boxes[:, None, 1], gt[None, :, 1])
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    area = np.maximum((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]), 1e-6)
    return (inter >= cover * area[None, :]).sum(axis=1).astype(np.int64)


def merges(boxes: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Boolean `(K,)`: proposal k covers two or more ground-truth boxes and has IoU < 0.5 with each of them."""
    from lpgb.runtime.geometry import as_boxes, iou_matrix

    boxes, gt = as_boxes(boxes), as_boxes(gt)
    if len(boxes) == 0 or len(gt) == 0:
        return np.zeros(len(boxes), bool)
    return (merge_counts(boxes, gt) >= 2) & (iou_matrix(boxes, gt).max(axis=1) < IOU)


@dataclass
class _Tally:
    frames: int = 0
    objects: int = 0
    found: int = 0
    anomalous: int = 0
    anomalous_found: int = 0
    proposals: int = 0
    merged: int = 0
    kinds: dict = field(default_factory=dict)  # {anomaly kind: [objects, found]}

    def add(self, boxes: np.ndarray, gt: np.ndarray, abnormal: np.ndarray, kinds: Sequence[str] = ()) -> None:
        from lpgb.runtime.recall import covered

        hit = covered(boxes, gt, IOU)
        for kind, h in zip(kinds, hit):
            if kind != "none":
                tally = self.kinds.setdefault(kind, [0, 0])
                tally[0] += 1
                tally[1] += int(h)
        self.frames += 1
        self.objects += len(gt)
        self.found += int(hit.sum())
        self.anomalous += int(abnormal.sum())
        self.anomalous_found += int(hit[abnormal].sum())
        self.proposals += len(boxes)
        self.merged += int(merges(boxes, gt).sum())

    def row(self) -> dict:
        def rate(a: int, b: int) -> Optional[float]:
            return a / b if b else None

        return {"frames": self.frames, "objects": self.objects, "anomalous_objects": self.anomalous,
                "recall": rate(self.found, self.objects), "recall_anomalous": rate(self.anomalous_found, self.anomalous),
                "proposals_per_frame": rate(self.proposals, self.frames), "proposals": self.proposals,
                "merge_rate": rate(self.merged, self.proposals),
                "recall_by_anomaly": {k: {"objects": n, "recall": rate(f, n)} for k, (n, f) in sorted(self.kinds.items())}}


def proposal_quality(raw, proposals: ProposalConfig, crowd_min: int = CROWD_MIN) -> dict:
    """Recall, anomalous recall and merge rate per source and density from `recall.collect_frames` output."""
    from lpgb.runtime.proposals import combine_proposals

    sources = ["motion"] + (["rpn", "union"] if raw.rpn_backend is not None else [])
    out: dict = {}
    for source in sources:
        cfg = replace(proposals, source=source)
        tallies = {d: _Tally() for d in DENSITIES}
        for f in raw.frames:
            if f.index < proposals.motion_warmup:
                continue
            fill = f.rpn_fill if proposals.rpn_fill_power > 0 else None
            boxes = combine_proposals(f.rpn, f.motion, (*f.shape, 3), cfg, fill)[0]
            abnormal = np.asarray([a != "none" for a in f.anomaly], bool)
            for density in ("all", "crowd" if len(f.gt) >= crowd_min else "sparse"):
                tallies[density].add(boxes, f.gt, abnormal, f.anomaly)
        out[source] = {d: t.row() for d, t in tallies.items()}
    return out


def _model_rpn(model: Path) -> tuple[object, object, Optional[str]]:
    """(LpgbConfig, the RPN as an RpnFn or None, its backend name) of a finished run or export, or of a run
    trained so far only with `lpgb-train --stage rpn` (config.json + weights/rpn.pt, run in torch)."""
    from lpgb.benchmarks.recall import rpn_function
    from lpgb.runtime.bundle import ModelBundle
    from lpgb.runtime.config import LpgbConfig

    try:
        try:
            cfg = ModelBundle.open(model, "ort").cfg
        except LpgbError:
            cfg = ModelBundle.open(model, "torch").cfg
        return (cfg, *rpn_function(model))
    except LpgbError:
        if not ((model / "config.json").is_file() and (model / "weights" / "rpn.pt").is_file()):
            raise
    import torch

    from lpgb.trainer.torch_backend import load_rpn

    cfg = LpgbConfig.load(model / "config.json")
    net = load_rpn(model, cfg)

    def run(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            boxes, scores = net(torch.from_numpy(image))
        return boxes.numpy(), scores.numpy()

    return cfg, run, "torch (rpn stage)"


def _proposal_config(args, changes: str, data: Path) -> tuple[ProposalConfig, object, Optional[str]]:
    """(proposal settings with `changes` ("k=v,..."), the RPN as an RpnFn or None, its backend name) for one
    DATA folder."""
    from lpgb.benchmarks.terms import _changed, _settings
    from lpgb.runtime.config import preset

    if args.model is not None:
        cfg, rpn, backend = _model_rpn(args.model)
        proposals = _changed(cfg.proposals, _settings(changes))
    else:
        proposals = _changed(preset(args.preset).proposals, {"source": "motion", **_settings(changes)})
        rpn, backend = None, None
    if proposals.motion_split and not proposals.size_prior:
        from lpgb.runtime.datasets import open_dataset
        from lpgb.runtime.size_prior import with_size_prior

        proposals = with_size_prior(proposals, open_dataset(data).train_videos())
    return proposals, rpn, backend


def quality_rows(report: dict) -> list[list[str]]:
    """Table rows: set, source, density, frames, objects, anomalous, recall %, anomalous recall %, props/frame,
    merge rate %."""
    def pct(v: Optional[float]) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    rows = []
    for name, entry in report["sets"].items():
        for source, by_density in entry["sources"].items():
            both = all(by_density[d]["frames"] for d in ("sparse", "crowd"))
            for density, r in by_density.items():
                if (density == "all" and not both) or (density != "all" and r["frames"] == 0):
                    continue  # a set of one density shows that row only
                rows.append([name, source, density, str(r["frames"]), str(r["objects"]), str(r["anomalous_objects"]),
                             pct(r["recall"]), pct(r["recall_anomalous"]),
                             "-" if r["proposals_per_frame"] is None else f"{r['proposals_per_frame']:.1f}",
                             pct(r["merge_rate"])])
    return rows


HEADERS = ["set", "source", "density", "frames", "objects", "anomalous", "recall %", "anomalous recall %",
           "props/frame", "merge rate %"]


def markdown(report: dict) -> str:
    lines = ["# Proposal quality: recall and merge rate, sparse vs crowd", "",
             f"Command: `{report['command']}`", "", report["method"], ""]
    for name, entry in report["sets"].items():
        lines.append(f"- `{name}`: {entry['path']}, {len(entry['videos'])} test videos, RPN: "
                     f"{entry['rpn_backend'] or 'none'}")
        for variant, settings in entry["settings"].items():
            ms = entry["motion_ms_per_frame"][variant]
            lines.append(f"  - proposal settings{f' [{variant}]' if variant else ''} (motion proposer "
                         f"{'-' if ms is None else f'{ms:.2f}'} ms/frame): {json.dumps(settings)}")
    lines += ["", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(r) + " |" for r in quality_rows(report)]
    kinds = sorted({k for e in report["sets"].values() for by in e["sources"].values()
                    for k in by["all"].get("recall_by_anomaly", {})})
    if kinds:
        lines += ["", "Recall of the anomalous objects by anomaly kind (all frames; objects in brackets):", "",
                  "| set | source | " + " | ".join(kinds) + " |", "|" + "---|" * (2 + len(kinds))]
        for name, entry in report["sets"].items():
            for source, by in entry["sources"].items():
                cells = []
                for k in kinds:
                    r = by["all"].get("recall_by_anomaly", {}).get(k)
                    cells.append("-" if r is None else f"{100 * r['recall']:.1f} ({r['objects']})")
                lines.append(f"| {name}, by kind | {source} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


SETTINGS = ("source", "nms_iou", "top_k", "min_box_size", "motion_history", "motion_open", "motion_close",
            "motion_dilate", "motion_min_area", "motion_warmup", "motion_split", "size_prior", "split_factor", "split_valley")


def main(argv: list[str] | None = None) -> None:
    """`python -m lpgb.benchmarks.proposals DATA [DATA ...] [--model RUN] [--out F.md|F.json]`."""
    import shlex
    import sys

    from lpgb.benchmarks.recall import boxed_videos, collect_frames
    from lpgb.runtime.cli_common import OneLineArgumentParser
    from lpgb.runtime.progress import progress_bar

    parser = OneLineArgumentParser(prog="python -m lpgb.benchmarks.proposals", description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, nargs="+", help="datasets with testing/boxes/NN.json")
    parser.add_argument("--model", type=Path, default=None, help="trained run or export (its proposal settings; "
                                                                  "rpn and union rows when it has an RPN)")
    parser.add_argument("--preset", default="edge", help="without --model: preset whose proposal settings are used")
    parser.add_argument("--proposals", action="append", default=None,
                        help="proposal settings to change, e.g. motion_close=5; repeat it to compare settings "
                             "(each a row per source, labelled with its settings; '' = unchanged)")
    parser.add_argument("--crowd-min", type=int, default=CROWD_MIN, help="ground-truth objects that make a crowd frame")
    parser.add_argument("--videos", type=int, default=0, help="at most this many test videos per set (0 = all)")
    parser.add_argument("--max-frames", type=int, default=0, help="at most this many frames per video (0 = all)")
    parser.add_argument("--out", type=Path, default=None, help="write the report: .md (table) or .json")
    args = parser.parse_args(argv)
    if args.crowd_min < 1:
        raise LpgbError(f"--crowd-min must be >= 1, got {args.crowd_min}")
    if args.out is not None and args.out.suffix not in (".md", ".json"):
        raise LpgbError(f"--out must end in .md or .json, got {args.out}")
    variants = list(dict.fromkeys(args.proposals or [""]))
    names = [d.expanduser().absolute().name for d in args.data]
    if len(set(names)) != len(names):
        raise LpgbError(f"the DATA folders need distinct names, got {', '.join(names)}")
    report = {"command": "python -m lpgb.benchmarks.proposals " + shlex.join(sys.argv[1:] if argv is None else argv),
              "method": __doc__.split("\n\n", 1)[1].split("\n\nWithout")[0],
              "iou": IOU, "cover": COVER, "crowd_min": args.crowd_min, "sets": {}}
    for name, data in zip(names, args.data):
        items = boxed_videos(data, args.videos)
        if not items:
            raise LpgbError(f"{data} has no test videos with ground-truth boxes (testing/boxes/NN.json)")
        entry: dict = {"path": str(data), "videos": [v.name for v in items], "settings": {}, "sources": {}}
        for changes in variants:
            proposals, rpn, backend = _proposal_config(args, changes, data)
            with progress_bar() as bar:
                task = bar.add_task(f"{name} {changes}".strip(), total=len(items), info="")
                raw = collect_frames(items, proposals, rpn, backend, args.max_frames,
                                     lambda video: bar.update(task, advance=1, info=f"video {video}"))
            label = f" [{changes}]" if len(variants) > 1 and changes else ""
            entry["rpn_backend"] = backend
            entry["settings"][changes] = {k: getattr(proposals, k) for k in SETTINGS}
            entry.setdefault("motion_ms_per_frame", {})[changes] = float(np.mean(raw.motion_ms)) if raw.motion_ms else None
            for source, rows in proposal_quality(raw, proposals, args.crowd_min).items():
                entry["sources"][source + label] = rows
        report["sets"][name] = entry
    text = markdown(report)
    print(text, end="")
    if args.out is not None:
        from lpgb.runtime.atomic import write_text_atomic

        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, text if args.out.suffix == ".md" else json.dumps(report, indent=2))


if __name__ == "__main__":
    from lpgb.runtime.cli_common import run_diagnostic

    run_diagnostic(main)
