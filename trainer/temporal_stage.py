"""Temporal stage: spatial part frozen; fusion + SMM learn to predict v(t) from v(t-L..t-1) on
tubes of normal training videos (MSE). Then score calibration from training statistics only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from lpgb.runtime.atomic import atomic_path, write_text_atomic
from lpgb.runtime.config import LpgbConfig, to_dict
from lpgb.runtime.preprocess import tubes_to_input
from lpgb.runtime.scoring import Calibration
from lpgb.runtime.sidecar import sha256_file
from lpgb.trainer.checkpoint import load_checkpoint, load_weights, save_checkpoint
from lpgb.trainer.config import TrainConfig
from lpgb.trainer.losses import temporal_loss
from lpgb.trainer.models.branch import Branch
from lpgb.trainer.models.temporal import TemporalModel
from lpgb.trainer.tube_cache import TubeCache

Progress = Callable[[int, int, str], None]


@torch.no_grad()
def extract_features(branches: tuple[Branch, Branch], cache: TubeCache, device: str, batch_tubes: int = 16,
                     progress: Optional[Progress] = None) -> tuple[np.ndarray, np.ndarray]:
    """Frozen branch features of every tube frame: two float32 arrays (M, L+1, N_q, E_d)."""
    m, t = cache.crops.shape[:2]
    form = branches[0].cfg.input_form
    outs: list[list[np.ndarray]] = [[], []]
    for start in range(0, m, batch_tubes):
        crops = np.asarray(cache.crops[start:start + batch_tubes])  # (b, L+1, S, S, 3)
        x = torch.from_numpy(tubes_to_input(crops, form)).to(device)  # (b*(L+1), 3, S, S)
        for j, branch in enumerate(branches):
            f = branch(x)  # (b*(L+1), N_q, E_d)
            outs[j].append(f.view(len(crops), t, *f.shape[1:]).cpu().numpy())
        if progress:
            progress(min(start + batch_tubes, m), m, "features")
    return np.concatenate(outs[0]), np.concatenate(outs[1])


def features_key(run_dir: Path) -> dict:
    """What RUN/tubes/features{1,2}.npy are computed from: both branches' weights (sha256), the tube
    cache's crops (size and mtime: a rebuilt cache is a new file) and the config's spatial section."""
    crops = (run_dir / "tubes" / "crops.npy").stat()
    return {"branch1_sha256": sha256_file(run_dir / "weights" / "branch1.pt"),
            "branch2_sha256": sha256_file(run_dir / "weights" / "branch2.pt"),
            "crops": [int(crops.st_size), int(crops.st_mtime_ns)],
            "spatial": to_dict(LpgbConfig.load(run_dir / "config.json").spatial)}


def load_or_extract_features(branches: tuple[Branch, Branch], cache: TubeCache, run_dir: Path, device: str,
                             progress: Optional[Progress] = None) -> tuple[np.ndarray, np.ndarray]:
    """The branch features of the cached tubes: read from RUN/tubes when RUN/tubes/features.json records the
    inputs they were computed from (`features_key`), else computed again and saved with that record."""
    folder = run_dir / "tubes"
    paths = folder / "features1.npy", folder / "features2.npy"
    record = folder / "features.json"
    key = features_key(run_dir)
    try:
        current = json.loads(record.read_text()) == key
    except (OSError, ValueError):  # no record, or an unreadable one
        current = False
    if current and all(p.is_file() for p in paths):
        f1, f2 = (np.load(p) for p in paths)
        if len(f1) == len(cache):
            return f1, f2
    record.unlink(missing_ok=True)  # first: half-written features are never taken as current
    f1, f2 = extract_features(branches, cache, device, progress=progress)
    for p, f in zip(paths, (f1, f2)):
        with atomic_path(p) as tmp:
            np.save(tmp, f)
    write_text_atomic(record, json.dumps(key, indent=2))
    return f1, f2


def train_temporal(f1: np.ndarray, f2: np.ndarray, run_dir: Path, cfg: LpgbConfig, train_cfg: TrainConfig,
                   resume: bool, progress: Optional[Progress] = None) -> TemporalModel:
    """Adam, lr from TemporalTrainConfig decayed per epoch; minimises the mean tube prediction error."""
    tcfg = train_cfg.temporal
    device = torch.device(train_cfg.device)
    torch.manual_seed(train_cfg.seed + 7)
    model = TemporalModel(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=tcfg.lr)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=tcfg.lr_decay)
    ckpt_path = run_dir / "checkpoints" / "temporal.pt"
    start_epoch = 0
    state = load_checkpoint(ckpt_path) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"]) + 1
    t1, t2 = torch.from_numpy(f1), torch.from_numpy(f2)
    steps = max(1, int(np.ceil(len(t1) / tcfg.batch_size)))
    total = steps * tcfg.epochs
    for epoch in range(start_epoch, tcfg.epochs):
        gen = torch.Generator().manual_seed(train_cfg.seed * 1000 + epoch)
        order = torch.randperm(len(t1), generator=gen)
        model.train()
        running = 0.0
        for b in range(steps):
            idx = order[b * tcfg.batch_size:(b + 1) * tcfg.batch_size]
            loss = temporal_loss(model, t1[idx].to(device), t2[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item()
            if progress:
                progress(epoch * steps + b + 1, total, f"temporal ep {epoch + 1}/{tcfg.epochs} "
                                                       f"mse {running / (b + 1):.4f} lr {scheduler.get_last_lr()[0]:.1e}")
        scheduler.step()
        save_checkpoint(ckpt_path, model=model.state_dict(), optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(), epoch=epoch)
    (run_dir / "weights").mkdir(parents=True, exist_ok=True)
    save_checkpoint(run_dir / "weights" / "temporal.pt", **model.state_dict())
    return model.eval()


@torch.no_grad()
def tube_outputs(model: TemporalModel, f1: np.ndarray, f2: np.ndarray, device: str,
                 batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-tube prediction error (M,) and fused newest-frame vector v(t) (M, N), float32."""
    model.eval()
    errors, current = [], []
    for s in range(0, len(f1), batch):
        _, e, v = model(torch.from_numpy(f1[s:s + batch]).to(device), torch.from_numpy(f2[s:s + batch]).to(device))
        errors.append(e.cpu().numpy())
        current.append(v.cpu().numpy())
    return np.concatenate(errors).astype(np.float32), np.concatenate(current).astype(np.float32)


