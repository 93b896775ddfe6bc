"""How procedural images become network inputs.

The pretraining (``tools/pretrain_backbone.py``), the transfer benchmark and the configs' data
preprocessors all normalise RGB images (0-255) with ImageNet's statistics, so a trunk pretrained
here sees its inputs the same way wherever it is used.
"""
import torch
from torch import Tensor

#: ImageNet's per-channel mean and standard deviation (RGB, 0-255), as the configs set them.
INPUT_MEAN = (123.675, 116.28, 103.53)
INPUT_STD = (58.395, 57.12, 57.375)


def normalise(images: Tensor) -> Tensor:
    """uint8 RGB images (N, 3, H, W) as float inputs with :data:`INPUT_MEAN` and
    :data:`INPUT_STD`."""
    mean = torch.tensor(INPUT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(INPUT_STD).view(1, 3, 1, 1)
    return (images.float() - mean) / std
