"""Score terms and their registry. A new term: a module with a `ScoreTerm` subclass + one line here."""

from __future__ import annotations

from typing import Iterable

from lpgb.runtime.config import LpgbConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.terms.appearance import AppearanceTerm, PatternsTerm
from lpgb.runtime.terms.base import EVIDENCE_KINDS, NETWORK_EVIDENCE, BoxEvidence, ScoreTerm
from lpgb.runtime.terms.dwell import DwellTerm
from lpgb.runtime.terms.irregularity import IrregularityTerm
from lpgb.runtime.terms.motion_patterns import MotionPatternsTerm
from lpgb.runtime.terms.pace import PaceTerm
from lpgb.runtime.terms.shape import ShapeTerm
from lpgb.runtime.terms.smm_error import SmmErrorTerm
from lpgb.runtime.terms.trajectory import TrajectoryTerm
from lpgb.runtime.terms.velocity import VelocityTerm

TERMS: dict[str, type[ScoreTerm]] = {
    SmmErrorTerm.name: SmmErrorTerm,
    VelocityTerm.name: VelocityTerm,
    AppearanceTerm.name: AppearanceTerm,
    PatternsTerm.name: PatternsTerm,
    ShapeTerm.name: ShapeTerm,
    TrajectoryTerm.name: TrajectoryTerm,
    DwellTerm.name: DwellTerm,
    IrregularityTerm.name: IrregularityTerm,
    PaceTerm.name: PaceTerm,
    MotionPatternsTerm.name: MotionPatternsTerm,
}


def register_term(cls: type[ScoreTerm]) -> type[ScoreTerm]:
    """Add a term class to the registry (usable as a decorator)."""
    TERMS[cls.name] = cls
    return cls


def make_terms(cfg: LpgbConfig) -> list[ScoreTerm]:
    """The terms `cfg.scoring.terms` names, in that order, unfitted."""
    return [term_class(name)(cfg) for name in cfg.scoring.terms]


def reads_networks(name: str) -> bool:
    """Whether the term reads what the branches or the temporal part compute (`NETWORK_EVIDENCE`)."""
    return bool(term_class(name).needs & NETWORK_EVIDENCE)


NETWORK_PATHS = ("none", "branch1", "patterns", "tubes")  # cheapest first


def network_path(needs: Iterable[str]) -> str:
    """What the networks run per box for terms that read evidence kinds `needs`: "none"; "branch1" (each
    box's newest crop through branch 1 only); "patterns" (the newest crop through both branches, no tube, no
    temporal part); or "tubes" (the L+1 crops of each box's tube through both branches, then the temporal
    part)."""
    network = set(needs) & NETWORK_EVIDENCE
    if not network:
        return "none"
    if network == {"branch1"}:
        return "branch1"
    return "patterns" if network <= {"patterns", "branch1"} else "tubes"


def terms_network_path(names: Iterable[str]) -> str:
    """`network_path` of the named terms together."""
    return network_path(set().union(*(term_class(n).needs for n in names)))


def term_class(name: str) -> type[ScoreTerm]:
    if name not in TERMS:
        raise LpgbError(f"unknown score term {name!r}; known terms: {', '.join(TERMS)}")
    return TERMS[name]


__all__ = ["TERMS", "EVIDENCE_KINDS", "NETWORK_EVIDENCE", "BoxEvidence", "ScoreTerm", "register_term", "make_terms",
           "term_class", "reads_networks", "network_path", "terms_network_path", "NETWORK_PATHS"]
