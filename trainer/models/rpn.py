"""Class-agnostic region proposal network (docs/ARCHITECTURE.md stage 1; trained by rpn_stage).

`ProposalNet(cfg: ProposalConfig)` is built from torchvision's detection parts:

- backbone: torchvision `mobilenet_v3_large(weights=None).features[:13]` (stride 16, 112 channels),
  module name `body` so its keys match the `backbone.body.*` keys of torchvision's
  `fasterrcnn_mobilenet_v3_large_fpn` / `_320_fpn` checkpoints and the `features.*` keys of a
  MobileNetV3-Large classifier (see `load_detector_weights`);
- neck: a two-level merge (1x1 laterals of the stride-8 map, index 6, and the stride-16 map,
  index 12, nearest 2x upsampling, sum, 3x3 conv) -> ONE feature map at stride 8, `NECK_CHANNELS` wide;
- `torchvision.models.detection.anchor_utils.AnchorGenerator` with sizes `ANCHOR_SIZES` and
  aspect ratios (h/w) `ASPECT_RATIOS`: 15 anchors per location, covering 10..300 px objects;
- `torchvision.models.detection.rpn.RPNHead` and `BoxCoder((1, 1, 1, 1))` decoding.

Export-friendly forward for the fixed input size `cfg.rpn_input_size = (H, W)`:
`image (1, 3, H, W)` float 0..1 RGB -> `boxes (K, 4)` xyxy in input pixels, clipped to the image,
and `scores (K,)` sigmoid objectness, K = min(`cfg.rpn_pre_nms_top_k`, number of anchors), sorted
by score (torch.topk). The anchors are computed once at construction for the fixed size and kept as
a (non-persistent) buffer, so the graph has no data-dependent anchor generation.

NMS placement (decided by measurement, `python -m lpgb.trainer.models.rpn tiny edge`): ONNX Runtime
1.32 CPU EP, 1 intra-op thread, median of 50 runs, untrained weights (near-uniform scores: the worst
case for NMS), on the shared 2-core development machine, opset 17, K = 300 pre-NMS boxes:

    input                 A: graph without NMS + cv2.dnn.NMSBoxes on top-K   B: NMS in graph
    tiny  160x240         7.17 ms + 0.09 ms (incl. xywh/list conversion)      7.74 ms
    edge/paper 320x480    26.01 ms + 0.08 ms                                  26.30 ms

(B = torchvision.ops.nms in the graph -> ONNX NonMaxSuppression + gather + slice to top_k.)
Graph NMS buys nothing: the differences are run-to-run noise (an earlier run measured tiny
A 6.59 + 0.03 ms vs B 6.49 ms; edge A 24.55 + 0.03 vs B 24.83).

Decision: NMS is NOT in the graph. The RPN graph ends at the top-K boxes/scores; the runtime
applies score threshold + NMS + top_k (`lpgb.runtime.proposals`) on at most K=300 boxes, which
costs well under 1 ms with cv2.dnn.NMSBoxes. Reasons besides the timing (a tie):
the output shapes stay static (TensorRT engines and the sidecar get fixed shapes; graph NMS has a
data-dependent output length), the RPN boxes must be united with motion boxes and NMSed together
anyway when `source == "union"`, and the NMS IoU / threshold stay runtime settings that do not
require a re-export.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import mobilenet_v3_large
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RPNHead

from lpgb.runtime.config import ProposalConfig

__all__ = ["ProposalNet", "ANCHOR_SIZES", "ASPECT_RATIOS", "NECK_CHANNELS", "BOX_WEIGHTS"]

ANCHOR_SIZES: tuple[int, ...] = (16, 32, 64, 128, 256)  # input pixels (sqrt of anchor area)
ASPECT_RATIOS: tuple[float, ...] = (0.5, 1.0, 2.0)  # height / width (people are tall: 2.0)
NECK_CHANNELS = 96
BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
BN_MOMENTUM = 0.1
_STRIDE8_INDEX = 6  # mobilenet_v3_large.features[6] output: stride 8, 40 channels
_BODY_LAYERS = 13  # features[:13]: up to stride 16, 112 channels


class ProposalNet(nn.Module):
    """`(1, 3, H, W)` float 0..1 RGB at `cfg.rpn_input_size` -> `boxes (K, 4)`, `scores (K,)`."""

    def __init__(self, cfg: ProposalConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input_size = (int(cfg.rpn_input_size[0]), int(cfg.rpn_input_size[1]))
        self.body = mobilenet_v3_large(weights=None).features[:_BODY_LAYERS]
        for module in self.body.modules():  # torchvision's 0.01 lags far behind a short from-scratch run
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = BN_MOMENTUM
        c8 = self.body[_STRIDE8_INDEX].out_channels
        c16 = self.body[_BODY_LAYERS - 1].out_channels
        self.lateral8 = nn.Conv2d(c8, NECK_CHANNELS, 1)
        self.lateral16 = nn.Conv2d(c16, NECK_CHANNELS, 1)
        self.smooth = nn.Sequential(nn.Conv2d(NECK_CHANNELS, NECK_CHANNELS, 3, padding=1), nn.ReLU(inplace=True))
        self.anchor_generator = AnchorGenerator(sizes=(ANCHOR_SIZES,), aspect_ratios=(ASPECT_RATIOS,))
        self.num_anchors_per_location = self.anchor_generator.num_anchors_per_location()[0]
        self.head = RPNHead(NECK_CHANNELS, self.num_anchors_per_location)
        self.box_coder = BoxCoder(weights=BOX_WEIGHTS)
        # ImageNet statistics: the MobileNet trunk (and detector checkpoints) expect them.
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("anchors", self._make_anchors(), persistent=False)
        self.top_k = min(int(cfg.rpn_pre_nms_top_k), int(self.anchors.shape[0]))

    # -- construction helpers -----------------------------------------------------------------
    def _make_anchors(self) -> torch.Tensor:
        """Anchors `(N, 4)` for the fixed input size, in the order of `flatten` (location-major)."""
        h, w = self.input_size
        was_training = self.training
        self.eval()  # a dummy pass must not touch BatchNorm statistics
        with torch.no_grad():
            feature = self.features(torch.zeros(1, 3, h, w))
        self.train(was_training)
        images = ImageList(torch.zeros(1, 3, h, w), [(h, w)])
        return self.anchor_generator(images, [feature])[0]

    # -- network --------------------------------------------------------------------------------
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """`(B, 3, H, W)` 0..1 RGB -> stride-8 feature map `(B, NECK_CHANNELS, h, w)`."""
        x = (images - self.mean) / self.std
        c8 = None
        for index, layer in enumerate(self.body):
            x = layer(x)
            if index == _STRIDE8_INDEX:
                c8 = x
        assert c8 is not None
        p8 = self.lateral8(c8)
        p16 = F.interpolate(self.lateral16(x), size=(p8.shape[-2], p8.shape[-1]), mode="nearest")
        return self.smooth(p8 + p16)

    def raw(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B, 3, H, W)` -> objectness logits `(B, N)` and box deltas `(B, N, 4)`, N = anchors.

        Flattened as (location y, location x, anchor), the order of `self.anchors` and of
        torchvision's `concat_box_prediction_layers`.
        """
        logits, deltas = self.head([self.features(images)])
        logits, deltas = logits[0], deltas[0]
        b, a, h, w = logits.shape
        logits = logits.permute(0, 2, 3, 1).reshape(b, h * w * a)
        deltas = deltas.view(b, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * a, 4)
        return logits, deltas

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`image (1, 3, H, W)` -> `boxes (K, 4)` xyxy input pixels (clipped), `scores (K,)` in [0, 1]."""
        logits, deltas = self.raw(image)
        logits, deltas = logits[0], deltas[0]
        top_logits, index = torch.topk(logits, self.top_k)
        boxes = self.box_coder.decode_single(deltas[index], self.anchors[index])
        h, w = self.input_size
        x1 = boxes[:, 0].clamp(0.0, float(w))
        y1 = boxes[:, 1].clamp(0.0, float(h))
        x2 = boxes[:, 2].clamp(0.0, float(w))
        y2 = boxes[:, 3].clamp(0.0, float(h))
        return torch.stack([x1, y1, x2, y2], dim=1), torch.sigmoid(top_logits)


# ---------------------------------------------------------------------------------------------
# NMS placement measurement (numbers in the module docstring)

class _WithGraphNMS(nn.Module):
    """Variant B of the measurement: NMS inside the graph (ONNX NonMaxSuppression)."""

    def __init__(self, net: ProposalNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.ops import nms

        boxes, scores = self.net(image)
        keep = nms(boxes, scores, float(self.net.cfg.nms_iou))[: self.net.cfg.top_k]
        return boxes[keep], scores[keep]


def measure_nms_placement(cfg: ProposalConfig, repeats: int = 50, threads: int = 1) -> dict[str, float]:
    """ONNX Runtime CPU milliseconds (median) of the RPN with / without NMS in the graph."""
    import io
    import time

    import cv2
    import numpy as np

    from lpgb.runtime.backends.ort_backend import cpu_session

    torch.manual_seed(0)
    net = ProposalNet(cfg).eval()
    h, w = net.input_size
    image = torch.rand(1, 3, h, w)

    def session(module: nn.Module):
        buffer = io.BytesIO()
        torch.onnx.export(module, (image,), buffer, input_names=["image"], output_names=["boxes", "scores"],
                          opset_version=17, dynamo=False)
        return cpu_session(buffer.getvalue(), threads)

    def timed(fn) -> float:
        for _ in range(3):
            fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return 1000.0 * float(np.median(times))

    feed = {"image": image.numpy()}
    plain, graph_nms = session(net), session(_WithGraphNMS(net))
    boxes, scores = plain.run(None, feed)

    def cv2_nms() -> None:  # including the conversion the runtime has to do; threshold 0: worst case
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).tolist()
        cv2.dnn.NMSBoxes(xywh, scores.tolist(), 0.0, float(cfg.nms_iou), top_k=int(cfg.top_k))

    return {
        "graph_without_nms_ms": timed(lambda: plain.run(None, feed)),
        "cv2_nms_on_top_k_ms": timed(cv2_nms),
        "graph_with_nms_ms": timed(lambda: graph_nms.run(None, feed)),
    }


if __name__ == "__main__":  # pragma: no cover - measurement helper
    import sys

    from lpgb.runtime.config import preset

    torch.set_num_threads(1)
    for name in sys.argv[1:] or ["tiny"]:
        print(name, measure_nms_placement(preset(name).proposals))
