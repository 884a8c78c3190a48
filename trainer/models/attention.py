"""Attention building blocks shared by the image- and text-attention modules.

The default path writes multi-head attention out (Linear q/k/v/out, matmul, softmax) so that it
exports to plain ONNX MatMul/Softmax nodes with no fused-attention op. `use_fused=True` switches
one module (or, through `set_fused`, a whole model) to `F.scaled_dot_product_attention`, which
is faster in training and agrees with the explicit path to ~1e-5 (tested).

Blocks are pre-LayerNorm (x + f(LN(x))), as in BLIP-2's successors and open_clip.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadAttention(nn.Module):
    """Multi-head attention of `dim`-wide queries over `kv_dim`-wide keys/values.

    `mask` is an additive float mask broadcastable to (B, heads, T, S) (0 = attend, -inf = not).
    """

    def __init__(self, dim: int, num_heads: int, kv_dim: int | None = None, use_fused: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        kv_dim = dim if kv_dim is None else kv_dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.use_fused = use_fused
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(kv_dim, dim)
        self.v = nn.Linear(kv_dim, dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, n, d)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, t, dim = x.shape  # (B, T, D)
        q = self._split(self.q(x))  # (B, h, T, d)
        k = self._split(self.k(context))  # (B, h, S, d)
        v = self._split(self.v(context))  # (B, h, S, d)
        if self.use_fused:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, T, d)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # (B, h, T, S)
            if mask is not None:
                att = att + mask
            att = att.softmax(dim=-1)  # (B, h, T, S)
            y = att @ v  # (B, h, T, d)
        y = y.transpose(1, 2).reshape(b, t, dim)  # (B, T, D)
        return self.out(y)  # (B, T, D)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(round(dim * mlp_ratio))
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))  # (B, T, D)


class QueryLayer(nn.Module):
    """Pre-LN layer: self-attention, optional cross-attention to `context`, feed-forward (GELU).

    Used for the image-attention module (queries, cross-attention to image tokens) and, without
    cross-attention, as the text-attention module's transformer layer.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, cross_attention: bool = False,
                 context_dim: int | None = None, use_fused: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = MultiHeadAttention(dim, num_heads, use_fused=use_fused)
        self.has_cross = cross_attention
        if cross_attention:
            self.norm_cross = nn.LayerNorm(dim)
            self.cross_attn = MultiHeadAttention(dim, num_heads, kv_dim=context_dim, use_fused=use_fused)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), mask=mask)  # (B, T, D)
        if self.has_cross:
            if context is None:
                raise ValueError("this layer cross-attends: pass the image tokens as `context`")
            x = x + self.cross_attn(self.norm_cross(x), context)  # (B, T, D)
        return x + self.mlp(self.norm2(x))  # (B, T, D)


def causal_mask(length: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive (T, T) mask: 0 on and below the diagonal, -inf above (token t sees tokens <= t)."""
    return torch.full((length, length), float("-inf"), device=device, dtype=dtype).triu(1)


def set_fused(module: nn.Module, fused: bool) -> nn.Module:
    """Switch every MultiHeadAttention inside `module` between the explicit and the fused path."""
    for m in module.modules():
        if isinstance(m, MultiHeadAttention):
            m.use_fused = fused
    return module


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT/BLIP-2 style init for Linear/LayerNorm/Embedding (apply with `module.apply`)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.trunc_normal_(module.weight, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


__all__ = ["MultiHeadAttention", "FeedForward", "QueryLayer", "causal_mask", "set_fused", "init_weights"]
