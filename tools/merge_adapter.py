"""Fold a trained adapter into its backbone and write a plain checkpoint for deployment.

    python tools/merge_adapter.py CONFIG CHECKPOINT --out merged.pth

CONFIG is the training config (a FLoRAConvNeXtV2 backbone, or a ``FLoRAHook`` in
``custom_hooks``: the tool injects the hook's adapters as a run would), CHECKPOINT either an
mmengine checkpoint (full or slim, see AdapterCheckpointHook) or an adapter file
(``*.safetensors``).
Where the checkpoint lacks base weights they come from the config's Pretrained ``init_cfg``
(``--base-checkpoint`` points it elsewhere); with neither, the tool refuses rather than merge
onto random weights. The output loads with ``strict=True`` into the same config without
adapters (backbone type ``ConvNeXtV2`` and no ``adapter`` key; no ``FLoRAHook``), which the
tool writes beside it (``merged.pth`` -> ``merged.py``; it builds that model, loads the result
and compares the backbone outputs before writing): no adapter code runs at inference.

Adapters on depthwise convs in ``mode='dense'`` (the form that reproduces the paper's budgets)
span all channels and cannot be folded into a depthwise kernel; such checkpoints are refused
with the list of layers. Train with ``mode='structured'`` for a mergeable model, or deploy the
FLoRA config itself (in eval mode every mergeable layer runs its cached merged weight).
"""
import argparse
import copy
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from mmflora.openmp import wait_passively  # noqa: E402

wait_passively()  # before torch loads OpenMP: see mmflora/openmp.py

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402

from mmflora.adapters import inject_adapters, iter_adapter_layers, merge_and_unload  # noqa: E402
from mmflora.apis import (ConfigError, apply_adapter_file,  # noqa: E402
                          build_model_from_config, ensure_base_weights, flora_hook_entries,
                          load_config, pretrained_init_modules)
from mmflora.engine.hooks import FLoRAHook  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Merge a trained adapter into a plain model')
    parser.add_argument('config', help='the training config (FLoRAConvNeXtV2 backbone or a FLoRAHook)')
    parser.add_argument('checkpoint', help='mmengine checkpoint (.pth) or adapter file '
                        '(.safetensors)')
    parser.add_argument('--out', required=True, help='where to write the plain checkpoint')
    parser.add_argument('--base-checkpoint', help='pretrained backbone weights, when the '
                        "checkpoint has no base weights and the config's init_cfg is not it")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries')
    parser.add_argument('--atol', type=float, default=1e-4,
                        help='largest backbone output difference accepted in the check')
    return parser.parse_args(argv)


def plain_model_config(model_cfg):
    """The model config without adapters: a ``FLoRAConvNeXtV2`` backbone turned into a plain
    ``ConvNeXtV2`` (other backbones, adapted by ``FLoRAHook``, stay as they are)."""
    plain = copy.deepcopy(model_cfg)
    if str(plain.backbone.type).split('.')[-1] == 'FLoRAConvNeXtV2':
        plain.backbone.type = 'ConvNeXtV2'
    plain.backbone.pop('adapter', None)
    plain.backbone.pop('init_cfg', None)
    return plain


def require_pretrained_base(model: torch.nn.Module, checkpoint: str) -> None:
    """Refuse to merge onto random base weights; load the pretrained base otherwise."""
    if not pretrained_init_modules(model):
        raise SystemExit(
            f'{checkpoint} holds no base weights (an adapter file or a slim checkpoint) and '
            f"the config has no init_cfg=dict(type='Pretrained', ...): the adapter would be "
            f'merged onto random weights. Pass the pretrained backbone with '
            f'--base-checkpoint PATH.')
    ensure_base_weights(model, f'{checkpoint} holds no base weights')


def load_trained_weights(model: torch.nn.Module, checkpoint: str) -> None:
    """Load a full or slim mmengine checkpoint, or an adapter file, into ``model``."""
    if checkpoint.endswith('.safetensors'):
        require_pretrained_base(model, checkpoint)
        apply_adapter_file(model, checkpoint)
        return
    state = torch.load(checkpoint, map_location='cpu', weights_only=True)
    state = state.get('state_dict', state)
    expected = model.state_dict()
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise ValueError(f'{checkpoint} has keys this config does not build: {unexpected[:10]}')
    missing = set(expected) - set(state)
    frozen = {name for name, param in model.named_parameters() if not param.requires_grad}
    if missing and missing <= frozen:  # slim checkpoint: the frozen base comes from init_cfg
        require_pretrained_base(model, checkpoint)
        model.load_state_dict(state, strict=False)
    else:  # a trained tensor missing or of another shape: another adapter setup, refused
        model.load_state_dict(state, strict=True)


