"""PyTorch module -> checked ONNX file, then ONNX Runtime vs PyTorch parity (after timm/utils/onnx.py).

Exporter choice: the TorchScript exporter (`dynamo=False`). Measured here on torch 2.14 with a
Conv/BN/ReLU + Linear + LayerNorm + attention + TopK stand-in: it exports in ~0.15 s, honours
`opset_version=17` and takes `dynamic_axes` as is. The dynamo exporter took ~5 s, has no opset-17
implementations (it exports opset 18 and its down-conversion to 17 failed on ReduceMean axes), and
prints a page of progress. The TorchScript exporter is deprecated upstream (a FutureWarning, which we
silence); `dynamo=True` stays available for when it goes.

`onnxslim` (graph simplification) is not installed here; the TorchScript exporter with constant
folding already gives a compact graph for these models (no Identity/Shape chains in the stand-ins),
so it is not used. Revisit if TensorRT's parser complains about shape subgraphs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
import torch
from torch import nn

from lpgb.runtime.atomic import atomic_path
from lpgb.runtime.backends.ort_backend import cpu_session
from lpgb.runtime.errors import LpgbError


class ParityError(LpgbError):
    """Two implementations of the same model disagree by more than the stated tolerance."""


@dataclass(frozen=True)
class ParityResult:
    """Worst disagreement over all outputs. `max_rel` is max |a - b| / max |reference| per output."""

    max_abs: float
    max_rel: float

    def __str__(self) -> str:
        return f"max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}"


def export_onnx(
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]],
    opset: int = 17,
    dynamo: bool = False,
) -> Path:
    """Export `module` (put in eval mode) to `path` atomically and run the full ONNX checker.

    `dynamic_axes` maps an input/output name to {axis: symbolic name}, e.g. {"crops": {0: "batch"}}.
    Raises LpgbError if the export or the checker fails. Run `verify_onnx` afterwards for parity.
    """
    path = Path(path)
    module = module.eval()
    with atomic_path(path) as tmp:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)  # TorchScript exporter deprecation
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            try:
                torch.onnx.export(
                    module, tuple(example_inputs), str(tmp),
                    input_names=list(input_names), output_names=list(output_names),
                    dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
                    opset_version=opset, do_constant_folding=True, dynamo=dynamo,
                )
            except Exception as exc:  # the exporter raises many types; users get one line
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise LpgbError(f"ONNX export of {type(module).__name__} to {path.name} failed: {first}") from exc
        try:
            onnx.checker.check_model(str(tmp), full_check=True)  # path form: works past 2 GB too
        except onnx.checker.ValidationError as exc:
            raise LpgbError(f"{path.name} failed the ONNX checker: {str(exc).splitlines()[0]}") from exc
    return path


def _to_numpy_list(outputs: object) -> list[np.ndarray]:
    if isinstance(outputs, torch.Tensor):
        outputs = (outputs,)
    return [o.detach().cpu().numpy() for o in outputs]  # type: ignore[union-attr]


def compare_outputs(reference: Sequence[np.ndarray], other: Sequence[np.ndarray],
                    names: Sequence[str]) -> tuple[ParityResult, dict[str, ParityResult]]:
    """Worst and per-output (max abs, max rel) of `other` against `reference`; shapes must match."""
    per_output: dict[str, ParityResult] = {}
    for name, ref, got in zip(names, reference, other):
        if ref.shape != got.shape:
            raise ParityError(f"output {name}: shape {got.shape} differs from the reference {ref.shape}")
        ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
        if not np.isfinite(got64).all():
            raise ParityError(f"output {name}: non-finite values")
        max_abs = float(np.abs(ref64 - got64).max()) if ref.size else 0.0
        scale = float(np.abs(ref64).max()) if ref.size else 0.0
        per_output[name] = ParityResult(max_abs, max_abs / max(scale, 1e-12))
    worst = ParityResult(max((r.max_abs for r in per_output.values()), default=0.0),
                         max((r.max_rel for r in per_output.values()), default=0.0))
    return worst, per_output


def _rows_matched(reference: np.ndarray, got: np.ndarray) -> np.ndarray:
    """`got` `(K, ...)` with its rows reordered to best match `reference`'s rows (minimum total
    Euclidean distance, scipy's linear_sum_assignment), to compare outputs whose row order is
    undefined. A lexicographic sort is not enough: rows whose first values differ only by float
    rounding (boxes clipped to the same edge) can sort in a different order in each backend."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    if reference.shape != got.shape or reference.ndim == 0 or reference.shape[0] == 0:
        return got
    ref = reference.reshape(reference.shape[0], -1).astype(np.float64)
    other = got.reshape(got.shape[0], -1).astype(np.float64)
    rows, cols = linear_sum_assignment(cdist(ref, other))
    matched = np.empty_like(got)
    matched[rows] = got[cols]
    return matched


