"""Memory of a long lpgb-run stream: process RSS sampled while a looping source runs through lpgb-run's code.

`python -m lpgb.benchmarks.long_stream --model RUN --frames 20000 [--source S] [--out DIR] [--json F]`
plays a test video of the model's dataset (RUN/data.json), or `--source` (a video or a frame folder),
again and again until `--frames` frames and scores them with `run_source` (what `lpgb-run` runs: the
ort backend, the streaming OutputWriter, events). The resident set size is sampled every `--every`
frames (500) and reported after warm-up (frame `--warmup`, 1000; half the frames when fewer) and at the
end, with the growth in MB. Flat memory shows as a growth near 0 MB (per-frame records held in
memory grew ~1.8 MB per 1000 frames). Without `--out` the run's outputs go to a temporary folder.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from lpgb.runtime.cli_common import run_diagnostic
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.video import FrameSource, open_source

__all__ = ["LoopSource", "rss_mb", "measure", "main"]


def rss_mb() -> float:
    """This process's resident set size in MB (psutil, else /proc/self/status VmRSS)."""
    try:
        import psutil
    except ImportError:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        raise LpgbError("cannot read this process's memory: install psutil") from None
    return psutil.Process().memory_info().rss / 2**20


class LoopSource(FrameSource):
    """`spec` (a video file or a frame folder) played from the start again and again until `frames`
    frames; `on_frame(n)` is called when the consumer asks for the frame after the n-th (n from 1),
    i.e. once n frames were scored."""

    def __init__(self, spec: str, frames: int, on_frame: Callable[[int], None] = lambda n: None) -> None:
        with open_source(spec) as first:  # a bad source fails here, with lpgb-run's one-line error
            name, fps = first.name, first.fps
        super().__init__(f"{name}-loop", fps, frames)
        self.spec, self.frames, self.on_frame = spec, int(frames), on_frame

    def _frames(self) -> Iterator[np.ndarray]:
        n = 0
        while n < self.frames:
            with open_source(self.spec) as src:
                for frame in src:
                    if n >= self.frames:
                        return
                    yield frame
                    n += 1
                    self.on_frame(n)


def default_source(model: Path) -> str:
    """The first test video of the dataset the model was trained on (RUN/data.json)."""
    from lpgb.runtime.datasets import open_dataset, recorded_dataset

    data = recorded_dataset(model)
    if data is None:
        raise LpgbError(f"{model} records no dataset (data.json); pass --source VIDEO_OR_FRAME_FOLDER")
    videos = open_dataset(data).test_videos()
    if not videos:
        raise LpgbError(f"dataset {data} has no test videos; pass --source VIDEO_OR_FRAME_FOLDER")
    return str(videos[0].source)


def measure(model: Path, source: str, frames: int, out: Path, every: int = 500, warmup: int = 1000) -> dict:
    """Run `frames` frames of the looping `source` through run_source and sample RSS; returns the report."""
    import time

    from lpgb.runtime.runner import RunRequest, run_source

    warm = min(warmup, frames // 2)
    samples: list[tuple[int, float]] = []

    def sample(n: int) -> None:
        if n % every == 0 or n in (warm, frames):
            samples.append((n, rss_mb()))

    start = time.perf_counter()
    summary = run_source(RunRequest(source=source, model=model, backend="ort", out=out),
                         source=LoopSource(source, frames, sample))
    elapsed = time.perf_counter() - start
    at = dict(samples)
    rss_warm = at[warm]
    growth = at[frames] - rss_warm
    return {"model": str(model), "source": source, "frames": frames, "backend": "ort", "seconds": round(elapsed, 2),
            "fps": round(frames / elapsed, 2) if elapsed > 0 else None, "warmup_frame": warm,
            "rss_warm_mb": round(rss_warm, 2), "rss_end_mb": round(at[frames], 2), "growth_mb": round(growth, 2),
            "growth_mb_per_1000_frames": round(1000.0 * growth / max(frames - warm, 1), 3),
            "samples": [[n, round(mb, 2)] for n, mb in samples], "out": str(out), "summary": summary}


def _print(report: dict) -> None:
    from rich.table import Table

    from lpgb.runtime.cli_common import console

    table = Table(title=f"lpgb-run RSS, {report['fps']} FPS")
    table.add_column("frame", justify="right")
    table.add_column("RSS MB", justify="right")
    for n, mb in report["samples"]:
        table.add_row(str(n), f"{mb:.1f}")
    console.print(table)
    console.print(f"RSS after warm-up (frame {report['warmup_frame']}) {report['rss_warm_mb']:.1f} MB, at the end "
                  f"{report['rss_end_mb']:.1f} MB: growth {report['growth_mb']:+.2f} MB "
                  f"({report['growth_mb_per_1000_frames']:+.3f} MB per 1000 frames)", highlight=False)


def main(argv: Optional[list[str]] = None) -> None:
    from lpgb.runtime.cli_common import OneLineArgumentParser

    parser = OneLineArgumentParser(prog="python -m lpgb.benchmarks.long_stream", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="run folder (uses RUN/export) or export folder")
    parser.add_argument("--frames", type=int, default=20000, help="frames to score (default 20000)")
    parser.add_argument("--source", default=None, help="video or frame folder to loop (default: a test video "
                                                       "of the model's dataset)")
    parser.add_argument("--out", type=Path, default=None, help="lpgb-run output folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    parser.add_argument("--every", type=int, default=500, help="sample RSS every this many frames (default 500)")
    parser.add_argument("--warmup", type=int, default=1000, help="frame of the warm-up sample (default 1000)")
    args = parser.parse_args(argv)
    if args.frames < 2:
        raise LpgbError(f"--frames must be >= 2, got {args.frames}")
    if args.every < 1 or args.warmup < 1:
        raise LpgbError(f"--every and --warmup must be >= 1, got {args.every} and {args.warmup}")
    if not args.model.exists():
        raise LpgbError(f"model folder {args.model} does not exist")
    source = args.source if args.source is not None else default_source(args.model)
    with tempfile.TemporaryDirectory(prefix="lpgb-long-stream-") as tmp:
        report = measure(args.model, source, args.frames, args.out or Path(tmp) / "out", args.every, args.warmup)
    if args.out is None:
        report["out"] = None  # the temporary folder is gone
    _print(report)
    if args.json:
        from lpgb.runtime.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(report, indent=2))


if __name__ == "__main__":
    run_diagnostic(main)
