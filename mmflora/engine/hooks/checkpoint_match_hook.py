"""Refuse a checkpoint that does not fit the model, before anything is computed from it.

mmengine loads ``load_from`` and test checkpoints with ``strict=False``: tensors whose shape
differs from the model's are skipped with a console line each, and the run goes on. For an
adapted model that is a silent wrong result — a checkpoint trained with r=8 tested under a
config with r=16 evaluates untrained adapters and reports mAP 0.000 — and a resume after
changing the adapter config dies later inside the optimizer. This hook compares the
checkpoint with the model in ``after_load_checkpoint`` (before mmengine copies it in):

* resuming: every tensor must be there with the model's shape, and nothing else;
* evaluating (``tools/test.py``, val/test runs with ``load_from``): the same;
* starting training from ``load_from``: adapter tensors must all be there with their shapes
  or all be absent (a base or pretrained-detector checkpoint), and the layers that carry
  adapters must match; other differences (a head with another class count) are allowed, as
  in every OpenMMLab fine-tuning, and listed in the run's log.

A slim checkpoint (``AdapterCheckpointHook(save_frozen=False)``) lacks its frozen base by
design; that hook fills it in, so it must be registered. ``before_save_checkpoint`` records
the adapter configuration of the model in ``checkpoint['meta']['mmflora_adapters']``, so a
refusal can say what the checkpoint was trained with.
"""
import dataclasses
from typing import Dict, List, Optional, Set

from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from torch import nn

from mmflora.adapters import adapter_configs, describe_trained_with, iter_adapter_layers
from mmflora.apis import unwrap_model
from ..runner_access import (checkpoint_source, is_resuming, is_training_run,
                             sharded_state_shapes)
from .checkpoint_state import (frozen_parameter_names, loaded_name, slim_info,
                               trained_state_names)

#: Key of the adapter configurations in ``checkpoint['meta']``.
ADAPTERS_META_KEY = 'mmflora_adapters'
_SHOWN = 5


@dataclasses.dataclass
class CheckpointFit:
    """How a checkpoint's state dict differs from a model's.

    Attributes:
        mismatched (dict): name -> (checkpoint shape, model shape).
        missing (list[str]): In the model, not in the checkpoint.
        unexpected (list[str]): In the checkpoint, not in the model.
    """

    mismatched: Dict[str, tuple]
    missing: List[str]
    unexpected: List[str]

    def restricted(self, names: Set[str]) -> 'CheckpointFit':
        """The differences on ``names`` only."""
        return CheckpointFit({k: v for k, v in self.mismatched.items() if k in names},
                             [k for k in self.missing if k in names],
                             [k for k in self.unexpected if k in names])

    def describe(self, trained: Optional[Set[str]] = None) -> str:
        """One clause per kind of difference, with the first names and shapes ('' if none).

        Args:
            trained (set[str], optional): Names of the model's trained tensors; missing ones
                are then counted apart from missing frozen ones.
        """
        parts = []
        if self.mismatched:
            shown = ', '.join(f'{k} {self.mismatched[k][0]} in the checkpoint vs '
                              f'{self.mismatched[k][1]} in the model'
                              for k in sorted(self.mismatched)[:_SHOWN])
            parts.append(f'{len(self.mismatched)} tensors differ in shape, e.g. {shown}')
        missing = self.missing
        if trained is not None:
            lacking = [k for k in missing if k in trained]
            if lacking:
                parts.append(f'the checkpoint lacks {len(lacking)} of the {len(trained)} trained '
                             f'tensors of the model, e.g. {", ".join(lacking[:_SHOWN])}')
            missing = [k for k in missing if k not in trained]
        for label, keys in (('are missing from the checkpoint', missing),
                            ('are in the checkpoint but not in the model', self.unexpected)):
            if keys:
                parts.append(f'{len(keys)} {label}, e.g. {", ".join(keys[:_SHOWN])}')
        return '; '.join(parts)


