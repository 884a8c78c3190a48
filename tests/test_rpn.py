"""RPN: ProposalNet shapes/export, torchvision losses, training on synthetic moving rectangles,
checkpoints, pseudo-box collection, detector-weight loading, recall metric."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lpgb.runtime.backends.ort_backend import cpu_session  # noqa: E402
from lpgb.runtime.config import ProposalConfig, preset, with_overrides  # noqa: E402
from lpgb.runtime.errors import LpgbError  # noqa: E402
from lpgb.trainer.checkpoint import load_checkpoint, load_weights, save_checkpoint  # noqa: E402
from lpgb.trainer.config import RPNTrainConfig, TrainConfig  # noqa: E402
from lpgb.trainer.models.rpn import ProposalNet  # noqa: E402
from lpgb.trainer.rpn_stage import (  # noqa: E402
    fit_proposal_net, load_detector_weights, recall_at_iou, training_losses,
)

TINY = preset("tiny")
H, W = TINY.proposals.rpn_input_size


@pytest.fixture(autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random texture, uint8 (h, w, 3)."""
    import cv2

    noise = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    base = cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)
    fine = rng.integers(-12, 12, (h, w, 3))
    return np.clip(base.astype(int) // 2 + 60 + fine, 0, 255).astype(np.uint8)


def synthetic_frames(count: int, seed: int, h: int = H, w: int = W) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames uint8 BGR with one or two moving textured rectangles, and their true boxes."""
    rng = np.random.default_rng(seed)
    background = _background(rng, h, w)
    objects = []
    for _ in range(2):
        bw, bh = int(rng.integers(14, 40)), int(rng.integers(24, 64))
        objects.append(dict(x=float(rng.uniform(0, w - bw)), y=float(rng.uniform(0, h - bh)), w=bw, h=bh,
                            vx=float(rng.uniform(-4, 4)), vy=float(rng.uniform(-2, 2)),
                            colour=rng.integers(0, 255, 3), second=bool(rng.random() < 0.5)))
    frames, boxes = [], []
    for t in range(count):
        frame = background.copy()
        frame_boxes = []
        for k, o in enumerate(objects):
            if k == 1 and not (o["second"] or t % 2):
                continue
            o["x"] = float(np.clip(o["x"] + o["vx"], 0, w - o["w"]))
            o["y"] = float(np.clip(o["y"] + o["vy"], 0, h - o["h"]))
            if o["x"] in (0, w - o["w"]):
                o["vx"] = -o["vx"]
            if o["y"] in (0, h - o["h"]):
                o["vy"] = -o["vy"]
            x1, y1 = int(o["x"]), int(o["y"])
            x2, y2 = x1 + o["w"], y1 + o["h"]
            patch = o["colour"][None, None, :] + rng.integers(-25, 25, (o["h"], o["w"], 3))
            frame[y1:y2, x1:x2] = np.clip(patch, 0, 255).astype(np.uint8)
            frame_boxes.append([x1, y1, x2, y2])
        frames.append(frame)
        boxes.append(np.asarray(frame_boxes, np.float32).reshape(-1, 4))
    return frames, boxes


def _to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    """BGR uint8 frames at the input size -> uint8 (N, 3, H, W) RGB."""
    return torch.from_numpy(np.stack([f[:, :, ::-1].transpose(2, 0, 1) for f in frames]).copy())


def _top10_after_nms(model: ProposalNet, images: torch.Tensor) -> list[np.ndarray]:
    from torchvision.ops import nms

    out = []
    model.eval()
    with torch.no_grad():
        for image in images:
            boxes, scores = model(image[None].float() / 255.0)
            keep = nms(boxes, scores, 0.5)[:10]
            out.append(boxes[keep].numpy())
    return out


def _tiny_model(seed: int = 0) -> ProposalNet:
    torch.manual_seed(seed)
    return ProposalNet(TINY.proposals)


def test_forward_shapes_and_ranges():
    model = _tiny_model().eval()
    with torch.no_grad():
        boxes, scores = model(torch.rand(1, 3, H, W))
    k = TINY.proposals.rpn_pre_nms_top_k
    assert boxes.shape == (k, 4) and scores.shape == (k,)
    assert torch.isfinite(boxes).all() and torch.isfinite(scores).all()
    assert (scores >= 0).all() and (scores <= 1).all()
    assert (scores[:-1] >= scores[1:]).all()  # sorted by topk
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= W).all() and (boxes[:, 3] <= H).all()
    assert not any(name == "anchors" for name in model.state_dict())  # anchors are rebuilt from cfg


def test_every_parameter_gets_a_gradient():
    model = _tiny_model().train()
    frames, boxes = synthetic_frames(2, seed=1)
    images = _to_tensor(frames).float() / 255.0
    losses = training_losses(model, images, [torch.from_numpy(b) for b in boxes])
    assert set(losses) == {"objectness", "box", "total"}
    assert torch.isfinite(losses["total"])
    losses["total"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing
    zero = [n for n, p in model.named_parameters() if p.requires_grad and p.grad.abs().sum() == 0]
    assert not zero
    # images without boxes are pure background
    empty = training_losses(model, images, [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert torch.isfinite(empty["total"]) and float(empty["box"]) == 0.0


def test_training_raises_recall(tmp_path: Path):
    all_frames, all_boxes = synthetic_frames(50, seed=2)
    frames, boxes = all_frames[:40], all_boxes[:40]
    images, targets = _to_tensor(frames), [torch.from_numpy(b) for b in boxes]
    model = _tiny_model()
    before = recall_at_iou(_top10_after_nms(model, images), boxes)
    train_cfg = TrainConfig(seed=0, rpn=RPNTrainConfig(epochs=EPOCHS, batch_size=4, lr=LR))
    calls = []
    fit_proposal_net(model, images, targets, train_cfg, progress=lambda s, t, l: calls.append((s, t, l)))
    assert calls[-1][0] == calls[-1][1] == EPOCHS * 10 and all(np.isfinite(c[2]) for c in calls)
    after_train = recall_at_iou(_top10_after_nms(model, images), boxes)
    # held-out later frames of the same scene (objects at new places)
    after = recall_at_iou(_top10_after_nms(model, _to_tensor(all_frames[40:])), all_boxes[40:])
    print(f"recall@0.5 top-10: untrained {before:.3f} trained: training frames {after_train:.3f}, later frames {after:.3f}")
    # measured over model seeds 0-5 on one 2-core CPU: training frames 0.91-1.00, later frames 0.95-1.00; the
    # bounds leave at least 0.11 below the lowest seed for another CPU's kernels
    assert after_train > 0.8 and after_train > before
    assert after > 0.6


EPOCHS = 3
LR = 3e-3


def test_onnx_export_matches_torch(tmp_path: Path):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model = _tiny_model(seed=4).eval()
    frames, _ = synthetic_frames(1, seed=4)
    image = _to_tensor(frames).float() / 255.0
    path = tmp_path / "rpn.onnx"
    torch.onnx.export(model, (image,), str(path), input_names=["image"], output_names=["boxes", "scores"],
                      opset_version=17, dynamo=False)
    onnx.checker.check_model(str(path))
    session = cpu_session(path)
    boxes, scores = session.run(None, {"image": image.numpy()})
    with torch.no_grad():
        ref_boxes, ref_scores = model(image)
    assert boxes.shape == tuple(ref_boxes.shape) and scores.shape == tuple(ref_scores.shape)
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-4, rtol=0)
    # exactly tied scores (flat image regions, untrained net) may be ordered differently by the two
    # topk implementations: match every ONNX row to a torch row with the same score and box
    ref_boxes, ref_scores = ref_boxes.numpy(), ref_scores.numpy()
    same = (np.abs(scores[:, None] - ref_scores[None, :]) <= 1e-4) & (
        np.abs(boxes[:, None, :] - ref_boxes[None, :, :]).max(axis=2) <= 1e-4 + 1e-5 * np.abs(ref_boxes).max())
    assert same.any(axis=1).mean() >= 0.99
    in_order = np.abs(boxes - ref_boxes).max(axis=1) <= 1e-3
    assert in_order[:100].mean() >= 0.9


def test_checkpoint_round_trip_and_resume(tmp_path: Path):
    path = tmp_path / "checkpoints" / "x.pt"
    assert load_checkpoint(path) is None
    save_checkpoint(path, model={"w": torch.arange(3.0)}, epoch=2, input_size=[1, 2])
    state = load_checkpoint(path)
    assert state["epoch"] == 2 and torch.equal(state["model"]["w"], torch.arange(3.0))
    assert [p.name for p in path.parent.iterdir()] == ["x.pt"]  # no temporary files left
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(LpgbError):
        load_checkpoint(path)
    with pytest.raises(LpgbError, match="no weights"):
        load_weights(tmp_path / "weights" / "rpn.pt")

    frames, boxes = synthetic_frames(4, seed=5)
    images, targets = _to_tensor(frames), [torch.from_numpy(b) for b in boxes]

    def run(epochs: int, ckpt: Path | None, resume: bool) -> ProposalNet:
        model = _tiny_model(seed=7)
        cfg = TrainConfig(seed=3, rpn=RPNTrainConfig(epochs=epochs, batch_size=2))
        return fit_proposal_net(model, images, targets, cfg, checkpoint=ckpt, resume=resume)

    straight = run(2, None, False)
    ckpt = tmp_path / "checkpoints" / "rpn.pt"
    run(1, ckpt, False)
    assert load_checkpoint(ckpt)["epoch"] == 1
    resumed = run(2, ckpt, True)
    assert load_checkpoint(ckpt)["epoch"] == 2
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (frames[0].shape[1], frames[0].shape[0]))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()


def test_collect_pseudo_boxes_and_train_rpn(tmp_path: Path):
    pytest.importorskip("lpgb.runtime.motion")
    pytest.importorskip("lpgb.runtime.proposals")
    from lpgb.trainer.rpn_stage import collect_pseudo_boxes, train_rpn

    frames, boxes = synthetic_frames(40, seed=6, h=120, w=180)
    video = tmp_path / "01.avi"
    _write_video(video, frames)
    dataset = SimpleNamespace(train_videos=lambda: [SimpleNamespace(name="01", source=video, labels=None, boxes=None)])
    cfg = with_overrides(TINY, proposals=with_overrides(TINY.proposals, motion_warmup=10))
    train_cfg = TrainConfig(seed=0, rpn=RPNTrainConfig(epochs=1, batch_size=4, frames_per_video=6))
    samples = collect_pseudo_boxes(dataset, cfg, train_cfg)
    assert 1 <= len(samples) <= 6
    for frame, found in samples:
        assert frame.shape == (120, 180, 3) and frame.dtype == np.uint8
        assert found.dtype == np.float32 and found.shape[1] == 4 and len(found)
    # the decoded (MJPG) frame is closest to the synthetic frame it came from
    first = samples[0][0].astype(np.int16)
    index = int(np.argmin([np.abs(f.astype(np.int16) - first).mean() for f in frames]))
    assert recall_at_iou([samples[0][1]], [boxes[index]], iou=0.3) > 0  # motion boxes lie on the rectangles

    run = tmp_path / "run"
    steps = []
    model = train_rpn(dataset, run, cfg, train_cfg, resume=False, progress=lambda s, t, l: steps.append((s, t)))
    assert (run / "weights" / "rpn.pt").is_file() and load_checkpoint(run / "checkpoints" / "rpn.pt")["epoch"] == 1
    assert steps[-1][0] == steps[-1][1]
    fresh = ProposalNet(cfg.proposals)
    fresh.load_state_dict(load_weights(run / "weights" / "rpn.pt"))
    image = torch.rand(1, 3, H, W)
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(image)[1], model(image)[1])
    # resuming a finished run trains nothing more and gives the same weights; a list of items works too
    again = train_rpn(dataset.train_videos(), run, cfg, train_cfg, resume=True, progress=lambda s, t, l: pytest.fail("trained again"))
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_load_detector_weights(tmp_path: Path):
    from torchvision.models import mobilenet_v3_large, resnet18
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn

    detector = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, num_classes=2)
    path = tmp_path / "detector.pth"
    torch.save({"model": detector.state_dict()}, path)
    model = _tiny_model()
    loaded = load_detector_weights(model, path)
    own = model.body.state_dict()
    assert loaded >= len([k for k in own if not k.endswith("num_batches_tracked")])
    for key, value in own.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, detector.state_dict()[f"backbone.body.{key}"]), key
    torch.save(mobilenet_v3_large(weights=None).state_dict(), tmp_path / "classifier.pth")
    assert load_detector_weights(_tiny_model(), tmp_path / "classifier.pth") > 0
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(LpgbError, match="no backbone weights"):
        load_detector_weights(_tiny_model(), tmp_path / "resnet.pth")
    with pytest.raises(LpgbError):
        load_detector_weights(_tiny_model(), tmp_path / "missing.pth")


def test_recall_at_iou():
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), np.zeros((0, 4), np.float32)]
    pred = [np.array([[1, 1, 10, 10], [50, 50, 60, 60]], np.float32), np.array([[0, 0, 5, 5]], np.float32)]
    assert recall_at_iou(pred, gt, iou=0.5) == 0.5
    assert recall_at_iou(pred, gt, iou=0.9) == 0.0
    assert recall_at_iou([np.zeros((0, 4))], [gt[0]]) == 0.0
    assert np.isnan(recall_at_iou([pred[0]], [gt[1]]))
    with pytest.raises(LpgbError):
        recall_at_iou(pred, gt[:1])


def test_box_file_targets_train_the_rpn(tmp_path: Path):
    import json

    from lpgb.trainer.rpn_stage import collect_box_targets, read_box_file, train_rpn

    frames, boxes = synthetic_frames(12, seed=7, h=120, w=180)
    video = tmp_path / "01.avi"
    _write_video(video, frames)
    box_file = tmp_path / "01.json"
    # frame 0 in the synthetic set's format, the rest as bare lists; frame 3 is labelled empty
    entries = [[{"box": b.tolist(), "kind": "walker"} for b in boxes[0]]]
    entries += [[] if i == 3 else [b.tolist() for b in boxes[i]] for i in range(1, len(frames))]
    box_file.write_text(json.dumps(entries))
    assert [len(b) for b in read_box_file(box_file)] == [len(b) for b in entries]
    item = SimpleNamespace(name="01", source=video, labels=None, boxes=box_file)
    train_cfg = TrainConfig(seed=0, rpn=RPNTrainConfig(epochs=1, batch_size=4, frames_per_video=12, targets="boxes"))
    samples = collect_box_targets([item], TINY, train_cfg)
    assert len(samples) == 12  # every frame, the empty one included (a true negative)
    assert len(samples[3][1]) == 0
    for i in (0, 5):
        expected = boxes[i][np.minimum(boxes[i][:, 2] - boxes[i][:, 0], boxes[i][:, 3] - boxes[i][:, 1]) >= 8]
        np.testing.assert_allclose(samples[i][1], np.clip(expected, 0, [180, 120, 180, 120]), atol=1e-4)
    model = train_rpn([item], tmp_path / "run", TINY, train_cfg, resume=False)
    assert (tmp_path / "run" / "weights" / "rpn.pt").is_file() and not model.training

    # wrong inputs are one-line LpgbErrors, not tracebacks
    no_file = SimpleNamespace(name="02", source=video, labels=None, boxes=None)
    with pytest.raises(LpgbError, match="needs a box file per training video.*02"):
        collect_box_targets([no_file], TINY, train_cfg)
    short = tmp_path / "short.json"
    short.write_text(json.dumps(entries[:5]))
    with pytest.raises(LpgbError, match="5 entries .* has more frames"):
        collect_box_targets([SimpleNamespace(name="01", source=video, boxes=short)], TINY, train_cfg)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([[{"x": 1}]] * 12))
    with pytest.raises(LpgbError, match="frame 0: objects must be"):
        read_box_file(bad)
    bad.write_text(json.dumps([[[10, 10, 5, 20]]]))
    with pytest.raises(LpgbError, match="x2 >= x1"):
        read_box_file(bad)


def test_single_person_mask_follows_the_size_prior():
    from lpgb.trainer.rpn_stage import single_person_mask

    prior = (0.0, 0.25, 0.0, 0.1)  # expected height 0.25 x row, width 0.1 x row (frame heights)
    # bottom row 200 of 200: expected 50 x 20 px; one person, two side by side, a part, a far person
    boxes = np.array([[0, 150, 20, 200], [0, 150, 40, 200], [0, 180, 20, 200], [0, 76, 10, 100]], np.float32)
    assert single_person_mask(boxes, 200, prior).tolist() == [True, False, False, True]


def test_ignored_regions_leave_their_negatives_out_of_the_loss():
    from lpgb.trainer.rpn_stage import _ignore_negatives_in

    anchors = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], dtype=torch.float32)
    labels = torch.tensor([0.0, 1.0, 0.0])
    out = _ignore_negatives_in(labels, anchors, torch.tensor([[0.0, 0.0, 35.0, 35.0]]))
    assert out.tolist() == [-1.0, 1.0, 0.0]  # the positive stays; the negative inside is ignored
    assert _ignore_negatives_in(labels, anchors, torch.zeros((0, 4))).tolist() == labels.tolist()
    # (K, 5) targets: the same loss as (K, 4) targets when nothing is ignored, another when a region is
    model = ProposalNet(TINY.proposals)
    torch.manual_seed(0)
    image = torch.rand(1, 3, H, W)
    target = torch.tensor([[30.0, 30.0, 60.0, 90.0]])
    torch.manual_seed(1)
    plain = training_losses(model, image, [target])["objectness"]
    torch.manual_seed(1)
    flagged = training_losses(model, image, [torch.cat([target, torch.ones(1, 1)], 1)])["objectness"]
    assert torch.allclose(plain, flagged)
    torch.manual_seed(1)
    region = torch.tensor([[100.0, 20.0, 200.0, 140.0, 0.0]])
    ignored = training_losses(model, image, [torch.cat([torch.cat([target, torch.ones(1, 1)], 1), region])])
    assert torch.isfinite(ignored["total"]) and not torch.allclose(plain, ignored["objectness"])


def test_self_training_adds_confident_single_person_boxes_inside_motion_blobs():
    from lpgb.trainer.rpn_stage import add_confident_boxes

    class Fixed:  # an "RPN" that always finds the same boxes (input pixels = frame pixels at 160 x 240)
        def eval(self):
            return self

        def __call__(self, image):
            assert tuple(image.shape) == (1, 3, H, W)
            boxes = torch.tensor([[100.0, 120.0, 116.0, 160.0],   # one person, inside the merged blob: added
                                  [10.0, 120.0, 26.0, 160.0],     # one person but outside every blob
                                  [130.0, 120.0, 146.0, 160.0],   # one person, not confident
                                  [100.0, 60.0, 160.0, 160.0],    # a group's size
                                  [200.0, 121.0, 216.0, 160.0]])  # on an existing target
            return boxes, torch.tensor([0.9, 0.95, 0.5, 0.99, 0.9])

    frame = np.zeros((H, W, 3), np.uint8)
    blobs = np.array([[90, 100, 150, 160, 0], [198, 120, 216, 160, 1]], np.float32)  # merged (ignored), a target
    out, added = add_confident_boxes(Fixed(), [(frame, blobs)], TINY, prior=(0.0, 0.25, 0.0, 0.1))
    assert added == 1
    np.testing.assert_allclose(out[0][1], np.vstack([blobs, [[100, 120, 116, 160, 1]]]), atol=1e-4)


def test_self_training_needs_single_person_targets(tmp_path: Path):
    from lpgb.trainer.pipeline import TrainRequest, make_configs

    with pytest.raises(LpgbError, match="--rpn-self-training needs --rpn-targets single"):
        make_configs(TrainRequest(data=tmp_path, out=tmp_path / "run", preset="tiny", rpn_self_training=1))
    _, t = make_configs(TrainRequest(data=tmp_path, out=tmp_path / "run", preset="tiny", rpn_targets="single",
                                     rpn_self_training=2))
    assert (t.rpn.targets, t.rpn.self_training_rounds, t.rpn.epochs) == ("single", 2, 12)


def test_single_targets_train_with_a_self_training_round(tmp_path: Path):
    from dataclasses import replace

    from lpgb.trainer.rpn_stage import collect_pseudo_boxes, collect_single_person_targets, train_rpn

    frames, _ = synthetic_frames(60, seed=3, h=120, w=180)
    video = tmp_path / "01.avi"
    _write_video(video, frames)
    item = SimpleNamespace(name="01", source=video, labels=None, boxes=None)
    train_cfg = TrainConfig(seed=0, rpn=RPNTrainConfig(epochs=1, batch_size=4, frames_per_video=8, targets="single",
                                                       self_training_rounds=1))
    # a size prior (flat over the rows) of the first motion blob: the blobs of that rectangle are "one person"
    blob = collect_pseudo_boxes([item], TINY, train_cfg)[0][1][0]
    h, w = float(blob[3] - blob[1]) / 120, float(blob[2] - blob[0]) / 120
    cfg = replace(TINY, proposals=replace(TINY.proposals, size_prior=(h, 0.0, w, 0.0)))
    samples = collect_single_person_targets([item], cfg, train_cfg)
    assert samples and all(b.shape[1] == 5 and set(np.unique(b[:, 4])) <= {0.0, 1.0} for _, b in samples)
    model = train_rpn([item], tmp_path / "run", cfg, train_cfg, resume=False)
    assert (tmp_path / "run" / "checkpoints" / "rpn_round1.pt").is_file() and not model.training
    assert (tmp_path / "run" / "weights" / "rpn.pt").is_file()
    # a scene where no blob has one person's size is refused in one line
    tiny_prior = replace(TINY, proposals=replace(TINY.proposals, size_prior=(0.0, 0.01, 0.0, 0.01)))
    with pytest.raises(LpgbError, match="no motion blob of one person's size"):
        collect_single_person_targets([item], tiny_prior, train_cfg)


def test_edge_rpn_preset_serves_single_person_boxes_unmerged():
    from lpgb.trainer.pipeline import TrainRequest, make_configs

    cfg, t = make_configs(TrainRequest(data=Path("."), out=Path("run"), preset="edge-rpn"))
    assert (cfg.proposals.source, cfg.proposals.merge_overlapping, cfg.proposals.rpn_input_size) == (
        "union", False, (160, 240))
    assert (t.rpn.targets, t.rpn.epochs, t.rpn.frames_per_video) == ("single", 12, 120)
    assert cfg.scoring.terms == preset("edge").scoring.terms and cfg.spatial == preset("edge").spatial
    _, asked = make_configs(TrainRequest(data=Path("."), out=Path("run"), preset="edge-rpn", rpn_targets="motion"))
    assert asked.rpn.targets == "motion"
