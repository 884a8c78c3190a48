"""Configuration: one frozen dataclass per concern, JSON round-trip that rejects unknown keys.

Every artifact (training run, exported model folder, report) carries the `LpgbConfig` it was
made with as `config.json`. Functions take these objects, never copies of their fields.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from lpgb.runtime.errors import LpgbError

CONFIG_VERSION = 4
# What an older config meant, filled in by `migrate` so that old run and export folders serve exactly
# as they were made, whatever the current defaults are. Version 1 lacks the motion-mask and
# union-priority fields; version 2 lacks the score terms (it scored with the SMM error alone);
# version 3 lacks the flow settings (it used DIS ultrafast).
V1_DEFAULTS: dict[str, dict[str, Any]] = {
    "proposals": {"motion_open": 3, "motion_close": 7, "motion_dilate": 3, "union_priority": "score"},
}
V2_DEFAULTS: dict[str, dict[str, Any]] = {
    "scoring": {"terms": ["smm"], "combine": "sum", "knn_k": 1, "bank_size": 2000, "threshold_quantile": 0.995},
    "proposals": {"source": "union"},
}
V3_DEFAULTS: dict[str, dict[str, Any]] = {
    "flow": {"preset": "ultrafast", "max_width": 480},
}
COMBINE_RULES: tuple[str, ...] = ("sum", "max")
FRAME_RULES: tuple[str, ...] = ("max", "tail")  # ScoringConfig.frame_rule (lpgb.runtime.scoring.frame_score)
FLOW_PRESETS: tuple[str, ...] = ("ultrafast", "fast", "medium")  # OpenCV DIS presets
PROPOSAL_SOURCES: tuple[str, ...] = ("motion", "union", "rpn")
BranchInput = Literal["rgb", "motion"]  # SpatialConfig.input_form (lpgb.runtime.preprocess.encode_tubes)
BRANCH_INPUTS: tuple[str, ...] = typing.get_args(BranchInput)
PresetName = Literal["tiny", "edge", "edge-motion", "edge-rpn", "paper"]
PRESETS: tuple[str, ...] = ("tiny", "edge", "edge-motion", "edge-rpn", "paper")
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Validation at construction: every field of a `@checked` dataclass against its type (Literal fields
# against their choices, numbers finite) and against RANGES. Config objects are checked once, where they
# are made (a preset, config.json, model.json, a CLI override); nothing downstream re-checks them.


@dataclass(frozen=True)
class Range:
    """Allowed values of a number (each element of a tuple of numbers): lo <= v <= hi, `open` ends excluded."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, v: float) -> bool:
        return ((self.lo is None or (v > self.lo if self.lo_open else v >= self.lo))
                and (self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)))

    def __str__(self) -> str:
        lo = "" if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo:g}"
        hi = "" if self.hi is None else f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return " and ".join(s for s in (lo, hi) if s)


POSITIVE, AT_LEAST_1, NON_NEGATIVE, UNIT = Range(0, lo_open=True), Range(1), Range(0), Range(0, 1)
MAX_SMOOTHING_SIGMA = 100.0  # frames; the causal kernel spans 4 sigma frames (sigma 1e9 tried a 29.8 GiB allocation)
RANGES: dict[str, dict[str, Range]] = {
    "spatial": {**{n: AT_LEAST_1 for n in ("image_size", "token_grid", "vision_dim", "num_queries", "hidden_dim",
                                            "embed_dim", "num_layers", "cross_attention_every", "num_heads",
                                            "text_layers", "text_heads", "text_context")},
                "mlp_ratio": POSITIVE, "init_temperature": POSITIVE, "label_smoothing": Range(0, 1, hi_open=True)},
    "smm": {"components": AT_LEAST_1, "window": AT_LEAST_1, "shift": POSITIVE, "fusion_heads": AT_LEAST_1,
            "init_std": NON_NEGATIVE},
    "proposals": {"rpn_input_size": AT_LEAST_1, "rpn_pre_nms_top_k": AT_LEAST_1, "score_threshold": UNIT,
                  "nms_iou": UNIT, "top_k": AT_LEAST_1, "min_box_size": NON_NEGATIVE,
                  "merge_min_overlap": Range(0, 1, hi_open=True), "context_scale": POSITIVE,
                  "motion_history": AT_LEAST_1, "motion_var_threshold": POSITIVE, "motion_min_area": NON_NEGATIVE,
                  "motion_persistence": AT_LEAST_1, "motion_warmup": NON_NEGATIVE, "motion_open": NON_NEGATIVE,
                  "motion_close": NON_NEGATIVE, "motion_dilate": NON_NEGATIVE, "rpn_fill_power": NON_NEGATIVE},
    "scoring": {"knn_k": AT_LEAST_1, "bank_size": AT_LEAST_1, "smoothing_sigma": Range(0, MAX_SMOOTHING_SIGMA),
                "threshold_quantile": Range(0, 1, lo_open=True), "hysteresis": UNIT, "min_event_frames": AT_LEAST_1},
    "flow": {"max_width": Range(16)},
    "": {"version": AT_LEAST_1},
}
SECTIONS: dict[str, str] = {"SpatialConfig": "spatial", "SMMConfig": "smm", "ProposalConfig": "proposals",
                            "ScoringConfig": "scoring", "FlowConfig": "flow", "LpgbConfig": ""}


