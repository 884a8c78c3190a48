"""Per-term AUC of the score terms on a dataset's labelled test videos, with no trained network.

`python -m lpgb.benchmarks.terms DATA --out DIR [--terms velocity] [--preset edge]` fits the
network-free terms (those that need only flow: `velocity`) on the training videos, with motion
proposals (the serving Proposer with `proposals.source = "motion"`) and the serving grouping, saves
the fitted model folder (config.json, calibration.json, terms.npz) in DIR, then scores every labelled
test video through the serving `Detector` (no backend) and prints micro/macro AUC, raw and smoothed,
for the combination and for each term alone (its per-box standardised value, max over the frame).
This is how the velocity term's design was measured without a trained model; terms that read the
networks' outputs are fitted by `lpgb-train --stage calibrate` and reported by `lpgb-bench`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from lpgb.runtime.cli_common import run_diagnostic
from lpgb.runtime.config import LpgbConfig, preset
from lpgb.runtime.errors import LpgbError

__all__ = ["fit_flow_terms", "evaluate_terms", "main"]


def fit_flow_terms(data: Path, out: Path, cfg: LpgbConfig, progress=None) -> None:
    """Fit `cfg.scoring.terms` (flow-only terms) on DATA's training videos; write the model folder OUT."""
    from lpgb.runtime.datasets import open_dataset
    from lpgb.runtime.proposer import Proposer
    from lpgb.runtime.term_fit import collect_training_boxes, fit_terms, save_fitted

    videos = open_dataset(data).train_videos()
    if not videos:
        raise LpgbError(f"{data} has no training videos")
    table = collect_training_boxes(videos, cfg, lambda: Proposer(cfg.proposals, None), progress)
    terms, cal, _ = fit_terms(cfg, table, videos, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.json")
    save_fitted(out, terms, cal)


def evaluate_terms(model_dir: Path, data: Path, progress=None) -> dict:
    """AUC summary of the combination and of each term on DATA's labelled test videos."""
    from lpgb.benchmarks.accuracy import align, auc_summary, labelled_videos
    from lpgb.runtime.bundle import ModelBundle
    from lpgb.runtime.pipeline import Detector, score_frames
    from lpgb.runtime.scoring import Calibration
    from lpgb.runtime.video import open_source

    cfg = LpgbConfig.load(model_dir / "config.json")
    cal = Calibration.from_dict(json.loads((model_dir / "calibration.json").read_text()))
    videos = labelled_videos(data)
    curves: dict[str, list[np.ndarray]] = {"combined": []}
    labels = []
    for n, item in enumerate(videos):
        detector = Detector(ModelBundle(cfg, cal, model_dir, has_rpn=False), backend=None)
        per_term: dict[str, list[float]] = {}
        with open_source(item.source) as src:
            scores, _ = score_frames(detector, src, term_curves=per_term)
        s, y = align(scores, item.labels)
        curves["combined"].append(s)
        labels.append(y)
        for name in cfg.scoring.terms:
            curves.setdefault(name, []).append(align(np.asarray(per_term.get(name, [cal.normal_level] * len(s))), y)[0])
        if progress:
            progress(n + 1, len(videos), item.name)
    sigma = cfg.scoring.smoothing_sigma
    return {name: auc_summary(c, labels, sigma) for name, c in curves.items()} | {
        "videos": [v.name for v in videos], "sigma": sigma}


def main(argv: list[str] | None = None) -> None:
    from lpgb.runtime.cli_common import OneLineArgumentParser

    parser = OneLineArgumentParser(prog="python -m lpgb.benchmarks.terms", description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="dataset folder (training videos + labelled test videos)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the fitted terms (created)")
    parser.add_argument("--terms", default="velocity", help="comma-separated flow-only terms (default velocity)")
    parser.add_argument("--preset", default="edge", help="preset whose proposal settings are used")
    parser.add_argument("--knn-k", type=int, default=None, help="override scoring.knn_k")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary as JSON")
    args = parser.parse_args(argv)
    from lpgb.runtime.datasets import open_dataset
    from lpgb.runtime.progress import progress_bar

    open_dataset(args.data)  # a missing or malformed dataset is refused before any progress bar
    cfg = preset(args.preset)
    scoring = replace(cfg.scoring, terms=tuple(t.strip() for t in args.terms.split(",") if t.strip()),
                      **({"knn_k": args.knn_k} if args.knn_k else {}))
    cfg = replace(cfg, proposals=replace(cfg.proposals, source="motion"), scoring=scoring)
    with progress_bar() as bar:
        task = bar.add_task("fit", total=None, info="")
        fit_flow_terms(args.data, args.out, cfg,
                       lambda d, t, info="": bar.update(task, completed=d, total=t, info=str(info)))
        task = bar.add_task("score", total=None, info="")
        result = evaluate_terms(args.out, args.data,
                                lambda d, t, info="": bar.update(task, completed=d, total=t, info=str(info)))
    print(f"{len(result['videos'])} test videos; smoothed: centred Gaussian sigma {result['sigma']}")
    print(f"{'term':<12} {'micro':>6} {'macro':>6} {'micro_s':>7} {'macro_s':>7}  per video")
    for name in ("combined", *cfg.scoring.terms):
        r = result[name]
        per = " ".join(f"{v:.3f}" if v is not None else "-" for v in r.get("per_video_auc", []))
        print(f"{name:<12} {_f(r.get('micro_auc'))} {_f(r.get('macro_auc'))} {_f(r.get('micro_auc_smoothed')):>7} "
              f"{_f(r.get('macro_auc_smoothed')):>7}  {per}")
    if args.json:
        from lpgb.runtime.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(result, indent=2))


def _f(v) -> str:
    return "     -" if v is None else f"{v:6.3f}"


if __name__ == "__main__":
    run_diagnostic(main)
