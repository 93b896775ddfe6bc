"""Adapter-only files beside mmengine's checkpoints, and checkpoints without the frozen base.

With ``CheckpointHook`` saving ``work_dir/iter_8000.pth``, this hook writes
``work_dir/iter_8000.adapter.safetensors`` (the trained tensors only, in the format of
:func:`mmflora.adapters.save_adapters`, tens of MB for ConvNeXt-V2-L instead of ~800 MB) and
points ``work_dir/last_adapter_checkpoint`` at it. Best checkpoints (``save_best``) get theirs
too, and when ``CheckpointHook`` deletes an old checkpoint (``max_keep_ckpts``) its adapter
file goes with it.

mmengine 0.10.7 has no ``after_save_checkpoint`` and ``before_save_checkpoint`` is not told the
file name, so the hook runs after ``CheckpointHook`` (priority LOWEST) in the same
``after_train_iter``/``after_train_epoch``/``after_val_epoch`` and notices a new checkpoint by
the path ``CheckpointHook`` publishes in the message hub (``last_ckpt``, ``best_ckpt*``).
No parameter changes between the two, and the adapter file is written from the state dict the
checkpoint was given (``before_save_checkpoint``, after every other hook), so file and
checkpoint hold the same tensors: with ``EMAHook`` both hold the averaged weights.

``save_frozen=False`` removes the frozen base weights from the checkpoints themselves
(``before_save_checkpoint``). Such a slim checkpoint still resumes and tests: when it is loaded
(``after_load_checkpoint``, before mmengine copies it into the model) the frozen weights are
taken from the model's pretrained base (``init_cfg=dict(type='Pretrained', ...)``, run first in
val/test, where mmengine does not initialise the model), so the load has no missing keys; a
missing trained tensor (an adapter key) is an error. With ``EMAHook`` the averaged copy of the
model is slimmed and completed the same way.
"""
import os
import os.path as osp
from typing import Dict, List, Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from torch import Tensor, nn

from mmflora.adapters import adapter_file_problem, save_adapters
from mmflora.adapters.state import write_text_atomically
from mmflora.apis import check_base_source, unwrap_model
from ..runner_access import is_resuming, sharded_state_shapes
from .checkpoint_state import (complete_slim_checkpoint, drop_frozen_parameters,
                               restore_averaged_base)

ADAPTER_SUFFIX = '.adapter.safetensors'
#: Written in the work dir, like mmengine's ``last_checkpoint``.
LAST_ADAPTER_FILE = 'last_adapter_checkpoint'


def adapter_path_for(checkpoint_path: str) -> str:
    """The adapter file that goes with an mmengine checkpoint (``x.pth`` -> ``x.adapter...``)."""
    root, ext = osp.splitext(checkpoint_path)
    return (root if ext in ('.pth', '.pt', '.ckpt') else checkpoint_path) + ADAPTER_SUFFIX


