"""What a captioner is: four template sentences per training crop (paper 3.2, DESIGN.md Training).

Templates (the word comes from `trainer/vocab/<field>.txt`; place words carry their own
preposition, so the place template is "A person is <place>"):

    action      "A person is <action>"      e.g. "A person is walking left"   -> branch 1
    appearance  "A person in <appearance>"  e.g. "A person in red clothes"    -> branch 2
    place       "A person is <place>"       e.g. "A person is near the top of the scene" -> branch 2
    objects     "There is <object>"         e.g. "There is another person nearby"      -> branch 2

For non-human objects the action sentence still uses a verb ("A person is riding a bicycle").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Protocol, Sequence

import numpy as np

FIELDS: tuple[str, ...] = ("action", "appearance", "place", "objects")
TEMPLATES: dict[str, str] = {
    "action": "A person is {}",
    "appearance": "A person in {}",
    "place": "A person is {}",
    "objects": "There is {}",
}
VOCAB_FILES: dict[str, str] = {"action": "actions", "appearance": "appearance", "place": "places", "objects": "objects"}


@dataclass(frozen=True)
class Captions:
    """The four sentences of one crop (full sentences, templates already filled)."""

    action: str
    appearance: str
    place: str
    objects: str

    def sentences(self, branch: int) -> list[str]:
        """Training sentences of a branch: 1 -> [action]; 2 -> [appearance, place, objects]."""
        if branch == 1:
            return [self.action]
        if branch == 2:
            return [self.appearance, self.place, self.objects]
        raise ValueError(f"branch must be 1 or 2, got {branch}")

    def to_dict(self) -> dict[str, str]:
        return {f: getattr(self, f) for f in FIELDS}

    @classmethod
    def from_words(cls, action: str, appearance: str, place: str, objects: str) -> "Captions":
        words = {"action": action, "appearance": appearance, "place": place, "objects": objects}
        return cls(**{f: sentence(f, w) for f, w in words.items()})


def sentence(field: str, word: str) -> str:
    return TEMPLATES[field].format(word)


@functools.lru_cache(maxsize=None)
def load_vocab(field: str) -> tuple[str, ...]:
    """Words of `field` (action|appearance|place|objects) from the packaged vocab/*.txt.

    One entry per line; blank lines and lines starting with '#' are skipped.
    """
    name = VOCAB_FILES[field]
    text = resources.files("lpgb.trainer").joinpath("vocab", f"{name}.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


class Captioner(Protocol):
    """Makes the four sentences for each tube.

    crops: uint8 (K, L+1, S, S, 3) BGR tubes, oldest frame first (`TubeBatch.crops`);
    boxes: float32 (K, 4) x1, y1, x2, y2 frame pixels of the grouped boxes (`TubeBatch.boxes`);
    frame_shape: (H, W) or (H, W, C) of the frame;
    keys: optional per-crop identifiers (needed by FileCaptioner, ignored by the others).
    Returns K Captions, deterministic for the same input.
    """

    def caption(self, crops: np.ndarray, boxes: np.ndarray, frame_shape: Sequence[int],
                keys: Sequence[str] | None = None) -> list[Captions]:
        ...


def check_inputs(crops: np.ndarray, boxes: np.ndarray) -> None:
    if crops.ndim != 5 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
        raise ValueError(f"crops must be uint8 (K, L+1, S, S, 3), got {crops.dtype} {crops.shape}")
    if boxes.shape != (crops.shape[0], 4):
        raise ValueError(f"boxes must be (K, 4) with K = {crops.shape[0]}, got {boxes.shape}")


__all__ = ["Captions", "Captioner", "FIELDS", "TEMPLATES", "sentence", "load_vocab", "check_inputs"]
