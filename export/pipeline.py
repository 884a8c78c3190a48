"""`lpgb-export` orchestration: the four parts -> ONNX (+ FP16 ONNX, + TensorRT), sidecar, parity gates."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from lpgb.runtime.cli_common import console
from lpgb.runtime.config import LpgbConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.parts import part_spec
from lpgb.runtime.scoring import TERM_STATES
from lpgb.trainer.torch_backend import PART_IO, load_parts


@dataclass(frozen=True)
class ExportRequest:
    run: Path
    out: Optional[Path] = None
    fp16: bool = False
    trt: bool = False
    check: bool = False
    opset: int = 17
    workspace_gb: float = 2.0
    overwrite: bool = False


def example_inputs(part: str, cfg: LpgbConfig, batch: int = 2) -> tuple[torch.Tensor, ...]:
    """Random example inputs with the part's real shapes (batch = crops or tubes)."""
    g = torch.Generator().manual_seed(0)
    s, t = cfg.spatial, cfg.smm.window + 1
    if part == "rpn":
        return (torch.rand(1, 3, *cfg.proposals.rpn_input_size, generator=g),)
    if part.startswith("branch"):
        return (torch.randn(batch, 3, s.image_size, s.image_size, generator=g),)
    shape = (batch, t, s.num_queries, s.embed_dim)
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)


def dynamic_axes(part: str) -> dict[str, dict[int, str]]:
    return part_spec(part).dynamic_axes()


def crop_batch_profile(cfg: LpgbConfig) -> tuple[int, int, int]:
    """(min, opt, max) crops per branch call: tubes per frame x (L+1) frames."""
    t = cfg.smm.window + 1
    return 1, 4 * t, cfg.proposals.top_k * t


def export_run(request: ExportRequest) -> Path:
    from lpgb.export.fp16 import to_fp16
    from lpgb.export.onnx_export import export_onnx, verify_onnx
    from lpgb.runtime.sidecar import build_sidecar, write_sidecar

    run_dir = Path(request.run)
    if not (run_dir / "config.json").is_file():
        raise LpgbError(f"{run_dir} is not an lpgb run folder (no config.json)")
    if not (run_dir / "calibration.json").is_file():
        raise LpgbError(f"{run_dir} is not fully trained (no calibration.json): finish lpgb-train first")
    if request.opset < 17:
        raise LpgbError("opset must be >= 17 (LayerNormalization)")
    cfg = LpgbConfig.load(run_dir / "config.json")
    out = Path(request.out) if request.out else run_dir / "export"
    if out.exists() and any(out.iterdir()):
        if not request.overwrite:
            raise LpgbError(f"export folder {out} exists; pass --overwrite to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    parts = load_parts(run_dir, cfg)
    files: dict[str, dict[str, str]] = {}
    for name, module in parts.items():
        ins, outs = PART_IO[name]
        example = example_inputs(name, cfg)
        if name == "smm":
            module = module.for_export()  # the SMM as one folded constant operator (no kron in the graph)
        path = export_onnx(module, example, out / f"{name}.onnx", list(ins), list(outs), dynamic_axes(name),
                           request.opset)
        # RPN: tied objectness scores may be ordered differently by ORT's TopK; compare as sets.
        parity = verify_onnx(module, path, example, rtol=1e-4, order_insensitive=(name == "rpn"))
        console.print(f"{name}.onnx: max abs {parity.max_abs:.2e}, max rel {parity.max_rel:.2e}")
        files[name] = {"fp32": path.name}
        # The RPN stays FP32: near-tied scores make FP16 pick different top-K boxes (measured 3.6% rel).
        if request.fp16 and name != "rpn":
            fp16_path = to_fp16(path, out / f"{name}_fp16.onnx", keep_fp32_nodes_matching=_fp32_nodes(name))
            files[name]["fp16"] = fp16_path.name
    calibration = json.loads((run_dir / "calibration.json").read_text())
    extra = []
    if (run_dir / TERM_STATES).is_file():  # fitted score terms (memory banks) serve from the export too
        shutil.copyfile(run_dir / TERM_STATES, out / TERM_STATES)
        extra.append(TERM_STATES)
    engines = _build_engines(out, files, cfg, request) if request.trt else {}
    write_sidecar(out, build_sidecar(out, cfg.to_dict(), calibration, files, engines, request.opset, extra))
    if request.check:
        from lpgb.export.check import run_checks

        ok = run_checks(run_dir, out, fp16=request.fp16)
        if not ok:
            raise LpgbError("parity check failed (see the table above)")
    return out


def _fp32_nodes(part: str) -> tuple[str, ...]:
    """Keep the SMM core (the folded Legendre operator) in float32 inside FP16 graphs."""
    return ("smm",) if part == "smm" else ()


def _build_engines(out: Path, files: dict[str, dict[str, str]], cfg: LpgbConfig, request: ExportRequest) -> dict:
    from lpgb.export.trt_build import build_engine

    lo, opt, hi = crop_batch_profile(cfg)
    t, s = cfg.smm.window + 1, cfg.spatial
    engines = {}
    for name, variants in files.items():
        onnx_file = out / variants.get("fp16" if request.fp16 else "fp32", variants["fp32"])
        if name.startswith("branch"):
            shape = lambda b: (b, 3, s.image_size, s.image_size)  # noqa: E731
            profiles = {"crops": (shape(lo), shape(opt), shape(hi))}
        elif name == "smm":
            shape = lambda b: (b, t, s.num_queries, s.embed_dim)  # noqa: E731
            r = (shape(1), shape(opt // t), shape(hi // t))
            profiles = {"f1": r, "f2": r}
        else:
            profiles = {}
        info = build_engine(onnx_file, out / f"{name}.engine", profiles, fp16=request.fp16,
                            workspace_gb=request.workspace_gb, timing_cache=out / "timing.cache")
        engines[name] = info
    return engines