@HOOKS.register_module()
class AdapterCheckpointHook(Hook):
    """Write an adapter-only file with every checkpoint; optionally keep checkpoints slim.

    Args:
        save_adapter (bool): Write ``<checkpoint>.adapter.safetensors`` beside each
            checkpoint. Defaults to True.
        save_frozen (bool): Keep the frozen base weights in mmengine checkpoints. With False
            they hold only the trained tensors, buffers, optimizer and scheduler state, and
            rely on the ``Pretrained`` init config to restore the base when loaded, so every
            frozen parameter must be in that pretrained file (a frozen layer left at its random
            initialisation would not come back). Defaults to True.
        base_from (str): Where the frozen base comes from when a slim checkpoint is loaded:
            'init_cfg' (a ``Pretrained`` init config; an error if the model has none) or
            'model' (the model loads it itself when built). Defaults to 'init_cfg'.
        remove_stale (bool): Delete an adapter file once ``CheckpointHook`` has deleted its
            checkpoint (``max_keep_ckpts``, superseded best checkpoints). Defaults to True.

    Example:
        >>> custom_hooks = [dict(type='FLoRAHook', r=38, targets=['backbone.']),
        ...                 dict(type='AdapterCheckpointHook', save_frozen=False)]
    """

    priority = 'LOWEST'

    def __init__(self,
                 save_adapter: bool = True,
                 save_frozen: bool = True,
                 base_from: str = 'init_cfg',
                 remove_stale: bool = True) -> None:
        check_base_source(base_from, 'AdapterCheckpointHook')
        self.save_adapter = save_adapter
        self.save_frozen = save_frozen
        self.base_from = base_from
        self.remove_stale = remove_stale
        self._seen: Dict[str, str] = {}
        self._written: List[str] = []
        # The state dict of the checkpoint saved last (CPU tensors, freed once written).
        self._checkpoint_state: Optional[Dict[str, Tensor]] = None
        # (checkpoint path, state dict, progress) of a checkpoint training resumes from.
        self._resumed: Optional[tuple] = None

    # ------------------------------------------------------------------ saving
    def before_train(self, runner) -> None:
        """Remember the checkpoints that exist already (a resumed run's last one)."""
        self._seen = self._published_checkpoints(runner)
        resumed, self._resumed = self._resumed, None
        if resumed is not None and self.save_adapter and is_main_process():
            self._repair_adapter_file(runner, *resumed)

    def _repair_adapter_file(self, runner, checkpoint_path: str, state: Dict[str, Tensor],
                             progress: dict) -> None:
        """Write the resumed checkpoint's adapter file again if a kill left it torn."""
        target = adapter_path_for(checkpoint_path)
        if '://' in checkpoint_path or not osp.exists(checkpoint_path):
            return
        problem = adapter_file_problem(target)
        if problem is None:
            return
        runner.logger.warning(f'AdapterCheckpointHook: {target} is torn or missing ({problem}); '
                              f'it is written again from the resumed checkpoint '
                              f'{osp.basename(checkpoint_path)}')
        self._write(runner, unwrap_model(runner.model), checkpoint_path, progress, state)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep the checkpoint's weights for its adapter file; drop the frozen ones if asked.

        Running after every other hook, this sees the state dict as it is written: with
        ``EMAHook`` that holds the averaged weights, and so will the adapter file.
        """
        self._checkpoint_state = checkpoint.get('state_dict')
        if self.save_frozen or sharded_state_shapes(runner):
            return  # (FLoRAFSDPStrategy's checkpoints hold no frozen weights to drop)
        removed = drop_frozen_parameters(unwrap_model(runner.model), checkpoint)
        runner.logger.debug(f'AdapterCheckpointHook: {removed:,} frozen weights left out of '
                            f'the checkpoint')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Write the adapter file of a checkpoint ``CheckpointHook`` has just saved."""
        self._write_new(runner, epoch=runner.epoch, iter=runner.iter + 1)

    def after_train_epoch(self, runner) -> None:
        """Write the adapter file of a checkpoint ``CheckpointHook`` has just saved."""
        self._write_new(runner, epoch=runner.epoch + 1, iter=runner.iter)

    def after_val_epoch(self, runner, metrics: Optional[Dict] = None) -> None:
        """Write the adapter file of a new best checkpoint."""
        self._write_new(runner, epoch=runner.epoch, iter=runner.iter)

    @staticmethod
    def _published_checkpoints(runner) -> Dict[str, str]:
        """{message-hub key: checkpoint path} for the checkpoints CheckpointHook announced."""
        info = runner.message_hub.runtime_info
        return {key: value for key, value in info.items()
                if (key == 'last_ckpt' or key.startswith('best_ckpt'))
                and isinstance(value, str)}

    def _write_new(self, runner, **progress: int) -> None:
        """Write adapter files for newly announced checkpoints.

        Args:
            runner (Runner): The runner.
            **progress: ``epoch`` and ``iter`` completed when the checkpoint was taken.
        """
        published = self._published_checkpoints(runner)
        new = sorted({path for key, path in published.items() if self._seen.get(key) != path})
        self._seen = published
        state, self._checkpoint_state = self._checkpoint_state, None
        if not self.save_adapter or not is_main_process():
            return
        model = unwrap_model(runner.model)
        for path in new:
            if '://' in path:
                runner.logger.warning(f'AdapterCheckpointHook writes local files only; no '
                                      f'adapter file for {path}')
                continue
            self._write(runner, model, path, progress, state)
        if new and self.remove_stale:
            self._remove_stale(runner)

    def _write(self, runner, model: nn.Module, checkpoint_path: str, progress: dict,
               state: Optional[Dict[str, Tensor]]) -> None:
        target = adapter_path_for(checkpoint_path)
        metadata = dict(progress, checkpoint=osp.basename(checkpoint_path))
        # The checkpoint's own tensors when this hook saw it being saved (EMA-averaged under
        # EMAHook); the model's otherwise. Both are the same weights without EMA.
        try:
            nbytes = save_adapters(model, target, extra_metadata=metadata, values=state)
        except KeyError as error:  # a checkpoint written without some trained tensor
            runner.logger.warning(f'AdapterCheckpointHook: {error}; {target} holds the '
                                  f"model's current tensors instead")
            nbytes = save_adapters(model, target, extra_metadata=metadata)
        self._written.append(target)
        if osp.basename(checkpoint_path).startswith('best_'):
            return
        write_text_atomically(osp.join(runner.work_dir, LAST_ADAPTER_FILE), target)
        runner.logger.info(f'AdapterCheckpointHook: adapters ({nbytes / 2**20:.2f} MiB) saved to '
                           f'{target}')

    def _remove_stale(self, runner) -> None:
        kept = []
        for path in self._written:
            checkpoint = path[:-len(ADAPTER_SUFFIX)]
            if any(osp.exists(checkpoint + ext) for ext in ('.pth', '.pt', '.ckpt', '')):
                kept.append(path)
            elif osp.exists(path):
                os.remove(path)
                runner.logger.info(f'AdapterCheckpointHook: removed {path} with its checkpoint')
        self._written = kept

    # ------------------------------------------------------------------ loading
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Complete a slim checkpoint with the frozen weights of the pretrained base.

        The averaged model of an ``EMAHook`` (which has loaded its part of the checkpoint
        already, being of higher priority) gets the same base weights.
        """
        model = unwrap_model(runner.model)
        filled = complete_slim_checkpoint(model, checkpoint,
                                          resuming=is_resuming(runner),
                                          base_from=self.base_from)
        if is_resuming(runner):
            self._remember_resumed(checkpoint)
        if not filled:
            return
        for hook in runner.hooks:
            averaged = getattr(hook, 'ema_model', None)
            if isinstance(averaged, nn.Module) and hasattr(averaged, 'module'):
                restore_averaged_base(model, averaged.module)

    def _remember_resumed(self, checkpoint: dict) -> None:
        """Keep what ``before_train`` needs to check the resumed checkpoint's adapter file.

        mmengine publishes a checkpoint's path in the message hub before saving it, so the
        checkpoint's own message hub names it.
        """
        info = (checkpoint.get('message_hub') or {}).get('runtime_info') or {}
        path = info.get('last_ckpt')
        meta = checkpoint.get('meta') or {}
        if isinstance(path, str):
            self._resumed = (path, checkpoint.get('state_dict'),
                             dict(epoch=meta.get('epoch', 0), iter=meta.get('iter', 0)))
