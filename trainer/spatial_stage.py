"""Spatial stage: each branch (backbone + image-attention) trained with its text-attention module
by the image-text contrastive loss (paper Eq. 1). Branch 1 learns action sentences; branch 2 the
appearance, place and nearby-object sentences. Checkpoints every epoch; resumable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from lpgb.runtime.atomic import write_text_atomic
from lpgb.runtime.config import LpgbConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.preprocess import crops_to_input, encode_tubes
from lpgb.trainer.checkpoint import load_checkpoint, load_weights, save_checkpoint
from lpgb.trainer.config import SpatialTrainConfig, TrainConfig
from lpgb.trainer.losses import LogitScale, irregularity_loss, itc_loss, reconstruction_loss
from lpgb.trainer.models.branch import Branch
from lpgb.trainer.models.decoder import CropDecoder
from lpgb.trainer.models.irregularity import IrregularityHead, load_head_arrays, save_head
from lpgb.trainer.models.text import TextEncoder
from lpgb.trainer.schedule import warmup_cosine
from lpgb.trainer.tube_cache import TubeCache

BRANCH_SENTENCES: dict[int, tuple[str, ...]] = {1: ("action",), 2: ("appearance", "place", "objects")}
Progress = Callable[[int, int, str], None]


class ContrastivePair(nn.Module):
    """Training wrapper: one branch, its text encoder, the learnable temperature (log scale), when the
    reconstruction loss is on the crop decoder, and when the irregularity task is on its head."""

    def __init__(self, cfg: LpgbConfig, decoder: bool = False, irregularity: bool = False) -> None:
        super().__init__()
        self.branch = Branch(cfg.spatial)
        self.text = TextEncoder(cfg.spatial)
        self.logit_scale = LogitScale(cfg.spatial)
        self.decoder = CropDecoder(cfg.spatial) if decoder else None
        self.irregularity = IrregularityHead(cfg.spatial) if irregularity else None


@dataclass(frozen=True)
class CaptionTable:
    """Sentences per tube and their ids per sentence type (ids index `vocab[type]`)."""

    sentences: dict[str, list[str]]  # type -> (M,) sentence per tube
    vocab: dict[str, list[str]]  # type -> distinct sentences
    ids: dict[str, np.ndarray]  # type -> (M,) int64

    @classmethod
    def from_records(cls, records: list[dict[str, str]]) -> "CaptionTable":
        types = ("action", "appearance", "place", "objects")
        sentences = {t: [r[t] for r in records] for t in types}
        vocab = {t: sorted(set(s)) for t, s in sentences.items()}
        ids = {t: np.array([vocab[t].index(s) for s in sentences[t]], np.int64) for t in types}
        return cls(sentences, vocab, ids)


def load_or_make_captions(cache: TubeCache, run_dir: Path, cfg: LpgbConfig, train_cfg: TrainConfig,
                          progress: Optional[Progress] = None) -> CaptionTable:
    """Captions are computed once per tube and cached in RUN/captions.jsonl."""
    from lpgb.trainer.captioners import make_captioner

    path = run_dir / "captions.jsonl"
    if path.is_file():
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if len(records) == len(cache):
            return CaptionTable.from_records(records)
    captioner = make_captioner(train_cfg.spatial)
    records = []
    chunk = 64
    for start in range(0, len(cache), chunk):
        stop = min(start + chunk, len(cache))
        for i, caps in zip(range(start, stop), _caption_chunk(captioner, cache, start, stop)):
            records.append({"key": tube_key(cache, i), "action": caps.action,
                            "appearance": caps.appearance, "place": caps.place, "objects": caps.objects})
        if progress:
            progress(stop, len(cache), "captions")
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
    return CaptionTable.from_records(records)


def tube_key(cache: TubeCache, i: int) -> str:
    """Crop key used in captions.jsonl and by `--captioner file`: video/frame(6 digits)/box index."""
    video, frame, k = (int(x) for x in cache.meta[i])
    return f"{cache.video_names[video]}/{frame:06d}/{k}"


def _caption_chunk(captioner, cache: TubeCache, start: int, stop: int) -> list:
    """Caption tubes [start, stop) one by one (each tube may come from a different video/frame shape)."""
    out = []
    for i in range(start, stop):
        shape = tuple(int(x) for x in cache.frame_shapes[cache.meta[i, 0]])
        out.extend(captioner.caption(np.asarray(cache.crops[i:i + 1]), cache.boxes[i:i + 1], shape,
                                     keys=[tube_key(cache, i)]))
    return out


def split_holdout(n: int, every: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split: every `every`-th tube is held out for retrieval accuracy."""
    idx = np.arange(n)
    held = idx[idx % every == every - 1]
    return np.setdiff1d(idx, held), held