def checked(cls: type[T]) -> type[T]:
    """Class decorator (placed under `@dataclass`): `check_fields` runs first in `__post_init__`."""
    own = cls.__dict__.get("__post_init__")

    def __post_init__(self) -> None:
        check_fields(self)
        if own is not None:
            own(self)

    cls.__post_init__ = __post_init__  # type: ignore[attr-defined]
    return cls


def check_fields(obj: Any) -> None:
    """LpgbError (one line) for the first field of `obj` whose value does not fit its type or its RANGES entry."""
    section = SECTIONS.get(type(obj).__name__, type(obj).__name__)
    limits = RANGES.get(section, {})
    for f in fields(obj):
        name = f"{section}.{f.name}" if section else f.name
        value = getattr(obj, f.name)
        problem = _type_problem(_hints(type(obj))[f.name], value)
        if problem is None and f.name in limits:
            bad = [v for v in (value if isinstance(value, (tuple, list)) else (value,)) if not limits[f.name].holds(v)]
            problem = f"must be {limits[f.name]}" if bad else None
        if problem:
            raise LpgbError(f"config: {name} {problem}; got {value!r}")


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _type_problem(hint: Any, value: Any) -> str | None:
    """What is wrong with `value` for type `hint` (None: fits; types lpgb's configs do not use pass)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return None if value in args else f"must be one of {', '.join(map(str, args))}"
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            return "must be a list"
        item_hints = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_hints) != len(value):
            return f"must have {len(item_hints)} values"
        return next((f"(each value) {p}" for h, v in zip(item_hints, value) if (p := _type_problem(h, v))), None)
    if hint is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if hint is int:
        return None if isinstance(value, numbers.Integral) and not isinstance(value, bool) else "must be an integer"
    if hint is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "must be a finite number"
    if hint is str:
        return None if isinstance(value, str) else "must be a string"
    if is_dataclass(hint):
        return None if isinstance(value, hint) else f"must be a {hint.__name__} object"
    return None


@dataclass(frozen=True)
@checked
class SpatialConfig:
    """Sizes of one branch: ResNet-18 stem..layer2 -> tokens -> image-attention module."""

    image_size: int = 224  # crop side fed to the backbone (pixels)
    # what the branches see of a crop (lpgb.runtime.preprocess.encode_tubes): "rgb" (the paper), or "motion":
    # grey appearance + its differences to 1 and 2 frames before, same region (docs/decisions.md, "Branch input")
    input_form: BranchInput = "rgb"
    token_grid: int = 16  # backbone map (28x28 at 224) is pooled to token_grid x token_grid
    vision_dim: int = 1408  # V_d: token width after the linear projection
    num_queries: int = 32  # N_q learnable queries
    hidden_dim: int = 768  # H_d: query width inside the image-attention module
    embed_dim: int = 256  # E_d: output width per query
    num_layers: int = 12  # image-attention layers (self-attn + ffn every layer)
    cross_attention_every: int = 2  # cross-attention to image tokens every k-th layer (BLIP-2: 2)
    num_heads: int = 12
    mlp_ratio: float = 4.0
    # text-attention module (training only)
    text_layers: int = 12
    text_heads: int = 12
    text_context: int = 32  # S_t: max tokens per sentence (open_clip tokenizer, truncated)
    init_temperature: float = 0.07
    label_smoothing: float = 0.1

    @property
    def num_tokens(self) -> int:
        """S_d = token_grid^2 + 1 (class token)."""
        return self.token_grid * self.token_grid + 1

    @property
    def feature_dim(self) -> int:
        """N = N_q * E_d, the flattened per-branch feature v_b(t)."""
        return self.num_queries * self.embed_dim


@dataclass(frozen=True)
@checked
class SMMConfig:
    """State Machine Module (paper 3.3) and the fusion of the two branches."""

    components: int = 64  # O: Legendre motion components / encoder width
    window: int = 5  # L: frames in a tube used to predict the next one
    discretisation: Literal["bilinear", "zoh"] = "bilinear"
    input_form: Literal["summed", "per_channel"] = "per_channel"  # Eq. 3 as written vs LMU/S4 reading
    shift: float = 1.0  # Delta t in frames for the prediction (Eq. 6)
    fusion_heads: int = 4
    init_std: float = 0.02


@dataclass(frozen=True)
@checked
class ProposalConfig:
    """Where boxes come from and how they become tubes (paper 3.1, 4.2)."""

    # "motion" by default: with the default score terms (velocity, shape) motion boxes scored better than the
    # union with an RPN trained on pseudo-boxes (Ped2 0.828 vs 0.693, synthetic 0.878 vs 0.820 micro AUC;
    # docs/decisions.md, "Score terms"); "union" / "rpn" train and serve the RPN (lpgb-train --proposals)
    source: Literal["rpn", "motion", "union"] = "motion"
    rpn_input_size: tuple[int, int] = (320, 480)  # (H, W) the RPN sees; frames are letterboxed
    rpn_pre_nms_top_k: int = 300
    score_threshold: float = 0.5
    nms_iou: float = 0.5
    top_k: int = 32  # boxes kept per frame after NMS
    min_box_size: int = 8  # pixels, in frame coordinates
    merge_overlapping: bool = True
    merge_min_overlap: float = 0.0  # >0: link boxes only if intersection > this fraction of the smaller box (paper: any overlap)
    context_scale: float = 1.25  # tube region = square box enlarged by this factor
    # motion proposals (OpenCV MOG2 + connected components)
    # MOG2 learns at 1/motion_history per frame, so an object that stops is absorbed into the background
    # after about 0.105 x motion_history frames (background ratio 0.9). 500 (~53 frames) keeps a fallen
    # person or a stopped cart in the foreground; 200 (~21 frames) lost them. python -m lpgb.benchmarks.terms
    # --proposals motion_history=N, velocity+shape micro AUC (docs/decisions.md, "Background memory"):
    # synthetic seed 0 / seed 1 / Ped2 01-06: 200 0.880/0.845/0.926, 350 0.888/0.879/0.917,
    # 500 0.891/0.875/0.930, 700 0.885/0.870/0.914, 1000 0.884/0.870/0.907, 2000 0.881/0.869/0.895
    motion_history: int = 500
    motion_var_threshold: float = 25.0
    motion_min_area: int = 40  # pixels
    motion_persistence: int = 2  # frames a blob must persist before it is proposed
    motion_warmup: int = 20  # frames of background learning before proposals are trusted
    # mask clean-up, elliptic kernel sizes (0: skip). Closing 5 without dilation and motion-first union
    # NMS lift synthetic recall 65.7% -> 84.8% but trained a far worse Ped2 model (micro AUC 0.48 vs
    # 0.70, docs/decisions.md, Proposals), so the defaults stay the measured-best-on-real-data values.
    motion_open: int = 3
    motion_close: int = 7
    motion_dilate: int = 3
    union_priority: Literal["score", "motion"] = "score"  # union NMS: by score, or motion boxes first
    # >0: before the union, RPN boxes are de-duplicated among themselves ranked by
    # score * (0.05 + fill) ** rpn_fill_power, fill = foreground fraction of the box in the motion mask,
    # so a tight box on a moving object beats a loose one spanning two (synthetic union recall 65.7% ->
    # 75.9% at this 4, same proposals/frame; docs/decisions.md, Proposals). 0 = plain score ranking.
    rpn_fill_power: float = 0.0
    # >0: tube regions snap to a scale ladder (ratio 1 + region_snap) and a position grid (step region_snap x
    # side), so one object keeps its region over frames and the serving feature cache reuses past crops'
    # branch features (runtime/feature_cache.py; docs/decisions.md, "Feature cache"). 0 = exact regions.
    region_snap: float = 0.0
    # crowd split of motion blobs (lpgb.runtime.size_prior; docs/decisions.md, "Crowds"): a blob wider or
    # taller than split_factor x the person size expected at its bottom row is cut in two where its
    # foreground has a valley (at most split_valley x the lower neighbouring peak of its column / row
    # profile, so a cart or a cyclist is not cut), and each half in turn. size_prior = (h0, h1, w0, w1):
    # expected height / H = h0 + h1 * bottom / H, width / H = w0 + w1 * bottom / H (H the frame height),
    # fitted on the training videos' motion blobs (fit_size_prior). Off by default. Tuned on synthetic
    # seed 0, sparse / crowd-35 set (python -m lpgb.benchmarks.proposals), anomalous-object recall % and
    # crowd merge rate %: no split 67.7 / 14.7, 65.1; factor 1.6 valley 0.8: 74.3 / 29.8, 54.3;
    # 1.3 / 0.8: 71.4 / 33.1, 49.1; 1.6 / 0.9: 69.7 / 29.2, 49.2; 1.3 / 0.9: 65.7 / 33.1, 40.9.
    motion_split: bool = False
    size_prior: tuple[float, ...] = ()
    split_factor: float = 1.3
    split_valley: float = 0.8

    def __post_init__(self) -> None:
        if not isinstance(self.region_snap, (int, float)) or not 0.0 <= self.region_snap < 1.0:
            raise LpgbError(f"proposals.region_snap must be in [0, 1) (0 = off), got {self.region_snap}")
        if len(self.size_prior) not in (0, 4):
            raise LpgbError(f"proposals.size_prior must be empty or (h0, h1, w0, w1), got {self.size_prior}")
        if not self.split_factor > 1.0:
            raise LpgbError(f"proposals.split_factor must be > 1, got {self.split_factor}")
        if not 0.0 < self.split_valley <= 1.0:
            raise LpgbError(f"proposals.split_valley must be in (0, 1], got {self.split_valley}")


@dataclass(frozen=True)
@checked
class ScoringConfig:
    """From per-box score terms to frame scores and events (lpgb.runtime.terms, lpgb.runtime.scoring)."""

    # score terms (lpgb.runtime.terms.TERMS), each standardised with its training mean/std; "smm" alone
    # is the paper's score. Box score = `combine` ("sum" or "max") of the standardised terms.
    terms: tuple[str, ...] = ("velocity", "shape")
    combine: str = "sum"
    # frame score from its box scores: "max", or "tail": -log P(the largest of K normal training boxes >= the
    # frame's largest box), so that crowded normal frames (many boxes) do not outscore sparse ones by numbers
    # alone (docs/decisions.md, "Frame score by the box tail")
    frame_rule: str = "max"
    knn_k: int = 1  # neighbours averaged by the density terms
    bank_size: int = 2000  # memory-bank rows kept per density term (greedy k-centre coreset)
    smoothing_sigma: float = 3.0  # frames; Gaussian smoothing of the score curve
    # the runtime's displayed smoothing is causal: lpgb-run writes each frame's smoothed score as soon as
    # the frame is scored (scores.csv, frames.jsonl, the video overlay); centred smoothing would hold every
    # output back by 4 sigma frames, so false is refused (reports and benchmarks smooth centred offline)
    causal_smoothing: bool = True
    # event threshold = this quantile of the held-out training frame scores (each training video scored against
    # the others' boxes, which runs higher than a test video scored against all of them). 0.9: events catch
    # 16 of 18 anomalous segments over synthetic seeds 0, 1 and Ped2 01-06 (47 of 51 events true), 0.95: 14 of
    # 18 (44 of 48) (python -m lpgb.benchmarks.terms prints events per quantile; docs/decisions.md, "Events")
    threshold_quantile: float = 0.9
    hysteresis: float = 0.8  # an event ends when the score falls below hysteresis * threshold
    min_event_frames: int = 3

    def __post_init__(self) -> None:
        if not self.terms or len(set(self.terms)) != len(self.terms):
            raise LpgbError(f"scoring.terms must name at least one term, each once; got {list(self.terms)}")
        if self.combine not in COMBINE_RULES:
            raise LpgbError(f"scoring.combine must be one of {', '.join(COMBINE_RULES)}; got {self.combine!r}")
        if self.frame_rule not in FRAME_RULES:
            raise LpgbError(f"scoring.frame_rule must be one of {', '.join(FRAME_RULES)}; got {self.frame_rule!r}")
        if self.knn_k < 1 or self.bank_size < 1:
            raise LpgbError(f"scoring.knn_k and scoring.bank_size must be >= 1; got {self.knn_k}, {self.bank_size}")
        if not self.causal_smoothing:
            raise LpgbError("scoring.causal_smoothing = false is not supported: lpgb-run writes each frame's "
                            "smoothed score as it is scored")
        if not 0.0 < self.threshold_quantile <= 1.0:
            raise LpgbError(f"scoring.threshold_quantile must be in (0, 1], got {self.threshold_quantile}")


@dataclass(frozen=True)
@checked
class FlowConfig:
    """Dense optical flow, computed once per frame for the terms that read motion (lpgb.runtime.flow)."""

    # OpenCV DIS preset. "medium" by default: on Ped2 test 01-06 (motion proposals) the velocity term
    # scores far higher with it than with "ultrafast", whose coarse flow blurs a cyclist's speed into
    # the walkers' (docs/decisions.md, "Flow quality"; python -m lpgb.benchmarks.terms --flow preset=...)
    preset: str = "medium"
    max_width: int = 480  # wider frames are downscaled before the flow (DIS cost grows with pixels)

    def __post_init__(self) -> None:
        if self.preset not in FLOW_PRESETS:
            raise LpgbError(f"flow.preset must be one of {', '.join(FLOW_PRESETS)}; got {self.preset!r}")
        if self.max_width < 16:
            raise LpgbError(f"flow.max_width must be >= 16 pixels; got {self.max_width}")


@dataclass(frozen=True)
@checked
class LpgbConfig:
    """Everything that defines a model and how it is served."""

    preset: str = "edge"
    spatial: SpatialConfig = field(default_factory=SpatialConfig)
    smm: SMMConfig = field(default_factory=SMMConfig)
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    version: int = CONFIG_VERSION

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LpgbConfig":
        cfg = from_dict(cls, migrate(data))
        if cfg.version != CONFIG_VERSION:
            raise LpgbError(f"config version {cfg.version} is not supported (this lpgb reads version {CONFIG_VERSION})")
        return cfg

    @classmethod
    def from_json(cls, text: str) -> "LpgbConfig":
        return cls.from_dict(json.loads(text))

    def save(self, path: Path) -> None:
        from lpgb.runtime.atomic import write_text_atomic

        write_text_atomic(Path(path), self.to_json())

    @classmethod
    def load(cls, path: Path) -> "LpgbConfig":
        path = Path(path)
        if not path.is_file():
            raise LpgbError(f"no config at {path}: is this an lpgb model folder?")
        try:
            return cls.from_json(path.read_text())
        except json.JSONDecodeError as exc:
            raise LpgbError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A config dict of an older version -> the same settings as a current-version dict.

    Version 1 lacks the fields of `V1_DEFAULTS`, version 2 those of `V2_DEFAULTS`, version 3 those of
    `V3_DEFAULTS`; their old behaviour is filled in (pinned here, not read from the current defaults, which may change).
    Other versions are returned unchanged (`from_dict` judges them).
    """
    if not isinstance(data, dict) or data.get("version") not in (1, 2, 3):
        return data
    out = dict(data)
    for version, pinned in ((1, V1_DEFAULTS), (2, V2_DEFAULTS), (3, V3_DEFAULTS)):
        if out["version"] != version:
            continue
        out["version"] = version + 1
        for section, values in pinned.items():
            part = out.get(section, {})
            if isinstance(part, dict):
                out[section] = {**values, **part}
    return out


