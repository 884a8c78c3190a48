"""From per-box score terms to box and frame scores (the scorer stage).

Each term's raw box values are standardised with the mean/std of that term's TRAINING scores
(held out per training video for the density terms); the box score combines the standardised terms
(`ScoringConfig.combine`: their sum or their max); frame score (`ScoringConfig.frame_rule`) = the max over the
frame's boxes ("max"), or how unlikely that max is for as many normal boxes ("tail": -log P(the largest of K
training boxes >= it), so a frame with many boxes needs a higher box to score as high); the calibrated normal
level (median training frame score) when a frame has no box. Nothing here ever
looks at test statistics. Term states (memory banks) are saved in one `terms.npz` per model folder.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Iterable

import numpy as np

from lpgb.runtime.config import LpgbConfig, ScoringConfig
from lpgb.runtime.errors import LpgbError

_MIN_STD = 1e-8
TERM_STATES = "terms.npz"
TAIL_LEVEL = 0.99  # frame_rule "tail": above this training quantile the box scores' survival is exponential
TAIL_POINTS = 100  # stored quantiles of the training box scores


@dataclass(frozen=True)
class BoxTail:
    """The training distribution of combined box scores (`frame_rule = "tail"`).

    `quantiles` (TAIL_POINTS,) ascending: box scores at cumulative probabilities linspace(0, TAIL_LEVEL,
    TAIL_POINTS); above the last one the survival is (1 - TAIL_LEVEL) * exp(-(s - quantiles[-1]) / beta),
    `beta` the mean excess of the training boxes over it (an exponential tail, so scores beyond every
    training box keep their order).
    """

    quantiles: tuple[float, ...]
    beta: float

    @classmethod
    def fit(cls, box_scores: np.ndarray) -> "BoxTail":
        """Training box scores (M,) (finite) -> their tail model."""
        b = np.sort(np.asarray(box_scores, np.float64).reshape(-1))
        q = np.quantile(b, np.linspace(0.0, TAIL_LEVEL, TAIL_POINTS))
        excess = b[b > q[-1]] - q[-1]
        beta = float(excess.mean()) if excess.size else 1.0
        return cls(tuple(float(v) for v in q), max(beta, 1e-6))

    def log_survival(self, s: float) -> float:
        """log P(a normal box scores >= s)."""
        q = self.quantiles
        if s > q[-1]:
            return float(np.log1p(-TAIL_LEVEL) - (s - q[-1]) / self.beta)
        cdf = float(np.interp(s, q, np.linspace(0.0, TAIL_LEVEL, TAIL_POINTS)))
        return float(np.log1p(-cdf))

    def frame_value(self, max_box: float, count: int) -> float:
        """-log P(the largest of `count` normal boxes >= `max_box`) (>= 0)."""
        log_s = self.log_survival(max_box)
        if log_s < -30.0:  # 1 - (1 - S)^K = K * S to double precision
            return float(-(np.log(count) + log_s))
        if log_s >= 0.0:  # below every training box: some normal box surely scores as high
            return 0.0
        p = -np.expm1(count * np.log1p(-np.exp(log_s)))
        return float(-np.log(max(p, 1e-300)))

    def to_dict(self) -> dict[str, Any]:
        return {"quantiles": list(self.quantiles), "beta": self.beta}

    @classmethod
    def from_dict(cls, data: Any, source: str) -> "BoxTail":
        try:
            q, beta = tuple(float(v) for v in data["quantiles"]), float(data["beta"])
        except (KeyError, TypeError, ValueError) as exc:
            raise LpgbError(f"{source}: malformed box_tail ({exc})") from None
        if (len(q) != TAIL_POINTS or not all(np.isfinite(q)) or np.any(np.diff(q) < 0) or not np.isfinite(beta)
                or beta <= 0):
            raise LpgbError(f"{source}: box_tail needs {TAIL_POINTS} finite ascending quantiles and a finite beta > 0: "
                            "recalibrate (lpgb-train DATA --out RUN --stage calibrate)")
        return cls(q, beta)


@dataclass(frozen=True)
class TermCalibration:
    """Training statistics of one term's raw box scores."""

    mean: float
    std: float  # floored at 1e-8


