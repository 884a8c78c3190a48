"""Captioners: four template sentences per training crop (see `base`).

`make_captioner(train_cfg.spatial)` picks one by `SpatialTrainConfig.captioner`:
attributes (OpenCV, default, offline), clip (open_clip, local weights only), file (JSONL).
Implementations are imported lazily (open_clip is slow to import).
"""

from __future__ import annotations

from lpgb.runtime.errors import LpgbError
from lpgb.trainer.captioners.base import FIELDS, TEMPLATES, Captioner, Captions, load_vocab, sentence
from lpgb.trainer.config import CAPTIONERS, SpatialTrainConfig


def make_captioner(train_cfg: SpatialTrainConfig) -> Captioner:
    if train_cfg.captioner == "attributes":
        from lpgb.trainer.captioners.attributes import AttributesCaptioner

        return AttributesCaptioner()
    if train_cfg.captioner == "clip":
        from lpgb.trainer.captioners.clip import ClipCaptioner

        return ClipCaptioner(train_cfg.clip_model, train_cfg.clip_weights)
    if train_cfg.captioner == "file":
        from lpgb.trainer.captioners.file import FileCaptioner

        if not train_cfg.caption_file:
            raise LpgbError("--captioner file needs --caption-file PATH (a JSONL of captions)")
        return FileCaptioner(train_cfg.caption_file)
    raise LpgbError(f"unknown captioner {train_cfg.captioner!r}; choose {', '.join(CAPTIONERS)}")


__all__ = ["make_captioner", "Captioner", "Captions", "FIELDS", "TEMPLATES", "load_vocab", "sentence"]
