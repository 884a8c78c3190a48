"""One spatial branch (paper 3.2): ResNet-18 conv1..layer2 backbone + image-attention module.

    crop (B, 3, S, S) -> ResNet-18 stem..layer2 (B, 128, S/8, S/8), trained from scratch
      -> average-pooled to token_grid x token_grid -> Linear 128 -> V_d per token
      -> [class token; tokens] + position embedding (B, S_d = grid^2 + 1, V_d) -> LayerNorm
      -> Linear V_d -> H_d (identity when equal)
      -> image-attention module: N_q learned queries, num_layers pre-LN QueryLayers
         (self-attention every layer, cross-attention to the tokens every
         `cross_attention_every`-th layer starting with the first, BLIP-2 style)
      -> LayerNorm -> Linear H_d -> E_d = F (B, N_q, E_d)

The paper writes 28x28x512 for the backbone output; ResNet-18's layer2 gives 28x28x128 at 224
(see DESIGN.md), so a learned projection lifts 128 to V_d. The pooling to the token grid is an
exact adaptive average pool written as two fixed matrix products, so it exports to ONNX for any
map/grid ratio (ONNX AdaptiveAvgPool only exists for divisible sizes). The input side is fixed to
`cfg.image_size` (the position embedding fixes the token count anyway).
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from lpgb.runtime.config import SpatialConfig
from lpgb.trainer.models.attention import QueryLayer, init_weights

BACKBONE_CHANNELS = 128  # ResNet-18 layer2


def backbone_map_size(image_size: int) -> int:
    """Side of ResNet-18's layer2 map: conv1 (s2), maxpool (s2), layer2 (s2), each ceil-halving."""
    side = image_size
    for _ in range(3):
        side = (side - 1) // 2 + 1
    return side


def adaptive_pool_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """(size_out, size_in) averaging matrix with exactly torch's adaptive_avg_pool bins."""
    mat = torch.zeros(size_out, size_in)
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = -((-(i + 1) * size_in) // size_out)  # ceil
        mat[i, start:end] = 1.0 / (end - start)
    return mat


class Branch(nn.Module):
    """Backbone + image-attention module. forward(x (B,3,S,S) normalised RGB) -> F (B, N_q, E_d)."""

    def __init__(self, cfg: SpatialConfig) -> None:
        super().__init__()
        self.cfg = cfg
        resnet = torchvision.models.resnet18(weights=None)
        self.backbone = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                      resnet.layer1, resnet.layer2)
        side = backbone_map_size(cfg.image_size)
        if side < cfg.token_grid:
            raise ValueError(f"image_size {cfg.image_size} gives a {side}x{side} map, smaller than "
                             f"token_grid {cfg.token_grid}")
        pool = adaptive_pool_matrix(side, cfg.token_grid)
        self.register_buffer("pool", pool, persistent=False)  # (g, m)
        self.token_proj = nn.Linear(BACKBONE_CHANNELS, cfg.vision_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.vision_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.vision_dim))
        self.token_norm = nn.LayerNorm(cfg.vision_dim)
        self.to_hidden = (nn.Identity() if cfg.vision_dim == cfg.hidden_dim
                          else nn.Linear(cfg.vision_dim, cfg.hidden_dim))
        self.queries = nn.Parameter(torch.zeros(1, cfg.num_queries, cfg.hidden_dim))
        self.layers = nn.ModuleList(
            QueryLayer(cfg.hidden_dim, cfg.num_heads, cfg.mlp_ratio,
                       cross_attention=(i % cfg.cross_attention_every == 0))
            for i in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(cfg.hidden_dim)
        self.head = nn.Linear(cfg.hidden_dim, cfg.embed_dim)
        # init: the ResNet keeps torchvision's (kaiming) init; the rest BERT-style N(0, 0.02)
        for module in (self.token_proj, self.token_norm, self.to_hidden, self.layers, self.norm, self.head):
            module.apply(init_weights)
        for p in (self.cls_token, self.pos_embed, self.queries):
            nn.init.trunc_normal_(p, std=0.02)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Image tokens H^I (B, S_d, H_d) that the queries cross-attend to."""
        fmap = self.backbone(x)  # (B, 128, m, m)
        pooled = torch.matmul(torch.matmul(self.pool, fmap), self.pool.t())  # (B, 128, g, g)
        tok = pooled.flatten(2).transpose(1, 2)  # (B, g*g, 128)
        tok = self.token_proj(tok)  # (B, g*g, V_d)
        cls = self.cls_token.expand(tok.shape[0], -1, -1)  # (B, 1, V_d)
        tok = torch.cat([cls, tok], dim=1) + self.pos_embed  # (B, S_d, V_d)
        return self.to_hidden(self.token_norm(tok))  # (B, S_d, H_d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.tokens(x)  # (B, S_d, H_d)
        q = self.queries.expand(x.shape[0], -1, -1)  # (B, N_q, H_d)
        for layer in self.layers:
            q = layer(q, context)  # (B, N_q, H_d)
        return self.head(self.norm(q))  # (B, N_q, E_d)


def count_params_and_flops(cfg: SpatialConfig) -> tuple[int, int]:
    """(parameters, FLOPs per crop) of one Branch at `cfg`.

    FLOPs are torch.utils.flop_counter's count (2 x multiply-adds of conv, linear, matmul; norms,
    softmax and activations not counted) for one crop, taken on the meta device, so nothing is
    allocated or computed.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = Branch(cfg).eval()
        x = torch.zeros(1, 3, cfg.image_size, cfg.image_size)
    params = sum(p.numel() for p in model.parameters())
    model.requires_grad_(False)  # (no torch.no_grad: FlopCounterMode's module tracker needs autograd on)
    with FlopCounterMode(display=False) as counter:
        model(x)
    return params, int(counter.get_total_flops())


__all__ = ["Branch", "backbone_map_size", "adaptive_pool_matrix", "count_params_and_flops", "BACKBONE_CHANNELS"]
