"""`lpgb-export --check`: the parity ladder for an export folder, printed as one table.

Gates (DESIGN.md): PyTorch FP32 vs ONNX Runtime FP32 max rel <= 1e-4 per part; ONNX FP16 vs ONNX FP32:
smm tube-error rank correlation >= 0.999 (the score the runtime ranks frames by), other parts max rel
<= 1e-2. AUC on labelled data is the benchmark's job (lpgb-bench), not the exporter's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lpgb.export.onnx_export import ParityError, compare_outputs, ort_session, verify_onnx
from lpgb.runtime.config import LpgbConfig

FP32_RTOL = 1e-4
FP16_RTOL = 1e-2
FP16_MIN_RANK_CORR = 0.999


@dataclass(frozen=True)
class ParityRow:
    part: str
    check: str  # e.g. "torch vs ort fp32"
    value: float  # the gated quantity (max rel, or rank correlation)
    limit: float
    ok: bool
    note: str = ""


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation (no tie correction; scores are continuous)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if a.size < 2:
        return 1.0
    return float(np.corrcoef(ra, rb)[0, 1])


def parity_table(rows: Sequence[ParityRow]) -> str:
    """Plain-text table, one line per check, ending with PASS / FAIL."""
    head = f"{'part':<10} {'check':<22} {'value':>10} {'limit':>10}  result"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.part:<10} {r.check:<22} {r.value:>10.3g} {r.limit:>10.3g}  "
                     f"{'ok' if r.ok else 'FAIL'}{('  ' + r.note) if r.note else ''}")
    lines.append("PASS" if all(r.ok for r in rows) else "FAIL")
    return "\n".join(lines)


def fp16_rows(part: str, fp32_path: Path, fp16_path: Path, feeds: dict[str, np.ndarray],
              gate_rank: bool = True) -> list[ParityRow]:
    """ONNX Runtime FP16 vs FP32 on `feeds`: max rel, plus rank correlation of `error` for smm.

    The rank gate needs real tube features from a trained model: on random features the errors of
    an (un)trained fusion+SMM are nearly equal (std ~3e-3 at tiny) and FP16 noise (~4e-4) reorders
    them, so with `gate_rank=False` the row is reported, not gated.
    """
    s32, s16 = ort_session(fp32_path), ort_session(fp16_path)
    names = [o.name for o in s32.get_outputs()]
    ref, got = s32.run(names, feeds), s16.run(names, feeds)
    if part == "rpn":  # TopK order among tied scores is implementation-defined
        ref = [np.sort(a, axis=0) for a in ref]
        got = [np.sort(a, axis=0) for a in got]
    worst, _ = compare_outputs(ref, got, names)
    rows = [ParityRow(part, "ort fp16 vs fp32 rel", worst.max_rel, FP16_RTOL, worst.max_rel <= FP16_RTOL)]
    if "error" in names:
        i = names.index("error")
        rho = rank_correlation(ref[i], got[i])
        rows.append(ParityRow(part, "fp16 error rank corr", rho, FP16_MIN_RANK_CORR,
                              rho >= FP16_MIN_RANK_CORR or not gate_rank, "" if gate_rank else "random inputs: not gated"))
    return rows


def run_checks(run_dir: Path, out: Path, fp16: bool, batch: int = 32) -> bool:
    """Compare the trained torch parts of `run_dir` with the ONNX files in `out`; print the table."""
    from lpgb.export.pipeline import example_inputs
    from lpgb.runtime.cli_common import console
    from lpgb.trainer.torch_backend import load_parts

    cfg = LpgbConfig.load(Path(run_dir) / "config.json")
    rows: list[ParityRow] = []
    for part, module in load_parts(run_dir, cfg).items():
        fp32_path = Path(out) / f"{part}.onnx"
        inputs = example_inputs(part, cfg, batch=batch)
        try:
            r = verify_onnx(module, fp32_path, inputs, rtol=FP32_RTOL, order_insensitive=part == "rpn")
            rows.append(ParityRow(part, "torch vs ort fp32 rel", r.max_rel, FP32_RTOL, True))
        except ParityError as exc:
            rows.append(ParityRow(part, "torch vs ort fp32 rel", float("nan"), FP32_RTOL, False, str(exc)))
        fp16_path = Path(out) / f"{part}_fp16.onnx"
        if fp16 and fp16_path.is_file():
            feeds = {i.name: t.numpy() for i, t in zip(ort_session(fp32_path).get_inputs(), inputs)}
            rows.extend(fp16_rows(part, fp32_path, fp16_path, feeds, gate_rank=False))  # TODO: real tube features
    console.print(parity_table(rows), markup=False, highlight=False)
    return all(r.ok for r in rows)
