"""Print a #Params table like the paper's Table 1 for one or more configs.

    python tools/count_params.py configs/flora/maskrcnn_convnextv2_l_coco.py
    python tools/count_params.py configs/flora/*.py configs/baselines/lora_r8_*.py

The model is built on the 'meta' device (shapes only), so ConvNeXt-V2-L configs take seconds.
'Backbone adapter' is what Table 1 reports as #Params: the tensors the method added or unfroze
in the backbone. 'Trainable' adds the rest of the trainable model (output norms, neck, heads).
"""
import argparse
import os.path as osp
import sys

from mmengine.config import DictAction
from mmengine.logging import MMLogger

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
from mmflora.adapters import count_params  # noqa: E402
from mmflora.apis import ConfigError, build_model_from_config, load_config  # noqa: E402


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


def describe(config_path: str, cfg_options=None, device: str = 'meta') -> dict:
    """Counts for one config: method, backbone adapter, trainable, total, by kind."""
    try:
        cfg = load_config(config_path, cfg_options)
    except ConfigError as error:
        raise SystemExit(f'error: {error}') from None
    model = build_model_from_config(cfg, device)
    backbone = getattr(model, 'backbone', model)
    backbone_counts = count_params(backbone)
    report = getattr(backbone, 'injection_report', None)
    model_counts = count_params(model)
    return dict(
        config=osp.basename(config_path),
        method=getattr(backbone, 'adapter_method', 'none (plain)'),
        backbone_adapter=report.adapter_params if report is not None else 0,
        trainable=model_counts['trainable'],
        total=model_counts['total'],
        by_kind=backbone_counts['by_kind'])


def main(argv=None) -> None:
    args = parse_args(argv)
    MMLogger.get_instance('count_params', log_level='WARNING')  # no per-layer injection logs
    header = (f'{"config":<52} {"method":<8} {"backbone adapter (M)":>21} '
              f'{"trainable (M)":>14} {"total (M)":>10}')
    print(header)
    print('-' * len(header))
    for index, path in enumerate(args.configs, start=1):
        print(f'[{index}/{len(args.configs)}] building {path} ...', file=sys.stderr, flush=True)
        row = describe(path, args.cfg_options, args.device)
        print(f'{row["config"]:<52} {row["method"]:<8} {row["backbone_adapter"] / 1e6:>21.2f} '
              f'{row["trainable"] / 1e6:>14.2f} {row["total"] / 1e6:>10.2f}', flush=True)
        if args.by_kind:
            for kind, count in sorted(row['by_kind'].items()):
                print(f'{"":<52}   {kind:<24} {count / 1e6:>10.3f}')


if __name__ == '__main__':
    main()
