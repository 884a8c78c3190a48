"""CLIP captioner (paper 3.2): for each field, the vocabulary word whose template sentence's CLIP
text embedding is closest (cosine) to the CLIP image embedding of the tube's middle frame.

Weights only from a local file (`--clip-weights`); nothing is ever downloaded: without a readable
file this fails at once with LpgbError. Tests pass an already built (random) open_clip model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from lpgb.runtime.errors import LpgbError
from lpgb.trainer.captioners.base import FIELDS, Captions, check_inputs, load_vocab, sentence


def load_clip(model_name: str, weights_path: str | Path) -> Any:
    """open_clip model `model_name` with weights from the local file `weights_path` (eval mode)."""
    path = Path(weights_path).expanduser() if weights_path else None
    if path is None or not path.is_file():
        where = f" ({path} does not exist)" if path is not None else ""
        raise LpgbError(f"the clip captioner needs a local open_clip checkpoint: pass --clip-weights PATH{where}; "
                        "weights are never downloaded (or use --captioner attributes)")
    if model_name.startswith(("hf-hub:", "local-dir:")):
        raise LpgbError(f"--clip-model must be a built-in open_clip config name, got {model_name!r}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import open_clip

    if model_name not in open_clip.list_models():
        raise LpgbError(f"unknown open_clip model {model_name!r} (--clip-model)")
    try:
        # an absolute path is never mistaken for a pretrained tag (tags would download)
        model = open_clip.create_model(model_name, pretrained=str(path.resolve()), device="cpu")
    except Exception as exc:  # noqa: BLE001 - open_clip raises RuntimeError/KeyError on a bad file
        raise LpgbError(f"cannot load {path} as open_clip {model_name}: {exc}") from None
    return model.eval()


class ClipCaptioner:
    """caption(crops, boxes, frame_shape) -> list[Captions] with open_clip.

    Either `model_name` + `weights_path` (local file), or `model=` an open_clip CLIP-like model
    (encode_image / encode_text). `tokenizer` defaults to open_clip's SimpleTokenizer with the
    model's context length (ships in the package, no download).
    """

    def __init__(self, model_name: str = "ViT-B-32", weights_path: str | Path = "", *, model: Any = None,
                 tokenizer: Callable[[list[str]], Any] | None = None, device: str = "cpu",
                 batch_size: int = 64) -> None:
        if model is None:
            model = load_clip(model_name, weights_path)  # fails fast, before the slow imports
        import torch
        from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
        from open_clip.tokenizer import SimpleTokenizer

        self.model = model.eval()
        self.model.to(device)
        self.device = device
        self.batch_size = batch_size
        visual = getattr(self.model, "visual", self.model)
        size = getattr(visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        pp = getattr(visual, "preprocess_cfg", {}) or {}
        self.mean = np.asarray(pp.get("mean", OPENAI_DATASET_MEAN), dtype=np.float32)
        self.std = np.asarray(pp.get("std", OPENAI_DATASET_STD), dtype=np.float32)
        if tokenizer is None:
            tokenizer = SimpleTokenizer(context_length=int(getattr(self.model, "context_length", 77)))
        self.words = {f: load_vocab(f) for f in FIELDS}
        with torch.no_grad():
            self.text = {}
            for f in FIELDS:
                tokens = tokenizer([sentence(f, w) for w in self.words[f]]).to(device)
                emb = self.model.encode_text(tokens).float()  # (V, D)
                self.text[f] = torch.nn.functional.normalize(emb, dim=-1)

    def _images(self, crops: np.ndarray) -> np.ndarray:
        """Middle frame of each tube -> float32 (K, 3, s, s) normalised RGB at the model's size."""
        mid = crops[:, crops.shape[1] // 2]  # (K, S, S, 3) BGR
        out = np.empty((len(mid), 3, self.image_size, self.image_size), dtype=np.float32)
        for k, img in enumerate(mid):
            img = cv2.resize(img, (self.image_size, self.image_size), interpolation=cv2.INTER_CUBIC)
            rgb = img[:, :, ::-1].astype(np.float32) / 255.0
            out[k] = ((rgb - self.mean) / self.std).transpose(2, 0, 1)
        return out

    def caption(self, crops: np.ndarray, boxes: np.ndarray, frame_shape: Sequence[int],
                keys: Sequence[str] | None = None) -> list[Captions]:
        import torch

        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        check_inputs(crops, boxes)
        out: list[Captions] = []
        with torch.no_grad():
            for start in range(0, len(crops), self.batch_size):
                x = torch.from_numpy(self._images(crops[start:start + self.batch_size])).to(self.device)
                img = torch.nn.functional.normalize(self.model.encode_image(x).float(), dim=-1)  # (k, D)
                best = {f: (img @ self.text[f].t()).argmax(dim=-1).tolist() for f in FIELDS}  # (k,) per field
                for j in range(x.shape[0]):
                    out.append(Captions.from_words(**{f: self.words[f][best[f][j]] for f in FIELDS}))
        return out


__all__ = ["ClipCaptioner", "load_clip"]
