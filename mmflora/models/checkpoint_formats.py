"""ConvNeXt-V2 checkpoint formats and their conversion to the backbone's names.

:class:`~mmflora.models.ConvNeXtV2` keeps timm's module names for its trunk
(``stem.0``, ``stages.1.downsample.1``, ``stages.0.blocks.0.conv_dw``,
``...mlp.fc1``, ``...mlp.grn``, ``...mlp.fc2``) and names its per-output
LayerNorms ``norm0`` ... ``norm3`` as mmpretrain does. Four published formats
are converted to those names:

``timm``
    ``stem.0.weight``, ``stages.0.blocks.0.conv_dw.weight``,
    ``mlp.grn.weight/bias`` of shape (C,). atto ... nano are published with
    1x1-conv pointwise layers (``conv_mlp=True``): their (out, in, 1, 1)
    weights are reshaped to the backbone's nn.Linear (out, in). The
    classifier's pre-logits norm ``head.norm`` becomes ``norm3``.
``official``
    facebookresearch/ConvNeXt-V2 fine-tuned weights: ``downsample_layers.0``
    is the stem, ``downsample_layers.i`` (i >= 1) the downsampling layer of
    stage i, ``stages.i.j.dwconv``, ``pwconv1``, ``pwconv2``, ``grn.gamma`` /
    ``grn.beta`` of shape (1, 1, 1, C). The final ``norm`` (applied after
    global pooling for classification) becomes ``norm3``, as mmpretrain's own
    conversion does; ``head`` is dropped.
``fcmae``
    facebookresearch/ConvNeXt-V2 FCMAE pre-trained weights: the encoder
    lives under ``encoder.`` with MinkowskiEngine layouts. Sparse
    convolutions store ``kernel`` as (k*k, in, out) (depthwise: (k*k, C)) and
    ``bias`` as (1, out); sparse LayerNorm and Linear wrap the dense module
    as ``.ln`` / ``.linear``; GRN ``gamma``/``beta`` are (1, C). Kernels are
    rearranged exactly as the official fine-tuning script
    (``remap_checkpoint_keys``) does: permute to (out, in, k*k), reshape to
    (out, in, k, k), then swap the two spatial axes, because MinkowskiEngine
    enumerates kernel offsets with the first spatial axis fastest. The
    decoder, ``proj``, ``pred`` and ``mask_token`` are dropped. FCMAE has no
    final norm, so every output norm keeps its initial value.
``mmpretrain``
    ``backbone.``-prefixed, ``downsample_layers`` like the official format,
    ``stages.i.j.depthwise_conv``, ``pointwise_conv1/2``, ``grn.gamma/beta``
    of shape (C,), and output norms ``norm{i}`` with the backbone's names.

Checkpoints written by an OpenMMLab model whose backbone is ours (keys
``backbone.stem.0.weight`` ...) are the ``timm`` format after unwrapping.

Every converter has an inverse (:func:`export_state_dict`) so that tests can
write a checkpoint in each format from a reference model, and users can hand
a fine-tuned (merged) backbone to tools that expect one of these layouts.
"""
import argparse
import math
import os.path as osp
import re
from collections.abc import Mapping
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor

FORMATS = ('timm', 'official', 'fcmae', 'mmpretrain')

# Containers a checkpoint file may wrap its state dict in, checked in order.
_CONTAINER_KEYS = ('state_dict', 'model', 'module', 'model_ema')

StateDict = Dict[str, Tensor]


