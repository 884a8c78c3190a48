"""Temporal part (paper 3.3): fusion of the two branches per frame + SMM prediction of the next frame.

f1, f2 (K, L+1, N_q, E_d), frames oldest first -> pred (K, N), error (K,), current (K, N), N = N_q*E_d:
v = fusion(f1, f2) per frame (K, L+1, N); pred = SMM(v[:, :L]); error = mean_N (pred - v[:, L])^2;
current = v[:, L], the fused local pattern of the newest frame (the `appearance` score term's input).
`error` is the per-tube anomaly score at inference and what the temporal stage minimises (the loss
lives in lpgb.trainer.losses; it can be error.mean()). K = 0 gives (0, N) and (0,).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from lpgb.runtime.config import LpgbConfig
from lpgb.trainer.models.fusion import BranchFusion
from lpgb.trainer.models.smm import SMM


class TemporalModel(nn.Module):
    def __init__(self, cfg: LpgbConfig):
        super().__init__()
        self.window = cfg.smm.window
        self.num_queries = cfg.spatial.num_queries
        self.embed_dim = cfg.spatial.embed_dim
        self.feature_dim = cfg.spatial.feature_dim
        self.fusion = BranchFusion(cfg)
        self.smm = SMM(cfg.smm, self.feature_dim)

    def fuse(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """(K, T, N_q, E_d) x2 -> v (K, T, N)."""
        k, t = f1.shape[0], f1.shape[1]
        flat = (k * t, self.num_queries, self.embed_dim)
        return self.fusion(f1.reshape(flat), f2.reshape(flat)).reshape(k, t, self.feature_dim)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        want = (self.window + 1, self.num_queries, self.embed_dim)
        for name, f in (("f1", f1), ("f2", f2)):
            if f.dim() != 4 or tuple(f.shape[1:]) != want:
                raise ValueError(f"TemporalModel expects {name} of shape (K, {', '.join(map(str, want))}), got {tuple(f.shape)}")
        v = self.fuse(f1, f2)
        pred = self.smm(v[:, : self.window])
        current = v[:, self.window]
        error = (pred - current).pow(2).mean(dim=-1)
        return pred, error, current

    def for_export(self) -> "TemporalModel":
        """An eval-mode copy whose SMM is a `FoldedSMM` (one constant (L*O, O) matrix in the model dtype).

        The legacy TorchScript ONNX exporter leaves the float64 folding of the live SMM as a double
        initializer + Cast; the dynamo exporter folds it. Export this copy and both give plain float ops.
        """
        out = copy.deepcopy(self).eval()
        out.smm = self.smm.folded()
        return out


__all__ = ["TemporalModel"]