def compare_checkpoint(model: nn.Module, checkpoint: dict,
                       sharded_shapes: Optional[Dict[str, tuple]] = None) -> CheckpointFit:
    """Compare ``checkpoint['state_dict']`` with ``model`` as mmengine will load it.

    The frozen base weights a slim checkpoint leaves out on purpose do not count as missing.

    Args:
        model (nn.Module): The unwrapped model.
        checkpoint (dict): The loaded checkpoint.
        sharded_shapes (dict, optional): {state name: full shape} of a model whose frozen
            base FSDP shards (``FLoRAFSDPStrategy.state_shapes``): compared instead of the
            model's own state dict, which would gather the base, and the base, which such
            checkpoints never hold, does not count as missing.
    """
    state = {loaded_name(key): value for key, value in checkpoint['state_dict'].items()}
    own = sharded_shapes or {k: tuple(v.shape) for k, v in model.state_dict().items()
                             if hasattr(v, 'shape')}
    mismatched = {k: (tuple(v.shape), own[k]) for k, v in state.items()
                  if k in own and hasattr(v, 'shape') and tuple(v.shape) != own[k]}
    missing = sorted(set(own) - set(state))
    info = slim_info(checkpoint)
    if sharded_shapes:
        trained = trained_state_names(model)
        missing = [k for k in missing if k in trained]
    elif info and not info.get('completed'):
        frozen = set(frozen_parameter_names(model))
        missing = [k for k in missing if k not in frozen]
    return CheckpointFit(mismatched, missing, sorted(set(state) - set(own)))


def adapted_layer_names(model: nn.Module) -> Dict[str, Set[str]]:
    """{'adapters': adapter tensor names, 'layers': every state name of the adapted layers}."""
    adapters, layers = set(), set()
    for name, layer in iter_adapter_layers(model):
        own = layer.adapter_parameters()
        for key in layer.state_dict():
            layers.add(f'{name}.{key}')
            if key in own:
                adapters.add(f'{name}.{key}')
    return dict(adapters=adapters, layers=layers)


@HOOKS.register_module()
class CheckpointMatchHook(Hook):
    """Refuse a checkpoint that does not fit the model; record what a checkpoint holds.

    ``tools/train.py`` and ``tools/test.py`` add this hook to every run; with other launchers,
    put ``dict(type='CheckpointMatchHook')`` in ``custom_hooks`` (the shipped configs do).
    """

    priority = 'VERY_HIGH'  # after FLoRAHook injects, before EMAHook or others use a checkpoint

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Record the adapter configurations of the model in the checkpoint's meta."""
        configs = adapter_configs(unwrap_model(runner.model))
        if configs:
            checkpoint.setdefault('meta', {})[ADAPTERS_META_KEY] = configs

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Raise before the checkpoint is used when it does not fit (see the module doc)."""
        model = unwrap_model(runner.model)
        if 'state_dict' not in checkpoint:
            return
        source = checkpoint_source(runner, checkpoint)
        if slim_info(checkpoint) and not any(
                type(h).__name__ == 'AdapterCheckpointHook' for h in runner.hooks):
            raise RuntimeError(
                f'{source} was saved without its frozen base weights (save_frozen=False) and '
                f"only AdapterCheckpointHook restores them; add dict(type='AdapterCheckpointHook')"
                f' to custom_hooks')
        fit = compare_checkpoint(model, checkpoint, sharded_state_shapes(runner))
        if is_resuming(runner):
            fatal, purpose = fit.describe(trained_state_names(model)), 'resume from'
        elif is_training_run(runner):
            fatal, purpose = self._fine_tuning_problems(model, fit), 'start training from'
            tolerated = fit.describe()
            if not fatal and tolerated:
                runner.logger.warning(f'CheckpointMatchHook: {source} loads partly (as when '
                                      f'fine-tuning from another task): {tolerated}')
        else:
            fatal, purpose = fit.describe(), 'evaluate'
        if fatal:
            trained = describe_trained_with(
                {'submodule_configs': (checkpoint.get('meta') or {}).get(ADAPTERS_META_KEY)})
            here = describe_trained_with({'submodule_configs': adapter_configs(model)})
            raise ValueError(
                f'{source} does not fit this model, so the run cannot {purpose} it: {fatal}. '
                f'The checkpoint was trained with: {trained}; this config builds: {here}. Use '
                f'the config it was trained with (the copy in its work dir, or the same '
                f'--cfg-options).')

    @staticmethod
    def _fine_tuning_problems(model: nn.Module, fit: CheckpointFit) -> str:
        """What a ``load_from`` that starts training must not have: shapes that differ on an
        adapted layer, or some adapter tensors but not all (another adapter configuration)."""
        names = adapted_layer_names(model)
        on_layers = fit.restricted(names['layers'])
        problems = CheckpointFit(on_layers.mismatched, [], [])
        absent = set(on_layers.missing) & names['adapters']
        if absent and absent != names['adapters']:
            problems.missing = sorted(absent)
        return problems.describe()


def ensure_checkpoint_match_hook(runner) -> None:
    """Register a :class:`CheckpointMatchHook` on ``runner`` unless it has one."""
    if not any(isinstance(hook, CheckpointMatchHook) for hook in runner.hooks):
        runner.register_hook(CheckpointMatchHook())
