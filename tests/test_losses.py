"""Eq. 1 contrastive loss, logit scale, lr schedule, and a short optimisation that must lower the loss."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from lpgb.runtime.config import preset
from lpgb.trainer.config import train_preset
from lpgb.trainer.losses import MAX_LOGIT_SCALE, LogitScale, caption_ids_for, itc_loss
from lpgb.trainer.models.branch import Branch
from lpgb.trainer.models.text import TextEncoder
from lpgb.trainer.schedule import set_lr, warmup_cosine

torch.set_num_threads(1)
TINY = preset("tiny").spatial


def reference_itc(img, txt, ids, logit_scale, eps):
    """Loop version of Eq. 1 with shared-caption masking and label smoothing over allowed columns."""
    img = torch.nn.functional.normalize(img.double(), dim=-1)
    txt = torch.nn.functional.normalize(txt.double(), dim=-1)
    b, n_s = ids.shape
    scale = math.exp(min(float(logit_scale), MAX_LOGIT_SCALE))
    total = 0.0
    for n in range(n_s):
        s = torch.tensor([[float((img[i] @ txt[c, n]).max()) for c in range(b)] for i in range(b)]) * scale
        for mat in (s, s.t()):
            rows = []
            for i in range(b):
                allowed = [c for c in range(b) if c == i or ids[c, n] != ids[i, n]]
                logp = torch.log_softmax(mat[i, allowed], dim=0)
                diag = allowed.index(i)
                rows.append(-(1 - eps) * logp[diag] - eps * logp.mean())
            total += 0.5 * float(torch.stack(rows).mean())
    return total / n_s


def test_itc_matches_loop_reference_with_shared_captions():
    torch.manual_seed(0)
    img, txt = torch.randn(5, 4, 8), torch.randn(5, 3, 8)
    ids = torch.tensor([[0, 5, 9], [1, 5, 9], [0, 6, 9], [2, 7, 10], [3, 8, 9]])
    scale = torch.tensor(math.log(1 / 0.07))
    got = float(itc_loss(img, txt, ids, scale, TINY))
    want = reference_itc(img, txt, ids, scale, TINY.label_smoothing)
    print(f"itc {got:.6f} reference {want:.6f}")
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_shared_caption_pairs_are_not_negatives():
    img = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]]])  # crops 0 and 1 identical
    txt = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]]])  # and so are their captions
    ids = torch.tensor([[0], [0], [1]])
    cfg = dataclasses.replace(TINY, label_smoothing=0.0)
    loss = itc_loss(img, txt, ids, torch.tensor(MAX_LOGIT_SCALE), cfg)
    unmasked = itc_loss(img, txt, torch.tensor([[0], [1], [2]]), torch.tensor(MAX_LOGIT_SCALE), cfg)
    assert float(loss) == pytest.approx(0.0, abs=1e-4)  # a perfect match costs nothing
    # without the mask the duplicate is a negative as close as the positive: log(2) on 2 of 3 rows
    assert float(unmasked) == pytest.approx(2 / 3 * math.log(2), rel=1e-3)


def test_zero_and_one_crop_batches():
    scale = LogitScale(TINY)
    img = torch.zeros(0, TINY.num_queries, TINY.embed_dim, requires_grad=True)
    txt = torch.zeros(0, 3, TINY.embed_dim, requires_grad=True)
    loss = itc_loss(img, txt, torch.zeros(0, 3, dtype=torch.int64), scale(), TINY)
    assert loss.item() == 0.0
    loss.backward()
    assert scale.value.grad is not None and img.grad is not None
    one_img = torch.randn(1, TINY.num_queries, TINY.embed_dim, requires_grad=True)
    one = itc_loss(one_img, torch.randn(1, 1, TINY.embed_dim), torch.zeros(1, 1, dtype=torch.int64), scale(), TINY)
    assert one.item() == pytest.approx(0.0, abs=1e-6) and torch.isfinite(one)
    one.backward()
    assert torch.isfinite(one_img.grad).all()


def test_logit_scale_init_and_clamp():
    s = LogitScale(TINY)
    assert s().item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        s.value.fill_(10.0)
    assert s().item() == pytest.approx(MAX_LOGIT_SCALE)


def test_caption_ids_for():
    ids = caption_ids_for([["a", "b"], ["a", "c"], ["d", "b"]])
    assert ids.tolist() == [[0, 1], [0, 2], [3, 1]]
    assert caption_ids_for([]).shape == (0, 0)


def test_warmup_cosine_schedule():
    cfg = train_preset("paper").spatial  # warm-up 1e-6 -> 1e-4 over 5000 steps, cosine to 1e-5
    total = 20000
    assert warmup_cosine(0, total, cfg) == pytest.approx(1e-6)
    assert warmup_cosine(2500, total, cfg) == pytest.approx((1e-6 + 1e-4) / 2)
    assert warmup_cosine(5000, total, cfg) == pytest.approx(1e-4)
    assert warmup_cosine(12500, total, cfg) == pytest.approx((1e-4 + 1e-5) / 2)
    assert warmup_cosine(total, total, cfg) == pytest.approx(1e-5)
    assert warmup_cosine(total + 10, total, cfg) == pytest.approx(1e-5)
    lrs = [warmup_cosine(s, total, cfg) for s in range(5000, total, 500)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert set_lr(opt, 5000, total, cfg) == pytest.approx(1e-4) and opt.param_groups[0]["lr"] == pytest.approx(1e-4)


def _synthetic_batch():
    """8 crops of 4 kinds (a bright square in a different corner and colour); 4 distinct captions."""
    g = torch.Generator().manual_seed(0)
    s = TINY.image_size
    x = 0.3 * torch.randn(8, 3, s, s, generator=g)
    words = ["standing", "walking left", "running right", "lying down"]
    for k in range(8):
        kind = k % 4
        r, c = divmod(kind, 2)
        x[k, kind % 3, r * s // 2:(r + 1) * s // 2, c * s // 2:(c + 1) * s // 2] += 2.0
    captions = [[f"A person is {words[k % 4]}"] for k in range(8)]
    return x, captions


def test_loss_falls_on_a_tiny_batch():
    torch.manual_seed(0)
    branch, text, scale = Branch(TINY), TextEncoder(TINY), LogitScale(TINY)
    x, captions = _synthetic_batch()
    ids = caption_ids_for(captions)
    tokens = text.tokenize([c[0] for c in captions])
    params = [*branch.parameters(), *text.parameters(), *scale.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    losses = []
    for _ in range(30):
        loss = itc_loss(branch(x), text(tokens).unsqueeze(1), ids, scale(), TINY)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print("loss", [round(v, 3) for v in losses[::5]], round(losses[-1], 3))
    assert all(math.isfinite(v) for v in losses)
    # last-5 / first-3 mean loss over model seeds 0-5 on one 2-core CPU: 0.27-0.48 (seed 0: 0.34); the same
    # seed lands elsewhere in that spread on another CPU, so 0.7 (no learning: about 1) rather than 0.5
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:3]) / 3
