"""PS-RoIAlign and NMS: our pure-torch fallbacks against hand-computed cases, a scalar
reference of torchvision's kernel, and (on the GPU host) torchvision itself."""

from __future__ import annotations

import math

import pytest
import torch

from models.ps_roi_align import (
    batched_nms,
    nms,
    nms_keep_mask,
    ps_roi_align,
    ps_roi_align_torch,
    torchvision_ops,
)


def reference(input, rois, ph, pw, scale, ratio):
    """torchvision's CPU kernel (ps_roi_align_kernel.cpp) transcribed loop by loop."""
    N, C, H, W = input.shape
    Co = C // (ph * pw)
    out = torch.zeros(len(rois), Co, ph, pw, dtype=torch.float64)

    def bilinear(plane, y, x):
        if not (-1.0 <= y <= H and -1.0 <= x <= W):
            return 0.0
        y, x = max(y, 0.0), max(x, 0.0)
        y0, x0 = int(y), int(x)
        if y0 >= H - 1:
            y0 = y1 = H - 1
            y = float(y0)
        else:
            y1 = y0 + 1
        if x0 >= W - 1:
            x0 = x1 = W - 1
            x = float(x0)
        else:
            x1 = x0 + 1
        ly, lx = y - y0, x - x0
        return ((1 - ly) * (1 - lx) * plane[y0, x0] + (1 - ly) * lx * plane[y0, x1]
                + ly * (1 - lx) * plane[y1, x0] + ly * lx * plane[y1, x1])

    for n, (b, *box) in enumerate(rois.tolist()):
        x0, y0, x1, y1 = (v * scale - 0.5 for v in box)
        bh, bw = (y1 - y0) / ph, (x1 - x0) / pw
        gh = ratio if ratio > 0 else math.ceil((y1 - y0) / ph)
        gw = ratio if ratio > 0 else math.ceil((x1 - x0) / pw)
        c_in = 0
        for c in range(Co):
            for i in range(ph):
                for j in range(pw):
                    plane = input[int(b), c_in].double()
                    total = sum(bilinear(plane, y0 + i * bh + (a + 0.5) * bh / gh,
                                         x0 + j * bw + (e + 0.5) * bw / gw)
                                for a in range(gh) for e in range(gw))
                    out[n, c, i, j] = total / (gh * gw)
                    c_in += 1
    return out


def test_ps_roi_align_by_hand():
    # input channel k holds 16k + 4y + x; a 4x4 roi, 2x2 bins, one sample per bin at the
    # bin centre (0.5 + 2i, 0.5 + 2j) after the -0.5 px shift; bin (i, j) of output
    # channel c reads input channel (2c + i) * 2 + j.
    x = torch.arange(8 * 16, dtype=torch.float32).view(1, 8, 4, 4)
    out = ps_roi_align_torch(x, torch.tensor([[0.0, 0, 0, 4, 4]]), (2, 2), 1.0, 1)
    expected = torch.tensor([[[2.5, 16 + 4.5], [32 + 10.5, 48 + 12.5]],
                             [[64 + 2.5, 80 + 4.5], [96 + 10.5, 112 + 12.5]]])
    torch.testing.assert_close(out[0], expected)


def test_samples_outside_are_zero_and_near_the_edge_are_clamped():
    x = torch.full((1, 1, 2, 2), 3.0)
    rois = torch.tensor([[0.0, 10, 10, 12, 12],  # far outside: every sample is 0
                         [0.0, 1.5, 1.5, 2.5, 2.5]])  # within a pixel of the edge: clamped
    out = ps_roi_align_torch(x, rois, (1, 1), 1.0, 1)
    assert out.flatten().tolist() == [0.0, 3.0]


@pytest.mark.parametrize("ratio, scale", [(2, 0.5), (-1, 0.25), (1, 1.0)])
def test_matches_the_scalar_reference(ratio, scale):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3 * 2 * 3, 6, 7, generator=g)
    rois = torch.tensor([[0, 1.0, 2.0, 20.0, 9.0], [1, -4.0, -3.0, 5.0, 30.0],
                         [1, 3.0, 3.0, 3.5, 3.2], [0, 0.0, 0.0, 27.0, 23.0]])
    out = ps_roi_align_torch(x, rois, (2, 3), scale, ratio)
    assert out.shape == (4, 3, 2, 3)
    torch.testing.assert_close(out.double(), reference(x, rois, 2, 3, scale, ratio),
                               rtol=1e-5, atol=1e-5)


