"""Shared builders for the adapter tests."""
import torch
from torch import nn

from mmflora.adapters import iter_adapter_layers


def randomise_adapters(model: nn.Module, std: float = 0.5, seed: int = 0) -> None:
    """Give every adapter tensor non-zero values so that dW != 0."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in iter_adapter_layers(model):
            for param in layer.adapter_parameters().values():
                param.copy_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * std
                            + (1.0 if param.dim() == 1 else 0.0))


def small_convnet() -> nn.Module:
    """A stem, a depthwise block with pointwise linears, a downsample and a head."""

    class Block(nn.Module):

        def __init__(self, channels: int):
            super().__init__()
            self.conv_dw = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
            self.norm = nn.LayerNorm(channels)
            self.fc1 = nn.Linear(channels, 4 * channels)
            self.fc2 = nn.Linear(4 * channels, channels)

        def forward(self, x):
            y = self.conv_dw(x).permute(0, 2, 3, 1)
            y = self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(y))))
            return x + y.permute(0, 3, 1, 2)

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 4, stride=4), Block(8), nn.Conv2d(8, 16, 2, stride=2), Block(16),
        )
