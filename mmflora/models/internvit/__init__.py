"""InternViT-6B for MMSegmentation: the blocks, the backbone, its published checkpoint layouts.

* :mod:`.block`: one transformer block (RMSNorm, QK-normalised attention, layer scale);
* :mod:`.backbone`: :class:`InternViT6B`, registered in mmengine's root ``MODELS``;
* :mod:`.layouts`: the authors' release and Hugging Face key layouts, one record each;
* :mod:`.loading`: all-or-nothing loading of those checkpoints;
* :mod:`.pos_embed`: resizing the position embeddings to another patch grid.
"""
from .backbone import InternViT6B
from .block import InternViTBlock, LayerScale, QKNormAttention, RMSNorm
from .layouts import (HUGGINGFACE, INTERNVIT_FORMATS, INTERNVIT_LAYOUTS, RELEASE,
                      detect_internvit_format)
from .pos_embed import resize_pos_embed

__all__ = [
    'HUGGINGFACE', 'INTERNVIT_FORMATS', 'INTERNVIT_LAYOUTS', 'RELEASE', 'InternViT6B',
    'InternViTBlock', 'LayerScale', 'QKNormAttention', 'RMSNorm', 'detect_internvit_format',
    'resize_pos_embed'
]