def _batch_input(cache: TubeCache, index: np.ndarray, rng: np.random.Generator, form: str) -> torch.Tensor:
    """One random frame of each tube, as the branches see it (`encode_tubes`): (B, 3, S, S) float32.
    With motion input only steps with both frame differences (2..L) are drawn, as served."""
    t = cache.crops.shape[1]
    first = min(2, t - 1) if form == "motion" else 0
    steps = rng.integers(first, t, size=len(index))
    crops = np.stack([encode_tubes(cache.crops[i, max(0, s - 2):s + 1], form)[-1] for i, s in zip(index, steps)])
    return torch.from_numpy(crops_to_input(crops))


SKIP = 2  # the irregular class: each crop encoded from every SKIP-th frame (twice the speed)


def irregularity_branch(branch_id: int, cfg: LpgbConfig, tcfg: SpatialTrainConfig, tube_steps: int) -> bool:
    """Whether branch `branch_id` learns the irregularity task: branch 1 (actions), with epochs > 0; refuses
    an input that has no motion channels or tubes too short for the skipped-frame encoding."""
    if branch_id != 1 or tcfg.irregularity_epochs <= 0:
        return False
    if cfg.spatial.input_form != "motion":
        raise LpgbError("the irregularity task reads the crops' motion channels: train with --branch-input motion")
    if tube_steps < 2 * SKIP + 1:
        raise LpgbError(f"the irregularity task needs tubes of at least {2 * SKIP + 1} frames; "
                        f"this run's have {tube_steps}")
    return True


