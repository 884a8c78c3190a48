"""Training stage 1: the class-agnostic RPN on motion pseudo-boxes (DESIGN.md in the shared design notes, "Training", RPN bullet).

Normal training videos -> `MotionProposer` (MOG2 + connected components) over every frame ->
sampled frames with their motion boxes (`collect_pseudo_boxes`) -> letterboxed to
`cfg.proposals.rpn_input_size` -> `ProposalNet` trained with torchvision's RPN losses
(`training_losses`: Matcher 0.7/0.3 with low-quality matches, 256 sampled anchors per image,
half positive at most, BCE objectness + smooth-L1 box regression) under AdamW, light
augmentation (horizontal flip, brightness). One checkpoint per epoch (RUN/checkpoints/rpn.pt),
final state dict RUN/weights/rpn.pt. Deterministic given `train_cfg.seed` on CPU, also across a
resume (every epoch reseeds from (seed, epoch)).

Pseudo-boxes only cover things that move, so still people count as background: the RPN learns
"things like the moving ones"; the runtime can unite it with motion proposals (`source=union`).
Motion blobs of overlapping people merge, so the RPN also learns group boxes. With
`train_cfg.rpn.targets == "single"` (`lpgb-train --rpn-targets single`) it learns only from the blobs
of one person's size at their image row (the scene's size prior, `runtime/size_prior.py`, fitted on
the same training videos): those are its targets, and the other blobs (merged groups, parts) are left
out of the loss (anchors centred in them are neither positive nor negative), so a person inside a
crowd is not taught as background (`collect_single_person_targets`). With
`train_cfg.rpn.targets == "boxes"` (`lpgb-train --rpn-targets boxes`) it learns instead from the
training videos' per-frame box files (`collect_box_targets`: hand labels, or the output of a
detector run offline), one box per object.
"""

from __future__ import annotations

import math
from dataclasses import replace
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.models.detection.rpn import RegionProposalNetwork

from lpgb.runtime.boxfiles import box_array, load_box_file
from lpgb.runtime.config import LpgbConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.geometry import clip_boxes
from lpgb.trainer.checkpoint import load_checkpoint, save_checkpoint
from lpgb.trainer.config import TrainConfig
from lpgb.trainer.models.rpn import ProposalNet

__all__ = [
    "collect_pseudo_boxes", "collect_box_targets", "read_box_file", "require_box_files", "letterbox_samples",
    "training_losses", "fit_proposal_net", "recalibrate_batchnorm", "train_rpn",
    "load_detector_weights", "recall_at_iou", "FG_IOU", "BG_IOU", "ANCHORS_PER_IMAGE", "POSITIVE_FRACTION",
]

FG_IOU = 0.7
BG_IOU = 0.3
ANCHORS_PER_IMAGE = 256
POSITIVE_FRACTION = 0.5
BRIGHTNESS = (0.7, 1.3)
GRAD_CLIP = 10.0

Progress = Callable[[int, int, "float | str"], None]  # (done, total, loss or a note)


# ---------------------------------------------------------------------------------------------
# Data

