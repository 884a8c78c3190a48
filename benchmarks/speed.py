"""Speed of one backend on a real test video: end-to-end FPS, per-stage latency, a tube-load sweep.

Method (nanoGPT bench.py): open the detector, warm up on `warmup` frames, then time `frames`
frames; frames are decoded from disk inside the timed loop, so `decode` is a stage like the
others. When the video is shorter than warm-up + timed frames it is reopened and continues (the
detector keeps its state, as with a looping camera). The sweep times `TubeScorer` on
synthetic crops `(K, L+1, S, S, 3)`: one warm-up call, then the median of `repeats` calls.
`paired_fps` then times the backends against each other in alternating blocks (the FPS and the
ratio to PyTorch in the report's summary), which keeps the ratio fair on a shared machine.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from lpgb.runtime.errors import LpgbError

STAGE_ORDER: tuple[str, ...] = ("decode", "proposals", "tubes", "flow", "foreground", "occupancy", "tracks", "branch1",
                                 "branch2", "smm", "scoring")


@dataclass(frozen=True)
class BackendSpec:
    """A `--backends` entry: the name in reports, what `open_detector` gets and the format row it serves
    (`lpgb.runtime.formats.FORMATS`, whose files the report lists)."""

    name: str
    backend: str
    precision: str
    format: str = "onnx"


def bench_specs() -> dict[str, BackendSpec]:
    """Every `--backends` name: one per backend registry row and format it serves (`BackendEntry.formats`),
    its main format under its own name (NAME), the others as NAME-<precision> (ort-fp16, ort-int8)."""
    from lpgb.runtime.backends.base import backends
    from lpgb.runtime.formats import FORMATS

    specs = {}
    for entry in backends().values():
        for i, name in enumerate(entry.formats):
            row = FORMATS[name]
            spec = entry.name if i == 0 else f"{entry.name}-{row.precision}"
            specs[spec] = BackendSpec(spec, entry.name, row.precision or "fp32", row.name)
    return specs


def parse_spec(name: str) -> BackendSpec:
    specs = bench_specs()
    try:
        return specs[name.strip()]
    except KeyError:
        raise LpgbError(f"unknown backend {name!r}; choose from {', '.join(specs)}") from None


def percentiles(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99 in milliseconds of a list of durations in seconds (None for an empty list)."""
    if len(seconds) == 0:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None}
    p50, p90, p99 = np.percentile(np.asarray(seconds, dtype=np.float64) * 1e3, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99)}


