"""Train an adapted model with its frozen base sharded by FSDP, under mmengine's FlexibleRunner.

What is sharded and what is not
-------------------------------
The frozen base (``requires_grad=False``: the weights adapters sit on) is what makes a 6B
backbone too large for one GPU, and it never changes: torch's FSDP shards it, one flat
parameter per block (``blocks``), optionally cast to ``frozen_dtype`` (bf16 on GPUs), with no
gradient and no optimizer state. What trains (adapters, and the ``trainable`` necks and heads)
is small: FSDP ignores it (``ignored_states``), so every process holds it whole, in its own
dtype (fp32), with its own optimizer state, and the strategy averages its gradients over the
processes before each optimizer step, as DDP would. Activations are recomputed per block in
the backward pass (``checkpoint_blocks``).

When adapters are injected
--------------------------
``FlexibleRunner.train`` builds the model, runs ``init_weights``, wraps it, builds the
optimizer and loads or resumes a checkpoint, all inside ``strategy.prepare`` and before any
hook's ``before_run`` (mmengine 0.10.7, ``mmengine/runner/_flexible_runner.py``). Adapters
added by ``FLoRAHook`` there would miss the wrapper, the optimizer and the resumed
checkpoint, so this strategy injects them itself right after building the model, from its
``adapter`` options (``tools/train.py --strategy fsdp`` copies them from the config's
``FLoRAHook``), and keeps their initialisation through ``init_weights``. ``FLoRAHook`` then
finds them in place and only reports them. A backbone that injects its own adapters
(``FLoRAConvNeXtV2``) needs no ``adapter`` options.

Checkpoints
-----------
A checkpoint holds what trains (the tensors of an adapter file), every process's copy being
the same, so nothing is gathered: rank 0 writes one file as under DDP, with the optimizer and
scheduler states. The frozen base is not written; a resumed run builds it again from the
config (its ``Pretrained`` init, or the seeded initialisation). Loading a checkpoint that
holds frozen base weights is refused, since they cannot be copied into the shards here; the
base comes from the backbone's ``init_cfg``.
"""
import types
from functools import partial
from typing import Dict, Iterable, List, Optional, Sequence, Union

import torch
import torch.distributed as dist
from mmengine._strategy import FSDPStrategy
from mmengine.device import get_device
from mmengine.logging import print_log
from mmengine.optim import BaseOptimWrapper, OptimWrapper
from mmengine.registry import MODEL_WRAPPERS, STRATEGIES
from torch import Tensor, nn

from mmflora.adapters import AdapterConfig, inject_adapters
from mmflora.adapters.state import adapter_state_dict, clean_state_name
from mmflora.compat import fsdp_device_id
from ..hooks.flora_hook import guard_adapter_init
from ..runner_access import drop_frozen_from_optimizer, quiet_frozen_skips


