"""`lpgb-run SOURCE`: score a video, frame folder, webcam or stream with an exported model (no torch)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from lpgb.runtime.backends.base import backends
from lpgb.runtime.cli_common import console, run_app
from lpgb.runtime.errors import LpgbError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
MAX_FRAMES = 10**9  # --max-frames: over a year of 25 fps video


BackendName = Enum("BackendName", {name: name for name in backends()}, type=str)  # the backend registry


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


@app.command()
def run(
    sources: Optional[list[str]] = typer.Argument(
        None, help="Video file, folder of frames, webcam index (0) or rtsp/http URL; several: one process scores "
                   "them all (one model, networks batched across streams), each into OUT/<name>/."),
    sources_file: Optional[Path] = typer.Option(
        None, "--sources", help="Text file with one source per line, optionally followed by a stream name."),
    model: Path = typer.Option(Path("runs/latest"), help="Run folder (uses RUN/export) or an export folder."),
    backend: BackendName = typer.Option("ort", help=", ".join(f"{e.name} ({e.help})" for e in backends().values())),
    precision: Precision = typer.Option(Precision.fp32, help="fp32, fp16 or int8 models (int8: the INT8 branch parts of lpgb-export --int8, ort backend)."),
    device: str = typer.Option("cpu", help="cpu, cuda or tensorrt (ONNX Runtime execution provider)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: runs/detect/<source name>; several "
                                       "streams: runs/detect/streams, one folder per stream inside)."),
    save_video: bool = typer.Option(False, "--save-video", help="Write an annotated MP4."),
    labels: Optional[Path] = typer.Option(None, help="Per-frame labels (.npy, 1 = abnormal) to shade in the plot."),
    max_frames: int = typer.Option(0, min=0, max=MAX_FRAMES, help="Stop after this many frames (0 = whole source)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace lpgb-run's files in an existing output "
                                   "folder (the old ones stay until the new run has scored frames)."),
    reconnects: int = typer.Option(5, min=0, max=1000, help="Several sources: reopenings of a network source that "
                                   "drops or cannot be reached (waits 1, 2, 4 ... s, at most 30 s)."),
    ray: bool = typer.Option(False, "--ray", help="Run the streams on Ray actors (pip install 'lpgb[fleet]'): a "
                             "local instance, or the cluster at --address. A failed actor is restarted and its "
                             "streams resume after their last written frame."),
    address: Optional[str] = typer.Option(None, help="With --ray: 'auto' or HOST:PORT of a running Ray cluster "
                                          "(ray start --head); default: a local instance for this command."),
    streams_per_actor: int = typer.Option(4, min=1, max=1024, help="With --ray: streams per actor (one model each)."),
    actor_cpus: float = typer.Option(1.0, min=0.0, max=1024.0, help="With --ray: CPUs reserved per actor."),
    actor_gpus: float = typer.Option(0.0, min=0.0, max=64.0, help="With --ray: GPUs reserved per actor (use with "
                                     "--device cuda)."),
) -> None:
    """Run the full detection loop frame by frame and write scores, events, a plot and optionally a video."""
    from rich.markup import escape

    from lpgb.runtime.runner import RunInterrupted, RunRequest, run_source

    if not sources and sources_file is None:
        raise LpgbError("give a source (video, frame folder, camera index or URL) or --sources FILE")
    several = len(sources or ()) != 1 or sources_file is not None or ray
    request = RunRequest(source="" if several else sources[0], model=model, backend=backend.value,
                         precision=precision.value, device=device, out=out, save_video=save_video, labels=labels,
                         max_frames=max_frames, overwrite=overwrite)
    if several:
        if labels is not None:
            raise LpgbError("--labels belongs to one source; score labelled videos one at a time")
        fleet = None
        if ray:
            from lpgb.runtime.fleet import FleetConfig

            if overwrite:
                raise LpgbError("--ray writes each stream into a new folder; drop --overwrite or choose another --out")
            fleet = FleetConfig(address=address, streams_per_actor=streams_per_actor, actor_cpus=actor_cpus,
                                actor_gpus=actor_gpus)
        from lpgb.runtime.streams import StreamsConfig

        _run_streams(request, sources or [], sources_file, StreamsConfig(retries=reconnects), fleet)
        return
    try:
        summary = run_source(request)
    except RunInterrupted as exc:  # Ctrl-C: exit 130, SIGTERM: 143, one line saying what was kept
        console.print(f"[yellow]interrupted:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    console.print(summary)


def _run_streams(request, sources: list[str], sources_file: Optional[Path], streams_cfg, fleet=None) -> None:
    """Several sources in this process (`lpgb.runtime.streams`); one line per refused or failed stream."""
    import time

    from rich.markup import escape

    from lpgb.runtime.streams import StreamsInterrupted, fleet_summary, read_sources, run_streams

    def report(line: str) -> None:
        console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)

    specs = read_sources(sources, sources_file, report)
    start = time.perf_counter()
    try:
        out = request.out or Path("runs") / "detect" / "streams"
        if fleet is not None:
            from lpgb.runtime.fleet import run_fleet

            outcomes = run_fleet(request, specs, out, fleet, streams_cfg, report=report)
        else:
            from lpgb.runtime.progress import progress_bar

            with progress_bar() as bar:  # a row per stream, advanced from the stream's thread
                tasks = {s.name: bar.add_task(s.name, total=request.max_frames or None, info="") for s in specs}
                try:
                    outcomes = run_streams(request, specs, out, streams_cfg, report=report, on_frame=lambda name, s:
                                           bar.update(tasks[name], advance=1, info=f"score {s:+.2f}"))
                except BaseException:
                    bar.live.transient = True  # the error or stop message is the only line left
                    raise
    except StreamsInterrupted as exc:  # Ctrl-C / SIGTERM: every stream closed its files
        console.print(fleet_summary(exc.outcomes, time.perf_counter() - start), highlight=False, soft_wrap=True)
        console.print(f"[yellow]interrupted:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    console.print(fleet_summary(outcomes, time.perf_counter() - start), highlight=False, soft_wrap=True)
    if not any(o.scored for o in outcomes):
        raise LpgbError("no stream scored a frame")


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
