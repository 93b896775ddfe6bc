"""Reading checkpoint files and finding a backbone's tensors in them."""
import argparse
import json
import os.path as osp
from collections.abc import Mapping
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

# Containers a checkpoint file may wrap its state dict in, checked in order.
_CONTAINER_KEYS = ('state_dict', 'model', 'module', 'model_ema')

StateDict = Dict[str, Tensor]


def load_checkpoint_file(filename: str, map_location: str = 'cpu',
                         owner: str = 'ConvNeXtV2') -> dict:
    """Read a checkpoint file into a dict without executing pickled code.

    Local ``.safetensors`` files are read with safetensors, a Hugging Face shard index
    (``*.safetensors.index.json``) as all the shards it lists; other local files
    with ``torch.load(weights_only=True)``, which here also accepts the
    ``argparse.Namespace`` of training arguments that facebookresearch
    training scripts store next to the weights. Remote and scheme-prefixed paths
    (``http://``, ``open-mmlab://``, ...) go through mmengine's
    ``CheckpointLoader``.

    Args:
        filename: Path or URL of the checkpoint.
        map_location: Device to map tensors to. Defaults to ``'cpu'``.
        owner: The backbone that reads the file, for messages. Defaults to
            ``'ConvNeXtV2'``.

    Returns:
        The loaded object (a state dict or a dict that contains one).

    Raises:
        FileNotFoundError: If a local path does not exist.
        RuntimeError: If the file holds pickled Python objects that
            ``weights_only=True`` refuses.
    """
    if '://' in filename:
        from mmengine.runner.checkpoint import CheckpointLoader
        return CheckpointLoader.load_checkpoint(
            filename, map_location=map_location)
    path = osp.expanduser(filename)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{owner} pretrained checkpoint {filename!r} does not exist; '
            'check init_cfg.checkpoint.')
    if path.endswith('.safetensors.index.json'):
        return _load_safetensors_shards(path, map_location, owner)
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        return load_file(path, device=str(map_location))
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(
                path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle refusal comes as several error types
        raise RuntimeError(
            f'{owner} could not read {filename!r} with '
            f'torch.load(weights_only=True): {err}. If the file is trusted, '
            're-save only its tensors, e.g. torch.save(state_dict, path), '
            'and point init_cfg.checkpoint at the new file.') from err


def _load_safetensors_shards(index_path: str, map_location: str, owner: str) -> StateDict:
    """Every tensor of the shards a Hugging Face ``*.safetensors.index.json`` lists."""
    from safetensors.torch import load_file
    with open(index_path) as f:
        weight_map = json.load(f).get('weight_map')
    if not isinstance(weight_map, Mapping) or not weight_map:
        raise ValueError(
            f'{owner}: {index_path!r} has no "weight_map"; point init_cfg.checkpoint at a '
            'Hugging Face shard index (model.safetensors.index.json) or at one weight file.')
    tensors: StateDict = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = osp.join(osp.dirname(index_path), shard)
        if not osp.isfile(shard_path):
            raise FileNotFoundError(
                f'{owner}: shard {shard!r} listed in {index_path!r} does not exist; '
                'download every shard the index names into its folder.')
        tensors.update(load_file(shard_path, device=str(map_location)))
    return tensors


def unwrap_state_dict(checkpoint: Mapping,
                      prefix: Optional[str] = None,
                      owner: str = 'ConvNeXtV2'
                      ) -> Tuple[StateDict, List[str]]:
    """Find the backbone's tensors inside a loaded checkpoint.

    Unwraps ``state_dict`` / ``model`` / ``module`` containers and a DDP
    ``module.`` key prefix. With ``prefix`` only keys starting with it are
    kept (prefix removed). Without it, a checkpoint that holds
    ``backbone.``-prefixed keys (an mmpretrain classifier, an mmdet detector
    or an mmseg segmentor) contributes only those.

    Args:
        checkpoint: The object :func:`load_checkpoint_file` returned.
        prefix: Key prefix of the backbone in the checkpoint, e.g.
            ``'backbone.'``. Defaults to None (automatic).
        owner: The backbone that reads the checkpoint, for messages. Defaults to
            ``'ConvNeXtV2'``.

    Returns:
        The tensors, and the keys that were left out because they belong to
        other parts of the checkpointed model.

    Raises:
        ValueError: If ``prefix`` matches no key or no tensors are found.
    """
    state = checkpoint
    while isinstance(state, Mapping):
        inner = next((state[k] for k in _CONTAINER_KEYS
                      if isinstance(state.get(k), Mapping)), None)
        if inner is None:
            break
        state = inner
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise ValueError(
            f'{owner} found no tensors in the checkpoint (top-level keys: '
            f'{list(checkpoint)[:8]}); pass a state dict or a dict holding '
            'one under "state_dict" or "model".')
    if all(k.startswith('module.') for k in tensors):
        tensors = {k[len('module.'):]: v for k, v in tensors.items()}

    if prefix is None and any(k.startswith('backbone.') for k in tensors):
        prefix = 'backbone.'
    elif prefix is not None and not prefix.endswith('.'):
        prefix += '.'
    if prefix is None:
        return tensors, []
    kept = {k[len(prefix):]: v for k, v in tensors.items()
            if k.startswith(prefix)}
    if not kept:
        raise ValueError(
            f'{owner} init_cfg prefix {prefix!r} matches none of the '
            f'{len(tensors)} checkpoint keys (first: {sorted(tensors)[:4]}); '
            'fix or drop init_cfg.prefix.')
    return kept, [k for k in tensors if not k.startswith(prefix)]
