"""`lpgb-bench --streams 1,2,4,8`: several cameras on one machine, one process with its streams batched
(`lpgb-run A B ...`, `lpgb.runtime.streams`) against one process per stream (`lpgb-run A` several times at
once), and on a local Ray instance when Ray is installed (`--ray`).

Every configuration runs in fresh worker processes (`python -m lpgb.benchmarks.streams --worker`), each
scoring its streams and reporting its scoring window and per-frame latencies; the parent reads each
worker's peak RSS (`os.wait4`). Aggregate FPS = frames of all streams / (last end - first start of
scoring), so model loading is outside the window but a slow start of one process is not. Rounds alternate
the modes; the table gives medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["StreamsBenchConfig", "StreamsRow", "bench_streams", "streams_table"]

MODES = ("batched", "processes")  # and "ray" (one actor per usable CPU) when asked


@dataclass(frozen=True)
class StreamsBenchConfig:
    """What the streams benchmark runs: stream counts, frames per stream, rounds (medians over them)."""

    counts: tuple[int, ...] = (1, 2, 4, 8)
    frames: int = 150
    rounds: int = 3
    modes: tuple[str, ...] = MODES
    backend: str = "ort"
    threads_per_process: int = 0  # OMP/ORT threads per worker process (0 = library default)


@dataclass
class StreamsRow:
    """One (mode, stream count): medians over rounds."""

    mode: str
    streams: int
    fps: float  # frames of all streams per second of scoring
    latency_p50_ms: float
    latency_p99_ms: float
    rss_mb_per_stream: float
    rounds: int


def _worker(model: Path, sources: Sequence[str], frames: int, backend: str, out: Path, on_ray: bool = False
            ) -> dict:
    """Score `sources` in this process (batched when several) into `out/streams/`, or with `on_ray` on a
    local Ray instance (one actor per usable CPU, the streams split between them); the scoring window
    and latencies. On Ray the window is the longest actor's scoring time (Ray's start is outside it)."""
    from lpgb.runtime.runner import RunRequest
    from lpgb.runtime.streams import StreamSpec, run_streams

    specs = [StreamSpec(f"s{i}", s) for i, s in enumerate(sources)]
    request = RunRequest(source="", model=model, backend=backend, max_frames=frames)
    lines: list[str] = []
    started = time.time()
    if on_ray:
        from lpgb.benchmarks.device_info import usable_cpus
        from lpgb.runtime.fleet import FleetConfig, run_fleet

        actors = max(1, min(len(specs), int(usable_cpus() or 1)))
        fleet = FleetConfig(streams_per_actor=-(-len(specs) // actors), actor_cpus=1, local_cpus=actors)
        outcomes = run_fleet(request, specs, out / "streams", fleet, report=lines.append)
        ended = time.time()
        begin = ended - max(o.seconds for o in outcomes)
    else:
        outcomes = run_streams(request, specs, out / "streams", report=lines.append)
        ended = time.time()
        begin = max(min(ended - o.seconds for o in outcomes), started)  # threads start once the model loaded
    return {"frames": sum(o.scored for o in outcomes), "start": begin, "end": ended,
            "latencies": [x for o in outcomes for x in o.latencies], "errors": lines}


def _spawn(model: Path, sources: Sequence[str], frames: int, backend: str, out: Path, threads: int,
           on_ray: bool = False) -> subprocess.Popen:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "lpgb.benchmarks.streams", "--worker", "--model", str(model), "--frames",
           str(frames), "--backend", backend, "--out", str(out), *(["--ray"] if on_ray else []), *map(str, sources)]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "worker.log", "w") as log:  # a file, not a pipe: a chatty worker cannot block on it
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env, text=True)


def _collect(procs: list[subprocess.Popen]) -> tuple[list[dict], list[float]]:
    """Each worker's JSON report and peak RSS (MB), waiting on each with os.wait4."""
    from lpgb.runtime.errors import LpgbError

    reports, rss = [], []
    for p in procs:
        stdout = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            log = Path(p.args[p.args.index("--out") + 1]) / "worker.log"
            stderr = log.read_text(errors="replace") if log.is_file() else ""
            raise LpgbError(f"a streams-bench worker failed (exit {p.returncode}): "
                            f"{(stderr.strip().splitlines() or ['no message'])[-1]}")
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
        rss.append(usage.ru_maxrss / 1024.0)  # KiB on Linux
    return reports, rss


def _one(model: Path, sources: Sequence[str], mode: str, cfg: StreamsBenchConfig, work: Path) -> dict:
    """One round of one mode: {"fps", "latencies", "rss_mb"}."""
    if mode in ("batched", "ray"):
        procs = [_spawn(model, sources, cfg.frames, cfg.backend, work / mode, cfg.threads_per_process,
                        on_ray=mode == "ray")]
    else:
        procs = [_spawn(model, [s], cfg.frames, cfg.backend, work / f"proc{i}", cfg.threads_per_process)
                 for i, s in enumerate(sources)]
    reports, rss = _collect(procs)
    frames = sum(r["frames"] for r in reports)
    window = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    return {"fps": frames / max(window, 1e-9), "latencies": [x for r in reports for x in r["latencies"]],
            "rss_mb": float(np.sum(rss)) if mode != "ray" else float("nan")}  # Ray's actors are not our children


