"""Learning-rate schedule of the spatial stage (paper 4.2): linear warm-up, then cosine decay."""

from __future__ import annotations

import math

import torch

from lpgb.trainer.config import SpatialTrainConfig


def warmup_cosine(step: int, total_steps: int, cfg: SpatialTrainConfig) -> float:
    """Learning rate at optimiser step `step` (0-based) of `total_steps`.

    Steps 0..warmup_steps: linear from cfg.warmup_lr to cfg.lr; then cosine from cfg.lr to
    cfg.min_lr at step total_steps (held at min_lr after). A run shorter than warmup_steps never
    leaves the warm-up (warmup_steps is taken as given, not shortened).
    """
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.warmup_lr + (cfg.lr - cfg.warmup_lr) * step / cfg.warmup_steps
    decay_steps = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, max(0.0, (step - cfg.warmup_steps) / decay_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, step: int, total_steps: int, cfg: SpatialTrainConfig) -> float:
    """Write warmup_cosine(step, ...) into every parameter group of `optimizer`; returns it."""
    lr = warmup_cosine(step, total_steps, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


__all__ = ["warmup_cosine", "set_lr"]
