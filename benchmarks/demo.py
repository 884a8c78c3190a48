"""`lpgb-demo [OUT]`: the whole chain on the embedded synthetic default, for a fresh machine.

synthetic set -> lpgb-train (tiny) -> lpgb-export (--fp16 --check) -> lpgb-run on a test video
(--save-video) -> lpgb-bench report. Everything lands under OUT; --overwrite replaces only an earlier
demo's own outputs there, once the new demo has finished. What a demo wrote is recorded in
OUT/.lpgb-manifest.json (`lpgb.runtime.manifest`): a `data/` or `run/` the demo did not write is refused,
never replaced.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import typer
from rich.markup import escape

from lpgb.runtime.atomic import NewFolder, move_in
from lpgb.runtime.cli_common import console, run_app
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.manifest import LOCK, MANIFEST, FolderLock, Manifest, owned_entries, stale_folders

app = typer.Typer(add_completion=False, help=__doc__)

DEMO_ENTRIES = ("data", "run", "detect", "bench.json", "bench.md", "bench.csv")  # everything the demo writes
ASIDE_PREFIX = ".lpgb-demo-old-"  # an earlier demo's outputs while a new one is made
COMMAND = "lpgb-demo"
BOOKKEEPING = (MANIFEST, LOCK)  # hidden files of the demo itself in OUT


def demo_entries(out: Path, overwrite: bool) -> list[str]:
    """The earlier demo's entries in `out` (to replace); LpgbError when `out` is a file, holds anything the
    demo does not write, holds an earlier demo and `overwrite` is not set, or holds an entry of a demo's
    name that no demo wrote (not in its manifest: the user's own `data/`). Folders an earlier demo that
    was killed had moved aside are reported in one line, never removed."""
    if out.exists() and not out.is_dir():
        raise LpgbError(f"demo folder {out} exists and is not a folder")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    foreign = [n for n in entries if n not in DEMO_ENTRIES and n not in BOOKKEEPING and not n.startswith(ASIDE_PREFIX)]
    if foreign:
        raise LpgbError(f"demo folder {out} holds {foreign[0]!r}, which the demo did not make; "
                        "choose a new or empty folder")
    ours = [n for n in entries if n in DEMO_ENTRIES]
    if ours and not overwrite:
        raise LpgbError(f"demo folder {out} holds an earlier demo; pass --overwrite or choose another folder")
    for path in stale_folders(out, ASIDE_PREFIX)[0] if out.is_dir() else []:
        console.print(f"[yellow]warning:[/] {path} holds an earlier demo's outputs that a killed lpgb-demo had "
                      f"moved aside; they are left there (move them back or delete them)", highlight=False,
                      soft_wrap=True)
    return owned_entries(out, COMMAND, ours)


@contextlib.contextmanager
def replacing_outputs(out: Path, old: list[str]) -> Iterator[None]:
    """Make a new demo in `out` while the earlier one (`old` entries) waits in a hidden folder inside it.

    The old entries are renamed aside (nothing is deleted), the new ones are made at their real paths (the
    run records its dataset's path in RUN/data.json, so it cannot be built elsewhere and moved), and the
    old ones are dropped only once the whole demo has succeeded. On a failure or Ctrl-C the partial new
    entries are removed and the old ones renamed back; a folder made here is removed again. Only the
    demo's own entries (`DEMO_ENTRIES`) are ever moved or removed: `demo_entries` refuses any other file.
    While it runs OUT is locked and its manifest claims the demo's entries (a demo killed meanwhile left
    only the demo's own files there); at the end the manifest lists every file the demo wrote.
    """
    claim = NewFolder.before(out)
    out.mkdir(parents=True, exist_ok=True)
    with FolderLock(out, COMMAND):
        aside = out / f"{ASIDE_PREFIX}{os.getpid()}"
        previous = Manifest.read(out, COMMAND)
        if old:
            aside.mkdir()
            move_in(out, aside, old)
        try:
            Manifest.claim(COMMAND, DEMO_ENTRIES).write(out)  # what is made at the real paths from here is the demo's
            yield
        except BaseException:
            for name in DEMO_ENTRIES:
                _remove(out / name)
            if old:
                move_in(aside, out, old)
                aside.rmdir()
            if previous is not None:
                previous.write(out)
            else:
                Manifest.claim(COMMAND, ()).remove(out)
            claim.undo()
            raise
        Manifest.of(out, COMMAND, DEMO_ENTRIES).write(out)
        if old:
            shutil.rmtree(aside)
            console.print(f"replaced the earlier demo's {', '.join(old)} in {out}", highlight=False, soft_wrap=True)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@app.command()
def demo(
    out: Path = typer.Argument(Path("lpgb-demo"), help="Folder for everything the demo makes."),
    seed: int = typer.Option(0, help="Seed of the synthetic set and of training."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier demo's outputs in OUT "
                                   "(only once the new demo has finished; other files are refused)."),
) -> None:
    """Run synth -> train -> export -> run -> bench and print where the outputs are."""
    old = demo_entries(out, overwrite)
    try:
        with replacing_outputs(out, old):
            _run_demo(out, seed)
    except KeyboardInterrupt:  # typer would exit 130 without a word
        kept = f"the earlier demo's {', '.join(old)} restored" if old else "its partial outputs removed"
        console.print(f"[yellow]interrupted:[/] the demo stopped; {escape(str(out))}: {kept}", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


def _run_demo(out: Path, seed: int) -> None:
    """synth -> train -> export -> run -> bench, everything under `out`."""
    from lpgb.benchmarks.suite import BenchRequest, run_bench
    from lpgb.export.pipeline import ExportRequest, export_run
    from lpgb.runtime.runner import RunRequest, run_source
    from lpgb.benchmarks.synth import SynthConfig, generate
    from lpgb.trainer.pipeline import TrainRequest, train_all

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
