"""`lpgb-train` orchestration: run folder, stages rpn -> tubes -> spatial -> temporal -> calibrate."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from lpgb.runtime.atomic import NewFolder, write_text_atomic
from lpgb.runtime.cli_common import console
from lpgb.runtime.config import PROPOSAL_SOURCES, LpgbConfig, preset
from lpgb.runtime.datasets import open_dataset
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.progress import progress_bar
from lpgb.runtime.run_manifest import record_run_files
from lpgb.trainer.config import BOX_TARGET_NMS_IOU, PRESET_RPN_TARGETS, STAGES, TrainConfig, train_preset


@dataclass(frozen=True)
class TrainRequest:
    """What the user asked on the command line (turned into LpgbConfig + TrainConfig here)."""

    data: Path
    out: Path
    preset: Optional[str] = None  # None: "edge" for a new run; an existing run keeps its own
    stage: str = "all"
    captioner: str = "attributes"
    caption_file: Optional[Path] = None
    clip_weights: Optional[Path] = None
    rpn_weights: Optional[Path] = None
    rpn_targets: Optional[str] = None  # None: "motion" for a new run; fixed once a run exists
    device: str = "cpu"
    seed: int = 0
    epochs_scale: Optional[float] = None  # None: 1.0 for a new run; an existing run keeps its epochs
    max_train_videos: int = 0
    resume: bool = False
    overwrite: bool = False
    proposals: Optional[str] = None  # None: the preset's proposal source; fixed when the run is created
    terms: Optional[tuple[str, ...]] = None  # None: the preset's score terms (an existing run keeps its own)
    combine: Optional[str] = None  # None: the preset's rule (an existing run keeps its own)
    flow: Optional[str] = None  # None: the preset's DIS preset (an existing run keeps its own)
    branch_input: Optional[str] = None  # None: the preset's spatial.input_form; fixed when the run is created
    reconstruction_weight: Optional[float] = None  # None: the preset's spatial reconstruction_weight (new runs)
    irregularity_epochs: Optional[int] = None  # None: the preset's spatial irregularity_epochs (new runs)
    rpn_self_training: Optional[int] = None  # None: the preset's rpn self_training_rounds (new runs)


def _with_term_settings(cfg: LpgbConfig, request: TrainRequest) -> LpgbConfig:
    """`cfg` with the score terms / combine rule / flow preset the request names (validated by the configs)."""
    from lpgb.runtime.terms import term_class

    changes = {k: v for k, v in (("terms", request.terms), ("combine", request.combine)) if v is not None}
    for name in changes.get("terms", ()):
        term_class(name)
    if request.flow is not None:  # validated by FlowConfig
        cfg = replace(cfg, flow=replace(cfg.flow, preset=request.flow))
    return replace(cfg, scoring=replace(cfg.scoring, **changes)) if changes else cfg


def _scaled(n: int, scale: float) -> int:
    return max(1, int(round(n * scale)))


def make_configs(request: TrainRequest) -> tuple[LpgbConfig, TrainConfig]:
    name = request.preset or "edge"
    cfg = _with_term_settings(preset(name), request)
    if request.proposals is not None:
        if request.proposals not in PROPOSAL_SOURCES:
            raise LpgbError(f"unknown proposal source {request.proposals!r}; choose {', '.join(PROPOSAL_SOURCES)}")
        cfg = replace(cfg, proposals=replace(cfg.proposals, source=request.proposals))
    if request.branch_input is not None:  # validated by SpatialConfig
        cfg = replace(cfg, spatial=replace(cfg.spatial, input_form=request.branch_input))
    t = train_preset(name, request.rpn_targets or PRESET_RPN_TARGETS.get(name, "motion"))
    if t.rpn.targets == "boxes":
        cfg = replace(cfg, proposals=replace(cfg.proposals, nms_iou=BOX_TARGET_NMS_IOU))
    s = 1.0 if request.epochs_scale is None else request.epochs_scale
    t = replace(
        t, seed=request.seed, device=request.device,
        rpn=replace(t.rpn, epochs=_scaled(t.rpn.epochs, s), init_weights=str(request.rpn_weights or "")),
        spatial=replace(t.spatial, epochs=_scaled(t.spatial.epochs, s), captioner=request.captioner,
                        irregularity_epochs=_scaled(t.spatial.irregularity_epochs, s) * (t.spatial.irregularity_epochs > 0),
                        caption_file=str(request.caption_file or ""), clip_weights=str(request.clip_weights or "")),
        temporal=replace(t.temporal, epochs=_scaled(t.temporal.epochs, s)),
    )
    if request.reconstruction_weight is not None:
        t = replace(t, spatial=replace(t.spatial, reconstruction_weight=float(request.reconstruction_weight)))
    if request.irregularity_epochs is not None:
        t = replace(t, spatial=replace(t.spatial, irregularity_epochs=int(request.irregularity_epochs)))
    if request.rpn_self_training is not None:
        if request.rpn_self_training > 0 and t.rpn.targets != "single":
            raise LpgbError("--rpn-self-training needs --rpn-targets single (it adds the RPN's own single-person "
                            "boxes to those targets)")
        t = replace(t, rpn=replace(t.rpn, self_training_rounds=int(request.rpn_self_training)))
    _check_network_terms(cfg, t)
    return cfg, t


def _check_network_terms(cfg: LpgbConfig, t: TrainConfig) -> None:
    """Refuse, before any stage runs, settings that cannot train: the irregularity task without motion
    input, or the `irregularity` term without the task."""
    if t.spatial.irregularity_epochs > 0 and cfg.spatial.input_form != "motion":
        raise LpgbError("the irregularity task (--irregularity-epochs > 0, as in --preset edge-motion) reads "
                        "the crops' motion channels: add --branch-input motion")
    from lpgb.runtime.terms import term_class

    read_out = [n for n in cfg.scoring.terms if term_class(n).trained_read_out]
    if read_out and t.spatial.irregularity_epochs <= 0:
        raise LpgbError(f"the {read_out[0]} term serves branch 1's irregularity read-out: train with "
                        "--branch-input motion --irregularity-epochs 8")


def _with_stage_epochs(saved: TrainConfig, asked: TrainConfig, stage: str) -> TrainConfig:
    """`saved` with the epoch count of `stage` (every trainable stage for 'all') taken from `asked`."""
    names = ("rpn", "spatial", "temporal") if stage == "all" else (stage,)
    changes = {n: replace(getattr(saved, n), epochs=getattr(asked, n).epochs) for n in names if hasattr(saved, n)}
    return replace(saved, **changes)


def prepare_run(request: TrainRequest) -> tuple[Path, LpgbConfig, TrainConfig]:
    """Create RUN (or reopen it with --resume, keeping its saved configs)."""
    run_dir = Path(request.out)
    has_config = (run_dir / "config.json").is_file()
    if request.resume and not has_config:
        raise LpgbError(f"{run_dir} has no config.json to resume from")
    if has_config and (request.resume or request.stage != "all"):
        saved = LpgbConfig.load(run_dir / "config.json")
        if request.preset is not None and saved.preset != request.preset:
            raise LpgbError(f"{run_dir} was trained with preset {saved.preset!r}, not {request.preset!r}")
        if request.proposals is not None and saved.proposals.source != request.proposals:
            raise LpgbError(f"{run_dir} was created with {saved.proposals.source!r} proposals, which are fixed with the "
                            f"run (its tubes were cut from them); train a new run folder with --proposals {request.proposals}")
        if request.branch_input is not None and saved.spatial.input_form != request.branch_input:
            raise LpgbError(f"{run_dir} was created with {saved.spatial.input_form!r} branch input, which is fixed "
                            f"with the run; train a new run folder with --branch-input {request.branch_input}")
        request = replace(request, preset=saved.preset)
        train_cfg = replace(TrainConfig.load(run_dir / "train_config.json"), device=request.device)
        if request.rpn_targets is not None and request.rpn_targets != train_cfg.rpn.targets:
            raise LpgbError(f"{run_dir} was created with {train_cfg.rpn.targets!r} RPN targets, which are fixed with the "
                            f"run (they set its proposal NMS); train a new run folder with --rpn-targets {request.rpn_targets}")
        if request.epochs_scale is not None:
            if request.resume:
                raise LpgbError("--epochs-scale cannot change a run being resumed; rerun a stage without "
                                "--resume to train it for a different number of epochs")
            train_cfg = _with_stage_epochs(train_cfg, make_configs(request)[1], request.stage)
            write_text_atomic(run_dir / "train_config.json", train_cfg.to_json())
        if request.terms is not None or request.combine is not None or request.flow is not None:
            if request.stage != "calibrate" or request.resume:
                raise LpgbError("--terms/--combine/--flow change an existing run's scoring: refit them with "
                                "--stage calibrate (then re-export)")
            saved = _with_term_settings(saved, request)  # saved to config.json once the refit succeeds
        return run_dir, saved, train_cfg
    cfg, train_cfg = make_configs(request)
    if run_dir.exists() and any(run_dir.iterdir()) and not request.overwrite:
        raise LpgbError(f"run folder {run_dir} is not empty; pass --resume to continue it or --overwrite")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.json")
    write_text_atomic(run_dir / "train_config.json", train_cfg.to_json())
    write_text_atomic(run_dir / "data.json", json.dumps({"data": str(Path(request.data).resolve())}))
    return run_dir, cfg, train_cfg


def _check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LpgbError(f"--device {device} requested but torch sees no CUDA GPU; use --device cpu")


def train_all(request: TrainRequest) -> Path:
    """Run the requested stage(s); each is resumable and writes its artifacts atomically.

    A run folder this call made (absent or empty before) is removed again when the call fails before
    anything was trained into it (no weights or checkpoints), so a rerun needs no --overwrite; a folder
    that had content is never removed. Before each stage that reads the tube cache, a cache made from
    other inputs (`lpgb.trainer.tube_cache.tube_cache_key`) is dropped, so the stage rebuilds it."""
    _check_device(request.device)
    dataset = open_dataset(request.data)
    videos = dataset.train_videos()
    if request.max_train_videos:
        videos = videos[: request.max_train_videos]
    if not videos:
        raise LpgbError(f"{request.data} has no training videos ({dataset.layout} layout)")
    if request.rpn_targets == "boxes" and request.stage in ("all", "rpn"):
        from lpgb.trainer.rpn_stage import require_box_files

        require_box_files(videos)  # before the run folder is made
    claim = NewFolder.before(request.out)
    try:
        return _train_stages(request, dataset.layout, videos)
    except BaseException:
        trained = [p for sub in ("weights", "checkpoints") for p in (Path(request.out) / sub).glob("*.pt")]
        if claim.ours and not trained:
            claim.undo()
        raise


def _train_stages(request: TrainRequest, layout: str, videos: list) -> Path:
    """prepare_run, then each requested stage (the tube cache checked against its inputs first)."""
    from lpgb.runtime.frame_rate import record_training_fps
    from lpgb.trainer.tube_cache import drop_stale_cache, record_key, tube_cache_key

    run_dir, cfg, train_cfg = prepare_run(request)
    record_training_fps(run_dir, [v.source for v in videos])  # informational: lpgb-run warns on other rates
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    stages = STAGES if request.stage == "all" else (request.stage,)
    timings: dict[str, float] = {}
    console.print(f"lpgb-train: {len(videos)} training videos ({layout}), preset {cfg.preset}, "
                  f"stages {', '.join(stages)} -> {run_dir}")
    with progress_bar() as bar:
        def tracker(name: str):
            task = bar.add_task(name, total=None, info="")

            def update(done: int, total: int, info: object = "") -> None:
                text = f"loss {info:.4f}" if isinstance(info, float) else str(info)
                bar.update(task, completed=done, total=total, info=text)

            return update

        per_video = max(train_cfg.spatial.crops_per_video, train_cfg.temporal.tubes_per_video)
        for stage in stages:
            start = time.perf_counter()
            key = None if stage == "rpn" else tube_cache_key(run_dir, cfg, request.data, videos, per_video)
            if key is not None and drop_stale_cache(run_dir / "tubes", key):
                console.print("tube cache: made from other proposals, RPN weights or videos; rebuilding it")
            try:
                _run_stage(stage, videos, run_dir, cfg, train_cfg, request.resume, tracker)
            finally:
                if key is not None:
                    record_key(run_dir / "tubes", key)
            timings[stage] = round(time.perf_counter() - start, 1)
    if request.terms is not None or request.combine is not None or request.flow is not None:
        cfg.save(run_dir / "config.json")  # a refit that fails leaves the run's config as its terms were fitted
    record_run_files(run_dir)  # RUN/run.json: what the torch backend may serve, with its sha256
    _update_timings(run_dir, timings)
    return run_dir


def _update_timings(run_dir: Path, timings: dict[str, float]) -> None:
    path = run_dir / "timings.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    old.update(timings)
    write_text_atomic(path, json.dumps(old, indent=2))


def _rpn_forward(run_dir: Path, cfg: LpgbConfig, device: str):
    """Torch RPN as a numpy function, or None when the proposals need no RPN / none is trained."""
    if cfg.proposals.source == "motion":
        return None
    from lpgb.trainer.torch_backend import load_rpn

    rpn = load_rpn(run_dir, cfg)
    if rpn is None:
        raise LpgbError(f"{run_dir} has no trained RPN (weights/rpn.pt): run --stage rpn first")
    rpn = rpn.to(device)

    @torch.no_grad()
    def forward(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        boxes, scores = rpn(torch.from_numpy(image).to(device))
        return boxes.cpu().numpy(), scores.cpu().numpy()

    return forward


def _terms_need_networks(cfg: LpgbConfig) -> bool:
    """Whether any configured score term reads the branches or the temporal part."""
    from lpgb.runtime.terms import reads_networks

    return any(reads_networks(n) for n in cfg.scoring.terms)


def _tube_cache(videos: list, run_dir: Path, cfg: LpgbConfig, train_cfg: TrainConfig, tracker):
    from lpgb.trainer.tube_cache import TubeCache, build_tube_cache, make_proposal_fn

    folder = run_dir / "tubes"
    if (folder / "videos.json").is_file():
        return TubeCache.load(folder)
    per_video = max(train_cfg.spatial.crops_per_video, train_cfg.temporal.tubes_per_video)
    proposer = make_proposal_fn(cfg, _rpn_forward(run_dir, cfg, train_cfg.device))
    cache = build_tube_cache(videos, cfg, per_video, proposer, tracker("tubes"))
    cache.save(folder)
    return TubeCache.load(folder)


def _run_stage(stage: str, videos: list, run_dir: Path, cfg: LpgbConfig, train_cfg: TrainConfig, resume: bool,
               tracker) -> None:
    if stage == "rpn":
        from lpgb.trainer.rpn_stage import train_rpn

        if cfg.proposals.source == "motion":
            console.print("proposals.source is 'motion': no RPN to train")
            return
        if resume and (run_dir / "weights" / "rpn.pt").is_file():
            return
        train_rpn(videos, run_dir, cfg, train_cfg, resume, tracker("rpn"))
    elif stage == "spatial":
        from lpgb.trainer.spatial_stage import train_spatial

        cache = _tube_cache(videos, run_dir, cfg, train_cfg, tracker)
        report = train_spatial(cache, run_dir, cfg, train_cfg, resume, tracker("spatial"))
        for key, r in report.items():
            if key == "branch1.irregularity":
                console.print(f"irregularity task (consecutive vs skipped frames): held-out accuracy "
                              f"{r['accuracy']:.3f} (chance 0.5, {int(r['held_out'])} tubes)")
                continue
            console.print(f"retrieval {key}: top-1 {r['accuracy']:.3f} (chance {r['chance']:.3f}, "
                          f"majority {r['majority']:.3f}, {int(r['sentences'])} sentences, {int(r['held_out'])} crops)")
    elif stage == "calibrate" and not _terms_need_networks(cfg):
        from lpgb.trainer.temporal_stage import calibrate_network_free

        cal = calibrate_network_free(videos, run_dir, cfg, _rpn_forward(run_dir, cfg, train_cfg.device),
                                     tracker("terms"))
        stats = ", ".join(f"{n} {t.mean:.4g} +- {t.std:.4g}" for n, t in cal.terms.items())
        console.print(f"calibration: {stats}; frame threshold {cal.threshold:.3f}")
    elif stage in ("temporal", "calibrate"):
        from lpgb.trainer.spatial_stage import load_branch
        from lpgb.trainer.temporal_stage import (calibrate_run, load_or_extract_features, load_temporal,
                                                 train_temporal)

        cache = _tube_cache(videos, run_dir, cfg, train_cfg, tracker)
        branches = tuple(load_branch(run_dir, cfg, b).to(train_cfg.device) for b in (1, 2))
        f1, f2 = load_or_extract_features(branches, cache, run_dir, train_cfg.device, tracker("features"))
        if stage == "temporal":
            if resume and (run_dir / "weights" / "temporal.pt").is_file():
                return
            train_temporal(f1, f2, run_dir, cfg, train_cfg, resume, tracker("temporal"))
        else:
            model = load_temporal(run_dir, cfg).to(train_cfg.device)
            cal = calibrate_run(model, f1, f2, cache, videos, run_dir, cfg, train_cfg.device, tracker("terms"),
                                _rpn_forward(run_dir, cfg, train_cfg.device))
            stats = ", ".join(f"{n} {t.mean:.4g} +- {t.std:.4g}" for n, t in cal.terms.items())
            console.print(f"calibration: {stats}; frame threshold {cal.threshold:.3f}")
    else:
        raise LpgbError(f"unknown stage {stage!r}")
