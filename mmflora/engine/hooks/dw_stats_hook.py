"""How large the learned updates are, and how much they amplify (paper Fig. 4 and 7).

For every adapter layer, every ``interval`` training iterations:

* ``||dW||_F``: the Frobenius norm of the scaled update ``s * dW`` (``delta_weight()``);
* the feature amplification factor ``||dW||_F / ||U^T W V||_F`` (Hu et al., LoRA, Sec. 7):
  ``U`` and ``V`` are the top-``r`` left and right singular vectors of ``dW`` and ``W`` the
  frozen base weight. A large factor means the update amplifies directions the pretrained
  weight barely uses.

Matricisation: a conv weight (out, in, k_1, ..., k_n) is unfolded along mode 0, the output
channels, into an (out, in * k_1 * ... * k_n) matrix; a Linear weight is already (out, in). For
a dense-mode update on a grouped or depthwise conv, ``W`` is the grouped weight placed on the
block diagonal of the dense (out, in, *k) tensor the update lives in. ``r`` defaults to the
adapter's rank of the output mode (FLoRA's r_0, LoRA's r), which bounds the rank of the
unfolded update.

The singular vectors come from a randomised range finder with a fixed seed (it does not
touch the global random state, so logging does not change training): exact when ``dW`` has
rank at most ``r``, as FLoRA and LoRA updates do, and a close approximation otherwise.

Output: per-layer and mean values go to the visualizer at the exact step
(``dw/norm/<layer>``, ``dw/amp/<layer>``, ``dw/norm_mean``, ``dw/amp_mean``; the JSON scalar log
``<work_dir>/<timestamp>/vis_data/scalars.json`` and TensorBoard when configured), and the means
also to the message hub (``train/dw_norm_mean``, ``train/dw_amp_mean``) so that the text log
shows them at the logger's interval. ``tools/plot_dw_stats.py`` draws them.
"""
import math
import re
import time
from typing import Dict, Optional, Sequence, Tuple

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from torch import Tensor

from mmflora.adapters import AdapterLayer, iter_adapter_layers
from mmflora.apis import unwrap_model
from ..runner_access import sharded_state_shapes

#: Extra columns of the random sketch beyond r (oversampling), and the power iterations used
#: when the update's rank is not bounded by r (DoRA).
_OVERSAMPLE = 8
_POWER_ITERS = 2


def matricise(weight: Tensor) -> Tensor:
    """The mode-0 unfolding of a weight: (out, in, *k) -> (out, in * prod(k))."""
    return weight.reshape(weight.shape[0], -1)


def top_singular_vectors(matrix: Tensor, rank: int, power_iters: int = _POWER_ITERS,
                         seed: int = 0) -> Tuple[Tensor, Tensor]:
    """The top-``rank`` left and right singular vectors of ``matrix`` (m, n).

    Randomised range finder (Halko et al. 2011, Alg. 4.4) with a private generator: exact for
    a matrix of rank at most ``rank`` (then ``power_iters=0`` suffices), close otherwise.

    Returns:
        tuple[Tensor, Tensor]: ``U`` (m, rank) and ``V`` (n, rank), orthonormal columns.
    """
    m, n = matrix.shape
    rank = min(rank, m, n)
    width = min(rank + _OVERSAMPLE, m, n)
    generator = torch.Generator(device='cpu').manual_seed(seed)
    sketch = torch.randn(n, width, generator=generator, dtype=matrix.dtype).to(matrix.device)
    basis, _ = torch.linalg.qr(matrix @ sketch)
    for _ in range(power_iters):
        basis, _ = torch.linalg.qr(matrix.t() @ basis)
        basis, _ = torch.linalg.qr(matrix @ basis)
    left, _, right_t = torch.linalg.svd(basis.t() @ matrix, full_matrices=False)
    return (basis @ left)[:, :rank], right_t[:rank].t()


def amplification_factor(delta: Tensor, base: Tensor, rank: int,
                         rank_bounded: bool = False) -> float:
    """``||dW||_F / ||U^T W V||_F`` on the mode-0 unfoldings; NaN when dW or the projection is 0.

    Args:
        delta (Tensor): The update ``dW``.
        base (Tensor): The base weight ``W`` in the same shape.
        rank (int): ``r``, the number of singular vectors.
        rank_bounded (bool): ``dW`` is known to have rank at most ``rank`` (FLoRA, LoRA),
            which makes the power iterations unnecessary.
    """
    delta, base = matricise(delta).float(), matricise(base).float()
    norm = torch.linalg.matrix_norm(delta).item()
    if norm == 0.0:
        return math.nan
    left, right = top_singular_vectors(delta, rank, 0 if rank_bounded else _POWER_ITERS)
    projected = torch.linalg.matrix_norm(left.t() @ base @ right).item()
    return norm / projected if projected > 0 else math.nan


def base_weight_for_update(layer: AdapterLayer, delta: Tensor) -> Tensor:
    """The frozen base weight ``W`` of ``layer`` in the shape of its update ``delta``."""
    weight = layer.base_weight()
    if weight.shape != delta.shape:
        raise ValueError(f'{layer.name}: base weight {tuple(weight.shape)} and update '
                         f'{tuple(delta.shape)} differ in shape')
    return weight