def preset(name: str) -> LpgbConfig:
    """The named preset. `paper` follows the paper; `edge` is smaller; `tiny` is for tests and CI."""
    if name == "paper":
        return LpgbConfig(preset="paper")
    if name == "edge":
        return LpgbConfig(
            preset="edge",
            # 112-pixel crops: surveillance objects are 20-80 px tall (Ped2 walkers ~25x50), so 224 only
            # upsamples them; measured 0.64 vs 2.14 GFLOP per crop (count_params_and_flops), 4.4 M params.
            spatial=SpatialConfig(
                image_size=112, token_grid=7, vision_dim=256, num_queries=16, hidden_dim=256,
                embed_dim=64, num_layers=4, cross_attention_every=2, num_heads=4,
                text_layers=2, text_heads=4, text_context=24,
            ),
            smm=SMMConfig(components=16),
        )
    if name == "edge-motion":
        # edge with 64-pixel motion crops (0.31 GFLOP per crop) and branch 1's irregularity read-out served as
        # a score term beside the motion terms (docs/decisions.md, "The irregularity read-out"): measured on
        # Ped2 and the synthetic sets, not the default.
        edge = preset("edge")
        return replace(edge, preset="edge-motion",
                       spatial=replace(edge.spatial, image_size=64, token_grid=8, input_form="motion"),
                       scoring=replace(edge.scoring, terms=("velocity", "shape", "irregularity")))
    if name == "edge-rpn":
        # edge whose RPN boxes people one by one (trained on single-person motion blobs, lpgb-train's
        # default --rpn-targets single for this preset), served as the union with the motion blobs, each box
        # its own tube: Ped2 01-06 velocity + shape 0.960 / 0.981 (RPN seeds 0 / 1), crowd sets 0.736 / 0.747,
        # a sparse synthetic set 0.880 (docs/decisions.md, "Single-person RPN targets"): not the default
        edge = preset("edge")
        return replace(edge, preset="edge-rpn", proposals=replace(
            edge.proposals, source="union", rpn_input_size=(160, 240), merge_overlapping=False))
    if name == "tiny":
        return LpgbConfig(
            preset="tiny",
            spatial=SpatialConfig(
                image_size=64, token_grid=4, vision_dim=64, num_queries=4, hidden_dim=64,
                embed_dim=32, num_layers=2, cross_attention_every=1, num_heads=2, mlp_ratio=2.0,
                text_layers=1, text_heads=2, text_context=16,
            ),
            smm=SMMConfig(components=8, fusion_heads=2),
            proposals=ProposalConfig(rpn_input_size=(160, 240), top_k=16),
        )
    raise LpgbError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")


