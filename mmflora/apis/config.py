"""Load an mmflora config and build its model under the config's own toolkit scope."""
import importlib
from typing import Optional

import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from torch import nn

# Toolkits whose modules a scope needs. MMRotate configs name MMDetection modules.
SCOPE_DEPENDENCIES = dict(mmdet=('mmdet', ), mmseg=('mmseg', ), mmrotate=('mmdet', 'mmrotate'))


def register_scope_modules(cfg: Config) -> None:
    """Register the modules of the toolkit named by ``cfg.default_scope`` (and its needs)."""
    scope = cfg.get('default_scope')
    for package in SCOPE_DEPENDENCIES.get(scope, ()):
        importlib.import_module(f'{package}.utils').register_all_modules(init_default_scope=False)


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Read a config file (its ``custom_imports`` run), apply overrides, register its scope."""
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    register_scope_modules(cfg)
    return cfg


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
