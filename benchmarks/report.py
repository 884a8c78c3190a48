"""Reports of a `run_bench` result dict: rich terminal tables, markdown, CSV (summary) and JSON.

The summary has one row per requested backend (ultralytics benchmark style): Format, Status,
Size (MB) of its model files, micro AUC, ms/frame, FPS. A backend that failed keeps its row with
Status `✗ <reason>` and empty numbers. All files are written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Optional

SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("format", "Format"), ("status", "Status"), ("size_mb", "Size (MB)"), ("micro_auc", "micro AUC"),
    ("macro_auc", "macro AUC"), ("ms_per_frame", "ms/frame"), ("fps", "FPS"), ("speedup_vs_torch", "vs torch"),
    ("spearman", "Spearman vs torch"), ("precision", "Precision"),
)
# the terminal keeps to what fits 80 columns; markdown / CSV / JSON have every column
TERMINAL_COLUMNS: dict[str, str] = {"format": "Format", "status": "Status", "size_mb": "MB",
                                    "micro_auc": "micro AUC", "ms_per_frame": "ms/frame", "fps": "FPS",
                                    "speedup_vs_torch": "vs torch", "precision": "Prec."}
STAGE_COLUMNS: tuple[str, ...] = ("p50_ms", "p90_ms", "p99_ms")


# ------------------------------------------------------------------------------------------------
# model files


def model_files(model: Path, spec_name: str) -> list[Path]:
    """The files the backend of `spec_name` loads for its format row (`lpgb.runtime.backends.base.served_files`:
    the run's weights/*.pt, or the export files model.json lists, with their external data): for an int8 or
    fp16 row also the FP32 files of the parts that format lacks. [] when the model has none of them."""
    from lpgb.benchmarks.speed import parse_spec
    from lpgb.runtime.backends.base import served_files
    from lpgb.runtime.bundle import ModelBundle
    from lpgb.runtime.errors import LpgbError

    spec = parse_spec(spec_name)
    try:
        return served_files(ModelBundle.served_folder(Path(model), spec.backend), spec.format, spec.precision)
    except LpgbError:  # not exported in this format: the row fails when it runs, and says why
        return []


def files_size_mb(files: list[Path]) -> Optional[float]:
    sizes = [p.stat().st_size for p in files if p.is_file()]
    return sum(sizes) / 1e6 if sizes else None


# ------------------------------------------------------------------------------------------------
# tables as plain rows (shared by terminal, markdown and CSV)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def status_text(entry: dict) -> str:
    errors = entry.get("errors") or {}
    if not errors:
        return "✓"
    if "speed" in errors:  # it did not run at all; accuracy was skipped for the same reason
        return f"✗ {errors['speed']}"
    return "✗ " + "; ".join(f"{stage}: {reason}" for stage, reason in errors.items())


def summary_rows(result: dict) -> list[dict]:
    """One dict per backend with the SUMMARY_COLUMNS keys (numbers stay numbers, None when absent)."""
    speed = {s["backend"]: s for s in result.get("speed", [])}
    per_backend = (result.get("accuracy") or {}).get("per_backend", {})
    speedups = result.get("speedup_vs_torch", {})
    paired = (result.get("paired") or {}).get("fps", {})  # alternating-block FPS, when it ran
    rows = []
    for entry in result.get("backends", []):
        name = entry["name"]
        s, a = speed.get(name, {}), per_backend.get(name, {})
        rows.append({
            "format": name, "status": status_text(entry), "size_mb": entry.get("size_mb"),
            "micro_auc": a.get("micro_auc"), "macro_auc": a.get("macro_auc"),
            "ms_per_frame": 1e3 / paired[name] if paired.get(name) else s.get("ms_per_frame"),
            "fps": paired.get(name, s.get("fps")), "speedup_vs_torch": speedups.get(name),
            "spearman": (a.get("parity") or {}).get("spearman"), "precision": entry.get("precision"),
        })
    return rows


def paired_note(result: dict) -> str | None:
    """One line saying where the summary's FPS and 'vs torch' come from (None without a paired run)."""
    paired = result.get("paired")
    if not paired:
        return None
    if paired.get("error"):
        return f"paired FPS run failed ({paired['error']}); FPS and 'vs torch' are from the sequential runs"
    sequential = ", ".join(f"{s['backend']} {s['fps']:.1f}" for s in result.get("speed", []) if s.get("fps"))
    return (f"FPS and 'vs torch': medians over {paired['rounds']} rounds in which the backends took turns on blocks of "
            f"{paired['frames_per_round']} frames (order rotated each round); one-backend-at-a-time FPS: {sequential}")


def _summary_cells(row: dict) -> list[str]:
    digits = {"micro_auc": 4, "macro_auc": 4, "spearman": 4, "size_mb": 1, "fps": 1, "ms_per_frame": 1,
              "speedup_vs_torch": 2}
    cells = []
    for key, _ in SUMMARY_COLUMNS:
        value = row.get(key)
        text = _fmt(value, digits.get(key, 2))
        cells.append(text + "x" if key == "speedup_vs_torch" and value is not None else text)
    return cells


def stage_rows(result: dict) -> list[list[str]]:
    """Rows `stage, then p50/p90/p99 per backend` for the stage table."""
    speed = result.get("speed", [])
    names = []
    for s in speed:
        names += [n for n in s.get("stages", {}) if n not in names]
    rows = []
    for name in names:
        cells = [name]
        for s in speed:
            st = s.get("stages", {}).get(name, {})
            cells.append(" / ".join(_fmt(st.get(c), 2) for c in STAGE_COLUMNS))
        rows.append(cells)
    return rows


SWEEP_HEADERS: tuple[str, ...] = ("backend", "precision", "tubes", "ms/call", "tubes/s", "branch1 ms", "branch2 ms",
                                   "smm ms")


def sweep_rows(result: dict) -> list[list[str]]:
    """Rows of the load-sweep table (`SWEEP_HEADERS`): per backend and tube count the call's median ms and
    each part's median ms within it."""
    rows = []
    for s in result.get("speed", []):
        for r in s.get("sweep", []):
            ms = _fmt(r.get("ms"), 2) if r.get("ms") is not None else f"skipped: {r.get('skipped', '-')}"
            parts = r.get("parts_ms") or {}
            rows.append([s["backend"], str(s.get("precision", "-")), str(r["tubes"]), ms, _fmt(r.get("tubes_per_s"), 1),
                         *[_fmt(parts.get(p), 2) for p in ("branch1", "branch2", "smm")]])
    return rows


def cost_rows(result: dict) -> list[list[str]]:
    cost = result.get("cost") or {}
    rows = []
    for a in cost.get("achieved", []):
        frame = cost.get("per_frame", {}).get(a["backend"], {})
        ratio = a.get("fraction_of_peak")
        tubes = _fmt(frame.get("tubes"), 1) + ("" if frame.get("network", True) else " (no network terms)")
        rows.append([a["backend"], tubes, _fmt(a.get("gflops_per_frame"), 3),
                     _fmt(frame.get("mb"), 2), _fmt(a.get("achieved_gflops"), 2),
                     f"{ratio * 100:.1f}%" if ratio is not None else "-"])
    return rows


def _headline(result: dict) -> list[str]:
    acc = result.get("accuracy") or {}
    lines = [f"model {result.get('model')}  data {result.get('data')}",
             f"device {result.get('device_summary', '')}"]
    if acc.get("reference"):
        lines.append(f"AUC reference {acc['reference']}: micro {_fmt(acc.get('micro_auc'), 4)} "
                     f"(smoothed {_fmt(acc.get('micro_auc_smoothed'), 4)}), macro {_fmt(acc.get('macro_auc'), 4)} "
                     f"(smoothed {_fmt(acc.get('macro_auc_smoothed'), 4)}); {acc.get('n_videos')} videos, "
                     f"{acc.get('n_single_class')} single-class; smoothing {acc.get('smoothing')} "
                     f"sigma {acc.get('sigma')} frames")
    if acc.get("per_term"):
        terms = ", ".join(f"{k} {_fmt(v.get('micro_auc'), 4)} (smoothed {_fmt(v.get('micro_auc_smoothed'), 4)}, "
                          f"macro {_fmt(v.get('macro_auc'), 4)})" for k, v in acc["per_term"].items())
        lines.append(f"micro AUC per score term alone ({acc['reference']}): {terms}")
    ev = acc.get("events") or {}
    if "precision" in ev:
        lines.append(f"events ({acc['reference']}, threshold {_fmt(ev['threshold'], 3)} from training): {ev['events']} "
                     f"raised, {ev['true_events']} overlap an anomaly (precision {_fmt(ev['precision'], 3)}); "
                     f"{ev['segments_found']}/{ev['segments']} anomalous segments caught (recall {_fmt(ev['recall'], 3)})")
    if acc.get("per_anomaly"):
        kinds = ", ".join(f"{k} {_fmt(v['auc'], 3)} (smoothed {_fmt(v['auc_smoothed'], 3)}, {v['frames']} frames)"
                          for k, v in acc["per_anomaly"].items())
        lines.append(f"AUC per anomaly kind ({acc['reference']}; frames showing that kind vs all normal frames): {kinds}")
    peak = ((result.get("cost") or {}).get("peak") or {}).get("peak_gflops")
    if peak:
        lines.append(f"measured float32 matmul peak {peak:.1f} GFLOP/s")
    return lines


# ------------------------------------------------------------------------------------------------
# writers


def print_report(result: dict, console=None) -> None:
    """Rich tables on the terminal (stderr console shared by the CLIs unless one is given)."""
    from rich.table import Table

    if console is None:
        from lpgb.runtime.cli_common import console as shared

        console = shared
    for line in _headline(result):
        console.print(line, highlight=False)
    table = Table(title="lpgb-bench summary")
    shown = [i for i, (key, _) in enumerate(SUMMARY_COLUMNS) if key in TERMINAL_COLUMNS]
    for i in shown:
        key = SUMMARY_COLUMNS[i][0]
        title = TERMINAL_COLUMNS[key]
        if key == "status":  # one line; the full reasons are printed under the table
            table.add_column(title, no_wrap=True, overflow="ellipsis", max_width=18)
        else:
            table.add_column(title, justify="left" if key == "format" else "right", no_wrap=True)
    rows = summary_rows(result)
    for row in rows:
        cells = _summary_cells(row)
        cells[1] = f"[green]{cells[1]}[/]" if cells[1] == "✓" else f"[red]{cells[1]}[/]"
        table.add_row(*[cells[i] for i in shown])
    console.print(table)
    if paired_note(result):
        console.print(paired_note(result), highlight=False, soft_wrap=True)
    for row in rows:
        if row["status"] != "✓":
            console.print(f"[red]{row['format']}[/]: {row['status']}", highlight=False, soft_wrap=True)
    if result.get("speed"):
        stages = Table(title="per-stage latency, ms (p50 / p90 / p99)")
        stages.add_column("stage")
        for s in result["speed"]:
            stages.add_column(s["backend"], justify="right")
        for row in stage_rows(result):
            stages.add_row(*row)
        console.print(stages)
    if sweep_rows(result):
        sweep = Table(title="load sweep: score_tubes (median)")
        for title in SWEEP_HEADERS:
            sweep.add_column(title, justify="right")
        for row in sweep_rows(result):
            sweep.add_row(*row)
        console.print(sweep)
    if cost_rows(result):
        cost = Table(title="cost model")
        for title in ("backend", "tubes/frame", "GFLOP/frame", "MB/frame", "GFLOP/s", "of peak"):
            cost.add_column(title, justify="right")
        for row in cost_rows(result):
            cost.add_row(*row)
        console.print(cost)
    recall = _recall_table(result)
    if recall:
        table = Table(title=recall[0])
        for title in recall[1]:
            table.add_column(title, justify="right")
        for row in recall[2]:
            table.add_row(*row)
        console.print(table)


def _recall_table(result: dict):
    """(title, headers, rows, note) of the proposal-recall table, or None (benchmarks/recall.py)."""
    props = result.get("proposals")
    if not props:
        return None
    if "error" in props:
        return "proposal recall", ["error"], [[props["error"]]], ""
    from lpgb.benchmarks.recall import RECALL_HEADERS, recall_rows

    title = (f"proposal recall @ IoU {props.get('iou')}: {len(props.get('videos', []))} videos, "
             f"{props.get('gt_boxes')} GT boxes ({props.get('gt_anomalous')} anomalous)")
    return title, RECALL_HEADERS, recall_rows(props), props.get("method", "")


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(result: dict) -> str:
    parts = ["# lpgb-bench report", ""] + [f"- {line}" for line in _headline(result)] + [""]
    parts += ["## Summary", "", _md_table([t for _, t in SUMMARY_COLUMNS],
                                          [_summary_cells(r) for r in summary_rows(result)]), ""]
    if paired_note(result):
        parts += [paired_note(result), ""]
    if result.get("speed"):
        parts += ["## Per-stage latency (ms, p50 / p90 / p99)", "",
                  _md_table(["stage"] + [s["backend"] for s in result["speed"]], stage_rows(result)), ""]
        parts += ["Warm-up then timed frames per backend; decode is timed inside the loop. Cold start = "
                  "seconds from opening the detector to the first scored frame.", ""]
        parts += [_md_table(["backend", "frames", "cold start (s)", "RSS (MB)", "tubes/frame (mean)"],
                            [[s["backend"], str(s.get("frames")), _fmt(s.get("cold_start_s"), 2),
                              _fmt(s.get("rss_mb"), 0), _fmt(s.get("tubes_mean"), 2)] for s in result["speed"]]), ""]
    if sweep_rows(result):
        parts += ["## Load sweep (score_tubes, median)", "",
                  _md_table(list(SWEEP_HEADERS), sweep_rows(result)), ""]
    if cost_rows(result):
        parts += ["## Cost model", "", _md_table(["backend", "tubes/frame", "GFLOP/frame", "MB/frame", "GFLOP/s",
                                                  "of peak"], cost_rows(result)), ""]
        method = (result.get("cost") or {}).get("method")
        if method:
            parts += [f"Method: {method}.", ""]
    recall = _recall_table(result)
    if recall:
        parts += [f"## {recall[0][0].upper()}{recall[0][1:]}", "", _md_table(recall[1], recall[2]), ""]
        parts += [f"Method: {recall[3]}.", ""] if recall[3] else []
    return "\n".join(parts)


def to_csv(result: dict) -> str:
    """The summary table: header `format,status,size_mb,...`, one row per backend, raw numbers."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    keys = [k for k, _ in SUMMARY_COLUMNS]
    writer.writerow(keys)
    for row in summary_rows(result):
        writer.writerow(["" if row[k] is None else row[k] for k in keys])
    return buf.getvalue()


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        value = obj.item()
        return None if isinstance(value, float) and not math.isfinite(value) else value
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(result: dict) -> str:
    """Everything, with NaN/inf written as null (strict JSON)."""
    return json.dumps(_nan_to_none(result), indent=2, default=_json_default, allow_nan=False)


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def write_reports(result: dict, json_out: Optional[Path] = None, md: Optional[Path] = None,
                  csv_out: Optional[Path] = None) -> list[Path]:
    """Write the requested files atomically; returns the paths written."""
    from lpgb.runtime.atomic import write_text_atomic

    written = []
    for path, render in ((json_out, to_json), (md, to_markdown), (csv_out, to_csv)):
        if path is not None:
            write_text_atomic(Path(path), render(result))
            written.append(Path(path))
    return written


__all__ = ["SUMMARY_COLUMNS", "SWEEP_HEADERS", "model_files", "files_size_mb", "status_text", "summary_rows", "stage_rows",
           "sweep_rows", "cost_rows", "print_report", "to_markdown", "to_csv", "to_json", "write_reports"]