@STRATEGIES.register_module()
class FLoRAFSDPStrategy(FSDPStrategy):
    """mmengine's ``FSDPStrategy`` for adapted models: the frozen base sharded, adapters whole.

    Use it with ``runner_type='FlexibleRunner'``; see the module docstring for what is sharded,
    when adapters are injected and what checkpoints hold.

    Args:
        adapter (dict, optional): ``FLoRAHook``'s adapter options (``method``, ``r``,
            ``targets``, ``trainable``, ...), injected right after the model is built.
            None when the model carries adapters itself. Defaults to None.
        blocks (Sequence[str]): Class names of the modules that become one FSDP unit each
            (and, with ``checkpoint_blocks``, recompute their activations), such as
            ``['InternViTBlock']``. Empty: the whole model is one unit. Defaults to ().
        checkpoint_blocks (bool): Activation checkpointing per block. Defaults to True.
        frozen_dtype (str, optional): Store the frozen base in this dtype ('bfloat16' on
            GPUs; train under ``AmpOptimWrapper(dtype='bfloat16')`` so layers mix it with
            the fp32 adapters). None keeps it as built. Defaults to None.
        model_wrapper (dict, optional): More arguments of ``MMFullyShardedDataParallel``
            (``sharding_strategy``, ``backward_prefetch``, ...); ``use_orig_params`` is
            always True. Defaults to None.
        **kwargs: Other arguments of mmengine's ``FSDPStrategy`` / ``DDPStrategy``
            (``work_dir``, ``env_kwargs``, ...).
    """

    def __init__(self,
                 *,
                 adapter: Optional[dict] = None,
                 blocks: Sequence[str] = (),
                 checkpoint_blocks: bool = True,
                 frozen_dtype: Optional[str] = None,
                 model_wrapper: Optional[dict] = None,
                 **kwargs) -> None:
        for key in ('state_dict_cfg', 'activation_checkpointing'):
            if key in kwargs:
                raise ValueError(f'FLoRAFSDPStrategy: {key} is not an option here (checkpoints '
                                 f'hold the trained tensors only; use checkpoint_blocks for '
                                 f'activation checkpointing); remove strategy.{key}')
        if frozen_dtype is not None and not isinstance(getattr(torch, frozen_dtype, None),
                                                       torch.dtype):
            raise ValueError(f'strategy.frozen_dtype={frozen_dtype!r} is not a torch dtype; use '
                             f"'bfloat16', 'float16' or None")
        self.adapter_config = (AdapterConfig.from_options(dict(adapter), where='strategy.adapter')
                               if adapter is not None else None)
        super().__init__(model_wrapper=model_wrapper, **kwargs)
        self.blocks = tuple(blocks)
        self.checkpoint_blocks = checkpoint_blocks
        self.frozen_dtype = getattr(torch, frozen_dtype) if frozen_dtype else None
        self.trained: Dict[str, Tensor] = {}
        self.state_shapes: Dict[str, tuple] = {}
        self.frozen_params = 0

    # ------------------------------------------------------------------ model
    def build_model(self, model: Union[nn.Module, dict]) -> nn.Module:
        """Build the model and inject the adapters (before ``init_weights`` and wrapping)."""
        model = super().build_model(model)
        if self.adapter_config is not None:
            report = inject_adapters(model, self.adapter_config)
            print_log(f'FLoRAFSDPStrategy injected adapters: {len(report.entries)} layers, '
                      f'{report.trainable_params:,} trainable of {report.total_params:,} '
                      f'parameters', logger='current')
        if not any(p.requires_grad for p in model.parameters()) or all(
                p.requires_grad for p in model.parameters()):
            raise ValueError(
                'FLoRAFSDPStrategy shards a frozen base and trains adapters, but this model has '
                + ('nothing trainable' if not any(p.requires_grad for p in model.parameters())
                   else 'no frozen parameter') + '; give strategy.adapter=dict(method=...) '
                '(tools/train.py --strategy fsdp copies the FLoRAHook entry) or a backbone that '
                'injects its own adapters; for full fine-tuning use mmengine\'s FSDPStrategy')
        guard_adapter_init(model)
        self.state_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        self.frozen_params = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        self.id_to_name = {id(p): n for n, p in model.named_parameters()}
        return model

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        """Shard the frozen base per block; keep what trains whole and equal on every rank."""
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
            CheckpointImpl, apply_activation_checkpointing, checkpoint_wrapper)
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        block_classes = self._block_classes(model)
        n_blocks = sum(isinstance(m, tuple(block_classes)) for m in model.modules())
        if self.frozen_dtype is not None:
            for param in model.parameters():
                if not param.requires_grad:
                    param.data = param.data.to(self.frozen_dtype)
        model.to(get_device())
        trained = [p for p in model.parameters() if p.requires_grad]
        if dist.is_initialized():
            for param in trained:  # every rank starts from rank 0's adapters, as DDP does
                dist.broadcast(param.data, src=0)
        wrapper_cfg = dict(type='MMFullyShardedDataParallel')
        wrapper_cfg.update(self.model_wrapper or {})
        wrapper_cfg['use_orig_params'] = True
        wrapped = MODEL_WRAPPERS.build(
            wrapper_cfg,
            default_args=dict(module=model, device_id=fsdp_device_id(), ignored_states=trained,
                              auto_wrap_policy=ModuleWrapPolicy(block_classes)
                              if block_classes else None))
        if self.checkpoint_blocks and block_classes:
            apply_activation_checkpointing(
                wrapped, check_fn=lambda m: isinstance(m, tuple(block_classes)),
                checkpoint_wrapper_fn=partial(checkpoint_wrapper,
                                              checkpoint_impl=CheckpointImpl.NO_REENTRANT))
        self.trained = {clean_state_name(name): tensor for name, tensor
                        in adapter_state_dict(wrapped.module).items()}
        print_log(f'FLoRAFSDPStrategy: {self.frozen_params:,} frozen parameters sharded (one '
                  f'unit per block, {n_blocks} blocks, and one for the rest); {len(trained)} '
                  f'trained parameters held whole on every process', logger='current')
        return wrapped

    def _block_classes(self, model: nn.Module) -> List[type]:
        found = {type(m).__name__: type(m) for m in model.modules()}
        unknown = [name for name in self.blocks if name not in found]
        if unknown:
            raise ValueError(f'strategy.blocks {unknown} name no module class of this model; '
                             f'classes here include {sorted(found)[:12]}')
        return [found[name] for name in self.blocks]

    # ------------------------------------------------------------------ optimizer
    def build_optim_wrapper(self, optim_wrapper, model: Optional[nn.Module] = None
                            ) -> BaseOptimWrapper:
        """The config's optimizer over what trains, its gradients averaged before each step."""
        with quiet_frozen_skips():
            optim_wrapper = super().build_optim_wrapper(optim_wrapper, model)
        if not isinstance(optim_wrapper, OptimWrapper):
            raise TypeError(f'FLoRAFSDPStrategy supports one optimizer wrapper, not '
                            f'{type(optim_wrapper).__name__}')
        drop_frozen_from_optimizer(optim_wrapper)
        params = [p for group in optim_wrapper.optimizer.param_groups for p in group['params']]
        step = optim_wrapper.step

        def step_with_averaged_gradients(wrapper: OptimWrapper, **kwargs) -> None:
            average_gradients(params)
            step(**kwargs)

        # A bound method, as mmengine's param schedulers wrap ``step`` through ``__self__``.
        optim_wrapper.step = types.MethodType(step_with_averaged_gradients, optim_wrapper)
        return optim_wrapper

    def optim_state_dict(self) -> dict:
        """The optimizer's own state: it holds the trained tensors only, equal on every rank."""
        return self.optim_wrapper.state_dict()

    def load_optim_state_dict(self, state_dict: dict) -> None:
        self.optim_wrapper.load_state_dict(state_dict)

    # ------------------------------------------------------------------ checkpoints
    def _is_full_state_dict(self) -> bool:
        return True  # one file written by rank 0, read by every rank

    def model_state_dict(self) -> dict:
        """The trained tensors (adapters, ``trainable`` matches and their buffers), on CPU."""
        return {name: tensor.detach().cpu() for name, tensor in self.trained.items()}

    def load_model_state_dict(self, state_dict: dict, *, strict: bool = False,
                              revise_keys: list = [(r'^module.', '')]) -> None:
        """Copy a checkpoint's trained tensors in; refuse one that lacks some or holds frozen
        base weights (they cannot go into the shards; the base comes from ``init_cfg``)."""
        state = {clean_state_name(key[len('module.'):] if key.startswith('module.') else key):
                 value for key, value in state_dict.items()}
        missing = sorted(set(self.trained) - set(state))
        frozen = sorted(k for k in state if k not in self.trained and k in self.state_shapes)
        unknown = sorted(k for k in state if k not in self.state_shapes)
        if missing or frozen or (strict and unknown):
            raise ValueError(
                f'FLoRAFSDPStrategy loads the trained tensors of a checkpoint written under it; '
                f'this one ' + '; '.join(part for part in (
                    f'lacks {len(missing)} of them ({missing[:3]})' if missing else '',
                    f'holds {len(frozen)} frozen base weights ({frozen[:3]}): load the base '
                    f'through the backbone\'s init_cfg=dict(type="Pretrained", ...) and leave '
                    f'load_from unset' if frozen else '',
                    f'holds {len(unknown)} unknown keys ({unknown[:3]})'
                    if strict and unknown else '') if part))
        with torch.no_grad():
            for name, tensor in self.trained.items():
                tensor.copy_(state[name])


def average_gradients(params: Iterable[Tensor]) -> None:
    """Average the gradients of replicated parameters over the processes (one all-reduce).

    A parameter without a gradient on this rank takes part with zeros, so every rank issues
    the same collective.
    """
    params = list(params)
    if not params or not dist.is_initialized() or dist.get_world_size() == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for param, grad in zip(params, grads):
        n = grad.numel()
        param.grad = flat[offset:offset + n].view_as(grad).to(grad.dtype)
        offset += n


__all__ = ['FLoRAFSDPStrategy', 'average_gradients']
