"""The exported parts' I/O contract, in one place: names, inputs, outputs and the dynamic batch axis.

Export (graph names and dynamic axes), every backend and the torch reference read these specs.
`smm` is the whole temporal model (branch fusion + SMM + prediction error); its `current` output is
the fused local-pattern vector v(t) of each tube's newest frame (read by the `appearance` term).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from lpgb.runtime.errors import LpgbError

__all__ = ["PartSpec", "PART_SPECS", "PARTS", "part_spec"]


@dataclass(frozen=True)
class PartSpec:
    """inputs/outputs: tensor names in call order; batch_axis: name of the dynamic dim 0 (None: static)."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    batch_axis: Optional[str]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        if self.batch_axis is None:
            return {}
        return {n: {0: self.batch_axis} for n in (*self.inputs, *self.outputs)}


PART_SPECS: dict[str, PartSpec] = {
    # image (1, 3, Hi, Wi) 0..1 RGB -> boxes (K, 4) input pixels, scores (K,)
    "rpn": PartSpec("rpn", ("image",), ("boxes", "scores"), None),
    # crops (B, 3, S, S) normalised RGB -> features (B, N_q, E_d)
    "branch1": PartSpec("branch1", ("crops",), ("features",), "crops"),
    "branch2": PartSpec("branch2", ("crops",), ("features",), "crops"),
    # f1, f2 (K, L+1, N_q, E_d) -> pred (K, N), error (K,), current (K, N)
    "smm": PartSpec("smm", ("f1", "f2"), ("pred", "error", "current"), "tubes"),
}
PARTS: tuple[str, ...] = tuple(PART_SPECS)
# the files of each part per format: `lpgb.runtime.formats.FORMATS`


def part_spec(part: str) -> PartSpec:
    if part not in PART_SPECS:
        raise LpgbError(f"unknown model part {part!r}; parts are {', '.join(PARTS)}")
    return PART_SPECS[part]
