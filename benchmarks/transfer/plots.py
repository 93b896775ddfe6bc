"""The pictures of a transfer run, drawn with matplotlib (Agg) from the results data.

* ``<stem>_lr.png``: per task, the validation score against the learning rate, one line per
  method through its searched points at its chosen scale (seed 0, one run per point), and at
  the chosen lr the final seeds' validation mean with its standard deviation as an error bar;
  a cross marks a collapsed point.
* ``<stem>_curves.png``: per task, the validation score at 25, 50 and 100 % of the steps at
  each method's chosen setting, mean over the final seeds, the standard deviation as error
  bars.
"""
import math
from typing import Dict

from .report import method_label

#: Colours per method family; the high budget is drawn dashed.
COLOURS = dict(frozen='#7f7f7f', full='#000000', bitfit='#8c564b', lora='#1f77b4',
               dora='#2ca02c', flora='#d62728')


def style(method: str) -> dict:
    """Line colour and dash of a method key ('flora-high' is red and dashed)."""
    family = method.split('-')[0]
    return dict(color=COLOURS.get(family, '#9467bd'),
                linestyle='--' if method.endswith('-high') else '-')


def task_axes(plt, count: int):
    """A figure with one axes per task, two per row."""
    columns = min(2, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.4 * columns, 4.4 * rows),
                                squeeze=False)
    flat = [a for row in axes for a in row]
    for extra in flat[count:]:
        extra.set_visible(False)
    return figure, flat[:count]


def draw(results: dict, path: str, title: str, xlabel: str, plot_method) -> None:
    """One axes per task: ``plot_method(axis, figures, label, style)`` draws each method's
    figures on it; the labels, the legend and the title around them are the same for both
    pictures."""
    import matplotlib.pyplot as plt
    tasks = results['settings']['tasks']
    figure, axes = task_axes(plt, len(tasks))
    labels = {m: method_label(results, m) for m in results['settings']['methods']}
    for axis, task in zip(axes, tasks):
        for method in results['settings']['methods']:
            figures = results['summary'].get(task, {}).get(method)
            if figures is not None:
                plot_method(axis, figures, labels[method], style(method))
        target = next(t for t in results['settings']['targets'] if t['key'] == task)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(f'validation {target["metric"]}')
        axis.set_title(f'{task} ({target["gap"]} domain gap)')
        axis.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_lr(axis, figures: dict, label: str, line_style: dict) -> None:
    """A method's searched points at its chosen scale, its final seeds at the chosen lr."""
    chosen = figures['chosen']
    points = sorted((p for p in figures['points'].values()
                     if p['scale_step'] == chosen['scale_step']), key=lambda p: p['lr'])
    line, = axis.plot([p['lr'] for p in points], [p['val'] for p in points], marker='o',
                      markersize=3, label=label, **line_style)
    collapsed = [p for p in points if p['collapsed']]
    axis.plot([p['lr'] for p in collapsed], [p['val'] for p in collapsed], 'x',
              color=line.get_color(), markersize=8)
    final = figures['final']
    if final is not None:
        axis.errorbar([chosen['lr']], [final['val']['mean']], yerr=[final['val']['std']],
                      color=line.get_color(), marker='s', markersize=5, capsize=3)
    axis.set_xscale('log')


def plot_curve(axis, figures: dict, label: str, line_style: dict) -> None:
    """A method's validation at 25/50/100 % of the steps, over its final seeds."""
    if figures['final'] is None:
        return
    curve = figures['final']['val_curve']
    axis.errorbar([100 * f for f in curve['fractions']], curve['mean'], yerr=curve['std'],
                  marker='o', markersize=3, capsize=2, label=label, **line_style)
    axis.set_xticks([25, 50, 100])


def write_pictures(results: dict, stem: str) -> Dict[str, str]:
    """Draw both pictures next to ``stem`` (the markdown's path without '.md').

    Returns:
        dict: ``{'lr': path, 'curves': path}``.
    """
    import matplotlib
    matplotlib.use('Agg')
    paths = dict(lr=f'{stem}_lr.png', curves=f'{stem}_curves.png')
    draw(results, paths['lr'], 'Validation score against lr at each method\'s chosen scale: '
         'dots one run (seed 0), squares the final seeds\' mean ± std, crosses collapsed runs',
         'peak learning rate', plot_lr)
    draw(results, paths['curves'], 'Validation score during training at each method\'s chosen '
         'setting (mean ± std over the final seeds)', '% of the training steps', plot_curve)
    return paths