@dataclass(frozen=True)
class Calibration:
    """Training-score statistics; stored as `calibration.json` in the run and the export sidecar."""

    terms: dict[str, TermCalibration]  # per score term
    normal_level: float  # median training frame score (the score of a frame without boxes)
    threshold: float  # ScoringConfig.threshold_quantile of training frame scores
    n_frames: int  # training frames (with at least one box) behind normal_level/threshold
    frame_size: Optional[tuple[int, int]] = None  # (H, W) of the training frames (median); None: not recorded
    box_tail: Optional[BoxTail] = None  # frame_rule "tail": the training box scores' distribution; None: "max"

    def to_dict(self) -> dict[str, Any]:
        out = {"terms": {n: {"mean": t.mean, "std": t.std} for n, t in self.terms.items()},
               "normal_level": self.normal_level, "threshold": self.threshold, "n_frames": self.n_frames}
        if self.frame_size is not None:
            out["frame_size"] = [int(v) for v in self.frame_size]
        if self.box_tail is not None:
            out["box_tail"] = self.box_tail.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "calibration") -> "Calibration":
        """Read a calibration (`source` names it in errors) and check its numbers once, here: finite means,
        stds, normal level and threshold, std > 0. The format before score terms (`error_mean`/`error_std`)
        is the `smm` term."""
        cal = cls._parse(data, source)
        for name, t in cal.terms.items():
            if not (np.isfinite(t.mean) and np.isfinite(t.std) and t.std > 0):
                raise LpgbError(f"{source}: score term {name!r} has mean {t.mean} and std {t.std}; a finite mean "
                                "and a finite std > 0 are needed: recalibrate (lpgb-train DATA --out RUN --stage "
                                "calibrate)")
        for name in ("normal_level", "threshold"):
            if not np.isfinite(getattr(cal, name)):
                raise LpgbError(f"{source}: {name} is {getattr(cal, name)}, not a finite number: recalibrate "
                                "(lpgb-train DATA --out RUN --stage calibrate)")
        if cal.n_frames < 0 or (cal.frame_size is not None and min(cal.frame_size) < 1):
            raise LpgbError(f"{source}: n_frames {cal.n_frames} and frame_size {cal.frame_size} must be positive")
        return cal

    @classmethod
    def _parse(cls, data: dict[str, Any], source: str) -> "Calibration":
        if not isinstance(data, dict):
            raise LpgbError(f"{source}: expected an object, got {type(data).__name__}")
        data = dict(data)
        if "error_mean" in data or "error_std" in data:
            data["terms"] = {"smm": {"mean": data.pop("error_mean", None), "std": data.pop("error_std", None)}}
        names = {"terms", "normal_level", "threshold", "n_frames"}
        unknown, missing = sorted(set(data) - names - {"frame_size", "box_tail"}), sorted(names - set(data))
        if unknown or missing:
            raise LpgbError(f"{source}: unknown key(s) {', '.join(unknown) or '-'}, missing key(s) "
                            f"{', '.join(missing) or '-'}")
        try:
            terms = {str(n): TermCalibration(float(t["mean"]), float(t["std"])) for n, t in data["terms"].items()}
            size = data.get("frame_size")
            frame_size = None if size is None else (int(size[0]), int(size[1]))
            tail = None if data.get("box_tail") is None else BoxTail.from_dict(data["box_tail"], source)
            return cls(terms=terms, normal_level=float(data["normal_level"]), threshold=float(data["threshold"]),
                       n_frames=int(data["n_frames"]), frame_size=frame_size, box_tail=tail)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise LpgbError(f"{source}: malformed values ({exc})") from None

    def check_terms(self, names: Iterable[str]) -> None:
        missing = [n for n in names if n not in self.terms]
        if missing:
            raise LpgbError(f"the model's calibration has no statistics for score term(s) {', '.join(missing)}: "
                            "recalibrate it (lpgb-train DATA --out RUN --stage calibrate)")


def standardise(raw: dict[str, np.ndarray], cal: Calibration) -> dict[str, np.ndarray]:
    """{term: raw (K,)} -> {term: (raw - mean) / std (K,) float32} with each term's training statistics."""
    cal.check_terms(raw)
    return {n: ((np.asarray(v, np.float64).reshape(-1) - cal.terms[n].mean) / cal.terms[n].std).astype(np.float32)
            for n, v in raw.items()}