# --------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------
def load_checkpoint_file(filename: str, map_location: str = 'cpu') -> dict:
    """Read a checkpoint file into a dict without executing pickled code.

    Local ``.safetensors`` files are read with safetensors; other local files
    with ``torch.load(weights_only=True)``, which here also accepts the
    ``argparse.Namespace`` of training arguments that facebookresearch
    training scripts store next to the weights. Remote and scheme-prefixed paths
    (``http://``, ``open-mmlab://``, ...) go through mmengine's
    ``CheckpointLoader``.

    Args:
        filename: Path or URL of the checkpoint.
        map_location: Device to map tensors to. Defaults to ``'cpu'``.

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
            f'ConvNeXtV2 pretrained checkpoint {filename!r} does not exist; '
            'check init_cfg.checkpoint.')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        return load_file(path, device=str(map_location))
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(
                path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle refusal comes as several error types
        raise RuntimeError(
            f'ConvNeXtV2 could not read {filename!r} with '
            f'torch.load(weights_only=True): {err}. If the file is trusted, '
            're-save only its tensors, e.g. torch.save(state_dict, path), '
            'and point init_cfg.checkpoint at the new file.') from err


def unwrap_state_dict(checkpoint: Mapping,
                      prefix: Optional[str] = None
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
            'ConvNeXtV2 found no tensors in the checkpoint (top-level keys: '
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
            f'ConvNeXtV2 init_cfg prefix {prefix!r} matches none of the '
            f'{len(tensors)} checkpoint keys (first: {sorted(tensors)[:4]}); '
            'fix or drop init_cfg.prefix.')
    return kept, [k for k in tensors if not k.startswith(prefix)]


def detect_format(state_dict: Mapping) -> str:
    """Name the format of a ConvNeXt-V2 state dict (one of ``FORMATS``).

    Args:
        state_dict: Unwrapped tensors, see :func:`unwrap_state_dict`.

    Returns:
        ``'timm'``, ``'official'``, ``'fcmae'`` or ``'mmpretrain'``.

    Raises:
        ValueError: If the keys follow none of the known layouts.
    """
    keys = list(state_dict)
    if any(k.startswith('encoder.downsample_layers.') for k in keys) or any(
            k.endswith('.kernel') for k in keys):
        return 'fcmae'
    if any('downsample_layers.' in k for k in keys):
        if any('depthwise_conv' in k or 'pointwise_conv' in k for k in keys):
            return 'mmpretrain'
        return 'official'
    if any(k.startswith('stem.') or re.match(r'stages\.\d+\.blocks\.', k)
           for k in keys):
        return 'timm'
    raise ValueError(
        'ConvNeXtV2 cannot tell the checkpoint format from its keys '
        f'(first: {keys[:6]}); supported formats are {FORMATS} (timm, '
        'facebookresearch fine-tuned and FCMAE, mmpretrain). If the '
        'backbone sits under another key prefix, set init_cfg.prefix.')


# --------------------------------------------------------------------------
# Import: any format -> backbone names
# --------------------------------------------------------------------------
_FB_LAYOUT = (  # official / mmpretrain / fcmae stage layout -> timm layout
    (r'^downsample_layers\.0\.', 'stem.'),
    (r'^downsample_layers\.(\d+)\.', r'stages.\1.downsample.'),
    (r'^stages\.(\d+)\.(\d+)\.', r'stages.\1.blocks.\2.'),
)
_OFFICIAL_BLOCK = (
    (r'\.dwconv\.', '.conv_dw.'),
    (r'\.pwconv1\.', '.mlp.fc1.'),
    (r'\.pwconv2\.', '.mlp.fc2.'),
    (r'\.grn\.gamma$', '.mlp.grn.weight'),
    (r'\.grn\.beta$', '.mlp.grn.bias'),
    (r'^norm\.', 'norm3.'),
)
_MMPRETRAIN_BLOCK = (
    (r'\.depthwise_conv\.', '.conv_dw.'),
    (r'\.pointwise_conv1\.', '.mlp.fc1.'),
    (r'\.pointwise_conv2\.', '.mlp.fc2.'),
    (r'\.grn\.gamma$', '.mlp.grn.weight'),
    (r'\.grn\.beta$', '.mlp.grn.bias'),
)
_TIMM_RENAMES = (
    (r'^head\.norm\.', 'norm3.'),
    (r'^norm_pre\.', 'norm3.'),
)
_POINTWISE = re.compile(r'\.mlp\.fc[12]\.weight$')


def _rename(key: str, rules) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def _to_linear_layout(key: str, value: Tensor) -> Tensor:
    """Give pointwise weights nn.Linear's (out, in) and GRN affines (C,)."""
    if _POINTWISE.search(key) and value.ndim == 4:
        return value.flatten(1)
    if '.mlp.grn.' in key:
        return value.reshape(-1)
    return value


