"""Draw the dW statistics that DeltaWeightStatsHook logged (paper Fig. 4 and 7) to a PNG.

Reads mmengine's JSON scalar log, ``<work_dir>/<timestamp>/vis_data/scalars.json``, and draws
four panels: the mean ||dW||_F and the mean feature amplification factor over training, and
both per layer (in model order) at the last logged step::

    python tools/plot_dw_stats.py work_dirs/maskrcnn_flora            # newest run in there
    python tools/plot_dw_stats.py work_dirs/x/20240101_120000/vis_data/scalars.json \\
        --out dw.png --step 8000 --layers backbone.stages.2

The shipped runtimes log them every 500 iterations (``configs/_base_/runtimes/mmflora.py``),
the demo configs every 20. For a run that logged none, the tool says which interval to set
(``--cfg-options custom_hooks.<i>.interval=N`` for ``tools/train.py``).
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

NORM_MEAN, AMP_MEAN = 'dw/norm_mean', 'dw/amp_mean'
NORM_LAYER, AMP_LAYER = 'dw/norm/', 'dw/amp/'

Series = Dict[str, List[Tuple[int, float]]]


def find_scalar_log(path: str) -> str:
    """The scalars.json for ``path``: the file itself, or the newest run that logged dW stats.

    Raises:
        FileNotFoundError: No scalars.json there.
        ValueError: Only scalar logs without dW statistics (see :func:`why_no_statistics`).
    """
    if osp.isfile(path):
        return path
    candidates = [osp.join(path, 'scalars.json'), osp.join(path, 'vis_data', 'scalars.json')]
    candidates += sorted(glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json')),
                         reverse=True)
    existing = [c for c in candidates if osp.isfile(c)]
    for candidate in existing:
        with open(candidate) as f:
            if any(f'"{NORM_MEAN}"' in line for line in f):
                return candidate
    if not existing:
        raise FileNotFoundError(
            f'no scalars.json under {path} (looked at {candidates}): give a work dir of a '
            f'training run, a run folder in it or its vis_data/scalars.json')
    raise ValueError(why_no_statistics(existing[0]))


def why_no_statistics(scalar_log: str) -> str:
    """Why a run's scalar log has no dW statistics, and the interval that would log them.

    Reads the last iteration the log reached and the run's config (``config.py`` beside the
    log, written by mmengine's LocalVisBackend).
    """
    last = 0
    with open(scalar_log) as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                last = max(last, int(record.get('step', record.get('iter', 0))))
    suggested = max(1, last // 4)
    config = osp.join(osp.dirname(scalar_log), 'config.py')
    hooks = []
    if osp.isfile(config):
        from mmengine.config import Config
        hooks = list(Config.fromfile(config, import_custom_modules=False).get('custom_hooks')
                     or [])
    found = [(i, hook) for i, hook in enumerate(hooks)
             if str(hook.get('type')).split('.')[-1] == 'DeltaWeightStatsHook']
    where = f'{scalar_log} holds no dW statistics ({NORM_MEAN!r}); the run logged up to ' \
            f'iteration {last}'
    if not found:
        return (f'{where} and its config has no DeltaWeightStatsHook: add '
                f"dict(type='DeltaWeightStatsHook', interval={suggested}) to custom_hooks")
    index, hook = found[0]
    interval = hook.get('interval', 100)
    if interval > last:
        return (f'{where}, and its DeltaWeightStatsHook (custom_hooks[{index}]) logs every '
                f'{interval}: train with an interval of at most {last}, e.g. tools/train.py '
                f'... --cfg-options custom_hooks.{index}.interval={suggested}')
    return (f'{where} with DeltaWeightStatsHook every {interval}, so the model has no adapter '
            f'layer to measure (a frozen, BitFit or full fine-tuning run): plot a run with '
            f'adapters')


def read_dw_series(scalar_log: str) -> Series:
    """{key: [(step, value), ...]} for every ``dw/`` key of a JSON scalar log, keys in order."""
    series: Series = OrderedDict()
    with open(scalar_log) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            record = json.loads(line)
            step = record.get('step', record.get('iter'))
            for key, value in record.items():
                if key.startswith('dw/') and isinstance(value, (int, float)):
                    series.setdefault(key, []).append((int(step), float(value)))
    if NORM_MEAN not in series:
        raise ValueError(why_no_statistics(scalar_log))
    return series


def layer_values(series: Series, prefix: str, step: int,
                 layers: Optional[List[str]] = None) -> 'OrderedDict[str, float]':
    """Per-layer values logged at ``step``, in model order, filtered by ``layers`` regexes."""
    values = OrderedDict()
    for key, points in series.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if layers and not any(re.search(p, name) for p in layers):
            continue
        at_step = [v for s, v in points if s == step]
        if at_step:
            values[name] = at_step[-1]
    return values


def plot(series: Series, out: str, step: Optional[int] = None,
         layers: Optional[List[str]] = None, title: str = '') -> str:
    """Render the four panels to ``out`` (PNG) and return its path."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    steps = [s for s, _ in series[NORM_MEAN]]
    step = steps[-1] if step is None else step
    if step not in steps:
        raise ValueError(f'no dW statistics at step {step}; logged steps: {steps}')
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    for ax, key, label in ((axes[0, 0], NORM_MEAN, 'mean ||dW||_F'),
                           (axes[0, 1], AMP_MEAN, 'mean amplification ||dW|| / ||U^T W V||')):
        points = series.get(key, [])
        ax.plot([s for s, _ in points], [v for _, v in points], marker='o', markersize=3)
        ax.set_xlabel('iteration')
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    for ax, prefix, label in ((axes[1, 0], NORM_LAYER, '||dW||_F'),
                              (axes[1, 1], AMP_LAYER, 'amplification factor')):
        values = layer_values(series, prefix, step, layers)
        ax.bar(range(len(values)), list(values.values()))
        ax.set_xlabel(f'layer (model order), iteration {step}')
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis='y')
        if 0 < len(values) <= 40:
            ax.set_xticks(range(len(values)))
            ax.set_xticklabels(list(values), rotation=90, fontsize=6)
    fig.suptitle(title or 'FLoRA update statistics')
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('path', help='a work dir, a run dir or a scalars.json')
    parser.add_argument('--out', default=None,
                        help='output PNG (default: dw_stats.png beside scalars.json)')
    parser.add_argument('--step', type=int, default=None,
                        help='iteration of the per-layer panels (default: the last logged)')
    parser.add_argument('--layers', nargs='+', default=None,
                        help='regexes of layer names for the per-layer panels')
    parser.add_argument('--title', default='', help='figure title')
    return parser.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    try:
        scalar_log = find_scalar_log(args.path)
        series = read_dw_series(scalar_log)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f'error: {error}') from None
    out = args.out or osp.join(osp.dirname(scalar_log), 'dw_stats.png')
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    plot(series, out, args.step, args.layers, args.title)
    print(f'wrote {out} from {scalar_log}')
    return out


if __name__ == '__main__':
    sys.exit(0 if main() else 1)
