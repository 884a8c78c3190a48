"""`lpgb-run SOURCE`: score a video, frame folder, webcam or stream with an exported model (no torch)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from lpgb.runtime.backends.base import backends
from lpgb.runtime.cli_common import console, run_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
MAX_FRAMES = 10**9  # --max-frames: over a year of 25 fps video


BackendName = Enum("BackendName", {name: name for name in backends()}, type=str)  # the backend registry


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


@app.command()
def run(
    source: str = typer.Argument(..., help="Video file, folder of frames, webcam index (0) or rtsp/http URL."),
    model: Path = typer.Option(Path("runs/latest"), help="Run folder (uses RUN/export) or an export folder."),
    backend: BackendName = typer.Option("ort", help=", ".join(f"{e.name} ({e.help})" for e in backends().values())),
    precision: Precision = typer.Option(Precision.fp32, help="fp32, fp16 or int8 models (int8: the INT8 branch parts of lpgb-export --int8, ort backend)."),
    device: str = typer.Option("cpu", help="cpu, cuda or tensorrt (ONNX Runtime execution provider)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: runs/detect/<source name>)."),
    save_video: bool = typer.Option(False, "--save-video", help="Write an annotated MP4."),
    labels: Optional[Path] = typer.Option(None, help="Per-frame labels (.npy, 1 = abnormal) to shade in the plot."),
    max_frames: int = typer.Option(0, min=0, max=MAX_FRAMES, help="Stop after this many frames (0 = whole source)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace lpgb-run's files in an existing output "
                                   "folder (the old ones stay until the new run has scored frames)."),
) -> None:
    """Run the full detection loop frame by frame and write scores, events, a plot and optionally a video."""
    from rich.markup import escape

    from lpgb.runtime.runner import RunInterrupted, RunRequest, run_source

    request = RunRequest(source=source, model=model, backend=backend.value, precision=precision.value,
                         device=device, out=out, save_video=save_video, labels=labels,
                         max_frames=max_frames, overwrite=overwrite)
    try:
        summary = run_source(request)
    except RunInterrupted as exc:  # Ctrl-C: exit 130, SIGTERM: 143, one line saying what was kept
        console.print(f"[yellow]interrupted:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    console.print(summary)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