def tube_errors(model: TemporalModel, f1: np.ndarray, f2: np.ndarray, device: str, batch: int = 256) -> np.ndarray:
    """Per-tube prediction error (M,) float32."""
    return tube_outputs(model, f1, f2, device, batch)[0]


def calibrate_run(model: TemporalModel, f1: np.ndarray, f2: np.ndarray, cache: TubeCache, videos: list,
                  run_dir: Path, cfg: LpgbConfig, device: str, progress: Optional[Progress] = None,
                  rpn_forward=None) -> Calibration:
    """Fit the configured score terms and calibrate them (training statistics only); writes RUN/terms.npz
    and RUN/calibration.json. Terms that read the networks are fitted on the training tubes; terms that do
    not, on every box of every training frame (made by the serving Proposer with `rpn_forward`, the torch
    RPN or None), as `calibrate_network_free` fits them. When the network terms read only branch 1 (the
    `irregularity` read-out), every box of every training frame also gets its branch-1 features, by the
    serving code on the torch branch, and all terms are fitted and calibrated on all boxes."""
    from lpgb.runtime.proposer import Proposer
    from lpgb.runtime.term_fit import TrainingBoxes, collect_training_boxes, fit_terms, save_fitted
    from lpgb.runtime.terms import reads_networks, term_class, terms_network_path
    from lpgb.trainer.models.irregularity import load_head_arrays

    head = load_head_arrays(run_dir)
    read_outs = {n: head for n in cfg.scoring.terms if term_class(n).trained_read_out} if head is not None else {}
    read_outs = read_outs or None
    new_proposer = lambda: Proposer(cfg.proposals, rpn_forward)  # noqa: E731
    if terms_network_path(cfg.scoring.terms) == "branch1":
        every = collect_training_boxes(videos, cfg, new_proposer, progress, rows=branch1_rows(run_dir, cfg, device))
        terms, cal, raw, keys = fit_terms(cfg, every, videos, progress=progress, read_outs=read_outs)
        save_fitted(run_dir, terms, cal, raw, keys)
        return cal
    errors, fused = tube_outputs(model, f1, f2, device)
    table = TrainingBoxes(np.asarray(cache.boxes), np.asarray(cache.meta), np.asarray(cache.frame_shapes))
    m = len(f1)
    patterns = np.concatenate([np.asarray(f1[:, -1]).reshape(m, -1), np.asarray(f2[:, -1]).reshape(m, -1)], axis=1)
    all_boxes = None
    if not all(reads_networks(n) for n in cfg.scoring.terms):
        all_boxes = collect_training_boxes(videos, cfg, new_proposer, progress)
    terms, cal, raw, keys = fit_terms(cfg, table, videos, errors, fused, progress, patterns, all_boxes, read_outs)
    save_fitted(run_dir, terms, cal, raw, keys)
    return cal


def branch1_rows(run_dir: Path, cfg: LpgbConfig, device: str):
    """`rows(builder, batch)` for `collect_training_boxes`: the branch-1 features (K, N_q * E_d) of each grouped
    box's newest crop, cut, encoded and run as serving does (`TubeScorer.patterns_batch` on the torch branch)."""
    from lpgb.runtime.pipeline import TubeScorer
    from lpgb.trainer.torch_backend import TorchBackend

    scorer = TubeScorer(TorchBackend(run_dir, device), None, cfg.spatial.input_form)
    return lambda builder, batch: scorer.patterns_batch(builder, batch, {}, both=False)["branch1"]


def calibrate_network_free(videos: list, run_dir: Path, cfg: LpgbConfig, rpn_forward,
                           progress: Optional[Progress] = None) -> Calibration:
    """Fit and calibrate score terms that read no network output (velocity, shape) on every box of every
    training frame, made by the serving Proposer and grouping (`rpn_forward`: the torch RPN or None);
    writes RUN/terms.npz, RUN/calibration.json and the held-out training scores."""
    from lpgb.runtime.proposer import Proposer
    from lpgb.runtime.term_fit import collect_training_boxes, fit_terms, save_fitted

    table = collect_training_boxes(videos, cfg, lambda: Proposer(cfg.proposals, rpn_forward), progress)
    terms, cal, raw, keys = fit_terms(cfg, table, videos, progress=progress)
    save_fitted(run_dir, terms, cal, raw, keys)
    return cal


def load_temporal(run_dir: Path, cfg: LpgbConfig) -> TemporalModel:
    model = TemporalModel(cfg)
    model.load_state_dict(load_weights(run_dir / "weights" / "temporal.pt"))
    return model.eval()