def _minkowski_to_dense(key: str, value: Tensor) -> Tuple[str, Tensor]:
    """Turn one FCMAE sparse-layout tensor into its dense equivalent."""
    if key.endswith('.kernel'):
        key = key[:-len('kernel')] + 'weight'
        if value.ndim == 3:  # MinkowskiConvolution: (k*k, in, out)
            taps, c_in, c_out = value.shape
            k = math.isqrt(taps)
            value = value.permute(2, 1, 0).reshape(c_out, c_in, k, k)
        else:  # MinkowskiDepthwiseConvolution: (k*k, C)
            taps, channels = value.shape
            k = math.isqrt(taps)
            value = value.permute(1, 0).reshape(channels, 1, k, k)
        return key, value.transpose(3, 2).contiguous()
    key = key.replace('.ln.', '.').replace('.linear.', '.')
    if key.endswith('bias') and value.ndim == 2:  # sparse conv bias (1, C)
        value = value.reshape(-1)
    return key, value


def _import_timm(key: str, value: Tensor) -> Optional[Tuple[str, Tensor]]:
    if key.startswith('head.') and not key.startswith('head.norm.'):
        return None
    key = _rename(key, _TIMM_RENAMES)
    return key, _to_linear_layout(key, value)


def _import_official(key: str, value: Tensor) -> Optional[Tuple[str, Tensor]]:
    if key.startswith('head.'):
        return None
    key = _rename(_rename(key, _FB_LAYOUT), _OFFICIAL_BLOCK)
    return key, _to_linear_layout(key, value)


def _import_fcmae(key: str, value: Tensor) -> Optional[Tuple[str, Tensor]]:
    if not key.startswith('encoder.'):
        return None  # decoder, proj, pred, mask_token
    key, value = _minkowski_to_dense(key[len('encoder.'):], value)
    return _import_official(key, value)


def _import_mmpretrain(key: str,
                       value: Tensor) -> Optional[Tuple[str, Tensor]]:
    if key.startswith('head.'):
        return None
    key = _rename(_rename(key, _FB_LAYOUT), _MMPRETRAIN_BLOCK)
    return key, _to_linear_layout(key, value)


_IMPORTERS: Dict[str, Callable] = dict(
    timm=_import_timm,
    official=_import_official,
    fcmae=_import_fcmae,
    mmpretrain=_import_mmpretrain)


def convert_to_backbone(state_dict: Mapping,
                        fmt: Optional[str] = None
                        ) -> Tuple[StateDict, List[str], str]:
    """Rename and reshape a checkpoint's tensors to the backbone's names.

    Args:
        state_dict: Unwrapped tensors, see :func:`unwrap_state_dict`.
        fmt: One of ``FORMATS``. Defaults to None (detected).

    Returns:
        The converted tensors, the keys dropped on purpose (classifier head,
        FCMAE decoder), and the format name.

    Raises:
        ValueError: If ``fmt`` is unknown or cannot be detected.
    """
    fmt = fmt or detect_format(state_dict)
    if fmt not in _IMPORTERS:
        raise ValueError(
            f'ConvNeXtV2 checkpoint format {fmt!r} is unknown; '
            f'use one of {FORMATS}.')
    converted, dropped = {}, []
    for key, value in state_dict.items():
        item = _IMPORTERS[fmt](key, value)
        if item is None:
            dropped.append(key)
        else:
            converted[item[0]] = item[1]
    return converted, dropped, fmt


# --------------------------------------------------------------------------
# Export: backbone names -> any format
# --------------------------------------------------------------------------
_TO_FB_LAYOUT = (
    (r'^stem\.', 'downsample_layers.0.'),
    (r'^stages\.(\d+)\.downsample\.', r'downsample_layers.\1.'),
    (r'^stages\.(\d+)\.blocks\.(\d+)\.', r'stages.\1.\2.'),
)
_TO_OFFICIAL_BLOCK = (
    (r'\.conv_dw\.', '.dwconv.'),
    (r'\.mlp\.fc1\.', '.pwconv1.'),
    (r'\.mlp\.fc2\.', '.pwconv2.'),
    (r'\.mlp\.grn\.weight$', '.grn.gamma'),
    (r'\.mlp\.grn\.bias$', '.grn.beta'),
)
_TO_MMPRETRAIN_BLOCK = (
    (r'\.conv_dw\.', '.depthwise_conv.'),
    (r'\.mlp\.fc1\.', '.pointwise_conv1.'),
    (r'\.mlp\.fc2\.', '.pointwise_conv2.'),
    (r'\.mlp\.grn\.weight$', '.grn.gamma'),
    (r'\.mlp\.grn\.bias$', '.grn.beta'),
)


