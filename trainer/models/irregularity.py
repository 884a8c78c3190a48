"""Motion-irregularity head of branch 1 (a self-supervised proxy task, Georgescu et al., CVPR 2021).

A linear read-out of the branch's output: its logit says how much a motion-encoded crop looks like one cut
from frames further apart than consecutive ones (an object moving faster than the normal objects it was
trained on). Trained beside the contrastive loss (the loss lives in `lpgb.trainer.losses`); served by the
`irregularity` score term, which applies the same read-out in numpy to the branch features
(`lpgb.runtime.terms.irregularity`), so the exported branch graphs are unchanged.

    F (B, N_q, E_d) -> mean over queries (B, E_d) -> Linear -> logit (B,)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from lpgb.runtime.config import SpatialConfig

HEAD_FILE = "irregularity_head.npz"  # RUN/weights/HEAD_FILE: the read-out as numpy arrays (weight (E_d,), bias ())


class IrregularityHead(nn.Module):
    """forward(F (B, N_q, E_d)) -> irregularity logit (B,)."""

    def __init__(self, cfg: SpatialConfig) -> None:
        super().__init__()
        self.linear = nn.Linear(cfg.embed_dim, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features.mean(dim=1))[:, 0]

    @classmethod
    def from_arrays(cls, cfg: SpatialConfig, arrays: dict[str, np.ndarray]) -> "IrregularityHead":
        """The head whose read-out is `arrays` (what `arrays()` returned, e.g. from `load_head_arrays`)."""
        head = cls(cfg)
        with torch.no_grad():
            head.linear.weight.copy_(torch.from_numpy(np.asarray(arrays["weight"], np.float32))[None])
            head.linear.bias.copy_(torch.from_numpy(np.asarray(arrays["bias"], np.float32)).reshape(1))
        return head.eval()

    def arrays(self) -> dict[str, np.ndarray]:
        """The read-out as the `irregularity` term's state: weight (E_d,), bias () float32."""
        return {"weight": self.linear.weight.detach().cpu().numpy()[0].astype(np.float32),
                "bias": self.linear.bias.detach().cpu().numpy()[0].astype(np.float32)}


def save_head(head: IrregularityHead, weights_dir: Path) -> None:
    """Write RUN/weights/HEAD_FILE atomically."""
    from lpgb.runtime.atomic import atomic_path

    weights_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(weights_dir / HEAD_FILE) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **head.arrays())


def load_head_arrays(run_dir: Path) -> dict[str, np.ndarray] | None:
    """RUN's irregularity read-out {weight, bias}, or None when the run trained none."""
    path = Path(run_dir) / "weights" / HEAD_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {k: np.asarray(data[k], np.float32) for k in ("weight", "bias")}
