"""Crop decoder (training only): reconstructs what a branch saw from its output F, so that F keeps the
object's appearance and motion (an object-centric autoencoder objective beside the contrastive loss;
Ionescu et al., CVPR 2019). Never exported: serving reads F itself (the `patterns` term).

    F (B, N_q, E_d) -> flatten -> Linear -> (B, C, g, g), g = ceil(S / 16)
      -> [ConvTranspose 4x4 s2 + GELU] x 4 -> Conv 3x3 -> (B, 3, 16g, 16g), compared with the input at S
"""

from __future__ import annotations

import torch
from torch import nn

from lpgb.runtime.config import SpatialConfig

DECODER_CHANNELS = 64


class CropDecoder(nn.Module):
    """forward(F (B, N_q, E_d)) -> reconstruction (B, 3, S', S') with S' = 16 * ceil(S / 16)."""

    def __init__(self, cfg: SpatialConfig) -> None:
        super().__init__()
        self.grid = -(-cfg.image_size // 16)
        c = DECODER_CHANNELS
        self.project = nn.Linear(cfg.feature_dim, c * self.grid * self.grid)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), nn.GELU(),
            nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), nn.GELU(),
            nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1), nn.GELU(),
            nn.ConvTranspose2d(c // 2, c // 2, 4, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(c // 2, 3, 3, padding=1),
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = self.project(feats.flatten(1))  # (B, C * g * g)
        x = x.view(len(feats), -1, self.grid, self.grid)  # (B, C, g, g)
        return self.up(x)  # (B, 3, 16g, 16g)


__all__ = ["CropDecoder", "DECODER_CHANNELS"]