def test_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.3, 0.7, 4.2, 3.9]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: ps_roi_align_torch(t, rois, (2, 2), 1.0, 2), (x,))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="divisible"):
        ps_roi_align_torch(torch.zeros(1, 5, 4, 4), torch.zeros(1, 5), (2, 2))
    with pytest.raises(ValueError, match="impl"):
        ps_roi_align(torch.zeros(1, 4, 4, 4), torch.zeros(1, 5), (2, 2), impl="cuda")


BOXES = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]])
SCORES = torch.tensor([0.9, 0.8, 0.7, 0.95])


def test_nms_by_hand():
    # IoUs: box 3 (0.95) with box 0 90/100 = 0.9, with box 1 72/118 = 0.61; box 0 with
    # box 1 81/119 = 0.68; box 2 overlaps nothing.
    assert nms(BOXES, SCORES, 0.5, impl="torch").tolist() == [3, 2]
    # at 0.65 box 1 stays: box 3 overlaps it by 0.61, and box 0 (0.68), suppressed by box
    # 3 before, suppresses nothing
    assert nms(BOXES, SCORES, 0.65, impl="torch").tolist() == [3, 1, 2]


def test_batched_nms_keeps_groups_apart():
    kept = batched_nms(BOXES, SCORES, torch.tensor([0, 1, 0, 2]), 0.5, impl="torch")
    assert kept.tolist() == [3, 0, 1, 2]  # three groups: nothing overlaps within one
    assert batched_nms(BOXES[:0], SCORES[:0], torch.zeros(0, dtype=torch.long), 0.5,
                       impl="torch").tolist() == []


def test_nms_keep_mask_on_padded_rows():
    boxes = torch.stack([BOXES, BOXES])  # (2, 4, 4): two images
    valid = torch.tensor([[True, True, True, True], [True, True, True, False]])
    groups = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1]])
    keep = nms_keep_mask(boxes, torch.stack([SCORES, SCORES]), valid, groups, 0.5, impl="torch")
    # image 0 as test_nms_by_hand; image 1 lacks box 3: box 0 survives, removes box 1 (0.68)
    assert keep.tolist() == [[False, False, True, True], [True, False, True, False]]


@pytest.mark.cuda
def test_ours_equal_torchvision_on_the_gpu():
    ops = torchvision_ops()
    assert ops is not None, "the GPU host has torchvision"
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(4, 5 * 7 * 7, 20, 20, device="cuda", generator=g, requires_grad=True)
    xy = torch.rand(300, 2, device="cuda", generator=g) * 300
    wh = torch.rand(300, 2, device="cuda", generator=g) * 200 + 1
    rois = torch.cat([torch.randint(0, 4, (300, 1), device="cuda", generator=g).float(),
                      xy, xy + wh], dim=1)
    for ratio in (2, -1):
        ours = ps_roi_align(x, rois, (7, 7), 1 / 16, ratio, impl="torch")
        theirs = ps_roi_align(x, rois, (7, 7), 1 / 16, ratio, impl="torchvision")
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
        grad = torch.randn_like(ours)
        (g_ours,) = torch.autograd.grad(ours, x, grad)
        (g_theirs,) = torch.autograd.grad(theirs, x, grad)
        torch.testing.assert_close(g_ours, g_theirs, rtol=1e-4, atol=1e-4)
    boxes = torch.cat([xy, xy + wh], dim=1).detach()
    scores = torch.rand(300, device="cuda", generator=g)
    idxs = torch.randint(0, 3, (300,), device="cuda", generator=g)
    for thr in (0.3, 0.7):
        assert nms(boxes, scores, thr, impl="torch").tolist() == \
            nms(boxes, scores, thr, impl="torchvision").tolist()
        assert batched_nms(boxes, scores, idxs, thr, impl="torch").tolist() == \
            batched_nms(boxes, scores, idxs, thr, impl="torchvision").tolist()