TOPK_TIE_MARGIN = 1e-3  # scores within this of a top-K output's lowest kept score may be swapped for ties


def _clear_of_topk_cut(reference: list[np.ndarray], got: list[np.ndarray], names: Sequence[str],
                       score_name: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """For a top-K output (rows ranked by `score_name`): the scores compared as sorted values, and the
    other outputs' rows compared only where the reference score is clear of the cut (more than
    `TOPK_TIE_MARGIN` above the lowest kept score), each paired with its nearest row of `got`.
    Near the cut, near-tied candidates (an RPN on flat or padded image regions has many) may be
    kept by one runtime and not the other: a different but equally valid selection, not an error."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    i = list(names).index(score_name)
    ref_scores = reference[i].reshape(-1)
    if ref_scores.size == 0 or got[i].shape != reference[i].shape:
        return reference, got
    inside = ref_scores > ref_scores.min() + TOPK_TIE_MARGIN
    ref_out, got_out = [], []
    for j, (r, g) in enumerate(zip(reference, got)):
        if j == i:
            ref_out.append(np.sort(r.reshape(-1))[::-1])
            got_out.append(np.sort(g.reshape(-1))[::-1])
            continue
        if r.shape != g.shape or r.ndim == 0 or r.shape[0] != ref_scores.size:
            ref_out.append(r), got_out.append(g)
            continue
        keep = r[inside]
        if len(keep) == 0:  # every kept score ties at the cut: only the score values are comparable
            ref_out.append(keep), got_out.append(g[:0])
            continue
        rows, cols = linear_sum_assignment(cdist(keep.reshape(len(keep), -1).astype(np.float64),
                                                 g.reshape(len(g), -1).astype(np.float64)))
        matched = np.empty_like(keep)
        matched[rows] = g[cols]
        ref_out.append(keep), got_out.append(matched)
    return ref_out, got_out


def verify_onnx(module: nn.Module, path: Path, example_inputs: tuple[torch.Tensor, ...],
                rtol: float = 1e-4, order_insensitive: bool = False, atol: float = 0.0) -> ParityResult:
    """Run `module` in PyTorch and `path` in ONNX Runtime CPU on the same inputs; raise ParityError
    naming the worst output when max rel error (relative to the output's largest magnitude) > rtol and
    its max abs error > atol (an output that is all but zero, such as the objectness of an RPN that has
    barely trained, has no meaningful relative error).

    Pass inputs with a different batch size from the export to check the dynamic axes too.
    `order_insensitive=True` compares each output's rows as a set (each row of ONNX Runtime's output
    paired with its nearest reference row): TopK over tied scores (an untrained RPN has many) orders
    ties differently in PyTorch and ONNX Runtime; with a `scores` output, rows at the top-K cut are
    left out as well (`_clear_of_topk_cut`).
    """
    module = module.eval()
    with torch.no_grad():
        reference = _to_numpy_list(module(*example_inputs))
    session = cpu_session(path, threads=1)  # a small thread count: tests share the machine
    feeds = {i.name: t.detach().cpu().numpy() for i, t in zip(session.get_inputs(), example_inputs)}
    names = [o.name for o in session.get_outputs()]
    try:
        got = session.run(names, feeds)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ParityError(f"ONNX Runtime could not run {Path(path).name}: {str(exc).splitlines()[0]}") from exc
    if order_insensitive and "scores" in names:
        reference, got = _clear_of_topk_cut(reference, got, names, "scores")
    elif order_insensitive:
        got = [_rows_matched(r, g) for r, g in zip(reference, got)]
    worst, per_output = compare_outputs(reference, got, names)
    failed = {n: r for n, r in per_output.items() if r.max_rel > rtol and r.max_abs > atol}
    if failed:
        bad = max(failed, key=lambda n: failed[n].max_rel)
        raise ParityError(f"{Path(path).name}: ONNX Runtime differs from PyTorch on output {bad!r} "
                          f"({per_output[bad]}; tolerance rel {rtol:g}" + (f", abs {atol:g})" if atol else ")"))
    return worst
