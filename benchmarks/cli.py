"""`lpgb-bench`: latency/FPS per backend and stage, AUC per backend, cost model; terminal + JSON/MD/CSV reports."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lpgb.benchmarks.speed import bench_specs

from lpgb.runtime.cli_common import console, run_app

app = typer.Typer(add_completion=False, help=__doc__)
MAX_FRAMES = 10**6  # timed frames per backend
MAX_TUBES = 4096  # tubes per call in the load sweep


DEFAULT_BACKENDS = "torch,ort"
STREAMS_DEFAULT_BACKEND = "ort"


def streams_backend(backends: str) -> str:
    """The one backend `lpgb-bench --streams` measures: the `--backends` name given, or ort when the option is
    left at its default; several names are refused (the streams report compares modes, not backends)."""
    from lpgb.runtime.errors import LpgbError

    if backends == DEFAULT_BACKENDS:
        return STREAMS_DEFAULT_BACKEND
    names = [b.strip() for b in backends.split(",") if b.strip()]
    if len(names) != 1:
        raise LpgbError(f"--streams measures one backend; pass one name to --backends (got {backends!r}; "
                        f"default {STREAMS_DEFAULT_BACKEND})")
    return names[0]


@app.command()
def bench(
    model: Path = typer.Option(Path("runs/latest"), help="Run folder (lpgb-train output, exported with lpgb-export)."),
    data: Optional[Path] = typer.Option(None, help="Dataset with test labels for AUC (default: the model's training data)."),
    backends: str = typer.Option(DEFAULT_BACKENDS, help="Comma-separated names from the backend registry: "
                                                    + ", ".join(bench_specs()) + "."),
    videos: int = typer.Option(0, min=0, help="Use at most this many test videos (0 = all)."),
    speed_frames: int = typer.Option(60, min=1, max=MAX_FRAMES,
                                     help="Frames per backend for the speed run (after warm-up)."),
    sweep: str = typer.Option("1,4,16,64", help="Tube counts for the load sweep (empty to skip)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the full report as JSON."),
    md: Optional[Path] = typer.Option(None, "--md", help="Write a markdown report."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Write the summary table as CSV."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    paired_rounds: int = typer.Option(5, min=0, max=MAX_FRAMES, help="Rounds of the paired FPS run: backends take turns on blocks of "
                                               "speed-frames/rounds frames; summary FPS and 'vs torch' are its medians (0: skip)."),
    suite: str = typer.Option("", help="'gpu': the torch-CUDA, ORT-CUDA (and TensorRT) rows in a few minutes; "
                                      "refused at once where a provider would fall back to the CPU."),
    recall: Optional[bool] = typer.Option(None, "--recall/--no-recall",
                                          help="Proposal recall @ IoU 0.5 on ground-truth boxes (default: when the data has them)."),
    streams: str = typer.Option("", "--streams", help="Stream counts, e.g. 1,2,4,8: instead of the backend report, "
                                "aggregate FPS, latency p50/p99 and RSS per stream for one process with its streams "
                                "batched against one process per stream (speed-frames frames per stream, "
                                "paired-rounds rounds)."),
    streams_ray: bool = typer.Option(False, "--streams-ray", help="With --streams: also on a local Ray instance "
                                     "(lpgb[fleet]; one actor per usable CPU)."),
) -> None:
    """Benchmark a trained and exported model; numbers are medians of repeated runs."""
    from lpgb.benchmarks.suite import BenchRequest, run_bench
    from lpgb.runtime.errors import LpgbError

    try:
        tube_counts = tuple(int(s) for s in sweep.split(",") if s.strip())
    except ValueError:
        raise LpgbError(f"--sweep must be comma-separated tube counts such as 1,4,16; got {sweep!r}") from None
    if any(not 1 <= k <= MAX_TUBES for k in tube_counts):
        raise LpgbError(f"--sweep tube counts must be 1..{MAX_TUBES}; got {sweep!r}")
    request = BenchRequest(model=model, data=data, backends=tuple(b for b in backends.split(",") if b),
                           videos=videos, speed_frames=speed_frames,
                           sweep=tube_counts, json_out=json_out, md=md,
                           csv=csv, device=device, recall=recall, paired_rounds=paired_rounds)
    if streams:
        from lpgb.benchmarks.streams import StreamsBenchConfig, run_streams_bench

        try:
            counts = tuple(int(s) for s in streams.split(",") if s.strip())
        except ValueError:
            raise LpgbError(f"--streams must be comma-separated stream counts such as 1,2,4,8; got {streams!r}") from None
        modes = ("batched", "processes", "ray") if streams_ray else ("batched", "processes")
        if streams_ray:
            from lpgb.runtime.fleet import require_ray

            require_ray()
        run_streams_bench(model, data, StreamsBenchConfig(counts=counts, frames=speed_frames, modes=modes,
                                                          rounds=max(paired_rounds, 1), backend=streams_backend(backends)),
                          videos, md, json_out)
        return
    if suite:
        if suite != "gpu":
            raise LpgbError(f"unknown --suite {suite!r}; the one suite is 'gpu'")
        from lpgb.benchmarks.gpu_suite import gpu_request

        request = gpu_request(request, model)
    try:
        run_bench(request)
    except KeyboardInterrupt:  # typer would exit 130 without a word
        console.print("[yellow]interrupted:[/] lpgb-bench stopped; report files are written only when it "
                      "finishes, each atomically (none is half-written)", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
