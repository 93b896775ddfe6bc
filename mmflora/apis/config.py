"""Load an mmflora config and register the modules of its toolkit."""
import importlib
from typing import Optional

from mmengine.config import Config

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
