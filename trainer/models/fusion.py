"""Fusion of the two branches (paper Fig. 2; the first op of the `smm` part): one cross-attention layer.

F1, F2 (B, N_q, E_d) -> v (B, N_q*E_d). Queries from F1 (actions) attend to F2 (appearance / place /
objects); output projection, residual to F1, LayerNorm, flatten. Written with Linear/matmul/softmax
(no nn.MultiheadAttention, no fused SDPA) so the ONNX graph is plain ops. Under float16/bfloat16 the
attention scores go through softmax in float32 (explicit casts, kept by the exporter).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lpgb.runtime.config import LpgbConfig


class BranchFusion(nn.Module):
    def __init__(self, cfg: LpgbConfig):
        super().__init__()
        e, h = cfg.spatial.embed_dim, cfg.smm.fusion_heads
        if h < 1 or e % h:
            raise ValueError(f"embed_dim {e} must be divisible by fusion_heads {h}")
        self.num_queries, self.embed_dim, self.heads = cfg.spatial.num_queries, e, h
        self.head_dim = e // h
        self.q = nn.Linear(e, e)
        self.k = nn.Linear(e, e)
        self.v = nn.Linear(e, e)
        self.out = nn.Linear(e, e)
        self.norm = nn.LayerNorm(e)
        self.reset_parameters(cfg.smm.init_std)

    def reset_parameters(self, std: float) -> None:
        for lin in (self.q, self.k, self.v, self.out):
            nn.init.normal_(lin.weight, 0.0, std)
            nn.init.zeros_(lin.bias)
        nn.init.ones_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, Q, E) -> (B, H, Q, D)
        return x.reshape(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        b, nq, e = f1.shape
        q, k, v = self._split(self.q(f1)), self._split(self.k(f2)), self._split(self.v(f2))
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim))  # (B, H, Q, Q)
        if scores.dtype in (torch.float16, torch.bfloat16):
            att = torch.softmax(scores.to(torch.float32), dim=-1).to(scores.dtype)
        else:
            att = torch.softmax(scores, dim=-1)
        mixed = (att @ v).transpose(1, 2).reshape(b, nq, e)
        fused = self.norm(f1 + self.out(mixed))
        return fused.reshape(b, nq * e)


__all__ = ["BranchFusion"]
