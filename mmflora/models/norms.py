"""Norm layers that configs name by ``type`` and OpenMMLab does not register.

``LN2d``: LayerNorm over the channels of an (N, C, H, W) map (timm's ``LayerNorm2d``, eps
1e-6), the norm of the authors' InternViT-6B feature pyramid (``up1`` in their
MMSegmentation backbone). ``Feature2Pyramid(norm_cfg=dict(type='LN2d'))`` builds it through
mmcv's ``build_norm_layer``, which finds it in mmengine's root ``MODELS``. mmpretrain
registers its own ``LN2d`` (the same operation) in its own registry, so the names do not
collide.
"""
from mmengine.registry import MODELS
from timm.layers import LayerNorm2d

MODELS.register_module('LN2d', module=LayerNorm2d)

__all__ = ['LayerNorm2d']