# ---------------------------------------------------------------------------------------------
# Generic frozen-dataclass <-> dict conversion (strict: unknown or missing-typed keys are errors)


def to_dict(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from `data`, rejecting unknown keys with a one-line error."""
    if not isinstance(data, dict):
        raise LpgbError(f"config{where or ''}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise LpgbError(f"config{where}: unknown key(s) {', '.join(unknown)} for {cls.__name__}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        if is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, f"{where}.{name}")
        elif typing.get_origin(hint) is tuple:
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def config_differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Dotted names of the fields where two configs (dataclasses or dicts) differ, e.g. `proposals.top_k`."""
    a = to_dict(a) if is_dataclass(a) else a
    b = to_dict(b) if is_dataclass(b) else b
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in config_differences(a.get(k), b.get(k), f"{where}{k}.")]
    return [] if a == b else [where.rstrip(".")]


def with_overrides(cfg: T, **changes: Any) -> T:
    """dataclasses.replace that keeps frozen objects frozen (re-exported for readability)."""
    return replace(cfg, **changes)


__all__ = [
    "CONFIG_VERSION", "PRESETS", "COMBINE_RULES", "FRAME_RULES", "PROPOSAL_SOURCES", "FLOW_PRESETS", "V2_DEFAULTS", "V3_DEFAULTS",
    "SpatialConfig", "FlowConfig", "SMMConfig", "ProposalConfig", "ScoringConfig",
    "LpgbConfig", "preset", "migrate", "V1_DEFAULTS", "to_dict", "from_dict", "with_overrides", "config_differences", "dataclasses",
    "Range", "RANGES", "MAX_SMOOTHING_SIGMA", "checked", "check_fields",
]
