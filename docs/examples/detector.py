"""A detection model of your own, shaped as torchvision's detectors answer: forward() takes a batch of
pictures and returns one dict per picture, ``{"boxes": [K, 4], "scores": [K], "labels": [K]}``, K the
detections that picture kept (so it differs from picture to picture). docs/own-model.md's "Detection
models" exports it: `ptx export --module docs/examples/detector.py:build --input images=1x3x64x64`.

A tiny backbone, one anchor per cell of its stride-4 feature map with box regression, a score and a
label per anchor, then the selection torchvision's heads make, in plain torch: the top k by score,
a score threshold, and non-maximum suppression (YOLACT's "fast NMS": one IoU matrix, no loop, so
torch.export takes it).
"""
import torch
import torch.nn as nn


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[len(a), len(b)] IoU of boxes (x1, y1, x2, y2)."""
    low = torch.maximum(a[:, None, :2], b[None, :, :2])
    high = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (high - low).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).clamp(min=0).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


class TinyDetector(nn.Module):
    def __init__(self, classes: int = 3, top_k: int = 10, score_threshold: float = 0.5, nms_iou: float = 0.3):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU())
        self.regression = nn.Conv2d(32, 4, 1)  # (dx, dy, log w, log h) per anchor
        self.classification = nn.Conv2d(32, classes, 1)
        self.top_k, self.score_threshold, self.nms_iou = top_k, score_threshold, nms_iou

    def anchors(self, h: int, w: int, dtype) -> torch.Tensor:
        """[h * w, 2] the centre of each cell of the stride-4 feature map, in pixels."""
        ys = (torch.arange(h, dtype=dtype) + 0.5) * 4
        xs = (torch.arange(w, dtype=dtype) + 0.5) * 4
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([cx.flatten(), cy.flatten()], -1)

    def forward(self, images):
        features = self.backbone(images)                                   # [B, 32, h, w]
        deltas = self.regression(features).flatten(2).transpose(1, 2)     # [B, h*w, 4]
        logits = self.classification(features).flatten(2).transpose(1, 2)  # [B, h*w, classes]
        centres = self.anchors(features.shape[2], features.shape[3], images.dtype) + deltas[..., :2] * 4
        sizes = torch.exp(deltas[..., 2:].clamp(max=3.0)) * 12
        boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], -1)  # [B, h*w, 4]
        scores, labels = torch.sigmoid(logits).max(-1)                     # [B, h*w]
        detections = []
        for i in range(images.shape[0]):  # one dict per picture, as torchvision's postprocess makes them
            top, index = scores[i].topk(min(self.top_k, scores.shape[1]))
            kept_boxes, kept_labels = boxes[i, index], labels[i, index]
            overlap = box_iou(kept_boxes, kept_boxes).triu(1)              # fast NMS: a higher score suppresses
            keep = (top > self.score_threshold) & (overlap.max(0).values <= self.nms_iou)
            detections.append({"boxes": kept_boxes[keep], "scores": top[keep], "labels": kept_labels[keep]})
        return detections


def build() -> nn.Module:
    torch.manual_seed(0)  # the same weights every time the walk-through runs
    model = TinyDetector()
    with torch.no_grad():  # scores spread as a trained head's are (a fresh one's all sit near 0.5)
        model.classification.weight.mul_(8)
        model.classification.bias.zero_()
    return model.eval()
