"""The PyTorch reference backend: the trained torch models behind the runtime's Backend interface.

Same part names and tensor names as the exported ONNX graphs (`lpgb.runtime.parts`), so the one
streaming loop in `lpgb.runtime.pipeline` serves torch, ONNX Runtime and TensorRT alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from lpgb.runtime.config import LpgbConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.parts import PART_SPECS
from lpgb.trainer.checkpoint import load_weights
from lpgb.trainer.models.rpn import ProposalNet


def load_rpn(run_dir: Path, cfg: LpgbConfig) -> Optional[ProposalNet]:
    path = Path(run_dir) / "weights" / "rpn.pt"
    if not path.is_file():
        return None
    rpn = ProposalNet(cfg.proposals)
    rpn.load_state_dict(load_weights(path))
    return rpn.eval()


def load_parts(run_dir: Path, cfg: LpgbConfig) -> dict[str, nn.Module]:
    """The four inference parts of a trained run: rpn (if trained), branch1, branch2, smm. A run whose score
    terms read no network and that trained no branches (`--stage rpn`, then `--stage calibrate` with
    network-free terms) serves its RPN alone."""
    from lpgb.runtime.terms import reads_networks
    from lpgb.trainer.spatial_stage import load_branch
    from lpgb.trainer.temporal_stage import load_temporal

    if not any(reads_networks(n) for n in cfg.scoring.terms) and not (Path(run_dir) / "weights" / "branch1.pt").is_file():
        rpn = load_rpn(run_dir, cfg)
        return {} if rpn is None else {"rpn": rpn}
    parts: dict[str, nn.Module] = {"branch1": load_branch(run_dir, cfg, 1), "branch2": load_branch(run_dir, cfg, 2),
                                   "smm": load_temporal(run_dir, cfg)}
    rpn = load_rpn(run_dir, cfg)
    if rpn is not None:
        parts["rpn"] = rpn
    return parts


PART_IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {n: (s.inputs, s.outputs) for n, s in PART_SPECS.items()}


class TorchBackend:
    """Backend over torch modules: `run(part, {name: array}) -> {name: array}` (float32 numpy)."""

    name = "torch"

    def __init__(self, run_dir: Path, device: str = "cpu", precision: str = "fp32") -> None:
        cfg = LpgbConfig.load(Path(run_dir) / "config.json")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise LpgbError("torch backend: CUDA requested but torch sees no GPU")
        self.device = torch.device(device)
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        if self.dtype == torch.float16 and self.device.type == "cpu":
            raise LpgbError("torch backend: fp16 needs --device cuda")
        self.parts = {k: m.to(self.device, self.dtype) for k, m in load_parts(run_dir, cfg).items()}
        self.providers = [f"torch-{self.device.type}"]

    @torch.no_grad()
    def run(self, part: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if part not in self.parts:
            raise LpgbError(f"torch backend has no part {part!r}")
        in_names, out_names = PART_IO[part]
        args = [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(self.device, self.dtype) for n in in_names]
        outs = self.parts[part](*args)
        outs = outs if isinstance(outs, tuple) else (outs,)
        return {n: o.float().cpu().numpy() for n, o in zip(out_names, outs)}

    def close(self) -> None:
        self.parts.clear()