def rss_mb() -> float:
    """Resident set size now (VmRSS), falling back to the peak (ru_maxrss) off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timed_frames(source: Path) -> Iterator[tuple[np.ndarray, float]]:
    """Yield (frame, decode seconds) forever, reopening `source` at its end."""
    from lpgb.runtime.video import open_source

    while True:
        got = 0
        with open_source(source) as src:
            it = iter(src)
            while True:
                start = time.perf_counter()
                frame = next(it, None)
                elapsed = time.perf_counter() - start
                if frame is None:
                    break
                got += 1
                yield frame, elapsed
        if got == 0:
            raise LpgbError(f"{source}: no frames to benchmark")


def sweep_tubes(detector, tube_counts: Sequence[int], repeats: int = 5, seed: int = 0,
                max_call_s: float = 10.0) -> list[dict]:
    """ms per `score_tubes` call and tubes/s for K tubes of random crops; median of `repeats` calls
    after one warm-up call, and the median ms of each part in those calls (`parts_ms`: branch1, branch2, smm). A point whose warm-up call takes longer than `max_call_s` is recorded
    as skipped and ends the sweep (larger K would only be slower), so a big model on a small CPU
    does not run for many minutes."""
    from lpgb.runtime.pipeline import TubeScorer

    cfg = detector.cfg
    side, length = cfg.spatial.image_size, cfg.smm.window + 1
    rng = np.random.default_rng(seed)
    rows: list[dict] = []
    for k in sorted({int(k) for k in tube_counts if int(k) > 0}):
        crops = rng.integers(0, 256, size=(k, length, side, side, 3), dtype=np.uint8)
        start = time.perf_counter()
        TubeScorer(detector.backend)(crops, {})  # warm-up (shape change, allocator)
        first = time.perf_counter() - start
        if first > max_call_s:
            rows.append({"tubes": k, "ms": None, "tubes_per_s": None, "runs": 0,
                         "skipped": f"warm-up call took {first:.1f}s > {max_call_s:.0f}s"})
            break
        runs, parts = [], {}
        for _ in range(max(1, repeats)):
            times: dict[str, float] = {}
            start = time.perf_counter()
            TubeScorer(detector.backend)(crops, times)
            runs.append(time.perf_counter() - start)
            for part, seconds in times.items():
                parts.setdefault(part, []).append(seconds)
        ms = float(np.median(runs) * 1e3)
        rows.append({"tubes": k, "ms": ms, "tubes_per_s": float(k / (ms / 1e3)) if ms > 0 else None,
                     "runs": len(runs), "parts_ms": {n: float(np.median(v) * 1e3) for n, v in parts.items()}})
    return rows


def measure_speed(model: Path, spec: BackendSpec, source: Path, device: str = "cpu", frames: int = 60,
                  sweep: Sequence[int] = (1, 4, 16, 64), warmup: int = 5, repeats: int = 5,
                  advance: Optional[Callable[[], None]] = None) -> dict:
    """Benchmark one backend on `source`; returns the `speed` entry of the report.

    `advance` is called once per processed frame (progress bars).
    """
    from lpgb.runtime.pipeline import open_detector

    rss_before = rss_mb()
    t_open = time.perf_counter()
    detector = open_detector(model, spec.backend, spec.precision, device)
    try:
        load_s = time.perf_counter() - t_open
        stream = _timed_frames(source)
        cold_start = None
        for _ in range(max(1, warmup)):
            frame, _ = next(stream)
            detector.process(frame)
            if cold_start is None:
                cold_start = time.perf_counter() - t_open
            if advance:
                advance()
        stage_times: dict[str, list[float]] = {"decode": []}
        tubes: list[int] = []
        start = time.perf_counter()
        for _ in range(frames):
            frame, decode_s = next(stream)
            r = detector.process(frame)
            stage_times["decode"].append(decode_s)
            for name, seconds in r.times.items():
                stage_times.setdefault(name, []).append(seconds)
            tubes.append(len(r.boxes))
            if advance:
                advance()
        wall = time.perf_counter() - start
        sweep_rows = sweep_tubes(detector, sweep, repeats)
        providers = list(getattr(detector.backend, "providers", []) or [])
    finally:
        try:
            detector.backend.close()
        except Exception:
            pass
    order = [s for s in STAGE_ORDER if s in stage_times] + sorted(set(stage_times) - set(STAGE_ORDER))
    stages = {name: percentiles(stage_times[name]) for name in order}
    for name in order:  # stages that only run on frames with tubes: how often they ran
        stages[name]["frames"] = len(stage_times[name])
    rss_after = rss_mb()
    return {
        "backend": spec.name, "runtime": spec.backend, "precision": spec.precision, "device": device,
        "providers": providers, "source": str(source),
        "frames": frames, "warmup": warmup, "wall_s": wall,
        "fps": frames / wall if wall > 0 else None,
        "ms_per_frame": wall / frames * 1e3 if frames else None,
        "load_s": load_s, "cold_start_s": cold_start,
        "rss_mb": rss_after, "rss_delta_mb": rss_after - rss_before, "peak_rss_mb": peak_rss_mb(),
        "tubes_mean": float(np.mean(tubes)) if tubes else 0.0, "tubes_max": int(max(tubes)) if tubes else 0,
        "stages": stages, "sweep": sweep_rows,
    }


def paired_fps(model: Path, specs: Sequence[BackendSpec], source: Path, device: str = "cpu", rounds: int = 5,
               frames_per_round: int = 12, warmup: int = 3, reference: str = "torch",
               advance: Optional[Callable[[], None]] = None) -> dict:
    """FPS of several backends measured in alternation, so that a busy spell of a shared machine
    slows every backend alike and their ratio stays fair.

    All detectors are opened and warmed up (`warmup` frames each); then, `rounds` times, each
    backend (in an order rotated every round) processes the next `frames_per_round` frames of its
    own stream of `source`, decode included. Returns per backend the median over rounds of the
    block FPS and, when `reference` ran, the median over rounds of FPS / reference FPS in the same
    round (`speedup_vs_torch`).
    """
    from lpgb.runtime.pipeline import open_detector

    if rounds < 1 or frames_per_round < 1:
        raise LpgbError(f"paired FPS needs rounds >= 1 and frames_per_round >= 1 (got {rounds}, {frames_per_round})")
    detectors, streams = {}, {}
    try:
        for spec in specs:
            detectors[spec.name] = open_detector(model, spec.backend, spec.precision, device)
            streams[spec.name] = _timed_frames(source)
            for _ in range(max(1, warmup)):
                detectors[spec.name].process(next(streams[spec.name])[0])
        names = list(detectors)
        per_round: list[dict[str, float]] = []
        for r in range(rounds):
            fps: dict[str, float] = {}
            for name in names[r % len(names):] + names[: r % len(names)]:
                start = time.perf_counter()
                for _ in range(frames_per_round):
                    detectors[name].process(next(streams[name])[0])
                    if advance:
                        advance()
                fps[name] = frames_per_round / (time.perf_counter() - start)
            per_round.append(fps)
    finally:
        for detector in detectors.values():
            try:
                detector.backend.close()
            except Exception:
                pass
    result = {"rounds": rounds, "frames_per_round": frames_per_round, "warmup": warmup, "order": "rotated per round",
              "fps": {n: float(np.median([f[n] for f in per_round])) for n in names}, "per_round": per_round}
    if reference in names:
        result["speedup_vs_torch"] = {n: float(np.median([f[n] / f[reference] for f in per_round])) for n in names}
    return result


def speedups(speed: list[dict], reference: str = "torch") -> dict[str, float]:
    """FPS of each backend divided by the reference's FPS (empty when the reference did not run)."""
    ref = next((s for s in speed if s["backend"] == reference and s.get("fps")), None)
    if ref is None:
        return {}
    return {s["backend"]: s["fps"] / ref["fps"] for s in speed if s.get("fps")}


__all__ = ["BackendSpec", "bench_specs", "STAGE_ORDER", "parse_spec", "percentiles", "rss_mb", "peak_rss_mb",
           "sweep_tubes", "measure_speed", "paired_fps", "speedups"]
