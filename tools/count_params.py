"""Print a #Params table like the paper's Tables 1 and 2 for one or more configs.

    python tools/count_params.py configs/flora/maskrcnn_convnextv2_l_coco.py
    python tools/count_params.py configs/flora/*.py configs/baselines/lora_r8_*.py
    python tools/count_params.py configs/flora/upernet_vit-b16_*.py configs/baselines/*vit-b16*.py

The model is built on the 'meta' device (shapes only), so ConvNeXt-V2-L configs take seconds.
Adapters come from the backbone (``FLoRAConvNeXtV2``) or, for configs that inject them with a
``FLoRAHook`` in ``custom_hooks``, from that hook's options, applied here as the hook applies
them before a run. 'Backbone adapter' is what Table 1 reports as #Params: the tensors the
method added or unfroze in the backbone. 'Backbone %' is that count over the backbone's own
parameters (Table 2 reports percentages). 'Trainable' adds the rest of the trainable model
(output norms, neck, heads). Under a BitFit row a note names the layer types whose biases train
and those whose biases stay frozen (the BitFit configs leave out the GRN biases, as Table 1
does); ``--by-kind`` gives the count of each (``bitfit:<layer type>.bias``).

A config can name the paper's figure for its row with a top-level key, printed in the 'paper'
column::

    paper_budget = dict(table='Table 2', percent=0.32)

``table`` is the paper's table (a string) and ``percent`` the trained share of the backbone it
reports for that row, in percent. Configs without it print '-'.
"""
import argparse
import os.path as osp
import sys
from typing import Dict, Optional

from mmengine.config import DictAction
from mmengine.logging import MMLogger
from torch import nn

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from mmflora.adapters import AdapterConfig, count_params, inject_adapters  # noqa: E402
from mmflora.adapters.bitfit import module_biases  # noqa: E402
from mmflora.apis import ConfigError, build_model_from_config, load_config  # noqa: E402
from mmflora.engine.hooks.flora_hook import HOOK_OPTIONS, FLoRAHook  # noqa: E402

#: The shape of the optional top-level ``paper_budget`` key.
PAPER_BUDGET_KEYS = ('table', 'percent')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Count adapter and trainable parameters')
    parser.add_argument('configs', nargs='+', help='config files')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. model.backbone.adapter.r=16')
    parser.add_argument('--device', default='meta', choices=['meta', 'cpu'],
                        help="'meta' builds shapes only (fast); 'cpu' builds real tensors")
    parser.add_argument('--by-kind', action='store_true',
                        help='also break the backbone count down by layer kind')
    return parser.parse_args(argv)


def bias_families(module: nn.Module) -> Dict[str, Dict[str, int]]:
    """The bias parameters of ``module`` grouped by the type of layer that holds them.

    Returns:
        dict: {layer type name: dict(layers=..., trained=..., frozen=...)}: how many layers
        of that type have a bias, and how many bias values train or stay frozen.
    """
    families: Dict[str, Dict[str, int]] = {}
    for layer in module.modules():
        biases = module_biases(layer).values()
        if biases:
            family = families.setdefault(type(layer).__name__,
                                         dict(layers=0, trained=0, frozen=0))
            family['layers'] += 1
            for bias in biases:
                family['trained' if bias.requires_grad else 'frozen'] += bias.numel()
    return dict(sorted(families.items()))


def bitfit_note(families: Dict[str, Dict[str, int]]) -> str:
    """One line naming the layer types whose biases train, and those whose biases do not."""
    trained = [f'{name} ({f["layers"]})' for name, f in families.items() if f['trained']]
    frozen = [f'{name} ({f["layers"]} layers, {f["frozen"] / 1e6:.3f}M)'
              for name, f in families.items() if f['frozen']]
    frozen_part = f'frozen biases: {", ".join(frozen)}' if frozen else 'no bias stays frozen'
    return f'BitFit trains the biases of {", ".join(trained) or "no layer"}; {frozen_part}'


def hook_adapter_config(cfg) -> Optional[AdapterConfig]:
    """The configuration the config's ``FLoRAHook`` injects with, or None when it has no such
    hook (or one that takes its configuration from an adapter file)."""
    for index, hook in enumerate(cfg.get('custom_hooks') or []):
        if hook.get('type') == 'FLoRAHook':
            options = {k: v for k, v in hook.items()
                       if k not in ('type', 'priority') + HOOK_OPTIONS}
            return FLoRAHook.adapter_config(options, hook.get('adapter_checkpoint'),
                                            where=f'custom_hooks[{index}]')
    return None


