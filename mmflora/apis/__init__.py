"""Helpers the command-line tools share: load a config, register its toolkit, build its model."""
from .config import build_model_from_config, load_config, register_scope_modules

__all__ = ['build_model_from_config', 'load_config', 'register_scope_modules']