def _dense_to_minkowski(key: str, value: Tensor) -> Tuple[str, Tensor]:
    """Inverse of :func:`_minkowski_to_dense` for an official-format key."""
    sparse_ds = re.match(r'downsample_layers\.[1-9]\d*\.', key)
    if '.dwconv.' in key or sparse_ds:
        if key.endswith('.weight') and value.ndim == 4:
            c_out, c_in, k, _ = value.shape
            value = value.transpose(3, 2).reshape(c_out, c_in, k * k)
            if '.dwconv.' in key:  # (C, 1, k*k) -> (k*k, C)
                value = value[:, 0].permute(1, 0)
            else:  # (out, in, k*k) -> (k*k, in, out)
                value = value.permute(2, 1, 0)
            return key[:-len('weight')] + 'kernel', value.contiguous()
        if key.endswith('.bias') and (
                '.dwconv.' in key or key.split('.')[2] == '1'):
            return key, value.reshape(1, -1)
        if sparse_ds:  # the sparse LayerNorm before the sparse conv
            return re.sub(r'\.(weight|bias)$', r'.ln.\1', key), value
    if re.search(r'\.norm\.(weight|bias)$', key):
        return re.sub(r'\.(weight|bias)$', r'.ln.\1', key), value
    if re.search(r'\.pwconv[12]\.', key):
        return re.sub(r'\.(weight|bias)$', r'.linear.\1', key), value
    if '.grn.' in key:
        return key, value.reshape(1, -1)
    return key, value


def export_state_dict(state_dict: Mapping, fmt: str) -> StateDict:
    """Write the backbone's tensors in one of the published layouts.

    Adapter tensors (anything not part of the plain ConvNeXt-V2 trunk or its
    output norms) are left out; merge adapters first to export a fine-tuned
    backbone. ``norm3`` becomes the format's final norm where it has one
    (``head.norm`` for timm, ``norm`` for official); FCMAE has none.

    Args:
        state_dict: The backbone's state dict (its own names).
        fmt: One of ``FORMATS``.

    Returns:
        The tensors under the format's names and shapes. mmpretrain keys
        carry the ``backbone.`` prefix, FCMAE keys the ``encoder.`` prefix.

    Raises:
        ValueError: If ``fmt`` is unknown.
    """
    if fmt not in FORMATS:
        raise ValueError(
            f'ConvNeXtV2 export format {fmt!r} is unknown; '
            f'use one of {FORMATS}.')
    out = {}
    plain = re.compile(
        r'^(stem\.\d+|stages\.\d+\.downsample\.\d+|stages\.\d+\.blocks\.\d+\.'
        r'(conv_dw|norm|mlp\.fc1|mlp\.grn|mlp\.fc2)|norm\d+)\.(weight|bias)$')
    for key, value in state_dict.items():
        if not plain.match(key):
            continue
        if fmt == 'timm':
            if key.startswith('norm'):
                if key.startswith('norm3.'):
                    out['head.' + key.replace('norm3.', 'norm.')] = value
                continue
            out[key] = value
        elif fmt == 'mmpretrain':
            key = _rename(_rename(key, _TO_FB_LAYOUT), _TO_MMPRETRAIN_BLOCK)
            out['backbone.' + key] = value
        else:
            if key.startswith('norm'):
                if fmt == 'official' and key.startswith('norm3.'):
                    out[key.replace('norm3.', 'norm.')] = value
                continue
            key = _rename(_rename(key, _TO_FB_LAYOUT), _TO_OFFICIAL_BLOCK)
            if '.grn.' in key:
                value = value.reshape(1, 1, 1, -1)
            if fmt == 'fcmae':
                key, value = _dense_to_minkowski(key, value)
                key = 'encoder.' + key
            out[key] = value
    return out