def combine(z: dict[str, np.ndarray], rule: str) -> np.ndarray:
    """Standardised terms {term: (K,)} -> box scores (K,) float32 by `rule` ("sum" | "max")."""
    if not z:
        raise LpgbError("no score terms to combine")
    stack = np.stack([np.asarray(v, np.float32).reshape(-1) for v in z.values()])  # (T, K)
    if rule == "sum":
        return stack.sum(0).astype(np.float32)
    if rule == "max":
        return stack.max(0).astype(np.float32) if stack.shape[1] else np.zeros(0, np.float32)
    raise LpgbError(f"unknown combine rule {rule!r}; choose sum or max")


def calibrate(term_scores: dict[str, np.ndarray], frame_keys: np.ndarray, cfg: ScoringConfig) -> Calibration:
    """Calibrate on normal training boxes.

    `term_scores`: {term: raw training scores (M,)} for the same M boxes (held out per video for density
    terms); `frame_keys` `(M,)`: one id per (video, frame), so a frame's score comes from its boxes by
    `cfg.frame_rule` (with "tail" the box scores' distribution is fitted here and kept in the calibration).
    """
    keys = np.asarray(frame_keys).reshape(-1)
    stats = {}
    for name, values in term_scores.items():
        v = np.asarray(values, np.float64).reshape(-1)
        if len(v) != len(keys):
            raise LpgbError(f"calibration: term {name!r} has {len(v)} scores for {len(keys)} boxes")
        v = v[np.isfinite(v)]
        if v.size == 0:
            raise LpgbError("calibration needs at least one training box (no boxes in the training videos?)")
        stats[name] = TermCalibration(mean=float(v.mean()), std=max(float(v.std()), _MIN_STD))
    partial = Calibration(terms=stats, normal_level=0.0, threshold=0.0, n_frames=0)
    box = combine(standardise(term_scores, partial), cfg.combine).astype(np.float64)
    ok = np.isfinite(box)
    if not ok.any():
        raise LpgbError("calibration needs at least one training frame with a box")
    _, inverse, counts = np.unique(keys[ok], return_inverse=True, return_counts=True)
    frame = np.full(inverse.max() + 1, -np.inf)
    np.maximum.at(frame, inverse, box[ok])
    tail = None
    if cfg.frame_rule == "tail":
        tail = BoxTail.fit(box[ok])
        frame = np.asarray([tail.frame_value(s, int(k)) for s, k in zip(frame, counts)])
    return Calibration(terms=stats, normal_level=float(np.median(frame)),
                       threshold=float(np.quantile(frame, cfg.threshold_quantile)), n_frames=int(frame.size),
                       box_tail=tail)


def frame_score(scores: np.ndarray, cal: Calibration) -> float:
    """The frame's score from its box scores (K,): their max, or with a `box_tail` calibration -log P(the
    largest of K normal boxes >= their max); `cal.normal_level` when the frame has no box."""
    s = np.asarray(scores).reshape(-1)
    if not s.size:
        return float(cal.normal_level)
    if cal.box_tail is not None:
        return cal.box_tail.frame_value(float(s.max()), int(s.size))
    return float(s.max())


@dataclass(frozen=True)
class BoxScores:
    """One frame's box scores: `terms` {term: standardised (K,)} and their combination `combined` (K,)."""

    terms: dict[str, np.ndarray]
    combined: np.ndarray

    def dominant(self) -> list[str]:
        """Per box, the term with the largest standardised value."""
        if not self.terms or not len(self.combined):
            return []
        names = list(self.terms)
        return [names[i] for i in np.argmax(np.stack([self.terms[n] for n in names]), axis=0)]


