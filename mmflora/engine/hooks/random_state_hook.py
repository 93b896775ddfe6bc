"""Keep the random generators' state in checkpoints, so a resumed run with dropout is exact.

mmengine's checkpoints hold no random state: after ``--resume`` the dropout masks (the heads'
dropout, an adapter's ``dropout``) differ from those of the uninterrupted run, and so does
every tensor trained afterwards. This hook saves the state of torch's CPU and CUDA generators,
NumPy's and Python's — for every rank — in ``checkpoint['meta']['random_state']``.

Where a checkpoint is about to be written, every rank takes its state (mmengine writes the file
on rank 0 only, so the states are gathered first), and the state is put back at the start of
the next step (the next epoch for epoch-based loops), in the resumed run *and* in the run that
saved it. Between a checkpoint and the next step both runs draw random numbers differently
(the uninterrupted one may validate; a resumed iteration-based loop replays the dataloader to
its position; a new dataloader iterator draws a seed), and rewinding both to the saved state
at the same point makes what follows identical. The measured forward-path decisions of the adapter
layers (:mod:`mmflora.adapters.paths`) travel too, so the resumed run computes each layer the
way the interrupted one did. Exact when the data pipeline draws no random numbers
in the main process (dataloader workers, ``num_workers >= 1``, are seeded by mmengine from the
run's seed and replay the same way; random augmentations with ``num_workers=0`` do not).
"""
import random
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from mmflora.adapters.paths import load_path_decisions, path_decisions
from ..runner_access import checkpoint_due, is_resuming, trains_by_epoch

#: Key of the saved generator states (one entry per rank) in ``checkpoint['meta']``.
RANDOM_STATE_KEY = 'random_state'
#: Key of the measured path decisions ((layer signature, path) pairs) in ``checkpoint['meta']``.
PATH_DECISIONS_KEY = 'path_decisions'


def capture_random_state() -> Dict:
    """The state of this process's generators, as tensors, ints and lists (no numpy types,
    so it loads under ``torch.load(weights_only=True)``)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = dict(torch=torch.get_rng_state(),
                 numpy=dict(kind=kind, keys=torch.from_numpy(keys.astype(np.int64)),
                            position=int(position), has_gauss=int(has_gauss),
                            cached_gaussian=float(cached)),
                 python=dict(version=version, internal=list(internal), gauss_next=gauss_next))
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: Dict) -> None:
    """Put this process's generators back to ``state`` (see :func:`capture_random_state`)."""
    torch.set_rng_state(state['torch'])
    saved = state['numpy']
    np.random.set_state((saved['kind'], saved['keys'].numpy().astype(np.uint32),
                         saved['position'], saved['has_gauss'], saved['cached_gaussian']))
    python = state['python']
    random.setstate((python['version'], tuple(python['internal']), python['gauss_next']))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save the random generators' state with every checkpoint and restore it on resume.

    ``tools/train.py`` adds this hook to every run; with other launchers put
    ``dict(type='RandomStateHook')`` in ``custom_hooks`` (the shipped configs do).
    """

    # Before CheckpointHook (VERY_LOW) in after_train_iter/epoch, where every rank takes its
    # state; the rewind in before_train_iter/epoch then comes after LoggerHook and the others.
    priority = 'LOW'

    def __init__(self) -> None:
        self._rewind_to: Optional[Dict] = None
        self._captured: Optional[List[Dict]] = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Take every rank's state when CheckpointHook is about to save after this step."""
        if checkpoint_due(runner, 'iter'):
            self._capture()

    def after_train_epoch(self, runner) -> None:
        """Take every rank's state when CheckpointHook is about to save after this epoch."""
        if checkpoint_due(runner, 'epoch'):
            self._capture()

    def _capture(self) -> None:
        # mmengine saves checkpoints on rank 0 only (Runner.save_checkpoint is master_only),
        # so the other ranks' states are gathered here, where every rank passes.
        state = capture_random_state()
        self._captured = all_gather_object(state) if get_world_size() > 1 else [state]
        self._rewind_to = state

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store every rank's generator state (taken just before) in the checkpoint."""
        states, self._captured = self._captured, None
        if states is None:  # saved where no rank could gather (a best checkpoint after val)
            states = [capture_random_state()] if get_world_size() == 1 else None
        meta = checkpoint.setdefault('meta', {})
        if states is not None:
            meta[RANDOM_STATE_KEY] = states
        meta[PATH_DECISIONS_KEY] = list(path_decisions().items())

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """On resume, keep this rank's saved state for the first iteration."""
        meta = checkpoint.get('meta') or {}
        states = meta.get(RANDOM_STATE_KEY)
        if not is_resuming(runner):
            return
        load_path_decisions(dict(meta.get(PATH_DECISIONS_KEY) or []))
        if not states:
            runner.logger.warning('RandomStateHook: the resumed checkpoint holds no random '
                                  'state (saved without this hook); dropout and other random '
                                  'draws will differ from the interrupted run')
            return
        rank = get_rank()
        if len(states) != get_world_size():
            runner.logger.warning(f'RandomStateHook: the checkpoint holds the random state of '
                                  f'{len(states)} processes and this run has '
                                  f'{get_world_size()}; rank {rank} takes the state of rank '
                                  f'{rank % len(states)}, so random draws are not those of the '
                                  f'interrupted run')
        self._rewind_to = states[rank % len(states)]

    def before_train_epoch(self, runner) -> None:
        """Epoch-based loops: rewind before the epoch's dataloader draws its seed."""
        if trains_by_epoch(runner):
            self._rewind()

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Iteration-based loops: rewind before the first step after the checkpoint (after a
        resumed loop has replayed its dataloader)."""
        if not trains_by_epoch(runner):
            self._rewind()

    def _rewind(self) -> None:
        if self._rewind_to is not None:
            restore_random_state(self._rewind_to)
            self._rewind_to = None
