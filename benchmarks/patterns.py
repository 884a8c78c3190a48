"""Diagnostic: which reading of the branch features scores best as a k-NN density (the `patterns` term).

    python -m lpgb.benchmarks.patterns DATA --model RUN [--backend torch] [--videos 01,02] [--json F]

Training rows are the newest-step branch features of RUN's cached training tubes (RUN/tubes/features*.npy,
what `--stage calibrate` fits `patterns` on); test rows are the same features of every box the model's
detector proposes on DATA's labelled test videos. Each variant (which branch, per-query or query-mean
rows, PCA width fitted on the training rows, k) is fitted on the training rows only and scored as the
term is: box = mean distance to the k nearest training rows, frame = max over its boxes (the lowest box
score of the video where there is no box). Prints frame micro/macro AUC per variant: a diagnostic for
choosing how the term reads the features, reported beside what was chosen (nothing is selected on test
labels inside the toolkit).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from lpgb.runtime.errors import LpgbError
from lpgb.runtime.terms.knn import KnnBank


@dataclass(frozen=True)
class Variant:
    """How rows are read: `branches` (1, 2 or both), `pool` ("queries": all N_q x E_d values; "mean": the
    mean over queries, E_d values per branch), `pca` (0 = off: PCA width fitted on training rows), `k`."""

    branches: tuple[int, ...]
    pool: str
    pca: int
    k: int

    @property
    def name(self) -> str:
        b = "+".join(f"b{i}" for i in self.branches)
        return f"{b} {self.pool} pca{self.pca or '-'} k{self.k}"


VARIANTS = [Variant(b, pool, pca, k) for b in ((1, 2), (1,), (2,)) for pool in ("queries", "mean")
            for pca in (0, 64, 16) for k in (1, 5)]


def read_rows(f1: np.ndarray, f2: np.ndarray, variant: Variant) -> np.ndarray:
    """f1, f2 (M, N_q, E_d) -> rows (M, D) as `variant` reads them."""
    parts = []
    for i, f in ((1, f1), (2, f2)):
        if i in variant.branches:
            parts.append(f.mean(axis=1) if variant.pool == "mean" else f.reshape(len(f), -1))
    return np.concatenate(parts, axis=1).astype(np.float32)


def pca_basis(rows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and the top `width` principal directions (D, width) of standardised training rows."""
    mean = rows.mean(0)
    _, _, vt = np.linalg.svd(rows - mean, full_matrices=False)
    return mean, vt[:width].T