def _skipped_input(cache: TubeCache, index: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """The same tubes' crops motion-encoded from every SKIP-th frame (steps j - 2 SKIP, j - SKIP, j):
    (B, 3, S, S) float32, what an object moving SKIP times faster looks like to the branch."""
    t = cache.crops.shape[1]
    steps = rng.integers(2 * SKIP, t, size=len(index))
    crops = np.stack([encode_tubes(cache.crops[i, [s - 2 * SKIP, s - SKIP, s]], "motion")[-1]
                      for i, s in zip(index, steps)])
    return torch.from_numpy(crops_to_input(crops))


def _irregularity_step(model: "ContrastivePair", cache: TubeCache, index: np.ndarray, rng: np.random.Generator,
                       device: torch.device) -> torch.Tensor:
    """The proxy loss on tubes `index`: each tube's crop encoded from consecutive frames (a random step, as
    `_batch_input`) against one encoded from every SKIP-th frame; both mirrored left-right half the time."""
    x = torch.cat([_batch_input(cache, index, rng, "motion"), _skipped_input(cache, index, rng)])  # (2B, 3, S, S)
    if rng.random() < 0.5:
        x = torch.flip(x, dims=[3])
    logits = model.irregularity(model.branch(x.to(device)))  # (2B,)
    return irregularity_loss(logits[:len(index)], logits[len(index):])


@torch.no_grad()
def irregularity_accuracy(branch: Branch, head: IrregularityHead, cache: TubeCache, index: np.ndarray,
                          seed: int = 0) -> dict[str, float]:
    """Held-out accuracy of the proxy task (consecutive vs skipped frames, 0.5 = chance) on tubes `index`."""
    rng = np.random.default_rng(seed)
    right = 0
    for s in range(0, len(index), 128):
        part = index[s:s + 128]
        right += int((head(branch(_batch_input(cache, part, rng, "motion"))) < 0).sum())
        right += int((head(branch(_skipped_input(cache, part, rng))) > 0).sum())
    return {"accuracy": right / max(1, 2 * len(index)), "chance": 0.5, "held_out": float(len(index))}


def train_branch(branch_id: int, cache: TubeCache, captions: CaptionTable, run_dir: Path, cfg: LpgbConfig,
                 train_cfg: TrainConfig, resume: bool, progress: Optional[Progress] = None) -> Branch:
    """Train branch `branch_id`; returns the trained Branch (weights also in RUN/weights/branchN.pt)."""
    tcfg = train_cfg.spatial
    device = torch.device(train_cfg.device)
    torch.manual_seed(train_cfg.seed + branch_id)
    irregular = irregularity_branch(branch_id, cfg, tcfg, cache.crops.shape[1])
    model = ContrastivePair(cfg, decoder=tcfg.reconstruction_weight > 0, irregularity=irregular).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg.warmup_lr, weight_decay=tcfg.weight_decay)
    train_idx, _ = split_holdout(len(cache))
    steps_per_epoch = max(1, int(np.ceil(len(train_idx) / tcfg.batch_size)))
    total = steps_per_epoch * tcfg.epochs
    types = BRANCH_SENTENCES[branch_id]
    ckpt_path = run_dir / "checkpoints" / f"spatial_branch{branch_id}.pt"
    start_epoch = 0
    state = load_checkpoint(ckpt_path) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = int(state["epoch"]) + 1
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, tcfg.epochs):
        rng = np.random.default_rng(train_cfg.seed * 1000 + epoch)
        order = rng.permutation(train_idx)
        model.train()
        for b in range(steps_per_epoch):
            index = np.sort(order[b * tcfg.batch_size:(b + 1) * tcfg.batch_size])
            if len(index) < 2:
                continue
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine(step, total, tcfg)
            images = _batch_input(cache, index, rng, cfg.spatial.input_form).to(device)
            texts = [captions.sentences[t][i] for i in index for t in types]
            tokens = model.text.tokenize(texts).to(device)
            image_feats = model.branch(images)  # (B, N_q, E_d)
            text_feats = model.text(tokens).view(len(index), len(types), -1)  # (B, N_s, E_d)
            ids = torch.from_numpy(np.stack([captions.ids[t][index] for t in types], axis=1)).to(device)
            loss = itc_loss(image_feats, text_feats, ids, model.logit_scale(), cfg.spatial)
            if model.decoder is not None:
                loss = loss + tcfg.reconstruction_weight * reconstruction_loss(model.decoder(image_feats), images)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if progress:
                progress(step, total, f"branch{branch_id} ep {epoch + 1}/{tcfg.epochs} loss {loss.item():.3f} "
                                      f"lr {optimizer.param_groups[0]['lr']:.1e}")
        save_checkpoint(ckpt_path, model=model.state_dict(), optimizer=optimizer.state_dict(), epoch=epoch)
    proxy_epochs = tcfg.irregularity_epochs if irregular else 0
    for epoch in range(max(start_epoch, tcfg.epochs), tcfg.epochs + proxy_epochs):  # then the proxy task alone
        rng = np.random.default_rng(train_cfg.seed * 1000 + epoch)
        order = rng.permutation(train_idx)
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = tcfg.irregularity_lr
        for b in range(steps_per_epoch):
            index = np.sort(order[b * tcfg.batch_size:(b + 1) * tcfg.batch_size])
            if len(index) < 2:
                continue
            loss = _irregularity_step(model, cache, index, rng, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if progress:
                done = epoch - tcfg.epochs
                progress(done * steps_per_epoch + b + 1, proxy_epochs * steps_per_epoch,
                         f"branch1 irregularity ep {done + 1}/{proxy_epochs} loss {loss.item():.3f}")
        save_checkpoint(ckpt_path, model=model.state_dict(), optimizer=optimizer.state_dict(), epoch=epoch)
    (run_dir / "weights").mkdir(parents=True, exist_ok=True)
    save_checkpoint(run_dir / "weights" / f"branch{branch_id}.pt", **model.branch.state_dict())
    save_checkpoint(run_dir / "weights" / f"text{branch_id}.pt", **model.text.state_dict())
    if model.irregularity is not None:
        save_head(model.irregularity, run_dir / "weights")
    return model.branch.eval()


@torch.no_grad()
def retrieval_accuracy(branch: Branch, text: TextEncoder, cache: TubeCache, captions: CaptionTable,
                       sentence_type: str, cfg: LpgbConfig, index: np.ndarray) -> dict[str, float]:
    """Top-1 retrieval of each crop's own sentence among all distinct sentences of that type.

    Similarity = max over queries of cosine (as in training). Reports accuracy, chance (1/#sentences)
    and the majority-sentence rate (the accuracy of always answering the commonest sentence).
    """
    branch.eval(), text.eval()
    vocab = captions.vocab[sentence_type]
    device = next(branch.parameters()).device
    text_feats = nn.functional.normalize(text(text.tokenize(vocab).to(device)), dim=-1)  # (V, E)
    correct = 0
    truth = captions.ids[sentence_type][index]
    for start in range(0, len(index), 64):
        chunk = index[start:start + 64]
        crops = np.stack([encode_tubes(cache.crops[i, -3:], cfg.spatial.input_form)[-1] for i in chunk])
        feats = nn.functional.normalize(branch(torch.from_numpy(crops_to_input(crops)).to(device)), dim=-1)
        sims = torch.einsum("bqe,ve->bvq", feats, text_feats).amax(-1)  # (B, V)
        correct += int((sims.argmax(-1).cpu().numpy() == truth[start:start + 64]).sum())
    counts = np.bincount(truth, minlength=len(vocab))
    return {"accuracy": correct / max(1, len(index)), "chance": 1.0 / len(vocab),
            "majority": float(counts.max() / max(1, len(index))), "sentences": float(len(vocab)),
            "held_out": float(len(index))}


def train_spatial(cache: TubeCache, run_dir: Path, cfg: LpgbConfig, train_cfg: TrainConfig, resume: bool,
                  progress: Optional[Progress] = None) -> dict[str, dict[str, float]]:
    """Train both branches (skipping one whose final weights exist on --resume); write RUN/spatial_report.json."""
    captions = load_or_make_captions(cache, run_dir, cfg, train_cfg, progress)
    _, held = split_holdout(len(cache))
    report: dict[str, dict[str, float]] = {}
    for branch_id in (1, 2):
        weights = run_dir / "weights" / f"branch{branch_id}.pt"
        if resume and weights.is_file() and (run_dir / "weights" / f"text{branch_id}.pt").is_file():
            branch, text = load_branch(run_dir, cfg, branch_id), load_text(run_dir, cfg, branch_id)
        else:
            branch = train_branch(branch_id, cache, captions, run_dir, cfg, train_cfg, resume, progress)
            text = load_text(run_dir, cfg, branch_id)
        branch = branch.to(train_cfg.device)
        for t in BRANCH_SENTENCES[branch_id]:
            report[f"branch{branch_id}.{t}"] = retrieval_accuracy(branch, text.to(train_cfg.device), cache,
                                                                  captions, t, cfg, held)
        head = load_head_arrays(run_dir) if branch_id == 1 else None
        if head is not None:
            module = IrregularityHead.from_arrays(cfg.spatial, head).to(train_cfg.device)
            report["branch1.irregularity"] = irregularity_accuracy(branch, module, cache, held)
    write_text_atomic(run_dir / "spatial_report.json", json.dumps(report, indent=2))
    return report


def load_branch(run_dir: Path, cfg: LpgbConfig, branch_id: int) -> Branch:
    branch = Branch(cfg.spatial)
    branch.load_state_dict(load_weights(run_dir / "weights" / f"branch{branch_id}.pt"))
    return branch.eval()


def load_text(run_dir: Path, cfg: LpgbConfig, branch_id: int) -> TextEncoder:
    text = TextEncoder(cfg.spatial)
    text.load_state_dict(load_weights(run_dir / "weights" / f"text{branch_id}.pt"))
    return text.eval()
