"""`run_bench`: speed, accuracy and cost of a trained (and exported) model on every requested
backend, then the terminal report and the requested JSON / markdown / CSV files.

One backend failing (TensorRT not installed, no fp16 export, ...) is recorded in its row and the
rest of the benchmark goes on.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from lpgb.runtime.errors import LpgbError

REPORT_VERSION = 1


@dataclass(frozen=True)
class BenchRequest:
    model: Path  # run folder (lpgb-train output, exported with lpgb-export) or its export folder
    data: Optional[Path] = None  # labelled dataset; default: the one recorded in RUN/data.json
    backends: tuple[str, ...] = ("torch", "ort")  # torch | ort | ort-fp16 | trt
    videos: int = 0  # at most this many labelled test videos for AUC (0 = all)
    speed_frames: int = 60  # timed frames per backend (after warm-up)
    sweep: tuple[int, ...] = (1, 4, 16, 64)  # tube counts for the score_tubes load sweep
    json_out: Optional[Path] = None
    md: Optional[Path] = None
    csv: Optional[Path] = None
    device: str = "cpu"  # cpu | cuda
    warmup: int = 5  # untimed frames before the timed phase
    repeats: int = 5  # timed calls per sweep point (median)
    paired_rounds: int = 5  # alternating rounds of the paired FPS run (0: skip; needs 2+ backends)
    recall: Optional[bool] = None  # proposal recall on GT boxes (None = when the data has GT boxes)


def resolve_data(model: Path, data: Optional[Path]) -> Path:
    """`data` if given, else the dataset recorded by lpgb-train in RUN/data.json."""
    if data is not None:
        if not Path(data).exists():
            raise LpgbError(f"dataset {data} does not exist")
        return Path(data)
    from lpgb.runtime.datasets import recorded_dataset

    path = recorded_dataset(Path(model))
    if path is not None:
        return path
    raise LpgbError(f"no --data given and {model} records no dataset (data.json); pass --data DIR")


def _model_info(model: Path, specs: list):
    """Config and RPN use from the backends' model files (the first that resolves). Backends whose
    files carry different configs (a stale export) are refused: they would cut different tubes. A model
    folder that does not match its model.json (`BundleError`: a changed, missing or unlisted file) is
    refused outright, as lpgb-run refuses it; a backend that is merely unavailable gets a failed row."""
    from lpgb.runtime.config import config_differences
    from lpgb.runtime.bundle import ModelBundle
    from lpgb.runtime.sidecar import BundleError

    resolved, errors = [], []
    for spec in specs:
        try:
            resolved.append((spec.name, ModelBundle.open(model, spec.backend)))
        except BundleError:
            raise
        except LpgbError as exc:
            errors.append(str(exc))  # reported again when that backend is loaded
    for name, info in resolved[1:]:
        diff = config_differences(resolved[0][1].cfg, info.cfg)
        if diff:
            raise LpgbError(f"{resolved[0][0]} and {name} read different configs ({', '.join(diff)}): the export is "
                            f"stale, re-run lpgb-export {model} --overwrite")
    for spec in [s for s in _fallback_specs() if s.name not in {x.name for x in specs}] if not resolved else []:
        try:
            resolved.append((spec.name, ModelBundle.open(model, spec.backend)))
            break
        except LpgbError as exc:
            errors.append(str(exc))
    if not resolved:
        raise LpgbError(errors[0] if errors else f"{model} is not an lpgb model folder")
    info = resolved[0][1]
    return info.cfg, info.has_rpn and info.cfg.proposals.source in ("rpn", "union")


def _fallback_specs() -> list:
    from lpgb.benchmarks.speed import bench_specs

    specs = bench_specs()
    return [specs["torch"], specs["ort"]]


def _request_dict(request: BenchRequest) -> dict:
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(request).items()}


def run_bench(request: BenchRequest, console=None) -> dict:
    """Benchmark `request.model`; prints the report, writes the requested files, returns the result dict."""
    from lpgb.benchmarks import device_info
    from lpgb.benchmarks.accuracy import labelled_videos, measure_accuracy, one_line
    from lpgb.benchmarks.cost import cost_report
    from lpgb.benchmarks.report import files_size_mb, model_files, print_report, write_reports
    from lpgb.benchmarks.speed import measure_speed, paired_fps, parse_spec, speedups
    from lpgb.runtime.progress import progress_bar

    if console is None:
        from lpgb.runtime.cli_common import console
    specs = []
    for name in request.backends:
        spec = parse_spec(name)
        if spec.name not in [s.name for s in specs]:
            specs.append(spec)
    if not specs:
        raise LpgbError("no backends to benchmark; pass --backends torch,ort,ort-fp16,trt (any of them)")
    if request.speed_frames <= 0:
        raise LpgbError(f"--speed-frames must be positive, got {request.speed_frames}")
    if request.paired_rounds < 0:
        raise LpgbError(f"--paired-rounds must be >= 0 (0 skips the paired run), got {request.paired_rounds}")
    if request.device not in ("cpu", "cuda"):
        raise LpgbError(f"unknown device {request.device!r}; choose cpu or cuda")
    model = Path(request.model)
    if not model.exists():
        raise LpgbError(f"model folder {model} does not exist (train with lpgb-train, export with lpgb-export)")
    data = resolve_data(model, request.data)
    videos = labelled_videos(data, request.videos)
    cfg, use_rpn = _model_info(model, specs)
    info = device_info.collect()
    console.print(f"lpgb-bench: {model} on {data} ({len(videos)} labelled test videos), backends "
                  f"{', '.join(s.name for s in specs)}; {device_info.describe(info)}", highlight=False)

    started = time.perf_counter()
    entries = {s.name: {"name": s.name, "backend": s.backend, "precision": s.precision, "errors": {},
                        "files": [str(p) for p in model_files(model, s.name)]} for s in specs}
    for e in entries.values():
        e["size_mb"] = files_size_mb([Path(p) for p in e["files"]])
    speed: list[dict] = []
    source = videos[0].source
    with progress_bar() as bar:
        for spec in specs:
            task = bar.add_task(f"speed {spec.name}", total=request.warmup + request.speed_frames, info="")
            try:
                speed.append(measure_speed(model, spec, source, request.device, request.speed_frames,
                                           request.sweep, request.warmup, request.repeats,
                                           advance=lambda t=task: bar.update(t, advance=1)))
                bar.update(task, info=f"{speed[-1]['fps']:.1f} FPS")
            except Exception as exc:  # noqa: BLE001 - any failure becomes the row's status
                entries[spec.name]["errors"]["speed"] = one_line(exc)
                bar.update(task, info=f"[red]✗ {one_line(exc)}[/]")
        runnable = [s for s in specs if not entries[s.name]["errors"]]
        paired = None
        if request.paired_rounds > 0 and len(runnable) >= 2:
            per_round = max(1, request.speed_frames // request.paired_rounds)
            task = bar.add_task("paired FPS", total=request.paired_rounds * per_round * len(runnable), info="")
            try:
                paired = paired_fps(model, runnable, source, request.device, request.paired_rounds, per_round,
                                    advance=lambda t=task: bar.update(t, advance=1))
            except Exception as exc:  # noqa: BLE001 - the sequential numbers still stand
                paired = {"error": one_line(exc)}
        task = bar.add_task("accuracy", total=len(runnable) * len(videos), info="")
        accuracy = measure_accuracy(
            model, runnable, videos, cfg.scoring.smoothing_sigma, request.device,
            on_video=lambda b, v: bar.update(task, advance=1, info=f"{b} {v}"),
            on_error=lambda b, exc: entries[b]["errors"].__setitem__("accuracy", one_line(exc)))
    for name, entry in entries.items():  # a backend that failed to run also has no AUC: say why once
        if "speed" in entry["errors"] and name not in accuracy["per_backend"]:
            entry["errors"].setdefault("accuracy", "skipped (speed run failed)")
    try:
        with console.status("cost model (FLOP count, matmul peak)"):
            cost = cost_report(cfg, speed, use_rpn, request.sweep)
    except Exception as exc:  # noqa: BLE001 - e.g. torch missing: the report still goes out
        cost = {"error": one_line(exc)}

    proposals = _proposal_recall(model, data, request, console)  # proposal recall (benchmarks/recall.py)

    result = {
        "lpgb_bench": REPORT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": time.perf_counter() - started,
        "model": str(model), "data": str(data), "speed_source": str(source),
        "request": _request_dict(request),
        "device": info, "device_summary": device_info.describe(info),
        "config": cfg.to_dict(),
        "backends": list(entries.values()),
        "speed": speed,
        "speedup_vs_torch": (paired or {}).get("speedup_vs_torch") or speedups(speed),
        "accuracy": accuracy,
        "cost": cost,
    }
    if paired is not None:
        result["paired"] = paired
    if proposals is not None:
        result["proposals"] = proposals
    print_report(result, console)
    for path in write_reports(result, request.json_out, request.md, request.csv):
        console.print(f"wrote {path}", highlight=False)
    return result


# ------------------------------------------------------------------------------------------------
# proposal recall (lpgb.benchmarks.recall)


def _proposal_recall(model: Path, data: Path, request: BenchRequest, console) -> Optional[dict]:
    """`measure_recall` when asked (or, by default, when the data has GT boxes); errors go in the dict."""
    from lpgb.benchmarks.accuracy import one_line
    from lpgb.benchmarks.recall import has_boxes, measure_recall

    wanted = request.recall if request.recall is not None else has_boxes(data)
    if not wanted:
        return None
    try:
        with console.status("proposal recall (motion, RPN, union) on ground-truth boxes"):
            return measure_recall(model, data, request.videos)
    except Exception as exc:  # noqa: BLE001 - the rest of the report still goes out
        return {"error": one_line(exc)}


__all__ = ["BenchRequest", "run_bench", "resolve_data", "REPORT_VERSION"]
