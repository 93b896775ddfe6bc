"""How mmflora's backbones take ``init_cfg=dict(type='Pretrained', ...)``.

mmengine's own ``PretrainedInit`` loads by name with ``strict=False`` and only logs what did
not fit. mmflora's backbones route that entry to their ``load_pretrained``, which converts
the published layouts and reports (or refuses) what does not fit; the other entries of
``init_cfg`` run as mmengine runs them.
"""
from typing import Dict, Set

from mmengine.model import BaseModule
from torch import Tensor, nn

from mmflora.adapters import iter_adapter_layers
from mmflora.apis.pretrained import pretrained_init_entries


def adapter_tensors(model: nn.Module) -> Dict[str, Tensor]:
    """Every adapter tensor of ``model`` (injected by a FLoRA backbone or ``FLoRAHook``) by name."""
    return {
        f'{name}.{key}': param
        for name, layer in iter_adapter_layers(model)
        for key, param in layer.adapter_parameters().items()
    }


def base_state_keys(model: nn.Module) -> Set[str]:
    """State-dict keys a pretrained checkpoint of the base fills: all but adapter tensors."""
    return set(model.state_dict()) - set(adapter_tensors(model))


class PretrainedInitMixin(BaseModule):
    """``init_weights`` that hands a ``Pretrained`` entry to ``self.load_pretrained(**entry)``.

    The class that mixes it in defines ``load_pretrained(checkpoint, prefix=None, ...)``.
    """

    def init_weights(self) -> None:
        """Apply ``init_cfg``; a ``Pretrained`` entry goes through ``load_pretrained``."""
        cfgs = self.init_cfg
        if isinstance(cfgs, dict):
            cfgs = [cfgs]
        cfgs = list(cfgs or [])
        pretrained = pretrained_init_entries(cfgs)
        if not pretrained or self.is_init:
            super().init_weights()
            return
        if len(pretrained) > 1:
            raise ValueError(
                f'{type(self).__name__} init_cfg has {len(pretrained)} Pretrained '
                'entries; keep one.')
        saved = self.init_cfg
        self.init_cfg = [c for c in cfgs if c not in pretrained] or None
        try:
            super().init_weights()
        finally:
            self.init_cfg = saved
        cfg = dict(pretrained[0])
        cfg.pop('type')
        self.load_pretrained(**cfg)
