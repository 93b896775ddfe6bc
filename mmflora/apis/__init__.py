"""Model-level operations that the tools and the hooks share.

* :func:`load_config`, :func:`register_scope_modules`: read a config and register the
  modules of its toolkit (mmdet, mmseg, mmrotate);
* :func:`build_model_from_config`, :func:`unwrap_model`: build its model, reach it inside a
  wrapper;
* :func:`is_pretrained_init`, :func:`pretrained_init_modules`, :func:`ensure_base_weights`:
  find a ``Pretrained`` init config and make sure the frozen base holds its weights;
* :func:`apply_adapter_file`: an adapter file on its pretrained base;
* :mod:`.procedural_base`, :mod:`.linear_probe`, :mod:`.lr_schedule`: the procedurally
  pretrained base (its classifier, its file's checksum), the linear probe of its features and
  the warm-up + cosine schedule, which the pretraining and probe tools, the demo and the
  transfer benchmark share (imported from their modules, not re-exported here).
* :mod:`mmflora.apis.memory_plan`: parameter counts and per-GPU memory of a config's run,
  from its model on the meta device (``tools/memory_plan.py``).

Nothing here depends on :mod:`mmflora.engine`; the hooks and ``tools/`` build on it.
"""
from .adapter_files import apply_adapter_file
from .config import (ConfigError, check_config_nodes, flora_hook_entries, load_config,
                     register_scope_modules)
from .model import build_model_from_config, unwrap_model
from .pretrained import (BASE_SOURCES, check_base_source, ensure_base_weights, is_pretrained_init,
                         pretrained_init_entries, pretrained_init_modules)

__all__ = [
    'BASE_SOURCES', 'ConfigError', 'apply_adapter_file', 'build_model_from_config',
    'check_base_source', 'check_config_nodes', 'ensure_base_weights', 'flora_hook_entries',
    'is_pretrained_init',
    'load_config', 'pretrained_init_entries', 'pretrained_init_modules', 'register_scope_modules',
    'unwrap_model'
]