def collect_pseudo_boxes(dataset: Any, cfg: LpgbConfig, train_cfg: TrainConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Motion pseudo-boxes: `[(frame uint8 BGR (H, W, 3), boxes float32 (K, 4) frame pixels), ...]`.

    `dataset` is a `lpgb.runtime.datasets.Dataset` (its `train_videos()` are used) or a list of
    its `VideoItem`s (anything with `.source`).

    Every frame of each training video goes through a fresh `MotionProposer` (the background
    model needs them all); after `motion_warmup` frames, up to `train_cfg.rpn.frames_per_video`
    frames spread evenly over the rest of the video are kept if they have at least one box of
    at least `min_box_size` pixels on both sides. Frames without motion are left out: "no
    motion" does not mean "no object".
    """
    from lpgb.runtime.motion import MotionProposer
    from lpgb.runtime.video import open_source

    per_video = int(train_cfg.rpn.frames_per_video)
    if per_video < 1:
        raise LpgbError(f"rpn frames_per_video must be >= 1, got {per_video}")
    pcfg = cfg.proposals
    samples: list[tuple[np.ndarray, np.ndarray]] = []
    items = dataset.train_videos() if hasattr(dataset, "train_videos") else list(dataset)
    for item in items:
        proposer = MotionProposer(pcfg)
        with open_source(item.source) as source:
            count = source.frame_count
            warm = int(pcfg.motion_warmup)
            if count is not None and count > warm:
                wanted = set(np.linspace(warm, count - 1, min(per_video, count - warm)).round().astype(int).tolist())
                last = max(wanted)
            else:  # unknown length: every 4th frame after the warm-up
                wanted, last = None, None
            kept = 0
            for index, frame in enumerate(source):
                boxes, _ = proposer.update(frame)
                take = (index in wanted) if wanted is not None else (index >= warm and (index - warm) % 4 == 0)
                if take and len(boxes):
                    sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
                    boxes = boxes[sides >= pcfg.min_box_size]
                    if len(boxes):
                        samples.append((frame.copy(), np.asarray(boxes, np.float32).reshape(-1, 4)))
                        kept += 1
                if kept >= per_video or (last is not None and index >= last):
                    break
    return samples


SINGLE_TOLERANCE = 1.3  # a blob within this factor of the expected person height and width is one person


def single_person_mask(boxes: np.ndarray, frame_height: int, prior: Sequence[float]) -> np.ndarray:
    """`(K,)` bool: which motion blobs `(K, 4)` (frame pixels) have one person's height and width at their
    bottom row, within `SINGLE_TOLERANCE` either way of the size prior's expectation."""
    from lpgb.runtime.size_prior import expected_size

    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    eh, ew = expected_size(b[:, 3], frame_height, prior)
    rh, rw = (b[:, 3] - b[:, 1]) / eh, (b[:, 2] - b[:, 0]) / ew
    lo, hi = 1.0 / SINGLE_TOLERANCE, SINGLE_TOLERANCE
    return (rh >= lo) & (rh <= hi) & (rw >= lo) & (rw <= hi)


def collect_single_person_targets(dataset: Any, cfg: LpgbConfig,
                                  train_cfg: TrainConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Motion blobs of one person's size as targets, the others ignored:
    `[(frame uint8 BGR (H, W, 3), boxes float32 (K, 5) frame pixels: xyxy + 1 target / 0 ignored), ...]`.

    The size prior is fitted on the same training videos' blobs (`fit_size_prior`); frames whose blobs
    are all ignored are kept (their background still teaches "no object here")."""
    from lpgb.runtime.size_prior import fit_size_prior

    items = dataset.train_videos() if hasattr(dataset, "train_videos") else list(dataset)
    prior = tuple(cfg.proposals.size_prior) or fit_size_prior(items, cfg.proposals)
    out = []
    for frame, boxes in collect_pseudo_boxes(items, cfg, train_cfg):
        single = single_person_mask(boxes, frame.shape[0], prior)
        out.append((frame, np.concatenate([boxes, single[:, None].astype(np.float32)], axis=1)))
    if not any(b[:, 4].any() for _, b in out):
        raise LpgbError("--rpn-targets single found no motion blob of one person's size in the training videos; "
                        "train with --rpn-targets motion")
    return out


SELF_TRAINING_SCORE = 0.8  # an RPN box this confident (and of one person's size) becomes a target next round
SELF_TRAINING_NMS = 0.5


@torch.no_grad()
def add_confident_boxes(model: ProposalNet, samples: list[tuple[np.ndarray, np.ndarray]], cfg: LpgbConfig,
                        prior: Sequence[float], progress: Progress | None = None
                        ) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    """One self-training round's targets: to each sample `(frame, boxes (K, 5))` add, as targets, the
    trained RPN's boxes with score >= SELF_TRAINING_SCORE (after NMS) that have one person's size at their
    row, whose centre lies in a motion blob and that overlap no target already there (IoU < 0.3).
    Returns (new samples, boxes added); `progress(done, total, info)` after every frame."""
    from torchvision.ops import nms

    from lpgb.runtime.geometry import centres_inside, iou_matrix
    from lpgb.runtime.proposals import rpn_letterbox

    model.eval()
    out, added = [], 0
    for frame, boxes in samples:
        image, letterbox = rpn_letterbox(frame, cfg.proposals)
        found, scores = model(torch.from_numpy(np.ascontiguousarray(image, np.float32)))
        keep = scores >= SELF_TRAINING_SCORE
        found, scores = found[keep], scores[keep]
        found = found[nms(found, scores, SELF_TRAINING_NMS)]
        found = letterbox.to_frame(found.numpy().astype(np.float32)).reshape(-1, 4)
        if len(found):
            found = found[single_person_mask(found, frame.shape[0], prior)]
        if len(found):
            found = found[centres_inside(found, boxes[:, :4])]
        targets = boxes[boxes[:, 4] > 0, :4]
        if len(found) and len(targets):
            found = found[iou_matrix(found, targets).max(axis=1) < 0.3]
        added += len(found)
        extra = np.concatenate([found, np.ones((len(found), 1), np.float32)], axis=1)
        out.append((frame, np.concatenate([boxes, extra], axis=0).astype(np.float32)))
        if progress is not None:
            progress(len(out), len(samples), f"self-training: {added} boxes added")
    return out, added


def read_box_file(path: Path) -> list[np.ndarray]:
    """A training video's box file (`runtime.boxfiles` format) -> one float32 `(K, 4)` array per frame."""
    return [box_array(objects) for objects in load_box_file(path)]


def require_box_files(items: Sequence[Any]) -> None:
    """LpgbError naming the training videos without a box file (`VideoItem.boxes is None`)."""
    missing = [item.name for item in items if getattr(item, "boxes", None) is None]
    if missing:
        raise LpgbError(f"--rpn-targets boxes needs a box file per training video (training/boxes/NAME.json); "
                        f"missing for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")


def collect_box_targets(dataset: Any, cfg: LpgbConfig, train_cfg: TrainConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Box-file targets: `[(frame uint8 BGR (H, W, 3), boxes float32 (K, 4) frame pixels), ...]`.

    Up to `train_cfg.rpn.frames_per_video` frames spread evenly over each training video, with the
    boxes of its box file (`VideoItem.boxes`, one entry per frame) clipped to the frame and
    filtered by `min_box_size`. Frames without boxes are kept: unlike "no motion", an empty
    labelled frame is a true negative.
    """
    from lpgb.runtime.video import open_source

    per_video = int(train_cfg.rpn.frames_per_video)
    if per_video < 1:
        raise LpgbError(f"rpn frames_per_video must be >= 1, got {per_video}")
    items = dataset.train_videos() if hasattr(dataset, "train_videos") else list(dataset)
    require_box_files(items)
    samples: list[tuple[np.ndarray, np.ndarray]] = []
    for item in items:
        boxes = read_box_file(item.boxes)
        wanted = set(np.linspace(0, len(boxes) - 1, min(per_video, len(boxes))).round().astype(int).tolist())
        count = 0
        with open_source(item.source) as source:
            for index, frame in enumerate(source):
                count = index + 1
                if index >= len(boxes):
                    break
                if index in wanted:
                    b = clip_boxes(boxes[index], frame.shape)
                    b = b[np.minimum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) >= cfg.proposals.min_box_size]
                    samples.append((frame.copy(), np.ascontiguousarray(b, np.float32).reshape(-1, 4)))
        if count != len(boxes):
            more = "more" if count > len(boxes) else f"{count}"
            raise LpgbError(f"box file {item.boxes} has {len(boxes)} entries (one per frame) but video {item.name} "
                            f"has {more} frames")
    return samples


def letterbox_samples(samples: Sequence[tuple[np.ndarray, np.ndarray]], cfg: LpgbConfig) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Frames + boxes (frame pixels) -> images uint8 `(N, 3, H, W)` RGB and boxes in input pixels; boxes
    `(K, 5)` keep their fifth column (1 target, 0 ignored region)."""
    from lpgb.runtime.proposals import rpn_letterbox

    h, w = (int(v) for v in cfg.proposals.rpn_input_size)
    images = torch.zeros((len(samples), 3, h, w), dtype=torch.uint8)
    targets: list[torch.Tensor] = []
    for i, (frame, boxes) in enumerate(samples):
        image, letterbox = rpn_letterbox(frame, cfg.proposals)
        images[i] = torch.from_numpy(np.clip(np.rint(image[0] * 255.0), 0, 255).astype(np.uint8))
        boxes = np.asarray(boxes, np.float32)
        columns = boxes.shape[1] if boxes.ndim == 2 else 4
        boxes = boxes.reshape(-1, columns)
        inside = letterbox.to_input(boxes[:, :4])
        inside[:, 0::2] = inside[:, 0::2].clip(0, w)
        inside[:, 1::2] = inside[:, 1::2].clip(0, h)
        inside = np.concatenate([inside, boxes[:, 4:]], axis=1)
        targets.append(torch.from_numpy(np.ascontiguousarray(inside, dtype=np.float32)))
    return images, targets


def _augment(images: torch.Tensor, targets: list[torch.Tensor], generator: torch.Generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """uint8 `(B, 3, H, W)` -> float 0..1 with random horizontal flips and brightness."""
    x = images.float() / 255.0
    width = x.shape[-1]
    flips = torch.rand(len(x), generator=generator) < 0.5
    gains = torch.empty(len(x)).uniform_(BRIGHTNESS[0], BRIGHTNESS[1], generator=generator)
    out_images, out_targets = [], []
    for i in range(len(x)):
        image, boxes = x[i], targets[i]
        if flips[i]:
            image = image.flip(-1)
            boxes = torch.cat([torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]],
                                           dim=1), boxes[:, 4:]], dim=1)
        out_images.append((image * gains[i]).clamp(0.0, 1.0))
        out_targets.append(boxes)
    return torch.stack(out_images), out_targets


# ---------------------------------------------------------------------------------------------
# Losses

def _rpn_helper(model: ProposalNet) -> RegionProposalNetwork:
    """torchvision's RPN used only for target assignment + losses (Matcher, sampler, BoxCoder)."""
    return RegionProposalNetwork(
        model.anchor_generator, model.head, fg_iou_thresh=FG_IOU, bg_iou_thresh=BG_IOU,
        batch_size_per_image=ANCHORS_PER_IMAGE, positive_fraction=POSITIVE_FRACTION,
        pre_nms_top_n={"training": 1, "testing": 1}, post_nms_top_n={"training": 1, "testing": 1}, nms_thresh=0.7,
    )


def training_losses(model: ProposalNet, images: torch.Tensor, targets: Sequence[torch.Tensor | dict]) -> dict[str, torch.Tensor]:
    """RPN losses for a batch: images `(B, 3, H, W)` float 0..1 RGB at the model's input size,
    targets one `(K_i, 4)` xyxy box tensor in input pixels per image (or torchvision-style dicts
    with "boxes"; K_i may be 0), or `(K_i, 5)` whose fifth column marks targets (1) and ignored regions
    (0: anchors centred in them that would be negatives are left out of the loss).
    -> {"objectness": BCE, "box": smooth-L1, "total": sum}.

    Sampling of anchors uses torch's global RNG (seed it for reproducibility).
    """
    if images.dim() != 4 or tuple(images.shape[-2:]) != model.input_size:
        raise LpgbError(f"RPN images must be (B, 3, {model.input_size[0]}, {model.input_size[1]}); got {tuple(images.shape)}")
    if len(targets) != len(images):
        raise LpgbError(f"{len(images)} images but {len(targets)} target box sets")
    device = images.device
    rows = [(t["boxes"] if isinstance(t, dict) else t).to(device=device, dtype=torch.float32) for t in targets]
    rows = [r.reshape(-1, r.shape[-1] if r.dim() == 2 else 4) for r in rows]
    boxes = [r[:, :4] if r.shape[1] == 4 else r[r[:, 4] > 0, :4] for r in rows]
    ignored = [r[r[:, 4] <= 0, :4] if r.shape[1] == 5 else r[:0, :4] for r in rows]
    helper = _rpn_helper(model)
    logits, deltas = model.raw(images)
    anchors = [model.anchors] * len(images)
    with torch.no_grad():
        labels, matched = helper.assign_targets_to_anchors(anchors, [{"boxes": b} for b in boxes])
        labels = [_ignore_negatives_in(lab, model.anchors, ign) for lab, ign in zip(labels, ignored)]
        regression_targets = helper.box_coder.encode(matched, anchors)
    objectness, box = helper.compute_loss(logits.reshape(-1), deltas.reshape(-1, 4), labels, list(regression_targets))
    return {"objectness": objectness, "box": box, "total": objectness + box}


def _ignore_negatives_in(labels: torch.Tensor, anchors: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Anchor labels `(A,)` (1 positive, 0 negative, -1 ignored) with the negatives whose centre lies in any
    of `regions` `(R, 4)` turned to -1."""
    if not len(regions):
        return labels
    cx, cy = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
    inside = ((cx[:, None] >= regions[None, :, 0]) & (cx[:, None] <= regions[None, :, 2])
              & (cy[:, None] >= regions[None, :, 1]) & (cy[:, None] <= regions[None, :, 3])).any(dim=1)
    return torch.where(inside & (labels == 0), torch.full_like(labels, -1.0), labels)


# ---------------------------------------------------------------------------------------------
# Training

def _seed_epoch(seed: int, epoch: int) -> torch.Generator:
    torch.manual_seed(seed * 100_003 + epoch)  # anchor sampling inside the loss
    return torch.Generator().manual_seed(seed * 100_019 + epoch + 1)  # order + augmentation


def fit_proposal_net(
    model: ProposalNet,
    images: torch.Tensor,
    targets: list[torch.Tensor],
    train_cfg: TrainConfig,
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: Progress | None = None,
) -> ProposalNet:
    """Train `model` on letterboxed uint8 images `(N, 3, H, W)` + boxes for `train_cfg.rpn.epochs`.

    With `checkpoint`, model + optimiser + epoch are saved there after every epoch; with `resume`
    training continues after the last saved epoch (bit-identical to an uninterrupted run on CPU).
    `progress(step, total, loss)` is called after every optimiser step (steps count from 0 of the
    whole run, so a resumed run starts where the checkpoint left off).
    """
    rcfg = train_cfg.rpn
    if len(images) == 0:
        raise LpgbError("no training frames with motion boxes for the RPN: are the training videos static or too short?")
    if rcfg.epochs < 0 or rcfg.batch_size < 1:
        raise LpgbError(f"rpn epochs must be >= 0 and batch_size >= 1 (got {rcfg.epochs}, {rcfg.batch_size})")
    device = torch.device(train_cfg.device)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=rcfg.lr, weight_decay=rcfg.weight_decay)
    start = 0
    if resume and checkpoint is not None:
        state = load_checkpoint(checkpoint)
        if state is not None:
            if tuple(state.get("input_size", ())) != model.input_size:
                raise LpgbError(f"RPN checkpoint {checkpoint} was made for input size {tuple(state.get('input_size', ()))},"
                                f" this run uses {model.input_size}; start a new run folder")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start = int(state["epoch"])
    steps_per_epoch = math.ceil(len(images) / rcfg.batch_size)
    total = steps_per_epoch * rcfg.epochs
    for epoch in range(start, rcfg.epochs):
        model.train()
        generator = _seed_epoch(train_cfg.seed, epoch)
        order = torch.randperm(len(images), generator=generator)
        for step in range(steps_per_epoch):
            index = order[step * rcfg.batch_size : (step + 1) * rcfg.batch_size]
            batch, boxes = _augment(images[index], [targets[int(i)] for i in index], generator)
            losses = training_losses(model, batch.to(device), [b.to(device) for b in boxes])
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
            if progress is not None:
                progress(epoch * steps_per_epoch + step + 1, total, float(losses["total"].detach()))
        if checkpoint is not None:
            save_checkpoint(checkpoint, model=model.state_dict(), optimizer=optimizer.state_dict(),
                            epoch=epoch + 1, input_size=list(model.input_size))
    recalibrate_batchnorm(model, images, rcfg.batch_size)
    return model.eval()


@torch.no_grad()
def recalibrate_batchnorm(model: ProposalNet, images: torch.Tensor, batch_size: int, max_images: int = 512) -> None:
    """Re-estimate BatchNorm running statistics as exact averages over (up to `max_images` of)
    the un-augmented training images with the final weights ("precise BN"); running averages
    collected while the weights were still moving are stale after a short from-scratch run."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or len(images) == 0:
        return
    device = next(model.parameters()).device
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    count = min(len(images), max_images)
    for start in range(0, count, batch_size):
        model.features(images[start : min(start + batch_size, count)].to(device).float() / 255.0)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def train_rpn(
    dataset: Any,
    run_dir: Path,
    cfg: LpgbConfig,
    train_cfg: TrainConfig,
    resume: bool,
    progress: Progress | None = None,
) -> ProposalNet:
    """Stage 1: pseudo-boxes from `dataset` (a Dataset or a list of VideoItems) -> trained `ProposalNet` (eval mode, CPU).

    Writes RUN/checkpoints/rpn.pt every epoch and RUN/weights/rpn.pt (state dict) at the end.
    `train_cfg.rpn.init_weights` optionally initialises the backbone from a torchvision detector
    checkpoint (ignored when resuming from a checkpoint, which already holds all weights).
    """
    run_dir = Path(run_dir)
    if train_cfg.num_threads > 0:
        torch.set_num_threads(int(train_cfg.num_threads))
    torch.manual_seed(train_cfg.seed)
    model = ProposalNet(cfg.proposals)
    checkpoint = run_dir / "checkpoints" / "rpn.pt"
    has_checkpoint = resume and checkpoint.is_file()
    if train_cfg.rpn.init_weights and not has_checkpoint:
        load_detector_weights(model, Path(train_cfg.rpn.init_weights))
    if train_cfg.rpn.targets == "single" and not cfg.proposals.size_prior:  # fitted once, for every round
        from lpgb.runtime.size_prior import fit_size_prior

        items = dataset.train_videos() if hasattr(dataset, "train_videos") else list(dataset)
        cfg = replace(cfg, proposals=replace(cfg.proposals, size_prior=fit_size_prior(items, cfg.proposals)))
    collect = {"boxes": collect_box_targets, "single": collect_single_person_targets}.get(train_cfg.rpn.targets,
                                                                                         collect_pseudo_boxes)
    samples = collect(dataset, cfg, train_cfg)
    images, targets = letterbox_samples(samples, cfg)
    fit_proposal_net(model, images, targets, train_cfg, checkpoint=checkpoint, resume=resume, progress=progress)
    rounds = train_cfg.rpn.self_training_rounds if train_cfg.rpn.targets == "single" else 0
    prior = tuple(cfg.proposals.size_prior)
    for r in range(1, rounds + 1):  # self-training: the RPN's own confident single-person boxes join the targets
        samples, _ = add_confident_boxes(model.cpu(), samples, cfg, prior, progress)
        images, targets = letterbox_samples(samples, cfg)
        fit_proposal_net(model, images, targets, train_cfg, checkpoint=checkpoint.with_name(f"rpn_round{r}.pt"),
                         resume=resume, progress=progress)
    del samples
    model.cpu().eval()
    save_checkpoint(run_dir / "weights" / "rpn.pt", **model.state_dict())
    return model


# ---------------------------------------------------------------------------------------------
# Detector initialisation

_PREFIXES = ("module.", "model.", "backbone.body.", "backbone.features.", "backbone.", "body.", "features.")


def load_detector_weights(model: ProposalNet, path: Path) -> int:
    """Initialise `model.body` (MobileNetV3-Large trunk) from a torchvision checkpoint at `path`.

    Accepts a state dict or a dict holding one under "model"/"state_dict"; keys are matched after
    stripping prefixes such as "backbone.body." (fasterrcnn_mobilenet_v3_large_fpn / _320_fpn) or
    "features." (mobilenet_v3_large classifier), and only tensors of the same shape are copied
    (FrozenBatchNorm2d statistics map onto BatchNorm2d). Returns the number of tensors loaded;
    raises LpgbError when nothing matches.
    """
    path = Path(path)
    if not path.is_file():
        raise LpgbError(f"no detector checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LpgbError(f"cannot read detector checkpoint {path}: {type(exc).__name__}") from None
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise LpgbError(f"{path} does not hold a state dict")
    own = model.body.state_dict()
    update: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        name = key
        changed = True
        while changed:  # strip any chain of known prefixes ("module.backbone.body.")
            changed = False
            for prefix in _PREFIXES:
                if name.startswith(prefix):
                    name, changed = name[len(prefix):], True
                    break
        if name in own and own[name].shape == value.shape:
            update[name] = value.to(own[name].dtype)
    float_count = sum(1 for k in update if own[k].is_floating_point())
    if float_count == 0:
        raise LpgbError(f"no backbone weights in {path} match the RPN's MobileNetV3-Large trunk "
                        "(expected a torchvision fasterrcnn_mobilenet_v3_large(_320)_fpn or mobilenet_v3_large checkpoint)")
    own.update(update)
    model.body.load_state_dict(own)
    return len(update)


# ---------------------------------------------------------------------------------------------
# Metric: lives in the torch-free runtime (lpgb.runtime.recall); re-exported here

from lpgb.runtime.recall import recall_at_iou  # noqa: E402,F401 - moved to the torch-free runtime