def training_features(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Newest-step branch features of RUN's cached tubes: f1, f2 (M, N_q, E_d) and video ids (M,)."""
    folder = Path(run) / "tubes"
    paths = [folder / "features1.npy", folder / "features2.npy", folder / "meta.npy"]
    if not all(p.is_file() for p in paths):
        raise LpgbError(f"{folder} lacks the tube features: train the run's temporal stage first")
    f1, f2 = (np.load(p, mmap_mode="r") for p in paths[:2])
    return np.asarray(f1[:, -1]), np.asarray(f2[:, -1]), np.load(paths[2])[:, 0]


def test_features(model: Path, backend: str, data: Path, names: Optional[set[str]], shape: tuple[int, int],
                  progress=None) -> list[dict]:
    """Per labelled test video: labels (T,) and per frame the boxes' branch features (K, 2, N_q, E_d)
    (`shape` = (N_q, E_d)), None for a frame without boxes."""
    from lpgb.benchmarks.accuracy import labelled_videos
    from lpgb.runtime.pipeline import open_detector
    from lpgb.runtime.video import open_source

    out = []
    videos = [v for v in labelled_videos(data) if names is None or v.name in names]
    for n, item in enumerate(videos):
        det = open_detector(model, backend)
        if det.tube_scorer is None:
            raise LpgbError(f"{model}'s score terms read no network: refit it with a network term first")
        frames = []
        with open_source(item.source) as src:
            for frame in src:
                boxes, scores = det.proposer(frame)
                batch = det.tubes.push(frame, boxes, scores, crop=False)
                if len(batch.boxes):
                    rows = det.tube_scorer.patterns_batch(det.tubes, batch, {})["patterns"]  # (K, 2 N_q E_d)
                    frames.append(rows.reshape(len(rows), 2, *shape))
                else:
                    frames.append(None)
        count = min(len(frames), len(item.labels))
        out.append({"name": item.name, "labels": np.asarray(item.labels[:count]).astype(np.uint8),
                    "frames": frames[:count]})
        if progress:
            progress(n + 1, len(videos), item.name)
    return out


def evaluate(variant: Variant, train: tuple[np.ndarray, np.ndarray, np.ndarray], videos: list[dict]) -> dict:
    """Fit `variant` on the training rows; frame micro / macro AUC on `videos`."""
    from lpgb.runtime.metrics import macro_auc, micro_auc

    f1, f2, groups = train
    rows = read_rows(f1, f2, variant)
    mean, std = rows.mean(0), np.maximum(rows.std(0), 1e-2)
    project = None
    if variant.pca:
        centre, basis = pca_basis((rows - mean) / std, variant.pca)
        project = lambda r: ((r - mean) / std - centre) @ basis  # noqa: E731
        rows = project(rows)
    bank = KnnBank(variant.k, 2000)
    bank.fit(rows, groups)
    curves, labels = [], []
    for video in videos:
        boxed = [i for i, item in enumerate(video["frames"]) if item is not None]
        curve = np.full(len(video["frames"]), np.nan)
        if boxed:  # every box of the video in one k-NN call, then the max over each frame's boxes
            feats = np.concatenate([video["frames"][i] for i in boxed])  # (B, 2, N_q, E_d)
            r = read_rows(feats[:, 0], feats[:, 1], variant)
            box_scores = bank.score(project(r) if project else r)
            ends = np.cumsum([len(video["frames"][i]) for i in boxed])
            curve[boxed] = [part.max() for part in np.split(box_scores, ends[:-1])]
        floor = np.nanmin(curve) if np.isfinite(curve).any() else 0.0
        curves.append(np.where(np.isnan(curve), floor, curve))
        labels.append(video["labels"])
    macro = macro_auc(curves, labels)
    return {"variant": variant.name, "micro_auc": micro_auc(curves, labels), "macro_auc": macro.value,
            "per_video_auc": list(macro.per_video)}


def main(argv: list[str] | None = None) -> None:
    from lpgb.runtime.cli_common import OneLineArgumentParser, run_app

    parser = OneLineArgumentParser(prog="python -m lpgb.benchmarks.patterns", description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path, help="dataset folder with labelled test videos")
    parser.add_argument("--model", type=Path, required=True, help="trained run folder (with RUN/tubes features)")
    parser.add_argument("--backend", default="torch", help="backend for the test features (default torch)")
    parser.add_argument("--videos", default="", help="comma-separated test video names (default all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the table as JSON")
    args = parser.parse_args(argv)
    run_app(lambda: _run(args))


def _run(args) -> None:
    from lpgb.runtime.bundle import ModelBundle
    from lpgb.runtime.progress import progress_bar

    from lpgb.runtime.datasets import open_dataset

    open_dataset(args.data)  # a missing or malformed dataset is refused before any progress bar
    bundle = ModelBundle.open(args.model, args.backend)
    shape = (bundle.cfg.spatial.num_queries, bundle.cfg.spatial.embed_dim)
    train = training_features(args.model)
    names = {v.strip() for v in args.videos.split(",") if v.strip()} or None
    with progress_bar() as bar:
        task = bar.add_task("features", total=None, info="")
        videos = test_features(args.model, args.backend, args.data, names, shape,
                               lambda d, t, info="": bar.update(task, completed=d, total=t, info=str(info)))
        task = bar.add_task("variants", total=len(VARIANTS), info="")
        rows = []
        for v in VARIANTS:
            rows.append(evaluate(v, train, videos))
            bar.update(task, completed=len(rows), info=v.name)
    print(f"{len(videos)} test videos ({', '.join(v['name'] for v in videos)}); {len(train[0])} training rows")
    print(f"{'variant':<24} {'micro':>6} {'macro':>6}  per video")
    for r in rows:
        per = " ".join("-" if p is None else f"{p:.3f}" for p in r["per_video_auc"])
        macro = "-" if r["macro_auc"] is None else f"{r['macro_auc']:.3f}"
        print(f"{r['variant']:<24} {r['micro_auc']:6.3f} {macro:>6}  {per}")
    if args.json:
        from lpgb.runtime.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
