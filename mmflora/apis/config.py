"""Load an mmflora config, check what mmflora reads from it, register its toolkit's modules."""
import importlib
from typing import Any, Iterator, Optional, Tuple

from mmengine.config import Config
from mmengine.registry import HOOKS, MODELS

# Toolkits whose modules a scope needs. MMRotate configs name MMDetection modules.
SCOPE_DEPENDENCIES = dict(mmdet=('mmdet', ), mmseg=('mmseg', ), mmrotate=('mmdet', 'mmrotate'))


class ConfigError(ValueError):
    """A config that cannot be run as it is; the message names the file or key and the fix."""


def register_scope_modules(cfg: Config) -> None:
    """Register the modules of the toolkit named by ``cfg.default_scope`` (and its needs)."""
    scope = cfg.get('default_scope')
    for package in SCOPE_DEPENDENCIES.get(scope, ()):
        importlib.import_module(f'{package}.utils').register_all_modules(init_default_scope=False)


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Read a config file (its ``custom_imports`` run), apply overrides, check, register.

    The check runs before anything is built: the config must define a ``model``, and every
    mmflora node in it (a backbone or hook whose class has a ``check_config``, such as
    ``FLoRAConvNeXtV2`` and ``FLoRAHook``) checks its adapter options with their config path.

    Raises:
        ConfigError: No ``model``, or a bad adapter key or value (one line naming it).
    """
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if not isinstance(cfg.get('model'), dict):
        raise ConfigError(f'{path} defines no `model` (top-level keys: '
                          f'{sorted(cfg.keys())[:10] or "none, the file is empty"}); an mmflora '
                          f'config sets model=dict(type=...) or inherits one with _base_')
    check_config_nodes(cfg)
    register_scope_modules(cfg)
    return cfg


def flora_hook_entries(cfg: Config) -> list:
    """The config's ``FLoRAHook`` entries of ``custom_hooks`` (by class name, with or without
    a scope prefix such as ``mmflora.``), in their order."""
    return [hook for hook in cfg.get('custom_hooks') or []
            if isinstance(hook, dict) and str(hook.get('type')).split('.')[-1] == 'FLoRAHook']


def check_config_nodes(cfg: Config) -> None:
    """Run ``check_config(node, where)`` of every mmflora class a config node names.

    Raises:
        ConfigError: With the message of the first node that refuses.
    """
    nodes = list(_walk(cfg.get('model'), 'model', MODELS))
    for index, hook in enumerate(cfg.get('custom_hooks') or []):
        nodes += list(_walk(hook, f'custom_hooks[{index}]', HOOKS, recurse=False))
    for where, node, cls in nodes:
        try:
            cls.check_config(node, where)
        except ValueError as error:
            raise ConfigError(str(error)) from None


def _walk(node: Any, where: str, registry, recurse: bool = True
          ) -> Iterator[Tuple[str, dict, type]]:
    """(config path, node, class) for the dict nodes whose ``type`` has ``check_config``."""
    if isinstance(node, dict):
        kind = node.get('type')
        cls = registry.get(kind) if isinstance(kind, str) else kind
        if isinstance(cls, type) and hasattr(cls, 'check_config'):
            yield where, node, cls
        if recurse:
            for key, value in node.items():
                yield from _walk(value, f'{where}.{key}', registry)
    elif recurse and isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _walk(value, f'{where}[{index}]', registry)
