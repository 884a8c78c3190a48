"""Text-attention module (paper 3.2), used only for training the spatial branches.

    sentences -> open_clip's BPE tokenizer (ships in the package, no download), truncated/padded
      to S_t = cfg.text_context: [SOT, tokens..., EOT, 0...] (B, S_t) int64
      -> token embedding (49408 x H_d) + learned position embedding (B, S_t, H_d)
      -> text_layers pre-LN self-attention layers (QueryLayer without cross-attention), CAUSAL
         like CLIP's text tower: token t attends to tokens <= t, so padding after EOT never
         reaches the pooled token and no padding mask is needed
      -> LayerNorm -> pooled at the EOT token (argmax of the ids: EOT has the largest id, as in
         CLIP) (B, H_d) -> Linear H_d -> E_d (B, E_d)

Width H_d = cfg.hidden_dim, heads cfg.text_heads (paper: 768 / 12, BERT-base sized).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from lpgb.runtime.config import SpatialConfig
from lpgb.trainer.models.attention import QueryLayer, causal_mask, init_weights


@functools.lru_cache(maxsize=8)
def get_tokenizer(context_length: int):
    """open_clip's SimpleTokenizer (its BPE vocabulary is a file inside the open_clip package)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


def vocab_size() -> int:
    return len(get_tokenizer(77).encoder)


class TextEncoder(nn.Module):
    """forward(tokens (B, S_t) int64) -> (B, E_d). `tokenize(list[str])` makes the tokens."""

    def __init__(self, cfg: SpatialConfig) -> None:
        super().__init__()
        self.cfg = cfg
        width = cfg.hidden_dim
        self.token_embedding = nn.Embedding(vocab_size(), width)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.text_context, width))
        self.layers = nn.ModuleList(
            QueryLayer(width, cfg.text_heads, cfg.mlp_ratio, cross_attention=False) for _ in range(cfg.text_layers)
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, cfg.embed_dim)
        self.register_buffer("mask", causal_mask(cfg.text_context), persistent=False)  # (S_t, S_t)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.01)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """(B, S_t) int64 token ids, truncated (EOT kept last) or zero-padded to cfg.text_context."""
        return get_tokenizer(self.cfg.text_context)(list(texts))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t = tokens.shape  # (B, S_t)
        x = self.token_embedding(tokens) + self.pos_embed[:, :t]  # (B, S_t, H_d)
        mask = self.mask[:t, :t]  # (S_t, S_t)
        for layer in self.layers:
            x = layer(x, mask=mask)  # (B, S_t, H_d)
        x = self.norm(x)  # (B, S_t, H_d)
        eot = tokens.argmax(dim=-1)  # (B,)
        pooled = x[torch.arange(b, device=x.device), eot]  # (B, H_d)
        return self.head(pooled)  # (B, E_d)


__all__ = ["TextEncoder", "get_tokenizer", "vocab_size"]
