"""ThunderNet, a two-stage detector for small budgets (Qin et al. 2019), one file.

    x (B, 3, S, S) -> SNet -> C4 (S/16), C5 (S/32)
    CEM: 1x1(C4) + up2(1x1(C5)) + 1x1(avgpool(C5))          -> thin map (B, 245, S/16, S/16)
    RPN: dw 5x5 -> 1x1 (256) -> objectness (A) and deltas (4A) per cell; A = 5 sizes x 5 ratios
    SAM: thin map x sigmoid(BN(1x1(RPN features)))           -> attended map (B, 245, ...)
    proposals: decode, clip, top-k, NMS (0.7)                -> (B, P, 4)
    PS-RoIAlign 7x7 over the attended map (245 = 5 x 7 x 7)  -> (B*P, 5, 7, 7)
    R-CNN: fc 1024 -> class scores (C + 1) and class-wise box deltas (4 (C + 1))

Training follows Faster R-CNN (Ren et al. 2015; torchvision's defaults): anchors with
IoU >= 0.7 to an object (and each object's best anchors) are positives, < 0.3 negatives,
256 sampled per image at most half positive, BCE + smooth L1; RoIs are the proposals and
the ground-truth boxes, IoU >= 0.5 takes the object's class, 128 per image at most a
quarter foreground, cross entropy + smooth L1 on the true class's deltas. Everything is
batched over padded, fixed-size tensors; only NMS (models.ps_roi_align) sees data-dependent
sizes, and it stays outside compiled graphs.

Ablations: ``cem=False`` reads the thin map from C4 alone (no stage 4), and
``spatial_attention=False`` pools the thin map itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.box_ops import (
    balanced_sample,
    box_iou,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    grid_anchors,
)
from models.ps_roi_align import nms_keep_mask, ps_roi_align
from models.snet import SNet
from models.thundernet_config import ANCHOR_RATIOS, SNET, THUNDERNET_PRESETS, ThunderNetConfig

__all__ = ["THUNDERNET_PRESETS", "ContextEnhancement", "RPNHead", "ThunderNet",
           "ThunderNetConfig"]

STRIDE = 16  # of the thin feature map
RCNN_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # R-CNN delta scaling (Faster R-CNN's)


class ContextEnhancement(nn.Module):
    """CEM: C4, C5 (upsampled) and C5's global average, each by a 1x1 projection, summed."""

    def __init__(self, c4: int, c5: int, out: int) -> None:
        super().__init__()
        self.c4, self.c5 = nn.Conv2d(c4, out, 1), nn.Conv2d(c5, out, 1)
        self.glb = nn.Linear(c5, out)  # the 1x1 conv of the globally pooled C5

    def forward(self, c4: torch.Tensor, c5: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.c5(c5), size=c4.shape[-2:], mode="nearest")  # (B, out, S/16, S/16)
        glb = self.glb(c5.mean((2, 3)))[:, :, None, None]  # (B, out, 1, 1)
        return self.c4(c4) + up + glb


