"""Captioners: vocabulary, OpenCV attributes, JSONL file, CLIP mechanics with a random small model."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from lpgb.runtime.errors import LpgbError
from lpgb.trainer.captioners import FIELDS, Captions, load_vocab, make_captioner, sentence
from lpgb.trainer.captioners.attributes import COLOURS, PLACES, AttributesCaptioner
from lpgb.trainer.captioners.file import FileCaptioner
from lpgb.trainer.config import SpatialTrainConfig

S, T = 64, 6  # crop side, L + 1 frames
RED, BLUE = (30, 30, 220), (220, 60, 30)  # BGR


def blob_tube(speed: float = 0.0, w: int = 12, h: int = 28, colour=RED, dy: float = 0.0) -> np.ndarray:
    """(T, S, S, 3) uint8: a rectangle on a grey background moving `speed` crop sides per frame."""
    tube = np.full((T, S, S, 3), 120, np.uint8)
    for t in range(T):
        cx = int(S * (0.25 + speed * t)) if speed else S // 2
        cy = int(S * (0.5 + dy * t))
        tube[t, cy - h // 2:cy + h // 2, cx - w // 2:cx + w // 2] = colour
    return tube


def test_vocab_files_load_and_have_sizes():
    for f in FIELDS:
        words = load_vocab(f)
        assert 15 <= len(words) <= 40, (f, len(words))
        assert len(set(words)) == len(words)
    assert sentence("action", "running") == "A person is running"
    assert sentence("objects", "a car") == "There is a car"


def test_attribute_words_are_in_the_vocabulary():
    actions = load_vocab("action")
    for speed in ("walking", "running"):
        for d in ("left", "right", "towards the camera", "away from the camera"):
            assert f"{speed} {d}" in actions
    assert {"standing", "walking slowly", "lying down"} <= set(actions)
    assert {f"{c} clothes" for c in COLOURS} <= set(load_vocab("appearance"))
    assert {p for row in PLACES for p in row} <= set(load_vocab("place"))
    assert {"nobody nearby", "another person nearby", "a few people nearby", "a crowd of people",
            "a large object"} <= set(load_vocab("objects"))


def test_fast_blob_runs_and_static_blob_stands():
    cap = AttributesCaptioner()
    left = blob_tube(0.1, colour=BLUE)[::-1].copy()  # the right-moving tube played backwards
    crops = np.stack([blob_tube(0.1), blob_tube(0.0), left, blob_tube(0.0, w=30, h=10), blob_tube(0.0, dy=-0.03)])
    boxes = np.array([[10, 10, 30, 50], [200, 10, 220, 50], [10, 200, 30, 240], [110, 110, 130, 130],
                      [112, 112, 132, 132]], np.float32)
    out = cap.caption(crops, boxes, (240, 240, 3))
    assert [c.action for c in out] == ["A person is running right", "A person is standing",
                                       "A person is running left", "A person is lying down",
                                       "A person is walking away from the camera"]
    assert out[0].appearance == "A person in red clothes" and out[2].appearance == "A person in blue clothes"
    assert out[0].place == "A person is in the top left of the scene"
    assert out[1].place == "A person is in the top right of the scene"
    assert out[3].place == "A person is in the middle of the scene"
    assert out[0].objects == "There is nobody nearby"
    assert out[3].objects == "There is another person nearby"  # boxes 3 and 4 overlap
    assert cap.caption(crops, boxes, (240, 240, 3)) == out  # deterministic


def test_attributes_large_object_and_empty_batch():
    cap = AttributesCaptioner()
    out = cap.caption(blob_tube()[None], np.array([[0, 0, 200, 200]], np.float32), (240, 320))
    assert out[0].objects == "There is a large object"
    assert cap.caption(np.zeros((0, T, S, S, 3), np.uint8), np.zeros((0, 4), np.float32), (240, 320)) == []


def test_attributes_on_larger_crops():
    tube = np.stack([np.kron(f, np.ones((4, 4, 1), np.uint8)) for f in blob_tube(0.1)])  # 256 px
    out = AttributesCaptioner().caption(tube[None], np.array([[0, 0, 10, 10]], np.float32), (480, 640))
    assert out[0].action == "A person is running right"


def test_captions_branch_sentences():
    c = Captions.from_words("standing", "red clothes", "on the walkway", "a car")
    assert c.sentences(1) == ["A person is standing"]
    assert c.sentences(2) == ["A person in red clothes", "A person is on the walkway", "There is a car"]


def test_file_captioner(tmp_path):
    rows = [{"key": "v01/000010/0", "action": "A person is walking", "appearance": "A person in red clothes",
             "place": "A person is on the walkway", "objects": "There is a car"}]
    path = tmp_path / "captions.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cap = make_captioner(SpatialTrainConfig(captioner="file", caption_file=str(path)))
    assert isinstance(cap, FileCaptioner)
    crops = np.zeros((1, T, S, S, 3), np.uint8)
    out = cap.caption(crops, np.zeros((1, 4), np.float32), (240, 320), keys=["v01/000010/0"])
    assert out[0].objects == "There is a car"
    with pytest.raises(LpgbError, match="no captions for crop key"):
        cap.caption(crops, np.zeros((1, 4), np.float32), (240, 320), keys=["other"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"key": "a", "action": "x", "appearance": "y"}) + "\n")
    with pytest.raises(LpgbError, match="line 1 lacks key.*place, objects"):
        FileCaptioner(bad)
    with pytest.raises(LpgbError, match="--caption-file"):
        make_captioner(SpatialTrainConfig(captioner="file"))


def test_clip_captioner_without_weights_fails_fast(tmp_path):
    start = time.monotonic()
    with pytest.raises(LpgbError, match="--clip-weights"):
        make_captioner(SpatialTrainConfig(captioner="clip"))
    with pytest.raises(LpgbError, match="--clip-weights"):
        make_captioner(SpatialTrainConfig(captioner="clip", clip_weights=str(tmp_path / "missing.pt")))
    assert time.monotonic() - start < 5.0
    assert isinstance(make_captioner(SpatialTrainConfig()), AttributesCaptioner)


def test_clip_captioner_mechanics_with_random_model():
    torch = pytest.importorskip("torch")
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    from lpgb.trainer.captioners.clip import ClipCaptioner

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = CLIP(embed_dim=32,
                 vision_cfg=CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=16, image_size=32),
                 text_cfg=CLIPTextCfg(context_length=16, vocab_size=49408, width=32, heads=2, layers=1))
    cap = ClipCaptioner(model=model, batch_size=2)
    crops = np.stack([blob_tube(0.1), blob_tube(0.0, colour=BLUE), blob_tube(0.0, w=30, h=10)])
    boxes = np.zeros((3, 4), np.float32)
    out = cap.caption(crops, boxes, (240, 320))
    assert len(out) == 3 and all(isinstance(c, Captions) for c in out)
    for c in out:
        assert c.action.startswith("A person is ") and c.action[len("A person is "):] in load_vocab("action")
        assert c.appearance[len("A person in "):] in load_vocab("appearance")
        assert c.place[len("A person is "):] in load_vocab("place")
        assert c.objects[len("There is "):] in load_vocab("objects")
    assert cap.caption(crops, boxes, (240, 320)) == out