def bench_streams(model: Path, videos: Sequence[Path], cfg: StreamsBenchConfig,
                  progress=None) -> list[StreamsRow]:
    """The table of `StreamsRow`s: every mode at every stream count, `cfg.rounds` alternating rounds.
    Streams cycle through `videos` (stream i plays video i mod len(videos))."""
    from lpgb.runtime.errors import LpgbError

    if not videos:
        raise LpgbError("the streams benchmark needs test videos")
    rows = []
    with tempfile.TemporaryDirectory(prefix="lpgb-streams-") as tmp:
        for n in cfg.counts:
            sources = [str(videos[i % len(videos)]) for i in range(n)]
            runs: dict[str, list[dict]] = {m: [] for m in cfg.modes}
            for r in range(cfg.rounds):
                for mode in cfg.modes if r % 2 == 0 else tuple(reversed(cfg.modes)):
                    work = Path(tmp) / f"{n}-{mode}-{r}"
                    runs[mode].append(_one(model, sources, mode, cfg, work))
                    if progress:
                        progress(f"{n} streams, {mode}, round {r + 1}: {runs[mode][-1]['fps']:.1f} FPS")
            for mode, results in runs.items():
                lat = np.asarray([x for res in results for x in res["latencies"]], np.float64)
                rows.append(StreamsRow(mode, n, float(np.median([res["fps"] for res in results])),
                                       1000 * float(np.median(lat)), 1000 * float(np.quantile(lat, 0.99)),
                                       float(np.median([res["rss_mb"] for res in results])) / n, cfg.rounds))
    return rows


def streams_table(rows: Sequence[StreamsRow]) -> str:
    """Markdown table; 'vs processes' = batched FPS / one-process-per-stream FPS at the same count."""
    by = {(r.mode, r.streams): r for r in rows}
    out = ["| streams | mode | aggregate FPS | vs processes | latency p50 ms | p99 ms | RSS MB / stream |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        base = by.get(("processes", r.streams))
        ratio = f"{r.fps / base.fps:.2f}x" if base and base.fps > 0 else "-"
        rss = f"{r.rss_mb_per_stream:.0f}" if np.isfinite(r.rss_mb_per_stream) else "-"
        out.append(f"| {r.streams} | {r.mode} | {r.fps:.1f} | {ratio} | {r.latency_p50_ms:.0f} | "
                   f"{r.latency_p99_ms:.0f} | {rss} |")
    return "\n".join(out)


def run_streams_bench(model: Path, data: Optional[Path], cfg: StreamsBenchConfig, videos_limit: int = 0,
                      md: Optional[Path] = None, json_out: Optional[Path] = None, console=None) -> list[StreamsRow]:
    """`lpgb-bench --streams`: the table on `data`'s test videos (default: the model's training data),
    printed and written (atomically) as markdown / JSON when asked."""
    from lpgb.benchmarks import device_info
    from lpgb.benchmarks.suite import resolve_data
    from lpgb.runtime.atomic import write_text_atomic
    from lpgb.runtime.datasets import open_dataset
    from lpgb.runtime.errors import LpgbError

    if console is None:
        from lpgb.runtime.cli_common import console
    if not Path(model).exists():
        raise LpgbError(f"model folder {model} does not exist (train with lpgb-train, export with lpgb-export)")
    if not cfg.counts or any(n < 1 for n in cfg.counts):
        raise LpgbError(f"--streams needs positive stream counts such as 1,2,4,8; got {cfg.counts}")
    data = resolve_data(Path(model), data)
    videos = [v.source for v in open_dataset(data).test_videos()]
    videos = videos[:videos_limit] if videos_limit else videos
    console.print(f"lpgb-bench --streams: {model} on {len(videos)} test videos of {data}, {cfg.frames} frames "
                  f"per stream, {cfg.rounds} rounds, modes {', '.join(cfg.modes)}", highlight=False)
    rows = bench_streams(Path(model), videos, cfg, progress=lambda line: console.print(f"  {line}", highlight=False))
    table = streams_table(rows)
    console.print(table, highlight=False)
    info = device_info.collect()
    if md is not None:
        write_text_atomic(Path(md), f"# Several streams per process\n\nModel `{model}`, data `{data}`, "
                          f"{cfg.frames} frames per stream, medians of {cfg.rounds} rounds; machine: "
                          f"{info.get('cpu', '?')}, {info.get('usable_cpus', '?')} usable CPUs.\n\n{table}\n")
    if json_out is not None:
        write_text_atomic(Path(json_out), json.dumps({"model": str(model), "data": str(data), "config": asdict(cfg),
                                                      "device": info, "rows": [asdict(r) for r in rows]}, indent=2))
    return rows


def _main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lpgb.benchmarks.streams", description=__doc__.split("\n")[0])
    parser.add_argument("sources", nargs="*")
    parser.add_argument("--worker", action="store_true", help="(internal) score SOURCES and print JSON")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--backend", default="ort")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--ray", action="store_true", help="(internal) on a local Ray instance")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.model, args.sources, args.frames, args.backend, args.out, args.ray)))
        return
    parser.error("use lpgb-bench --streams 1,2,4,8 --model MODEL --data DATA")


if __name__ == "__main__":
    _main()