def inject_hook_adapters(cfg, model: torch.nn.Module, checkpoint: str) -> None:
    """Inject the adapters the config's ``FLoRAHook`` would inject in a run, if it has one."""
    entries = flora_hook_entries(cfg)
    if not entries:
        return
    entry = entries[0]
    options = {k: v for k, v in entry.items() if k not in ('type', 'priority')}
    if options.get('method', 'flora') is None and checkpoint.endswith('.safetensors'):
        options.setdefault('adapter_checkpoint', checkpoint)  # its metadata holds the setup
    config = FLoRAHook(**options).resolve_config(model)
    if config is not None:
        inject_adapters(model, config)


def main(argv=None) -> None:
    args = parse_args(argv)
    MMLogger.get_instance('merge_adapter', log_level='WARNING')  # no per-layer injection logs
    try:
        cfg = load_config(args.config, args.cfg_options)
    except ConfigError as error:
        raise SystemExit(f'error: {error}') from None
    if args.base_checkpoint:
        cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=args.base_checkpoint)
    print(f'[1/4] building {args.config}', flush=True)
    model = build_model_from_config(cfg)
    inject_hook_adapters(cfg, model, args.checkpoint)
    model.eval()
    if not any(True for _ in iter_adapter_layers(model)):
        raise SystemExit(f'{args.config} builds no adapters (a FLoRAConvNeXtV2 backbone or a '
                         f'FLoRAHook in custom_hooks): there is nothing to merge. Give the '
                         f'config the checkpoint was trained with.')
    print(f'[2/4] loading {args.checkpoint}', flush=True)
    try:
        load_trained_weights(model, args.checkpoint)
    except (RuntimeError, ValueError) as error:  # shapes or names of another adapter setup
        lines = str(error).strip().splitlines()
        shown = '\n'.join(lines[:5]) + (f'\n\t... {len(lines) - 5} more' if len(lines) > 5 else '')
        raise SystemExit(
            f'{args.checkpoint} does not fit {args.config}: {shown}\nMerge with the config it '
            f'was trained with: the copy mmengine wrote in the work dir '
            f'(<work_dir>/<config name>.py), or CONFIG with the same --cfg-options.') from error
    dense = [name for name, layer in iter_adapter_layers(model) if layer.dense]
    if dense:
        raise SystemExit(
            f'{len(dense)} adapters are dense branches on depthwise convs ({dense[:3]} ...): '
            f'they cannot be folded into a depthwise kernel. Train with '
            f"model.backbone.adapter.mode='structured' for a mergeable model, or deploy the "
            f'FLoRA config itself.')
    probe = probe_input(cfg.model.backbone)
    with torch.no_grad():
        expected = model.backbone(probe)
    print('[3/4] merging adapters into the base weights', flush=True)
    merge_and_unload(model)
    plain = build_model_from_config(
        cfg.__class__(dict(model=plain_model_config(cfg.model),
                           default_scope=cfg.get('default_scope')))).eval()
    plain.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        got = plain.backbone(probe)
    error = max((a - b).abs().max().item() for a, b in zip(flat(expected), flat(got)))
    print(f'[4/4] plain backbone vs adapted backbone: max |difference| = {error:.2e}', flush=True)
    if error > args.atol:
        raise SystemExit(f'the merged model differs by {error:.2e} > --atol {args.atol}')
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    torch.save(dict(state_dict=plain.state_dict(),
                    meta=dict(merged_from=args.checkpoint, config=args.config)), args.out)
    plain_config = write_plain_config(cfg, args.out)
    print(f'wrote {args.out} and its config {plain_config} (no adapters):\n'
          f'    python tools/test.py {plain_config} {args.out}')


def probe_input(backbone_cfg) -> torch.Tensor:
    """An input the backbone takes: 64 px, or four patches a side for a patch-based one."""
    size = 4 * backbone_cfg.get('patch_size', 16)
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def flat(outputs) -> list:
    """A backbone's output tensors as one list (tensors, or nested tuples/lists of them)."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    return [tensor for item in outputs for tensor in flat(item)]


#: Hooks that act on adapters: a merged model has none, so its config drops them.
ADAPTER_HOOKS = ('FLoRAHook', 'AdapterCheckpointHook', 'DeltaWeightStatsHook')


def write_plain_config(cfg, out: str) -> str:
    """Write the training config with the plain backbone beside ``out`` (``x.pth`` -> ``x.py``).

    It loads ``out``; the training ``work_dir`` and the hooks that act on adapters are dropped
    (a test of the merged model writes to ``work_dirs/<merged config name>`` as usual).
    """
    path = osp.splitext(out)[0] + '.py'
    plain = copy.deepcopy(cfg)
    plain.model = plain_model_config(cfg.model)
    plain.load_from = out
    plain.pop('work_dir', None)
    plain.custom_hooks = [hook for hook in plain.get('custom_hooks') or []
                          if str(hook.get('type')).split('.')[-1] not in ADAPTER_HOOKS]
    plain.dump(path)
    return path


if __name__ == '__main__':
    main()