class TermScorer:
    """The scorer stage: fitted score terms + calibration -> BoxScores for one frame's evidence."""

    def __init__(self, cfg: LpgbConfig, cal: Calibration, terms: list) -> None:
        cal.check_terms(t.name for t in terms)
        if (cfg.scoring.frame_rule == "tail") != (cal.box_tail is not None):
            raise LpgbError(f"scoring.frame_rule is {cfg.scoring.frame_rule!r} but the calibration was made for "
                            f"{'tail' if cal.box_tail is not None else 'max'}: recalibrate "
                            "(lpgb-train DATA --out RUN --stage calibrate)")
        self.cfg, self.cal, self.terms = cfg, cal, terms

    @property
    def needs(self) -> frozenset[str]:
        return frozenset().union(*(t.needs for t in self.terms))

    def score(self, evidence, times: dict[str, float] | None = None) -> BoxScores:
        """`BoxEvidence` of K boxes -> BoxScores; K = 0 gives empty arrays. `times` gets each term's
        seconds as `term <name>`."""
        k = len(evidence.boxes)
        if k == 0:
            return BoxScores({t.name: np.zeros(0, np.float32) for t in self.terms}, np.zeros(0, np.float32))
        raw = {}
        for t in self.terms:
            start = time.perf_counter()
            raw[t.name] = t.score(t.features(evidence))
            if times is not None:
                times[f"term {t.name}"] = time.perf_counter() - start
        z = standardise(raw, self.cal)
        return BoxScores(z, combine(z, self.cfg.scoring.combine))


def save_term_states(path: Path, terms: list) -> None:
    """Every term's state arrays in one .npz (`term/key`), written atomically."""
    from lpgb.runtime.atomic import atomic_path

    arrays = {f"{t.name}/{k}": v for t in terms for k, v in t.state().items()}
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def load_terms(cfg: LpgbConfig, folder: Path) -> list:
    """The configured terms with their states from `folder/terms.npz` (absent: stateless terms only)."""
    from lpgb.runtime.terms import make_terms

    terms = make_terms(cfg)
    path = Path(folder) / TERM_STATES
    stored: dict[str, dict[str, np.ndarray]] = {}
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                for key in data.files:
                    term, _, name = key.partition("/")
                    stored.setdefault(term, {})[name] = data[key]
        except (OSError, ValueError) as exc:
            raise LpgbError(f"{path} is not a readable term-state file ({exc})") from None
    for term in terms:
        if term.name in stored:
            term.load_state(stored[term.name])
        elif term.stateful:
            raise LpgbError(f"score term {term.name!r} has no fitted state in {path}: "
                            "fit it with lpgb-train DATA --out RUN --stage calibrate")
    return terms


def half_gaussian_kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Causal weights w[k] ∝ exp(-k²/2σ²) for lags k = 0..ceil(truncate·σ) (w[0] = now), summing to 1.
    (`lpgb.runtime.metrics.causal_kernel` returns this kernel for offline evaluation.)"""
    if sigma <= 0:
        return np.ones(1)
    radius = int(np.ceil(truncate * float(sigma)))
    k = np.arange(radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (k / float(sigma)) ** 2)
    return w / w.sum()


class CausalSmoother:
    """Streaming half-Gaussian smoothing: the output at t uses frames t-R..t only.

    Before R frames have been seen the first score stands in for the missing past (as
    `metrics.gaussian_smooth(..., causal=True)` does), so a constant signal stays constant and
    streaming equals the offline curve. sigma <= 0 passes scores through.
    """

    def __init__(self, sigma: float, truncate: float = 4.0) -> None:
        self.kernel = half_gaussian_kernel(sigma, truncate)
        self._history: deque[float] = deque(maxlen=len(self.kernel))  # newest first

    def push(self, score: float) -> float:
        if not self._history:
            self._history.extend([float(score)] * len(self.kernel))
        else:
            self._history.appendleft(float(score))
        h = np.fromiter(self._history, dtype=np.float64, count=len(self._history))
        return float(np.dot(self.kernel, h))

    def smooth(self, scores: Iterable[float]) -> np.ndarray:
        """Push a whole sequence (continuing the stream) and return the smoothed values."""
        return np.array([self.push(s) for s in scores], dtype=np.float64)

    def reset(self) -> None:
        self._history.clear()


__all__ = ["TermCalibration", "Calibration", "calibrate", "standardise", "combine", "frame_score", "BoxScores",
           "TermScorer", "save_term_states", "load_terms", "TERM_STATES", "half_gaussian_kernel", "CausalSmoother"]
