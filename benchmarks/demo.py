"""`lpgb-demo [OUT]`: the whole chain on the embedded synthetic default, for a fresh machine.

synthetic set -> lpgb-train (tiny) -> lpgb-export (--fp16 --check) -> lpgb-run on a test video
(--save-video) -> lpgb-bench report. Everything lands under OUT.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from lpgb.runtime.cli_common import console, run_app

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def demo(
    out: Path = typer.Argument(Path("lpgb-demo"), help="Folder for everything the demo makes."),
    seed: int = typer.Option(0, help="Seed of the synthetic set and of training."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing demo folder."),
) -> None:
    """Run synth -> train -> export -> run -> bench and print where the outputs are."""
    import shutil

    from lpgb.benchmarks.suite import BenchRequest, run_bench
    from lpgb.export.pipeline import ExportRequest, export_run
    from lpgb.runtime.errors import LpgbError
    from lpgb.runtime.pipeline import RunRequest, run_source
    from lpgb.runtime.synth import SynthConfig, generate
    from lpgb.trainer.pipeline import TrainRequest, train_all

    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise LpgbError(f"demo folder {out} is not empty; pass --overwrite or choose another folder")
        shutil.rmtree(out)
    started = time.perf_counter()
    data, run = out / "data", out / "run"
    console.rule("1/5 synthetic data")
    generate(data, SynthConfig(seed=seed))
    console.rule("2/5 train (tiny preset, attributes captioner)")
    train_all(TrainRequest(data=data, out=run, preset="tiny", seed=seed))
    console.rule("3/5 export (ONNX FP32 + FP16, parity check)")
    export_run(ExportRequest(run=run, fp16=True, check=True))
    console.rule("4/5 run on a test video")
    test_video = sorted((data / "testing" / "frames").iterdir())[0]
    summary = run_source(RunRequest(source=str(test_video), model=run, out=out / "detect", save_video=True,
                                    labels=data / "testing" / "test_frame_mask" / f"{test_video.name}.npy"))
    console.print(summary)
    console.rule("5/5 benchmark")
    run_bench(BenchRequest(model=run, data=data, backends=("torch", "ort", "ort-fp16"), json_out=out / "bench.json",
                           md=out / "bench.md", csv=out / "bench.csv", speed_frames=40, sweep=(1, 4, 16)))
    console.print(f"\n[green]demo finished in {time.perf_counter() - started:.0f}s[/]")
    console.print(f"  data      {data}\n  model     {run} (export in {run / 'export'})\n"
                  f"  detection {out / 'detect'} (scores.csv, events.json, scores.png, video.mp4)\n"
                  f"  report    {out / 'bench.md'}, {out / 'bench.json'}, {out / 'bench.csv'}")


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
