"""Cost model: FLOPs and bytes per frame from the config and the tube count, achieved GFLOP/s
per backend, and this machine's measured float32 matmul peak.

Per-call FLOPs are counted once with `torch.utils.flop_counter.FlopCounterMode` on freshly built
(untrained: FLOPs do not depend on weights) torch modules: one crop through a `Branch`, one tube
through the `TemporalModel` (fusion of L+1 frames + SMM + error), one frame through the
`ProposalNet`. Per frame with K tubes:

    flops = rpn + K * (L+1) * (branch1 + branch2) + K * smm

FlopCounterMode counts matmuls and convolutions (2 FLOPs per multiply-add); elementwise ops,
norms and softmax are not counted, so this is a lower bound dominated by the real work.
Bytes per frame count float32 tensors moved between parts (network inputs, features, outputs)
plus every part's weights read once per call (each part is called once per frame, batched).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np

from lpgb.runtime.config import LpgbConfig
from lpgb.runtime.errors import LpgbError

FLOAT_BYTES = 4


@dataclass(frozen=True)
class PartCost:
    """FLOPs per call unit and parameter counts of the inference parts."""

    branch_flops: int  # one crop (1, 3, S, S) through one Branch
    smm_flops: int  # one tube (1, L+1, N_q, E_d) x2 through the TemporalModel
    rpn_flops: int  # one frame (1, 3, H, W) through the ProposalNet (0 when not used)
    branch_params: int
    smm_params: int
    rpn_params: int


def count_parts(cfg: LpgbConfig, use_rpn: bool = True) -> PartCost:
    """Build the torch modules from `cfg` and count FLOPs of one call unit each (needs torch)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from lpgb.trainer.models.branch import Branch
    from lpgb.trainer.models.rpn import ProposalNet
    from lpgb.trainer.models.temporal import TemporalModel

    def flops(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
        # requires_grad off instead of no_grad: FlopCounterMode's module tracker asserts under no_grad
        module.eval().requires_grad_(False)
        with FlopCounterMode(display=False) as counter:
            module(*inputs)
        return int(counter.get_total_flops())

    def params(module: torch.nn.Module) -> int:
        return int(sum(p.numel() for p in module.parameters()))

    side, length = cfg.spatial.image_size, cfg.smm.window + 1
    branch = Branch(cfg.spatial)
    temporal = TemporalModel(cfg)
    feats = torch.zeros(1, length, cfg.spatial.num_queries, cfg.spatial.embed_dim)
    rpn_flops = rpn_params = 0
    if use_rpn:
        rpn = ProposalNet(cfg.proposals)
        h, w = cfg.proposals.rpn_input_size
        rpn_flops, rpn_params = flops(rpn, torch.zeros(1, 3, h, w)), params(rpn)
    return PartCost(branch_flops=flops(branch, torch.zeros(1, 3, side, side)),
                    smm_flops=flops(temporal, feats, feats), rpn_flops=rpn_flops,
                    branch_params=params(branch), smm_params=params(temporal), rpn_params=rpn_params)



def frame_cost(parts: PartCost, cfg: LpgbConfig, tubes: float, path: str = "tubes") -> dict:
    """FLOPs and bytes of one frame with `tubes` tubes (may be a mean, e.g. 3.4). `path` is the detector's
    `lpgb.runtime.terms.network_path`: "tubes" runs L+1 crops per tube and the SMM, "patterns" one crop per
    box and no SMM, "branch1" one crop per box through branch 1 only, "none" no branch or SMM part."""
    side, length = cfg.spatial.image_size, cfg.smm.window + 1
    crops = tubes * {"tubes": length, "patterns": 1, "branch1": 1, "none": 0}[path]
    crops2 = crops * (path != "branch1")  # branch 2's crops
    smm = path == "tubes"  # the temporal part runs
    flops = {
        "rpn": float(parts.rpn_flops),
        "branch1": crops * parts.branch_flops,
        "branch2": crops2 * parts.branch_flops,
        "smm": tubes * parts.smm_flops * smm,
    }
    crop_in = crops * 3 * side * side * FLOAT_BYTES  # crops_to_input output, fed to each branch
    feat = crops * cfg.spatial.num_queries * cfg.spatial.embed_dim * FLOAT_BYTES  # one branch's features
    h, w = cfg.proposals.rpn_input_size
    rpn_io = (3 * h * w + cfg.proposals.rpn_pre_nms_top_k * 5) * FLOAT_BYTES if parts.rpn_flops else 0
    called = crops > 0  # no tubes (or no network terms): the branches and the SMM are not called at all
    weights = {
        "rpn": parts.rpn_params * FLOAT_BYTES,
        "branch1": parts.branch_params * FLOAT_BYTES * called,
        "branch2": parts.branch_params * FLOAT_BYTES * (crops2 > 0),
        "smm": parts.smm_params * FLOAT_BYTES * called * smm,
    }
    activations = {
        "rpn": float(rpn_io),
        "branch1": crop_in + feat,
        "branch2": (crop_in + feat) * (path != "branch1"),
        "smm": (2 * feat + tubes * (cfg.spatial.feature_dim + 1) * FLOAT_BYTES) * smm,
    }
    bytes_ = {k: float(weights[k] + activations[k]) for k in flops}
    total_flops, total_bytes = sum(flops.values()), sum(bytes_.values())
    return {
        "tubes": float(tubes), "network": path != "none", "network_path": path, "flops": total_flops, "gflops": total_flops / 1e9, "flops_by_part": flops,
        "bytes": total_bytes, "mb": total_bytes / 1e6, "bytes_by_part": bytes_,
        "weight_bytes": float(sum(weights.values())),
        "arithmetic_intensity": total_flops / total_bytes if total_bytes else None,  # FLOP/byte
    }


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    runs = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return float(np.median(runs))


def numpy_matmul_gflops(n: int, repeats: int = 5) -> float:
    """Median GFLOP/s of a float32 n x n @ n x n matmul with numpy (its BLAS, its threads)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    seconds = _median_seconds(lambda: a @ b, repeats)
    return 2.0 * n**3 / seconds / 1e9


def ort_matmul_gflops(n: int, repeats: int = 5) -> Optional[float]:
    """Median GFLOP/s of a float32 n x n MatMul in ONNX Runtime (CPU); None without onnx or onnxruntime."""
    from lpgb.runtime.backends.ort_backend import cpu_session

    try:
        from onnx import TensorProto, helper
    except ImportError:
        return None
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    try:
        session = cpu_session(model.SerializeToString())
    except LpgbError:  # no onnxruntime
        return None
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}
    seconds = _median_seconds(lambda: session.run(None, feeds), repeats)
    return 2.0 * n**3 / seconds / 1e9


def matmul_peak(sizes: Sequence[int] = (1024, 2048), repeats: int = 5, ort_size: Optional[int] = 1024) -> dict:
    """Measured float32 matmul throughput; `peak_gflops` is the best of them."""
    result: dict = {"numpy": {str(n): numpy_matmul_gflops(n, repeats) for n in sizes}, "repeats": repeats}
    if ort_size:
        try:
            result["ort"] = {str(ort_size): ort_matmul_gflops(ort_size, repeats)}
        except Exception as exc:  # an ORT build without MatMul for this opset: keep the numpy number
            result["ort_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    values = [v for group in ("numpy", "ort") for v in (result.get(group) or {}).values() if v]
    result["peak_gflops"] = max(values) if values else None
    return result


def achieved(cost: dict, speed: Sequence[dict], peak_gflops: Optional[float]) -> list[dict]:
    """GFLOP/s each backend achieved end to end = FLOPs per frame (at its mean tubes) x FPS."""
    rows = []
    for entry in speed:
        fps = entry.get("fps")
        per_frame = cost.get("per_backend_gflops", {}).get(entry["backend"])
        if not fps or per_frame is None:
            continue
        gflops_s = per_frame * fps
        rows.append({"backend": entry["backend"], "gflops_per_frame": per_frame, "fps": fps,
                     "achieved_gflops": gflops_s,
                     "fraction_of_peak": gflops_s / peak_gflops if peak_gflops else None})
    return rows


def cost_report(cfg: LpgbConfig, speed: Sequence[dict], use_rpn: bool, sweep: Sequence[int] = (),
                peak: Optional[dict] = None) -> dict:
    """The `cost` section: part costs, per-frame cost at each backend's mean tubes and at the sweep
    tube counts, achieved GFLOP/s and the ratio to the measured matmul peak. Per frame, the branch and
    SMM parts count only when a configured score term reads them (the sweep always times them)."""
    from lpgb.runtime.terms import terms_network_path

    parts = count_parts(cfg, use_rpn)
    path = terms_network_path(cfg.scoring.terms)
    peak = peak if peak is not None else matmul_peak()
    out: dict = {"parts": asdict(parts), "method": "torch FlopCounterMode (matmul/conv, 2 FLOPs per MAC); "
                 "bytes = float32 activations between parts + weights once per call",
                 "peak": peak, "per_backend_gflops": {}, "per_frame": {}}
    for entry in speed:
        c = frame_cost(parts, cfg, entry.get("tubes_mean", 0.0), path)
        out["per_frame"][entry["backend"]] = c
        out["per_backend_gflops"][entry["backend"]] = c["gflops"]
    out["at_tubes"] = [frame_cost(parts, cfg, k) for k in sweep]
    out["achieved"] = achieved(out, speed, peak.get("peak_gflops"))
    return out


__all__ = ["PartCost", "count_parts", "frame_cost", "numpy_matmul_gflops", "ort_matmul_gflops",
           "matmul_peak", "achieved", "cost_report"]
