"""`lpgb-train DATA --out RUN`: train the RPN, the two spatial branches and the temporal part."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from lpgb.runtime.cli_common import console, run_app
from lpgb.runtime.config import COMBINE_RULES, FLOW_PRESETS, PRESETS, PROPOSAL_SOURCES
from lpgb.trainer.config import CAPTIONERS, RPN_TARGETS, STAGES

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


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
        None, help="What the RPN learns from: motion pseudo-boxes (default), or the training videos' box files "
                   "(training/boxes/NAME.json: hand labels or an offline detector's boxes; such runs serve with "
                   "proposal NMS IoU 0.6). Fixed when the run is created."),
    device: str = typer.Option("cpu", help="torch device: cpu, cuda, cuda:1 ..."),
    seed: int = typer.Option(0, help="Random seed (runs are deterministic on CPU)."),
    epochs_scale: Optional[float] = typer.Option(
        None, help="Multiply the preset's epoch counts (quick runs: 0.5; default 1). With --stage on an "
                   "existing RUN it sets that stage's epochs; a run being resumed keeps its own."),
    proposals: Optional[Proposals] = typer.Option(
        None, help="Where boxes come from: motion (default), union (motion + an RPN trained here) or rpn. "
                   "Fixed when the run is created."),
    terms: Optional[str] = typer.Option(
        None, help="Comma-separated score terms (default velocity,shape; smm alone = the paper's score). "
                   "On an existing RUN, refit them with --stage calibrate."),
    combine: Optional[Combine] = typer.Option(None, help="How box scores combine the standardised terms."),
    flow: Optional[FlowPreset] = typer.Option(
        None, help="OpenCV DIS preset of the optical flow the velocity term reads (default medium; ultrafast "
                   "is ~7x cheaper and scored lower, docs/decisions.md). On an existing RUN, with --stage calibrate."),
    max_train_videos: int = typer.Option(0, help="Use at most this many training videos (0 = all)."),
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
        terms=tuple(t.strip() for t in terms.split(",") if t.strip()) if terms is not None else None,
    )
    run_dir = train_all(request)
    console.print(f"[green]done[/]: run folder {run_dir}")


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