class RPNHead(nn.Module):
    """dw 5x5 + 1x1 conv; per cell ``anchors`` objectness logits and box deltas."""

    def __init__(self, c_in: int, width: int, anchors: int) -> None:
        super().__init__()
        self.anchors = anchors
        self.conv = nn.Sequential(nn.Conv2d(c_in, c_in, 5, padding=2, groups=c_in),
                                  nn.Conv2d(c_in, width, 1), nn.ReLU(inplace=True))
        self.cls = nn.Conv2d(width, anchors, 1)
        self.reg = nn.Conv2d(width, 4 * anchors, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.conv(x)  # (B, width, h, w)
        B, _, h, w = hidden.shape
        logits = self.cls(hidden).permute(0, 2, 3, 1).reshape(B, h * w * self.anchors)
        deltas = self.reg(hidden).view(B, self.anchors, 4, h, w).permute(0, 3, 4, 1, 2)
        return hidden, logits, deltas.reshape(B, h * w * self.anchors, 4)  # order: grid_anchors


class ThunderNet(nn.Module):
    """A detector built from a :class:`ThunderNetConfig`.

    ``model(x)`` detects; ``model(x, gt_boxes, gt_labels)`` returns the training loss.
    """

    def __init__(self, config: ThunderNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        thin, C = cfg.thin_channels, cfg.num_classes
        self.backbone = SNet(SNET[cfg.backbone], cfg.in_channels, c5=cfg.cem)
        if cfg.cem:
            self.cem = ContextEnhancement(self.backbone.c4_channels, self.backbone.c5_channels,
                                          thin)
        else:
            self.thin = nn.Conv2d(self.backbone.c4_channels, thin, 1)
        self.num_anchors = len(cfg.anchor_sizes) * len(ANCHOR_RATIOS)
        self.rpn = RPNHead(thin, cfg.rpn_channels, self.num_anchors)
        if cfg.spatial_attention:
            self.attention = nn.Sequential(nn.Conv2d(cfg.rpn_channels, thin, 1, bias=False),
                                           nn.BatchNorm2d(thin))
        self.fc = nn.Linear(thin, cfg.fc_dim)
        self.cls = nn.Linear(cfg.fc_dim, C + 1)
        self.box = nn.Linear(cfg.fc_dim, 4 * (C + 1))
        for layer in (self.rpn.cls, self.rpn.reg):  # Faster R-CNN's head init
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.normal_(self.box.weight, std=0.001)
        nn.init.zeros_(self.cls.bias)
        nn.init.zeros_(self.box.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images -> (attended thin map (B, 245, h, w), RPN logits (B, A'), deltas (B, A', 4));
        A' = h * w * anchors per cell."""
        S, cfg = STRIDE * 2, self.config
        if x.dim() != 4 or x.shape[1] != cfg.in_channels or x.shape[2] % S or x.shape[3] % S:
            raise ValueError(f"expected images (B, {cfg.in_channels}, H, W) with H, W multiples "
                             f"of {S}, got {tuple(x.shape)}")
        c4, c5 = self.backbone(x)
        thin = self.cem(c4, c5) if cfg.cem else self.thin(c4)  # (B, 245, h, w)
        hidden, logits, deltas = self.rpn(thin)
        if cfg.spatial_attention:
            thin = thin * torch.sigmoid(self.attention(hidden))
        return thin, logits, deltas

    def anchors(self, thin: torch.Tensor) -> torch.Tensor:
        return grid_anchors(thin.shape[-2:], STRIDE, self.config.anchor_sizes, ANCHOR_RATIOS,
                            device=thin.device)  # (A', 4)

    @torch.no_grad()
    def proposals(self, logits: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor,
                  size: tuple[int, int], *, pre_nms: int, post_nms: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top anchors, decoded and clipped, after NMS: boxes (B, P, 4) and valid (B, P)."""
        cfg = self.config
        scores, index = logits.detach().float().topk(min(pre_nms, logits.shape[1]), dim=1)
        moved = deltas.detach().gather(1, index[..., None].expand(-1, -1, 4))  # (B, k, 4)
        boxes = clip_boxes(decode_boxes(moved, anchors[index]), size)  # (B, k, 4)
        wide = ((boxes[..., 2] - boxes[..., 0] >= cfg.min_box_size)
                & (boxes[..., 3] - boxes[..., 1] >= cfg.min_box_size))
        image = torch.arange(len(boxes), device=boxes.device)[:, None].expand_as(scores)
        keep = nms_keep_mask(boxes, scores, wide, image, cfg.rpn_nms, impl=cfg.ops)
        ranked, order = torch.where(keep, scores, float("-inf")).topk(
            min(post_nms, scores.shape[1]), dim=1)  # (B, P)
        return boxes.gather(1, order[..., None].expand(-1, -1, 4)), torch.isfinite(ranked)

    def head(self, thin: torch.Tensor, rois: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """R-CNN over ``rois`` (B, P, 4): class logits (B, P, C+1), deltas (B, P, C+1, 4)."""
        B, P, _ = rois.shape
        cfg = self.config
        image = torch.arange(B, device=rois.device, dtype=rois.dtype).view(B, 1, 1).expand(B, P, 1)
        flat = torch.cat([image, rois], dim=2).view(B * P, 5)
        pooled = ps_roi_align(thin, flat, (cfg.roi_size, cfg.roi_size), 1.0 / STRIDE,
                              cfg.sampling_ratio, impl=cfg.ops)  # (B*P, alpha, p, p)
        hidden = F.relu(self.fc(pooled.flatten(1).to(self.fc.weight.dtype)))
        logits = self.cls(hidden).view(B, P, -1)
        return logits, self.box(hidden).view(B, P, -1, 4)

    def forward(self, x: torch.Tensor, gt_boxes: torch.Tensor | None = None,
                gt_labels: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Detections of ``x``, or with ``gt_boxes`` (B, G, 4) and ``gt_labels`` (B, G) (class
        ids >= 1; 0 = padding) the training loss: ``(loss, parts)`` (see :meth:`losses`)."""
        if gt_boxes is None:
            return self.detect(x)
        return self.losses(x, gt_boxes, gt_labels)

    def losses(self, x: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The summed loss and its detached parts: ``rpn_cls``, ``rpn_box``, ``rcnn_cls``,
        ``rcnn_box`` and ``rcnn_accuracy`` (of the sampled RoIs)."""
        cfg, size = self.config, (x.shape[2], x.shape[3])
        thin, logits, deltas = self.features(x)
        anchors = self.anchors(thin)
        gt_valid = gt_labels > 0  # (B, G)
        gt_boxes = gt_boxes.float()

        # RPN: label and sample the anchors.
        iou = torch.where(gt_valid[:, None], box_iou(anchors[None], gt_boxes), -1.0)  # (B, A', G)
        best, matched = iou.max(2)  # (B, A')
        labels = torch.where(best >= cfg.rpn_fg_iou, 1, torch.where(best < cfg.rpn_bg_iou, 0, -1))
        per_gt = iou.max(1, keepdim=True).values  # (B, 1, G)
        labels = torch.where(((iou == per_gt) & (per_gt > 0)).any(2), 1, labels)
        pos, neg = balanced_sample(labels, cfg.rpn_batch, cfg.rpn_positive_fraction)
        n = (pos | neg).sum().clamp_min(1)
        rpn_cls = (F.binary_cross_entropy_with_logits(logits.float(), pos.float(),
                                                      reduction="none") * (pos | neg)).sum() / n
        target = encode_boxes(_take(gt_boxes, matched), anchors[None].expand_as(deltas))
        rpn_box = _smooth_l1(deltas, target, pos) / n

        # R-CNN: proposals + ground truth, labelled and sampled to a fixed rcnn_batch.
        props, props_valid = self.proposals(logits, deltas, anchors, size,
                                            pre_nms=cfg.pre_nms_train, post_nms=cfg.post_nms_train)
        rois = torch.cat([props, gt_boxes], 1)  # (B, R, 4)
        valid = torch.cat([props_valid, gt_valid], 1)
        iou = torch.where(gt_valid[:, None], box_iou(rois, gt_boxes), -1.0)  # (B, R, G)
        best, matched = iou.max(2)
        fg = valid & (best >= cfg.rcnn_fg_iou)
        pos, neg = balanced_sample(torch.where(fg, 1, torch.where(valid, 0, -1)),
                                   cfg.rcnn_batch, cfg.rcnn_positive_fraction)
        chosen = pos | neg
        pick = (chosen.float() + torch.rand_like(best) * 0.5).topk(
            min(cfg.rcnn_batch, rois.shape[1]), dim=1).indices  # chosen ones first: (B, S)
        sample_valid, sample_fg = chosen.gather(1, pick), pos.gather(1, pick)
        classes = torch.where(pos, gt_labels.gather(1, matched), 0).gather(1, pick)  # (B, S)
        sample_rois = _take(rois, pick)
        target = encode_boxes(_take(_take(gt_boxes, matched), pick), sample_rois, RCNN_WEIGHTS)
        cls_logits, box_deltas = self.head(thin, sample_rois)
        m = sample_valid.sum().clamp_min(1)
        rcnn_cls = (F.cross_entropy(cls_logits.float().flatten(0, 1), classes.flatten(),
                                    reduction="none") * sample_valid.flatten()).sum() / m
        own = box_deltas.gather(2, classes[..., None, None].expand(-1, -1, 1, 4)).squeeze(2)
        rcnn_box = _smooth_l1(own, target, sample_fg) / m
        correct = (cls_logits.argmax(-1) == classes) & sample_valid
        parts = {"rpn_cls": rpn_cls, "rpn_box": rpn_box, "rcnn_cls": rcnn_cls,
                 "rcnn_box": rcnn_box}
        loss = sum(parts.values())
        parts = {k: v.detach() for k, v in parts.items()}
        parts["rcnn_accuracy"] = correct.sum().float() / m
        return loss, parts

    @torch.no_grad()
    def detect(self, x: torch.Tensor) -> torch.Tensor:
        """Detections (B, K, 6): ``x0, y0, x1, y1, score, class`` by decreasing score, K =
        ``config.detections``; unused rows are zeros (class 0)."""
        cfg, size = self.config, (x.shape[2], x.shape[3])
        thin, logits, deltas = self.features(x)
        props, props_valid = self.proposals(logits, deltas, self.anchors(thin), size,
                                            pre_nms=cfg.pre_nms_test, post_nms=cfg.post_nms_test)
        cls_logits, box_deltas = self.head(thin, props)
        B, P, C1 = cls_logits.shape
        scores = cls_logits.float().softmax(-1)[..., 1:]  # (B, P, C)
        boxes = clip_boxes(decode_boxes(box_deltas[:, :, 1:], props[:, :, None].expand(
            -1, -1, C1 - 1, -1), RCNN_WEIGHTS), size)  # (B, P, C, 4)
        classes = torch.arange(1, C1, device=x.device).expand(B, P, -1)  # (B, P, C)
        valid = (props_valid[..., None] & (scores > cfg.score_threshold)
                 & (boxes[..., 2] - boxes[..., 0] >= cfg.min_box_size)
                 & (boxes[..., 3] - boxes[..., 1] >= cfg.min_box_size))
        groups = torch.arange(B, device=x.device).view(B, 1, 1) * C1 + classes
        keep = nms_keep_mask(boxes, scores, valid, groups, cfg.nms_threshold, impl=cfg.ops)
        scores, boxes, classes = scores.flatten(1), boxes.flatten(1, 2), classes.flatten(1)
        top, order = torch.where(keep.flatten(1), scores, -1.0).topk(
            min(cfg.detections, scores.shape[1]), dim=1)  # (B, K)
        found = (top >= 0)[..., None]
        dets = torch.cat([_take(boxes, order), top[..., None],
                          classes.gather(1, order)[..., None].float()], dim=2)
        dets = torch.where(found, dets, 0.0)
        return F.pad(dets, (0, 0, 0, cfg.detections - dets.shape[1]))  # (B, K, 6)


def _take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values (B, N, D) at index (B, K) -> (B, K, D)."""
    return values.gather(1, index[..., None].expand(-1, -1, values.shape[-1]))


def _smooth_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed smooth L1 (beta 1/9, Faster R-CNN's) of the rows of (B, N, 4) where ``mask``."""
    target = torch.where(mask[..., None], target, 0.0)  # padding targets may be inf
    loss = F.smooth_l1_loss(pred.float(), target, beta=1.0 / 9, reduction="none").sum(-1)
    return (loss * mask).sum()
