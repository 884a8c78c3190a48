"""`lpgb-train DATA --out RUN`: train the RPN, the two spatial branches and the temporal part."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from rich.markup import escape

from lpgb.runtime.cli_common import console, positive_finite, run_app
from lpgb.runtime.config import BRANCH_INPUTS, COMBINE_RULES, FLOW_PRESETS, PRESETS, PROPOSAL_SOURCES
from lpgb.trainer.config import CAPTIONERS, RPN_TARGETS, STAGES

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
MAX_SEED = 2**32 - 1  # numpy's legacy seeding limit; the stages derive torch seeds as seed * 100_003 + epoch
MAX_EPOCHS_SCALE = 1000.0  # x the preset's epochs: beyond this a run would not finish


def _choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """A str Enum for typer whose members are `values` (the single definition of the allowed values)."""
    return Enum(name, {v: v for v in values}, type=str)


Stage = _choices("Stage", ("all", *STAGES))
CaptionerName = _choices("CaptionerName", CAPTIONERS)
RpnTargets = _choices("RpnTargets", RPN_TARGETS)
Combine = _choices("Combine", COMBINE_RULES)
Proposals = _choices("Proposals", PROPOSAL_SOURCES)
Preset = _choices("Preset", PRESETS)
FlowPreset = _choices("FlowPreset", FLOW_PRESETS)
BranchInput = _choices("BranchInput", BRANCH_INPUTS)


@app.command()
def train(
    data: Path = typer.Argument(..., help="Dataset folder (ShanghaiTech, Avenue, UCSD Ped1/2 layout or frame folders)."),
    out: Path = typer.Option(..., "--out", help="Run folder to create (weights, checkpoints, config.json)."),
    preset: Optional[Preset] = typer.Option(
        None, help="Model size: tiny (tests/CI), edge (default for a new run), paper; an existing RUN keeps its own."),
    stage: Stage = typer.Option(Stage.all, help="all = rpn -> spatial -> temporal -> calibrate."),
    captioner: CaptionerName = typer.Option(CaptionerName.attributes, help="Caption source for the spatial stage."),
    caption_file: Optional[Path] = typer.Option(None, help="JSONL captions for --captioner file."),
    clip_weights: Optional[Path] = typer.Option(None, help="Local open_clip checkpoint for --captioner clip."),
    rpn_weights: Optional[Path] = typer.Option(None, help="Initialise the RPN from a torchvision detector checkpoint."),
    rpn_targets: Optional[RpnTargets] = typer.Option(
        None, help="What the RPN learns from: motion pseudo-boxes (default); single: only the motion blobs of "
                   "one person's size at their row (the scene's size prior), merged groups left out of the loss; "
                   "or the training videos' box files (training/boxes/NAME.json: hand labels or an offline "
                   "detector's boxes; such runs serve with proposal NMS IoU 0.6). Fixed when the run is created."),
    device: str = typer.Option("cpu", help="torch device: cpu, cuda, cuda:1 ..."),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="Random seed (runs are deterministic on CPU)."),
    epochs_scale: Optional[float] = typer.Option(
        None, max=MAX_EPOCHS_SCALE, callback=positive_finite,
        help="Multiply the preset's epoch counts (quick runs: 0.5; default 1; a finite number > 0). With --stage "
             "on an existing RUN it sets that stage's epochs; a run being resumed keeps its own."),
    proposals: Optional[Proposals] = typer.Option(
        None, help="Where boxes come from: motion (default), union (motion + an RPN trained here) or rpn. "
                   "Fixed when the run is created."),
    terms: Optional[str] = typer.Option(
        None, help="Comma-separated score terms (default the preset's: velocity,shape; edge-motion adds "
                   "irregularity; smm alone = the paper's score). "
                   "On an existing RUN, refit them with --stage calibrate."),
    combine: Optional[Combine] = typer.Option(None, help="How box scores combine the standardised terms."),
    flow: Optional[FlowPreset] = typer.Option(
        None, help="OpenCV DIS preset of the optical flow the velocity term reads (default medium; ultrafast "
                   "is ~7x cheaper and scored lower, docs/decisions.md). On an existing RUN, with --stage calibrate."),
    branch_input: Optional[BranchInput] = typer.Option(
        None, help="What the branches see of a crop: rgb, or motion (grey + differences to the 1 and 2 frames "
                   "before, same region); default the preset's. Fixed when the run is created."),
    reconstruction_weight: Optional[float] = typer.Option(
        None, min=0.0, max=100.0, help="Weight of the branches' crop-reconstruction loss beside the contrastive "
                                       "one (0 = contrastive only, the preset's default); for a new run."),
    irregularity_epochs: Optional[int] = typer.Option(
        None, min=0, max=1000, help="Epochs of branch 1's motion-irregularity task after its contrastive ones "
                                    "(consecutive vs skipped frames; needs --branch-input motion; 0 = off; "
                                    "edge-motion: 8); for a new run. The `irregularity` score term serves its read-out."),
    rpn_self_training: Optional[int] = typer.Option(
        None, min=0, max=10, help="With --rpn-targets single: rounds of self-training after the RPN's first fit "
                                  "(its confident single-person boxes inside motion blobs join the targets; "
                                  "default 0); for a new run."),
    max_train_videos: int = typer.Option(0, min=0, help="Use at most this many training videos (0 = all)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN's last checkpoints."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Allow training into an existing non-empty RUN."),
) -> None:
    """Train from normal videos only; every stage checkpoints each epoch and resumes with --resume."""
    from lpgb.trainer.pipeline import TrainRequest, train_all

    request = TrainRequest(
        data=data, out=out, preset=preset.value if preset else None, stage=stage.value, captioner=captioner.value,
        caption_file=caption_file, clip_weights=clip_weights, rpn_weights=rpn_weights,
        rpn_targets=rpn_targets.value if rpn_targets else None, device=device,
        seed=seed, epochs_scale=epochs_scale, max_train_videos=max_train_videos, resume=resume,
        overwrite=overwrite, combine=combine.value if combine else None,
        proposals=proposals.value if proposals else None, flow=flow.value if flow else None,
        branch_input=branch_input.value if branch_input else None,
        reconstruction_weight=reconstruction_weight, irregularity_epochs=irregularity_epochs,
        rpn_self_training=rpn_self_training,
        terms=tuple(t.strip() for t in terms.split(",") if t.strip()) if terms is not None else None,
    )
    try:
        run_dir = train_all(request)
    except KeyboardInterrupt:  # Ctrl-C: one line saying where it stopped, exit 130
        console.print(f"[yellow]interrupted:[/] {escape(stopped_at(data, out))}", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    console.print(f"[green]done[/]: run folder {run_dir}")


STAGE_WEIGHTS = {"rpn": "rpn", "spatial_branch1": "branch1", "spatial_branch2": "branch2", "temporal": "temporal"}


def stopped_at(data: Path, out: Path) -> str:
    """Where an interrupted training stopped (the newest checkpoint: stage and epoch) and how to continue."""
    from lpgb.trainer.checkpoint import load_checkpoint

    resume = f"`lpgb-train {data} --out {out} --resume` continues"
    if not out.is_dir():
        return f"stopped before anything was trained; nothing was kept in {out} (rerun the same command)"
    checkpoints = sorted((out / "checkpoints").glob("*.pt"), key=lambda p: p.stat().st_mtime_ns)
    if not checkpoints:
        return f"stopped before the first checkpoint; {resume}"
    last = checkpoints[-1]
    weights = out / "weights" / f"{STAGE_WEIGHTS.get(last.stem, last.stem)}.pt"
    if weights.is_file() and weights.stat().st_mtime_ns >= last.stat().st_mtime_ns:
        return f"stopped after the {last.stem} stage finished (weights in {weights.parent}); {resume} with the next stage"
    try:
        epoch = f" after epoch {int(load_checkpoint(last)['epoch']) + 1}"
    except Exception:  # noqa: BLE001 - the message only leaves out the epoch
        epoch = ""
    return f"stopped in the {last.stem} stage{epoch} (checkpoint {last}); {resume} from there"


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
