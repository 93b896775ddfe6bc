"""Print a #Params table like the paper's Table 1 for one or more configs.

    python tools/count_params.py configs/flora/maskrcnn_convnextv2_l_coco.py
    python tools/count_params.py configs/flora/*.py configs/baselines/lora_r8_*.py

The model is built on the 'meta' device (shapes only), so ConvNeXt-V2-L configs take seconds.
'Backbone adapter' is what Table 1 reports as #Params: the tensors the method added or unfroze
in the backbone. 'Trainable' adds the rest of the trainable model (output norms, neck, heads).
Under a BitFit row a note names the layer types whose biases train and those whose biases stay
frozen (the BitFit configs leave out the GRN biases, as Table 1 does); ``--by-kind`` gives the
count of each (``bitfit:<layer type>.bias``).

The table goes to stdout; what building the models warned about (capped ranks, adapters
larger than their update) follows it on stderr, one line per config and warning.
"""
import argparse
import logging
import os.path as osp
import sys
import warnings
from typing import Dict

from mmengine.config import DictAction
from mmengine.logging import MMLogger
from torch import nn

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from mmflora.adapters import count_params  # noqa: E402
from mmflora.apis import ConfigError, build_model_from_config, load_config  # noqa: E402
from mmflora.apis.console import WarningCollector  # noqa: E402


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
        bias = layer._parameters.get('bias')
        if isinstance(bias, nn.Parameter):
            family = families.setdefault(type(layer).__name__,
                                         dict(layers=0, trained=0, frozen=0))
            family['layers'] += 1
            family['trained' if bias.requires_grad else 'frozen'] += bias.numel()
    return dict(sorted(families.items()))


def bitfit_note(families: Dict[str, Dict[str, int]]) -> str:
    """One line naming the layer types whose biases train, and those whose biases do not."""
    trained = [f'{name} ({f["layers"]})' for name, f in families.items() if f['trained']]
    frozen = [f'{name} ({f["layers"]} layers, {f["frozen"] / 1e6:.3f}M)'
              for name, f in families.items() if f['frozen']]
    frozen_part = f'frozen biases: {", ".join(frozen)}' if frozen else 'no bias stays frozen'
    return f'BitFit trains the biases of {", ".join(trained) or "no layer"}; {frozen_part}'


def describe(config_path: str, cfg_options=None, device: str = 'meta') -> dict:
    """Counts for one config: method, backbone adapter, trainable, total, by kind.

    For BitFit also ``biases`` (see :func:`bias_families`), and ``by_kind`` splits the
    trained biases by layer type (``'bitfit:Linear.bias'``, ...) out of ``'other'``.
    """
    try:
        cfg = load_config(config_path, cfg_options)
    except ConfigError as error:
        raise SystemExit(f'error: {error}') from None
    model = build_model_from_config(cfg, device)
    backbone = getattr(model, 'backbone', model)
    backbone_counts = count_params(backbone)
    report = getattr(backbone, 'injection_report', None)
    model_counts = count_params(model)
    method = getattr(backbone, 'adapter_method', 'none (plain)')
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
    return dict(
        config=osp.basename(config_path),
        method=method,
        backbone_adapter=report.adapter_params if report is not None else 0,
        trainable=model_counts['trainable'],
        total=model_counts['total'],
        by_kind=by_kind,
        biases=biases)


def collect_build_warnings() -> WarningCollector:
    """The warnings of building the models, kept for after the table instead of printed between
    its rows (the per-layer injection logs below WARNING are dropped)."""
    logger = MMLogger.get_instance('count_params', log_level='WARNING')
    for handler in list(logger.handlers):
        if type(handler) is logging.StreamHandler:  # the console; not a file handler
            logger.removeHandler(handler)
    collector = WarningCollector()
    logger.addHandler(collector)
    return collector


def main(argv=None) -> None:
    args = parse_args(argv)
    collector = collect_build_warnings()
    header = (f'{"config":<52} {"method":<8} {"backbone adapter (M)":>21} '
              f'{"trainable (M)":>14} {"total (M)":>10}')
    print(header)
    print('-' * len(header))
    warned = []
    for index, path in enumerate(args.configs, start=1):
        if sys.stderr.isatty():  # a line of progress that the next row overwrites
            print(f'\r[{index}/{len(args.configs)}] building {path} ...', end='',
                  file=sys.stderr, flush=True)
        with warnings.catch_warnings(record=True) as recorded:
            row = describe(path, args.cfg_options, args.device)
        warned += [(f'{path}: ', message) for message in collector.messages]
        collector.messages = []
        # the libraries' own warnings (deprecations) once, whichever config raised them
        warned += [('', message) for message in
                   dict.fromkeys(f'{item.category.__name__}: {item.message}' for item in recorded)
                   if ('', message) not in warned]
        if sys.stderr.isatty():
            print('\r\033[K', end='', file=sys.stderr, flush=True)
        print(f'{row["config"]:<52} {row["method"]:<8} {row["backbone_adapter"] / 1e6:>21.2f} '
              f'{row["trainable"] / 1e6:>14.2f} {row["total"] / 1e6:>10.2f}', flush=True)
        if row['biases'] is not None:
            print(f'{"":<2}{bitfit_note(row["biases"])}')
        if args.by_kind:
            for kind, count in sorted(row['by_kind'].items()):
                print(f'{"":<52}   {kind:<24} {count / 1e6:>10.3f}')
    sys.stdout.flush()
    for where, message in warned:
        print(f'{where}{message}', file=sys.stderr)


if __name__ == '__main__':
    main()
