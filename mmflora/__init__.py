"""mmflora: FLoRA low-rank adaptation for OpenMMLab dense-vision models.

``mmflora.adapters`` is the method in pure PyTorch. ``mmflora.models`` and
``mmflora.engine`` register the backbone and hooks with OpenMMLab; configs pull
them in through ``custom_imports``.
"""
from .version import __version__

__all__ = ['__version__']
