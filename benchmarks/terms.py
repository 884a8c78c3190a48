"""AUC of every score term alone and of every combination of them, from one scoring pass.

Two modes, both on a dataset's labelled test videos:

- `python -m lpgb.benchmarks.terms DATA --model RUN [--backend ort]`: a trained, calibrated model.
  Its detector scores each test video once, keeping each box's standardised value per term; then
  every non-empty subset of the model's terms, combined by `sum` and by `max`, is recalibrated from the
  held-out training scores that `lpgb-train --stage calibrate` saved (`term_training_scores.npz`:
  training statistics only) and its frame AUC is reported. This is the measurement behind the default
  `scoring.terms` / `scoring.combine`.
- `python -m lpgb.benchmarks.terms DATA --out DIR [--terms velocity]`: no trained network. The
  network-free terms are fitted on the training videos with motion proposals (the serving Proposer
  with `proposals.source = "motion"`) and the serving grouping, and saved as a model folder in DIR.

Micro/macro AUC, raw and smoothed (centred Gaussian, sigma = `scoring.smoothing_sigma`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np

from lpgb.runtime.cli_common import run_diagnostic
from lpgb.runtime.config import COMBINE_RULES, FRAME_RULES, LpgbConfig, preset
from lpgb.runtime.errors import LpgbError

__all__ = ["fit_flow_terms", "collect_term_scores", "combination_table", "main"]


def fit_flow_terms(data: Path, out: Path, cfg: LpgbConfig, progress=None) -> None:
    """Fit `cfg.scoring.terms` (flow-only terms) on DATA's training videos; write the model folder OUT."""
    from lpgb.runtime.datasets import open_dataset
    from lpgb.runtime.proposer import Proposer
    from lpgb.runtime.size_prior import with_size_prior
    from lpgb.runtime.term_fit import collect_training_boxes, fit_terms, save_fitted

    videos = open_dataset(data).train_videos()
    if not videos:
        raise LpgbError(f"{data} has no training videos")
    cfg = replace(cfg, proposals=with_size_prior(cfg.proposals, videos))  # motion_split: the scene's size prior
    table = collect_training_boxes(videos, cfg, lambda: Proposer(cfg.proposals, None), progress)
    terms, cal, raw, keys = fit_terms(cfg, table, videos, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.json")
    save_fitted(out, terms, cal, raw, keys)


def collect_term_scores(new_detector, data: Path, progress=None) -> tuple[list, list[np.ndarray], list[list[dict]]]:
    """Score every labelled test video with a fresh detector; returns (videos, labels (T,) per video,
    per video and frame {term: standardised box values (K,)})."""
    from lpgb.benchmarks.accuracy import labelled_videos
    from lpgb.runtime.video import open_source

    videos = labelled_videos(data)
    labels, frames = [], []
    for n, item in enumerate(videos):
        detector = new_detector()
        per_frame = []
        with open_source(item.source) as src:
            for frame in src:
                per_frame.append(detector.process(frame).term_scores)
        count = min(len(per_frame), len(item.labels))
        labels.append(np.asarray(item.labels[:count]).astype(np.uint8))
        frames.append(per_frame[:count])
        if progress:
            progress(n + 1, len(videos), item.name)
    return videos, labels, frames


def combination_table(frames: list[list[dict]], labels: list[np.ndarray], train_raw: dict[str, np.ndarray],
                      train_keys: np.ndarray, cfg: LpgbConfig) -> list[dict]:
    """One row per (non-empty subset of the terms, combine rule): its AUC summary, calibrated on training."""
    from lpgb.benchmarks.accuracy import auc_summary, event_metrics
    from lpgb.runtime.scoring import calibrate, combine, frame_score

    names = list(cfg.scoring.terms)
    rows = []
    for size in range(1, len(names) + 1):
        for subset in itertools.combinations(names, size):
            for rule in (COMBINE_RULES if size > 1 else COMBINE_RULES[:1]):
                for frame_rule in FRAME_RULES:
                    scoring = replace(cfg.scoring, terms=subset, combine=rule, frame_rule=frame_rule)
                    cal = calibrate({n: train_raw[n] for n in subset}, train_keys, scoring)
                    curves = [np.asarray([frame_score(combine({n: z[n] for n in subset}, rule) if z else [], cal)
                                          for z in video]) for video in frames]
                    summary = auc_summary(curves, labels, cfg.scoring.smoothing_sigma)
                    events = event_metrics(curves, labels, cal, scoring)
                    rows.append({"terms": list(subset), "combine": rule, "frame_rule": frame_rule, **{k: summary.get(k)
                                 for k in ("micro_auc", "macro_auc", "micro_auc_smoothed", "macro_auc_smoothed",
                                           "per_video_auc")},
                                 "event_precision": events["precision"], "event_recall": events["recall"]})
    return rows


QUANTILES = (0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def event_table(frames: list[list[dict]], labels: list[np.ndarray], train_raw: dict[str, np.ndarray],
                train_keys: np.ndarray, cfg: LpgbConfig, quantiles=QUANTILES) -> list[dict]:
    """Event precision/recall of the model's own combination for several `threshold_quantile` values."""
    from lpgb.benchmarks.accuracy import event_metrics
    from lpgb.runtime.scoring import calibrate, combine, frame_score

    names = list(cfg.scoring.terms)
    out = []
    for q in quantiles:
        scoring = replace(cfg.scoring, threshold_quantile=q)
        cal = calibrate({n: train_raw[n] for n in names}, train_keys, scoring)
        curves = [np.asarray([frame_score(combine({n: z[n] for n in names}, scoring.combine) if z else [], cal)
                              for z in video]) for video in frames]
        out.append({"threshold_quantile": q, **event_metrics(curves, labels, cal, scoring)})
    return out


def main(argv: list[str] | None = None) -> None:
    from lpgb.runtime.cli_common import OneLineArgumentParser

    parser = OneLineArgumentParser(prog="python -m lpgb.benchmarks.terms", description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="dataset folder (training videos + labelled test videos)")
    parser.add_argument("--model", type=Path, default=None, help="trained, calibrated run or export folder")
    parser.add_argument("--backend", default="ort", help="backend for --model (default ort)")
    parser.add_argument("--out", type=Path, default=None, help="without --model: folder for the fitted terms")
    parser.add_argument("--terms", default="velocity", help="without --model: comma-separated flow-only terms")
    parser.add_argument("--preset", default="edge", help="without --model: preset whose proposal settings are used")
    parser.add_argument("--proposals", default="", help="without --model: proposal settings to change, "
                                                          "e.g. motion_mask=flow,merge_overlapping=false")
    parser.add_argument("--flow", default="", help="without --model: flow settings to change, e.g. preset=ultrafast")
    parser.add_argument("--scoring", default="", help="without --model: scoring settings to change, e.g. knn_k=3")
    parser.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    args = parser.parse_args(argv)
    from lpgb.runtime.bundle import ModelBundle
    from lpgb.runtime.datasets import open_dataset
    from lpgb.runtime.pipeline import Detector, open_detector
    from lpgb.runtime.progress import progress_bar
    from lpgb.runtime.term_fit import load_training_scores
    from lpgb.runtime.terms import make_terms

    open_dataset(args.data)  # a missing or malformed dataset is refused before any progress bar
    with progress_bar() as bar:
        def tracker(name: str):
            task = bar.add_task(name, total=None, info="")
            return lambda d, t, info="": bar.update(task, completed=d, total=t, info=str(info))

        if args.model is not None:
            bundle = ModelBundle.open(args.model, args.backend)
            folder = bundle.folder if (bundle.folder / "term_training_scores.npz").is_file() else Path(args.model)
            new_detector = lambda: open_detector(args.model, args.backend)  # noqa: E731
        else:
            if args.out is None:
                raise LpgbError("pass --model RUN (a trained model) or --out DIR (fit the flow-only terms there)")
            cfg = preset(args.preset)
            terms = tuple(t.strip() for t in args.terms.split(",") if t.strip())
            cfg = replace(cfg, proposals=_changed(cfg.proposals, {"source": "motion", **_settings(args.proposals)}),
                          scoring=replace(_changed(cfg.scoring, _settings(args.scoring)), terms=terms),
                          flow=_changed(cfg.flow, _settings(args.flow)))
            make_terms(cfg)  # an unknown term is refused before the training videos are read
            fit_flow_terms(args.data, args.out, cfg, tracker("fit"))
            bundle, folder = ModelBundle.network_free(args.out), args.out
            new_detector = lambda: Detector(bundle, backend=None)  # noqa: E731
        train_raw, train_keys = load_training_scores(folder)
        videos, labels, frames = collect_term_scores(new_detector, args.data, tracker("score"))
    rows = combination_table(frames, labels, train_raw, train_keys, bundle.cfg)
    print(f"{len(videos)} test videos; smoothed: centred Gaussian sigma {bundle.cfg.scoring.smoothing_sigma}; "
          f"model default: {'+'.join(bundle.cfg.scoring.terms)} ({bundle.cfg.scoring.combine})")
    print(f"{'terms':<28} {'rule':<8} {'micro':>6} {'macro':>6} {'micro_s':>7} {'macro_s':>7} {'ev_P':>5} {'ev_R':>5}"
          "  per video")
    for r in rows:
        per = " ".join("-" if v is None else f"{v:.3f}" for v in (r.get("per_video_auc") or []))
        rule = r["combine"] + ("" if r["frame_rule"] == "max" else "+" + r["frame_rule"])
        print(f"{'+'.join(r['terms']):<28} {rule:<8} {_f(r['micro_auc'])} {_f(r['macro_auc'])} "
              f"{_f(r['micro_auc_smoothed']):>7} {_f(r['macro_auc_smoothed']):>7} {_f(r['event_precision'], 5)} "
              f"{_f(r['event_recall'], 5)}  {per}")
    events = event_table(frames, labels, train_raw, train_keys, bundle.cfg)
    print(f"events of {'+'.join(bundle.cfg.scoring.terms)} ({bundle.cfg.scoring.combine}) by threshold quantile of the "
          f"training frame scores (model: {bundle.cfg.scoring.threshold_quantile}):")
    for e in events:
        print(f"  q {e['threshold_quantile']:<6} threshold {e['threshold']:7.3f}: {e['events']} events, precision "
              f"{_f(e['precision'], 5)}, segments caught {e['segments_found']}/{e['segments']}")
    if args.json:
        from lpgb.runtime.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps({"videos": [v.name for v in videos], "rows": rows,
                                                 "events_by_quantile": events}, indent=2))


def _settings(text: str) -> dict:
    """"a=1,b=flow,c=false" -> {"a": 1, "b": "flow", "c": False} (JSON values where they parse)."""
    out = {}
    for item in (t for t in text.split(",") if t.strip()):
        key, sep, value = item.partition("=")
        if not sep:
            raise LpgbError(f"settings are key=value pairs, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value.strip()
    return out


def _changed(section, settings: dict):
    """A config section with `settings` changed; an unknown setting is a one-line error."""
    try:
        return replace(section, **settings)
    except TypeError:
        names = ", ".join(f.name for f in dataclasses.fields(section))
        raise LpgbError(f"unknown setting among {sorted(settings)}; {type(section).__name__} has {names}") from None


def _f(v: Optional[float], width: int = 6) -> str:
    return "-".rjust(width) if v is None else f"{v:{width}.{min(3, width - 2)}f}"


if __name__ == "__main__":
    run_diagnostic(main)
