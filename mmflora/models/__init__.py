"""OpenMMLab glue: the ConvNeXt-V2 backbone and its FLoRA variant, InternViT-6B.

Importing this package registers ``ConvNeXtV2``, ``FLoRAConvNeXtV2``, ``InternViT6B`` and
the ``LN2d`` norm in mmengine's root ``MODELS`` registry, where the mmdet, mmseg and
mmrotate registries find them, and declares mmcv's Linear/Conv2d/Conv3d wrappers
forward-equivalent to their torch layers (:mod:`mmflora.apis.mmcv_layers`). Configs import it with
``custom_imports=dict(imports=['mmflora.models'])``.
"""
from mmflora.apis.log_bridge import route_mmflora_logs
from mmflora.apis.mmcv_layers import declare_mmcv_wrappers
from mmflora.compat import apply_compat_shims

apply_compat_shims()
route_mmflora_logs()
declare_mmcv_wrappers()

from .checkpoint_formats import (FORMATS, convert_to_backbone, detect_format,
                                 load_checkpoint_file, unwrap_state_dict)  # noqa: E402
from .convnextv2 import ConvNeXtV2  # noqa: E402
from .flora_convnextv2 import FLoRAConvNeXtV2  # noqa: E402
from .internvit import InternViT6B  # noqa: E402
from .norms import LayerNorm2d  # noqa: E402

__all__ = [
    'ConvNeXtV2', 'FLoRAConvNeXtV2', 'FORMATS', 'InternViT6B', 'LayerNorm2d',
    'convert_to_backbone', 'detect_format', 'load_checkpoint_file', 'unwrap_state_dict'
]
