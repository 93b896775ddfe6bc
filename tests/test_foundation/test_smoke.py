"""Smoke test of the stack: everything imports together and mmcv's compiled ops give known answers.

The expected values are worked out by hand in the comments, so a wrong build (missing ops, a
broken kernel, a different angle convention) shows up here before it shows up in training.
"""
import math

import torch

# Versions pinned in setup.py; importing mmdet, mmseg and mmrotate runs their own mmcv/mmengine
# version checks, so importing them in one process proves those checks agree with each other.
PINNED_VERSIONS = {
    'mmengine': '0.10.7',
    'mmcv': '2.1.0',
    'mmdet': '3.3.0',
    'mmseg': '1.2.2',
    'mmrotate': '1.0.1',
}


def test_stack_imports_together_at_pinned_versions():
    import mmcv
    import mmcv.ops
    import mmdet
    import mmengine
    import mmrotate
    import mmseg
    import timm

    import mmflora

    modules = dict(mmengine=mmengine, mmcv=mmcv, mmdet=mmdet, mmseg=mmseg, mmrotate=mmrotate)
    found = {name: module.__version__ for name, module in modules.items()}
    assert found == PINNED_VERSIONS
    assert timm.__version__.startswith('1.0.')
    assert isinstance(mmflora.__version__, str) and mmflora.__version__
    assert 'convnextv2_atto' in timm.list_models('convnextv2*')


def test_mmcv_compiled_extension_is_loaded():
    from mmcv.utils import ext_loader

    ext = ext_loader.load_ext('_ext', ['nms', 'roi_align_forward', 'nms_rotated',
                                       'roi_align_rotated_forward', 'box_iou_rotated'])
    assert ext is not None


def test_nms_suppresses_the_overlapping_box():
    from mmcv.ops import nms

    boxes = torch.tensor([[0., 0., 10., 10.],
                          [1., 1., 11., 11.],   # IoU with box 0: 81 / (100 + 100 - 81) = 0.68
                          [20., 20., 30., 30.]])  # disjoint from both
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    assert torch.allclose(dets, torch.tensor([[0., 0., 10., 10., 0.9], [20., 20., 30., 30., 0.7]]))
    # Above the 0.68 overlap nothing is suppressed.
    _, keep = nms(boxes, scores, iou_threshold=0.7)
    assert keep.tolist() == [0, 1, 2]


def _ramp(height: int = 8, width: int = 8) -> torch.Tensor:
    """Feature map (1, 1, H, W) with value x + 10 y at pixel (y, x)."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                            torch.arange(width, dtype=torch.float32), indexing='ij')
    return (xs + 10 * ys)[None, None]


def test_roi_align_on_a_linear_ramp_returns_bin_centres():
    from mmcv.ops import roi_align

    # aligned=True shifts the box by half a pixel: x and y run over [0.5, 4.5]. Two bins of
    # width 2 have centres 1.5 and 3.5, and bilinear sampling of a linear map averages to its
    # value at the bin centre: x + 10 y.
    rois = torch.tensor([[0., 1., 1., 5., 5.]])
    out = roi_align(_ramp(), rois, (2, 2), 1.0, 2, 'avg', True)
    expected = torch.tensor([[16.5, 18.5], [36.5, 38.5]])
    assert out.shape == (1, 1, 2, 2)
    assert torch.allclose(out[0, 0], expected, atol=1e-5)


def test_roi_align_rotated_follows_the_box_angle():
    from mmcv.ops import RoIAlignRotated

    layer = RoIAlignRotated((2, 2), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    # Centre (3.5, 3.5) is 3.0 after the half-pixel shift; a 4 x 4 box in 2 x 2 bins puts the
    # bin centres at 2 and 4 on each axis: values x + 10 y = [[22, 24], [42, 44]].
    upright = torch.tensor([[0., 3.5, 3.5, 4., 4., 0.]])
    out = layer(_ramp(), upright)
    assert torch.allclose(out[0, 0], torch.tensor([[22., 24.], [42., 44.]]), atol=1e-4)
    # Turned by pi (the same either way round), the bins are read in reverse on both axes.
    turned = torch.tensor([[0., 3.5, 3.5, 4., 4., math.pi]])
    out = layer(_ramp(), turned)
    assert torch.allclose(out[0, 0], torch.tensor([[44., 42.], [24., 22.]]), atol=1e-4)


def test_box_iou_rotated_known_overlaps():
    from mmcv.ops import box_iou_rotated

    square = torch.tensor([[0., 0., 2., 2., 0.]])  # (cx, cy, w, h, angle)
    others = torch.tensor([
        [0., 0., 2., 2., 0.],              # identical: 1
        [10., 10., 2., 2., 0.],            # disjoint: 0
        [1., 0., 2., 2., 0.],              # shifted by half: 2 / (4 + 4 - 2) = 1/3
        [0., 0., 2., 2., math.pi / 2],     # a square turned by 90 degrees is itself: 1
        [0., 0., 2., 2., math.pi / 4],     # turned by 45: octagon 8(sqrt2 - 1) over
    ])                                     # 8 - 8(sqrt2 - 1), which is 1/sqrt2
    ious = box_iou_rotated(square, others)
    expected = torch.tensor([[1., 0., 1. / 3., 1., 1. / math.sqrt(2.)]])
    assert ious.shape == (1, 5)
    assert torch.allclose(ious, expected, atol=1e-4)


def test_nms_rotated_suppresses_the_overlapping_box():
    from mmcv.ops import nms_rotated

    boxes = torch.tensor([[0., 0., 2., 2., 0.],
                          [0.2, 0., 2., 2., 0.],   # IoU with box 0: 3.6 / (8 - 3.6) = 0.82
                          [10., 10., 2., 2., 0.5]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms_rotated(boxes, scores, iou_threshold=0.5)
    assert sorted(keep.tolist()) == [0, 2]
    assert dets.shape == (2, 6)
    assert torch.allclose(dets[:, 5], torch.tensor([0.9, 0.7]))
    # Above the 0.82 overlap nothing is suppressed.
    _, keep = nms_rotated(boxes, scores, iou_threshold=0.9)
    assert sorted(keep.tolist()) == [0, 1, 2]
