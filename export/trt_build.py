"""ONNX -> TensorRT 10 plan file, with optimisation profiles, a timing cache and a record of how it was built.

Precision paths (TensorRT samples, `strongly_type_autocast`; the FP16 builder flag is deprecated since
TensorRT 10.12):
- the ONNX is already FP16 (from `lpgb.export.fp16.to_fp16`): a *strongly typed* network, so TensorRT
  keeps exactly the graph's types (LayerNorm / Softmax / SMM stay float32); no precision flags allowed.
- the ONNX is FP32 and `fp16=True`: the older *weakly typed* path, `BuilderFlag.FP16` lets TensorRT
  pick FP16 kernels where it likes. Kept for TensorRT < 10.12; recorded as such.
- FP32 ONNX, `fp16=False`: plain FP32.
TensorRT is imported lazily: lpgb without the `trt` extra still exports ONNX.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import onnx

from lpgb.runtime.atomic import write_bytes_atomic
from lpgb.runtime.errors import LpgbError

if TYPE_CHECKING:
    from lpgb.export.pipeline import ExportContext
    from lpgb.runtime.config import LpgbConfig

Shape = Sequence[int]


@dataclass(frozen=True)
class EngineInfo:
    path: Path
    trt_version: str
    compute_capability: tuple[int, int] | None  # GPU the plan was built on (plans only run there)
    precision: str  # "fp16" | "fp32"
    path_kind: str  # "strongly_typed" | "weakly_typed_fp16" | "fp32"; goes into PartInfo.build


def onnx_is_fp16(onnx_path: Path) -> bool:
    """True when the graph carries float16 weights (it was converted by `to_fp16`)."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


def compute_capability() -> tuple[int, int] | None:
    """(major, minor) of GPU 0 via torch or pycuda; None when neither sees a GPU."""
    try:
        import torch

        if torch.cuda.is_available():
            return tuple(torch.cuda.get_device_capability(0))  # type: ignore[return-value]
    except ImportError:
        pass
    try:
        import pycuda.autoinit  # noqa: F401  (creates a context on GPU 0)
        import pycuda.driver as cuda

        return tuple(cuda.Device(0).compute_capability())  # type: ignore[return-value]
    except Exception:  # pycuda missing, or no driver / GPU
        return None


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise LpgbError("TensorRT is not installed (pip install 'lpgb[trt]')") from None
    return trt


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    profiles: Mapping[str, tuple[Shape, Shape, Shape]],
    fp16: bool,
    workspace_gb: float,
    timing_cache: Path,
) -> EngineInfo:
    """Build and atomically write a serialized TensorRT engine for `onnx_path`.

    `profiles` maps each dynamic input name to (min, opt, max) shapes, e.g.
    {"crops": ((1, 3, 224, 224), (16, 3, 224, 224), (64, 3, 224, 224))}. `timing_cache` is read when
    it exists and written back after the build, so rebuilds (and the other parts) are faster.
    """
    trt = _import_tensorrt()
    onnx_path, engine_path, timing_cache = Path(onnx_path), Path(engine_path), Path(timing_cache)
    if not onnx_path.is_file():
        raise LpgbError(f"no ONNX model at {onnx_path}")

    strongly_typed = onnx_is_fp16(onnx_path)
    path_kind = "strongly_typed" if strongly_typed else ("weakly_typed_fp16" if fp16 else "fp32")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch; the only flag we choose is strong typing.
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)

    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # from a path, so external weights resolve
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise LpgbError(f"TensorRT could not parse {onnx_path.name}: {errors or 'no details'}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if path_kind == "weakly_typed_fp16":
        config.set_flag(trt.BuilderFlag.FP16)  # deprecated since 10.12; strongly typed is preferred

    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    unknown = sorted(set(profiles) - {t.name for t in inputs})
    if unknown:
        raise LpgbError(f"{onnx_path.name} has no input(s) named {', '.join(unknown)} for the profile")
    dynamic = [t for t in inputs if -1 in tuple(t.shape)]
    if dynamic:  # one profile holding a (min, opt, max) range for every dynamic input
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            if tensor.name not in profiles:
                raise LpgbError(f"input {tensor.name!r} of {onnx_path.name} has dynamic shape "
                                f"{tuple(tensor.shape)} but no (min, opt, max) profile was given")
            low, opt, high = (tuple(int(d) for d in s) for s in profiles[tensor.name])
            profile.set_shape(tensor.name, low, opt, high)
        if config.add_optimization_profile(profile) < 0:
            raise LpgbError(f"invalid optimisation profile for {onnx_path.name}: {dict(profiles)}")

    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):  # cache from another GPU/TensorRT
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise LpgbError(f"TensorRT failed to build an engine from {onnx_path.name} (see the log above)")
    write_bytes_atomic(engine_path, bytes(plan))
    write_bytes_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    return EngineInfo(path=engine_path, trt_version=trt.__version__, compute_capability=compute_capability(),
                      precision="fp16" if path_kind != "fp32" else "fp32", path_kind=path_kind)


def crop_batch_profile(cfg: "LpgbConfig") -> tuple[int, int, int]:
    """(min, opt, max) crops per branch call: tubes per frame x (L+1) frames."""
    t = cfg.smm.window + 1
    return 1, 4 * t, cfg.proposals.top_k * t


def build_part(ctx: "ExportContext", part: str) -> None:
    """`lpgb-export --trt`: the TensorRT engine of `part` (the `engine` format row) from its FP16 ONNX with
    --fp16 (the RPN: its FP32 ONNX), else its FP32 ONNX; one timing cache for all parts."""
    from lpgb.runtime.formats import FORMATS

    cfg, request = ctx.cfg, ctx.request
    lo, opt, hi = crop_batch_profile(cfg)
    t, s = cfg.smm.window + 1, cfg.spatial
    variants = ctx.files[part]
    onnx_file = ctx.out / variants.get("fp16" if request.fp16 else "fp32", variants["fp32"])
    if part.startswith("branch"):
        shape = lambda b: (b, 3, s.image_size, s.image_size)  # noqa: E731
        profiles = {"crops": (shape(lo), shape(opt), shape(hi))}
    elif part == "smm":
        shape = lambda b: (b, t, s.num_queries, s.embed_dim)  # noqa: E731
        r = (shape(1), shape(opt // t), shape(hi // t))
        profiles = {"f1": r, "f2": r}
    else:
        profiles = {}
    ctx.engines[part] = build_engine(onnx_file, ctx.out / FORMATS["engine"].file_of(part), profiles,
                                     fp16=request.fp16, workspace_gb=request.workspace_gb,
                                     timing_cache=ctx.out / "timing.cache")
