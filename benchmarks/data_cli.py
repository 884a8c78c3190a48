"""`lpgb-data`: make a synthetic dataset, or check a dataset folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lpgb.runtime.cli_common import run_app
from lpgb.runtime.datasets import dataset_report
from lpgb.runtime.errors import LpgbError
from lpgb.benchmarks.synth import SynthConfig, check_target, generate

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Datasets: synthesise and check.")
out_console = Console()
MAX_FRAMES = 100_000  # frames per synthetic video (over an hour at 25 fps; each frame is written to disk)
MAX_VIDEOS = 1000


@app.command()
def synth(
    out: Path = typer.Argument(..., help="output folder (ShanghaiTech layout)"),
    videos: int = typer.Option(6, "--videos", min=1, max=MAX_VIDEOS, help="number of test videos (one anomaly each)"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="random seed; the same seed gives the same set"),
    train_videos: int = typer.Option(8, "--train-videos", min=0, max=MAX_VIDEOS,
                                     help="number of normal training videos"),
    frames: int = typer.Option(120, "--frames", min=30, max=MAX_FRAMES, help="frames per video"),
    crowd: int = typer.Option(0, "--crowd", min=0, help="crowded scenes with up to N walkers in view (0: the sparse "
                              "default set; e.g. 35), in perspective, walking in groups both ways"),
    perspective: float = typer.Option(0.5, "--perspective", help="with --crowd: a person's size at the far edge "
                                      "of the walkway relative to the near edge (0.2..1)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing synthetic set in OUT"),
) -> None:
    """Generate a synthetic surveillance dataset with per-frame labels and boxes."""
    cfg = SynthConfig(seed=seed, train_videos=train_videos, test_videos=videos, frames_per_video=frames,
                      crowd=crowd, perspective=perspective)
    check_target(out, overwrite)
    columns = (TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TextColumn("videos"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
            task = bar.add_task("synth", total=cfg.train_videos + cfg.test_videos)
            try:
                generate(out, cfg, progress=lambda done, total: bar.update(task, completed=done), overwrite=overwrite)
            except KeyboardInterrupt:
                bar.live.transient = True  # the stop message is the only line left
                raise
    except KeyboardInterrupt:  # typer would exit 130 without a word
        Console(stderr=True).print(f"[yellow]interrupted:[/] nothing written to {escape(str(out))} (the partial set was "
                                   "removed; an earlier set there is unchanged)", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    scenes = f"crowded (up to {cfg.crowd} walkers) " if cfg.crowd else ""
    out_console.print(f"wrote {cfg.train_videos} training and {cfg.test_videos} {scenes}test videos to {out}",
                      highlight=False)


@app.command()
def check(root: Path = typer.Argument(..., help="dataset folder")) -> None:
    """Print what a dataset folder holds and any problems found (exit code 2 when there are any)."""
    report, problems = dataset_report(root)
    out_console.print(report, highlight=False, markup=False)
    if problems:
        more = f" (and {len(problems) - 1} more, listed above)" if len(problems) > 1 else ""
        raise LpgbError(f"{root}: {problems[0]}{more}")


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
