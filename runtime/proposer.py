"""The proposal stage as one object: motion (MOG2) and/or the RPN, united, NMS, top-K (per video).

The RPN is any callable `image (1, 3, Hi, Wi) float32 -> (boxes (K, 4) in input pixels, scores (K,))`:
a backend's `rpn` part when serving, the torch module when training, so the letterbox and the way back
to frame pixels are written once (here). Torch-free.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from lpgb.runtime.config import ProposalConfig
from lpgb.runtime.errors import LpgbError
from lpgb.runtime.motion import MotionProposer
from lpgb.runtime.proposals import frame_proposals, rpn_letterbox

RpnFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

__all__ = ["Proposer", "RpnFn", "backend_rpn"]


def backend_rpn(backend) -> RpnFn:
    """A Backend's `rpn` part as an RpnFn."""

    def run(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = backend.run("rpn", {"image": image})
        return out["boxes"], out["scores"]

    return run


class Proposer:
    """Per-video proposal state. `cfg.source` picks motion, RPN or their union; `rpn` may be None only
    when the source is motion (for a union without an RPN the motion boxes stand alone)."""

    def __init__(self, cfg: ProposalConfig, rpn: Optional[RpnFn]) -> None:
        if cfg.source == "rpn" and rpn is None:
            raise LpgbError("proposals.source is 'rpn' but the model has no RPN part")
        self.cfg = cfg
        self.rpn = rpn if cfg.source in ("rpn", "union") else None
        self.motion = MotionProposer(cfg) if cfg.source in ("motion", "union") else None
        self.last_rpn: Optional[tuple[np.ndarray, np.ndarray]] = None  # raw RPN output of the last frame

    def rpn_boxes(self, frame: np.ndarray) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """The RPN's raw boxes `(K, 4)` in frame pixels and scores `(K,)`, or None without an RPN."""
        if self.rpn is None:
            return None
        image, letterbox = rpn_letterbox(frame, self.cfg)
        boxes, scores = self.rpn(image)
        return letterbox.to_frame(boxes), np.asarray(scores, np.float32).reshape(-1)

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """frame `(H, W, 3)` uint8 BGR -> final boxes `(K, 4)` float32 frame pixels, scores `(K,)`."""
        self.last_rpn = self.rpn_boxes(frame)
        return frame_proposals(frame, self.last_rpn, self.motion, self.cfg)
