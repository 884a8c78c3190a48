"""Losses of the trainer (never inside models). Spatial part: image-text contrastive, paper Eq. 1."""

from __future__ import annotations

import math

import torch
from torch import nn

from lpgb.runtime.config import SpatialConfig

MAX_LOGIT_SCALE = math.log(100.0)


class LogitScale(nn.Module):
    """Learnable log inverse temperature, init log(1 / cfg.init_temperature), clamped to log(100).

    Kept by the training wrapper (beside the branch and text encoder), not by the inference model.
    """

    def __init__(self, cfg: SpatialConfig) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))

    def forward(self) -> torch.Tensor:
        return self.value.clamp(max=MAX_LOGIT_SCALE)


def _smoothed_ce(logits: torch.Tensor, allowed: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Row-wise cross-entropy with the diagonal as target, over allowed columns only.

    Label smoothing spreads `smoothing` uniformly over the allowed columns of each row (the
    diagonal included), as torch's `label_smoothing` does over all columns.
    """
    logp = logits.masked_fill(~allowed, -1e9).log_softmax(dim=-1)  # (B, B)
    logp = logp.masked_fill(~allowed, 0.0)
    n_allowed = allowed.sum(dim=-1).to(logp.dtype)  # (B,)
    nll = -logp.diagonal()  # (B,)
    uniform = -logp.sum(dim=-1) / n_allowed  # (B,)
    return ((1.0 - smoothing) * nll + smoothing * uniform).mean()


def itc_loss(image_feats: torch.Tensor, text_feats: torch.Tensor, caption_ids: torch.Tensor,
             logit_scale: torch.Tensor, cfg: SpatialConfig) -> torch.Tensor:
    """Image-text contrastive loss of paper Eq. 1, averaged over the N_s sentence groups.

    image_feats (B, N_q, E): the branch outputs F^I of B crops.
    text_feats (B, N_s, E): the text encoder outputs of each crop's N_s sentences (branch 1:
        N_s = 1, action; branch 2: N_s = 3, appearance / place / objects).
    caption_ids (B, N_s) int64: an id per distinct sentence (same id = same text).
    logit_scale: log inverse temperature (`LogitScale()`); clamped to log(100) here as well.

    For group n, s[i, c] = max over the N_q queries of cos(F^I_i[q], F^T_c[n]) and
    logits = s * exp(logit_scale). Loss = mean over groups of
    (CE(image -> text, rows) + CE(text -> image, columns)) / 2, diagonal targets, label smoothing
    cfg.label_smoothing.

    Shared captions: crops i != c whose group-n captions are the same sentence (same caption_id)
    are not negatives of each other (their texts are identical, so "matching" the other one is
    not an error). Those off-diagonal entries are removed from both softmaxes; the diagonal is
    always kept as the target. A row whose caption is shared by every crop therefore contributes
    zero loss. B = 1 gives zero (one candidate); B = 0 gives a zero that is still connected to
    the graph (backward works, all grads zero).
    """
    b, n_s = caption_ids.shape[0], text_feats.shape[1]
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    if b == 0:
        return image_feats.sum() * 0.0 + text_feats.sum() * 0.0 + scale * 0.0
    img = nn.functional.normalize(image_feats.float(), dim=-1)  # (B, N_q, E)
    txt = nn.functional.normalize(text_feats.float(), dim=-1)  # (B, N_s, E)
    eye = torch.eye(b, dtype=torch.bool, device=img.device)  # (B, B)
    total = img.new_zeros(())
    for n in range(n_s):
        sim = torch.einsum("iqe,ce->icq", img, txt[:, n]).amax(dim=-1)  # (B, B) image i, text c
        logits = sim * scale  # (B, B)
        ids = caption_ids[:, n]  # (B,)
        allowed = (ids[:, None] != ids[None, :]) | eye  # (B, B), symmetric
        i2t = _smoothed_ce(logits, allowed, cfg.label_smoothing)
        t2i = _smoothed_ce(logits.t(), allowed.t(), cfg.label_smoothing)
        total = total + 0.5 * (i2t + t2i)
    return total / n_s


def caption_ids_for(sentences: list[list[str]]) -> torch.Tensor:
    """(B, N_s) int64 ids from the sentences of each crop: equal strings get equal ids."""
    table: dict[str, int] = {}
    rows = [[table.setdefault(s, len(table)) for s in crop] for crop in sentences]
    if not rows:
        return torch.zeros(0, 0, dtype=torch.int64)
    return torch.tensor(rows, dtype=torch.int64)


def temporal_loss(model: nn.Module, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """MSE of predicting v(t) from v(t-L..t-1), with a stop-gradient on the target v(t).

    f1, f2 (K, L+1, N_q, E_d). The fusion makes both the SMM's input and its target, so minimising
    the plain error lets it collapse to a constant v (measured on the synthetic set: tube errors fell
    to 1e-3 and frame micro AUC to 0.556). Stopping the gradient through the target (as in SimSiam /
    BYOL) keeps fusion and SMM trained together (paper 4.2) without that trivial solution (0.627 on
    the same features; a frozen fusion gave 0.626).
    """
    v = model.fuse(f1, f2)  # (K, L+1, N)
    pred = model.smm(v[:, :-1])  # (K, N)
    return (pred - v[:, -1].detach()).pow(2).mean()


__all__ = ["itc_loss", "temporal_loss", "reconstruction_loss", "irregularity_loss", "LogitScale", "caption_ids_for", "MAX_LOGIT_SCALE"]


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between a decoded crop `pred` (B, 3, S', S') and the branch input `target`
    (B, 3, S, S), compared at the input's size (the decoder's output is resized when S' != S)."""
    if pred.shape[-1] != target.shape[-1]:
        pred = nn.functional.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return nn.functional.mse_loss(pred, target)


def irregularity_loss(consecutive: torch.Tensor, skipped: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the irregularity head's logits: crops encoded from consecutive frames
    `consecutive` (B,) are the normal class (0), the same objects encoded from every second frame `skipped`
    (B,) the irregular one (1)."""
    logits = torch.cat([consecutive, skipped])
    target = torch.cat([torch.zeros_like(consecutive), torch.ones_like(skipped)])
    return nn.functional.binary_cross_entropy_with_logits(logits, target)