def paper_budget(cfg, config_path: str) -> Optional[dict]:
    """The config's ``paper_budget`` (see the module docstring), checked."""
    budget = cfg.get('paper_budget')
    if budget is None:
        return None
    if (not isinstance(budget, dict) or set(budget) != set(PAPER_BUDGET_KEYS)
            or not isinstance(budget['table'], str)
            or not isinstance(budget['percent'], (int, float))
            or isinstance(budget['percent'], bool)):
        raise SystemExit(f'error: {config_path}: paper_budget={budget!r}; give '
                         f"dict(table='Table 2', percent=0.32) (the paper's table and the "
                         f'percentage of the backbone it reports), or leave the key out')
    return dict(budget)


def describe(config_path: str, cfg_options=None, device: str = 'meta') -> dict:
    """Counts for one config: method, backbone adapter and its share, trainable, total.

    For BitFit also ``biases`` (see :func:`bias_families`), and ``by_kind`` splits the
    trained biases by layer type (``'bitfit:Linear.bias'``, ...) out of ``'other'``.
    """
    try:
        cfg = load_config(config_path, cfg_options)
    except ConfigError as error:
        raise SystemExit(f'error: {error}') from None
    budget = paper_budget(cfg, config_path)
    model = build_model_from_config(cfg, device)
    hook_config = hook_adapter_config(cfg)
    if hook_config is not None:  # as FLoRAHook does before the run
        inject_adapters(model, hook_config)
    backbone = getattr(model, 'backbone', model)
    backbone_counts = count_params(backbone)
    model_counts = count_params(model)
    if hook_config is not None:
        method = hook_config.method
        # What the method adds or unfreezes in the backbone (the hook's other trainable
        # patterns name the neck and heads).
        backbone_adapter = backbone_counts['trainable']
    else:
        method = getattr(backbone, 'adapter_method', 'none (plain)')
        report = getattr(backbone, 'injection_report', None)
        backbone_adapter = report.adapter_params if report is not None else 0
    by_kind = dict(backbone_counts['by_kind'])
    biases = None
    if method == 'bitfit':
        biases = bias_families(backbone)
        for name, family in biases.items():
            if family['trained']:
                by_kind[f'bitfit:{name}.bias'] = family['trained']
                by_kind['other'] -= family['trained']
        if not by_kind.get('other'):
            by_kind.pop('other', None)
    base = backbone_counts['total'] - backbone_counts['adapter']
    return dict(
        config=osp.basename(config_path),
        method=method,
        backbone_adapter=backbone_adapter,
        backbone_percent=100.0 * backbone_adapter / max(base, 1),
        trainable=model_counts['trainable'],
        total=model_counts['total'],
        paper_budget=budget,
        by_kind=by_kind,
        biases=biases)


def paper_column(budget: Optional[dict]) -> str:
    return '-' if budget is None else f'{budget["table"]}: {budget["percent"]:g}%'


def main(argv=None) -> None:
    args = parse_args(argv)
    MMLogger.get_instance('count_params', log_level='WARNING')  # no per-layer injection logs
    header = (f'{"config":<52} {"method":<8} {"backbone adapter (M)":>21} '
              f'{"backbone %":>11} {"trainable (M)":>14} {"total (M)":>10}  paper')
    print(header)
    print('-' * len(header))
    for index, path in enumerate(args.configs, start=1):
        print(f'[{index}/{len(args.configs)}] building {path} ...', file=sys.stderr, flush=True)
        row = describe(path, args.cfg_options, args.device)
        print(f'{row["config"]:<52} {row["method"]:<8} {row["backbone_adapter"] / 1e6:>21.2f} '
              f'{row["backbone_percent"]:>10.2f}% {row["trainable"] / 1e6:>14.2f} '
              f'{row["total"] / 1e6:>10.2f}  {paper_column(row["paper_budget"])}', flush=True)
        if row['biases'] is not None:
            print(f'{"":<2}{bitfit_note(row["biases"])}')
        if args.by_kind:
            for kind, count in sorted(row['by_kind'].items()):
                print(f'{"":<52}   {kind:<24} {count / 1e6:>10.3f}')


if __name__ == '__main__':
    main()
