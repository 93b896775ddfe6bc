"""Build a config's model, and reach the model inside a wrapper."""
import torch
from mmengine.config import Config
from mmengine.model import is_model_wrapper
from mmengine.registry import MODELS, init_default_scope
from torch import nn


def build_model_from_config(cfg: Config, device: str = 'cpu') -> nn.Module:
    """Build ``cfg.model`` in the config's default scope.

    Args:
        cfg (Config): A loaded config.
        device (str): 'cpu', or 'meta' to build shapes only (no memory, no init): enough to
            count parameters of a large model quickly.
    """
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    with torch.device(device):
        return MODELS.build(cfg.model)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside an mmengine/DDP wrapper (the model itself when unwrapped)."""
    return model.module if is_model_wrapper(model) else model