@HOOKS.register_module()
class DeltaWeightStatsHook(Hook):
    """Log ``||dW||_F`` and the feature amplification factor of every adapter layer.

    Args:
        interval (int): Every how many training iterations. Use a multiple of the
            ``LoggerHook`` interval for the means in the text log to be fresh. Defaults to 100.
        layers (list[str], optional): Regexes of layer names to include. Defaults to every
            adapter layer.
        top_k (int, optional): Log per-layer values only for the ``top_k`` layers with the
            largest ``||dW||_F`` at that step (the means still cover every layer). Defaults
            to None (every layer).
        per_layer (bool): Log per-layer values at all. Defaults to True.
        amplification (bool): Compute the amplification factor (one small SVD per layer).
            Defaults to True.
        rank (int, optional): ``r`` of the top-r singular vectors. Defaults to each layer's
            rank of the output mode.
    """

    # Before IterTimerHook (NORMAL), so the time spent here counts in the iteration's `time`
    # and not in the next iteration's `data_time`; before LoggerHook (BELOW_NORMAL) too.
    priority = 'ABOVE_NORMAL'

    def __init__(self,
                 interval: int = 100,
                 layers: Optional[Sequence[str]] = None,
                 top_k: Optional[int] = None,
                 per_layer: bool = True,
                 amplification: bool = True,
                 rank: Optional[int] = None) -> None:
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f'DeltaWeightStatsHook: interval must be a positive int, '
                             f'got {interval!r}')
        if top_k is not None and top_k < 1:
            raise ValueError(f'DeltaWeightStatsHook: top_k must be None or >= 1, got {top_k}')
        if rank is not None and rank < 1:
            raise ValueError(f'DeltaWeightStatsHook: rank must be None or >= 1, got {rank}')
        self.interval = interval
        self.layers = [layers] if isinstance(layers, str) else list(layers or [])
        self.top_k = top_k
        self.per_layer = per_layer
        self.amplification = amplification
        self.rank = rank
        self._warned = False
        self._off = False

    def before_train(self, runner) -> None:
        """Turn off, saying why, where FSDP shards the base weights the statistics need."""
        if sharded_state_shapes(runner):
            self._off = True
            runner.logger.warning(f'DeltaWeightStatsHook is off under '
                                  f'{type(runner.strategy).__name__}: its statistics need the '
                                  f'frozen base weights, which FSDP shards across the processes; '
                                  f'train under DDP or on one process to log them')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Compute and log the statistics every ``interval`` iterations (main process)."""
        if self._off or not self.every_n_train_iters(runner, self.interval) \
                or not is_main_process():
            return
        started = time.perf_counter()
        stats = self.compute(unwrap_model(runner.model))
        if not stats:  # frozen, BitFit and full fine-tuning have no update to measure
            if not self._warned:
                runner.logger.info('DeltaWeightStatsHook: the model has no adapter layer '
                                   'selected; nothing to log')
                self._warned = True
            return
        norms = {name: s['norm'] for name, s in stats.items()}
        # A zero update (or a zero projection) has no amplification factor: left out.
        amps = {name: s['amp'] for name, s in stats.items()
                if not math.isnan(s.get('amp', math.nan))}
        scalars = {'dw/norm_mean': sum(norms.values()) / len(norms)}
        if amps:
            scalars['dw/amp_mean'] = sum(amps.values()) / len(amps)
        if self.per_layer:
            shown = set(sorted(norms, key=norms.get, reverse=True)[:self.top_k])
            for name in (n for n in norms if n in shown):  # in model order
                scalars[f'dw/norm/{name}'] = norms[name]
                if name in amps:
                    scalars[f'dw/amp/{name}'] = amps[name]
        runner.visualizer.add_scalars(scalars, step=runner.iter + 1)
        for key in ('norm_mean', 'amp_mean'):
            if f'dw/{key}' in scalars:
                runner.message_hub.update_scalar(f'train/dw_{key}', scalars[f'dw/{key}'],
                                                 resumed=False)
        # Its own cost, in the text log beside time and data_time (seconds for ConvNeXt-V2-L).
        runner.message_hub.update_scalar('train/dw_stats_time', time.perf_counter() - started,
                                         resumed=False)

    @torch.no_grad()
    def compute(self, model) -> Dict[str, Dict[str, float]]:
        """{layer name: {'norm': ||dW||_F, 'amp': factor}} for the selected adapter layers."""
        stats: Dict[str, Dict[str, float]] = {}
        for name, layer in iter_adapter_layers(model):
            if self.layers and not any(re.search(p, name) for p in self.layers):
                continue
            delta = layer.delta_weight()
            entry = {'norm': torch.linalg.vector_norm(delta.float()).item()}
            if self.amplification:
                bound = layer.describe()['rank_bound']
                rank = self.rank or bound or int(layer.ranks[0])
                entry['amp'] = amplification_factor(
                    delta, base_weight_for_update(layer, delta), rank,
                    rank_bounded=bound is not None and rank >= bound)
            stats[name] = entry
        return stats
