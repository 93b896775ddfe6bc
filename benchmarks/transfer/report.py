"""TRANSFER.md from the results data of a transfer run (``benchmarks/transfer.py``)."""
import datetime
from typing import Callable, Dict, List

from . import results as R
from .settings import INIT_ROWS, PAPER_LR, method_by_key

VERDICT_WORDS = {'ahead': 'ahead of', 'level': 'level with', 'behind': 'behind',
                 'one seed': 'compared at one seed (no spread to judge by) with'}


def fmt_score(figures: dict) -> str:
    return f'{figures["mean"]:.1f} ± {figures["std"]:.1f}'


def fmt_params(count: int) -> str:
    if count >= 1e6:
        return f'{count / 1e6:.2f}M'
    return f'{count / 1e3:.1f}k' if count >= 1e3 else str(count)


def method_label(results: dict, key: str) -> str:
    """Row label with the solved rank and budget ('FLoRA r=10 (6.5%)')."""
    spec = method_by_key(key)
    if spec.budget is None:
        return spec.label
    budget = results['budgets'][spec.budget]
    return f'{spec.label} r={budget[spec.method]} ({100 * budget["share"]:.1f}%)'


def tasks_of(results: dict) -> List[dict]:
    wanted = results['settings']['tasks']
    return [t for t in results['settings']['targets'] if t['key'] in wanted]


def header(results: dict) -> List[str]:
    env, base, settings = results['environment'], results['base'], results['settings']
    profile = settings['profile']
    versions = ', '.join(f'{k} {v}' for k, v in env['versions'].items())
    minutes = results['wall_time_s'] / 60
    accuracy = base.get('held_out_accuracy')
    lrs = ', '.join(f'{lr:g}' for lr in profile['lrs'])
    lines = [
        '# Transfer: a small Table 1 on CPU',
        '',
        'FLoRA against the baselines of the paper\'s Table 1, adapting one pretrained '
        'ConvNeXt-V2-atto trunk to target tasks with a small and a large domain gap '
        '(the analogue of COCO against DOTA), every method with the same steps, data order, '
        'heads and learning-rate grid. Written by `' + results['command'] + '`.',
        '',
        f'* Machine: {env["cpu"]}, {env["cores"]} cores, shared with other jobs (load average '
        f'{env["load_start"]} at the start, {env["load_end"]} at the end), so wall times are '
        f'longer than on an idle machine; {profile["workers"]} runs in parallel with '
        f'{settings["threads"]} torch thread(s) each.',
        f'* Versions: {versions}.',
        f'* Base: `{base["path"]}`, sha256 `{base["sha256"]}`; pretrained on the procedural '
        f'`{base.get("task", "?")}` task for {base.get("steps", "?")} steps, held-out accuracy '
        + (f'{accuracy:.3f}' if accuracy is not None else 'not recorded') + '.',
        f'* Runs: {len(results["runs"])} (tasks x methods x lrs x seeds), seeds '
        f'{list(profile["seeds"])}, {profile["steps"]} steps of batch {profile["batch"]} '
        f'({profile.get("dense_steps", profile["steps"])} on the dense task) '
        f'({profile["warmup"]} warm-up, then cosine to 0), AdamW, weight decay 0.05 on every '
        f'trainable tensor, lr grid {{{lrs}}}; {profile["image_size"]} px images; per seed '
        f'{profile["train"]} training images, cycled; {profile["val"]} validation and '
        f'{profile["test"]} test images, the same for every run, each split from its own '
        f'seed. Wall time {minutes:.1f} min '
        f'({datetime.datetime.fromtimestamp(results["started"]).strftime("%Y-%m-%d %H:%M")}).',
        '* The best lr of each method and task is the one with the highest mean validation '
        'score; the table reports the mean ± standard deviation of the *test* score over the '
        'seeds at that lr. Every score at every lr is in the tables further down and in '
        '`TRANSFER.json`.',
        '',
    ]
    return lines


def budget_lines(results: dict) -> List[str]:
    lines = ['Budgets (backbone adapter parameters; the trunk has '
             f'{fmt_params(results["trunk_params"])}): LoRA\'s rank is solved to a share of '
             'the trunk (the paper\'s LoRA r=8 and r=32 on ConvNeXt-V2-L), FLoRA\'s rank to '
             'LoRA\'s count with `solve_rank`, DoRA at LoRA\'s rank (one magnitude per output '
             'channel more, as in Table 1).', '']
    lines += ['| budget | LoRA | DoRA | FLoRA | FLoRA / LoRA |', '|---|---|---|---|---|']
    for name, b in results['budgets'].items():
        c = b['counts']
        lines.append(f'| {name} ({100 * b["share"]:.1f}% of the trunk) | r={b["lora"]}: '
                     f'{c["lora"]:,} | r={b["dora"]}: {c["dora"]:,} | r={b["flora"]}: '
                     f'{c["flora"]:,} | {c["flora"] / c["lora"]:.3f} |')
    return lines + ['']


def main_table(results: dict) -> List[str]:
    summary, tasks = results['summary'], tasks_of(results)
    methods = [m for m in results['settings']['methods'] if method_by_key(m).table == 'main']
    head = '| Method | backbone params |'
    rule = '|---|---|'
    for task in tasks:
        head += f' {task["key"]} {task["metric"].split(" (")[0]} (best lr) |'
        rule += '---|'
    lines = ['## Main table', '', head + ' ms/step (CPU, 1 thread): ' +
             ' / '.join(t['key'] for t in tasks) + ' |', rule + '---|']
    for key in methods:
        cells, times, params = [], [], None
        for task in tasks:
            figures = summary.get(task['key'], {}).get(key)
            if figures is None:
                cells.append('-')
                continue
            best = figures['best']
            params = best['adapter_params']
            mark = ' †' if best['diverged'] else ''
            cells.append(f'{fmt_score(best["test"])} ({figures["best_lr"]:g}){mark}')
            times.append(f'{figures["step_cpu_ms"]:.0f}')
        share = (f' ({100 * params / results["trunk_params"]:.1f}%)'
                 if params else '')
        lines.append(f'| {method_label(results, key)} | {fmt_params(params or 0)}{share} | '
                     + ' | '.join(cells) + ' | ' + ' / '.join(times) + ' |')
    lines += ['', 'Scores in %. † a seed diverged (non-finite loss) at that lr. ms/step: the '
              'median over every run of the method on the task of one training step\'s CPU '
              'time (the runs\' thread time, one torch thread, so other jobs on the machine '
              'barely move it), measured in the same run as the scores.', '']
    return lines


def cost_table(results: dict) -> List[str]:
    summary, tasks = results['summary'], tasks_of(results)
    methods = results['settings']['methods']
    head = '| Method |' + ''.join(f' trainable {t["key"]} | \\|\\|dW\\|\\| {t["key"]} |'
                                  for t in tasks)
    lines = ['## Trainable parameters and final ||dW||_F', '',
             'Trainable: every parameter the optimizer updates (backbone adapters or unfrozen '
             'tensors, the trunk\'s output norms, the heads). ||dW||_F: the sum over the '
             'adapted layers (every conv and linear of the trunk) of the norm of '
             '`delta_weight()`; for full fine-tuning ||W - W0||_F over the same layers, for '
             'BitFit ||b - b0|| over its biases, for the frozen trunk ||W - W0||_F (measured, '
             'not assumed); mean over the seeds at the best lr.', '',
             head, '|---|' + '---|---|' * len(tasks)]
    for key in methods:
        cells = []
        for task in tasks:
            figures = summary.get(task['key'], {}).get(key)
            if figures is None:
                cells += ['-', '-']
                continue
            best = figures['best']
            cells += [fmt_params(best['trainable_params']), f'{best["dw_norm"]["mean"]:.3g}']
        lines.append(f'| {method_label(results, key)} | ' + ' | '.join(cells) + ' |')
    return lines + ['']


def lr_cells(method: dict, lrs: List[float], describe: Callable[[dict], str]) -> List[str]:
    """One method's cells across the lr grid.

    Args:
        method (dict): The method's summary on one task (``per_lr`` and ``best_lr``).
        lrs (list[float]): The learning rates of the grid, one cell each.
        describe (Callable): Turns the figures at one lr into the cell's text.

    Returns:
        list[str]: ``describe``'s text per lr, in bold at the lr chosen on validation, and
        ``'-'`` where that lr has no figures.
    """
    cells = []
    for lr in lrs:
        figures = method['per_lr'].get(R.lr_key(lr))
        if figures is None:
            cells.append('-')
            continue
        cell = describe(figures)
        cells.append(f'**{cell}**' if lr == method['best_lr'] else cell)
    return cells


def lr_tables(results: dict) -> List[str]:
    lrs = [float(lr) for lr in results['settings']['profile']['lrs']]
    lines = ['## Every learning rate', '',
             'Test score mean ± std over the seeds (validation mean in brackets); the lr '
             'chosen on validation in bold.', '']
    for task in tasks_of(results):
        methods = results['summary'].get(task['key'], {})
        lines += [f'### {task["key"]}: {task["metric"]}, {task["gap"]} domain gap', '',
                  '| Method | ' + ' | '.join(f'lr {lr:g}' for lr in lrs) + ' |',
                  '|---|' + '---|' * len(lrs)]
        for key in results['settings']['methods']:
            if key not in methods:
                continue
            cells = lr_cells(methods[key], lrs, lambda figures:
                             f'{fmt_score(figures["test"])} ({figures["val"]["mean"]:.1f})')
            lines.append(f'| {method_label(results, key)} | ' + ' | '.join(cells) + ' |')
        lines.append('')
    return lines


def init_table(results: dict) -> List[str]:
    lrs = [float(lr) for lr in results['settings']['profile']['lrs']]
    tasks = tasks_of(results)
    lines = ['## FLoRA\'s factor init', '',
             '`init=\'paper\'` (the authors\' release: factors N(0, 0.5/J_n), the default) '
             'against `init=\'unit\'` (N(0, 1/I_n)), FLoRA at the low budget, at the paper\'s '
             f'lr ({PAPER_LR:g}) and every other lr of the grid. Test score mean ± std; the lr '
             'chosen on validation in bold; ||dW||_F in brackets.', '',
             '| Task | init | ' + ' | '.join(f'lr {lr:g}' for lr in lrs) + ' |',
             '|---|---|' + '---|' * len(lrs)]
    for task in tasks:
        methods = results['summary'].get(task['key'], {})
        for key in INIT_ROWS:
            if key not in methods:
                continue
            cells = lr_cells(methods[key], lrs, lambda figures:
                             f'{fmt_score(figures["test"])} [{figures["dw_norm"]["mean"]:.3g}]')
            init = dict(method_by_key(key).options)['init']
            lines.append(f'| {task["key"]} | {init} | ' + ' | '.join(cells) + ' |')
    return lines + ['']


def findings(results: dict) -> List[str]:
    """The plain-language reading of the table, built from the comparisons in the data."""
    summary, tasks = results['summary'], tasks_of(results)
    by_pair: Dict[tuple, dict] = {(c['task'], c['a'], c['b']): c for c in results['comparisons']}
    sentences = []
    for budget in results['budgets']:
        parts = []
        for task in tasks:
            c = by_pair.get((task['key'], f'flora-{budget}', f'lora-{budget}'))
            if c:
                parts.append(f'{VERDICT_WORDS[c["verdict"]]} LoRA on {task["key"]} '
                             f'({c["difference"]:+.1f} points, standard error '
                             f'{c["se"]:.1f})')
        if parts:
            sentences.append(f'At the {budget} budget FLoRA is ' + '; '.join(parts) + '.')
    for budget in results['budgets']:
        parts = [f'{VERDICT_WORDS[c["verdict"]]} DoRA on {t["key"]} ({c["difference"]:+.1f})'
                 for t in tasks
                 for c in [by_pair.get((t['key'], f'flora-{budget}', f'dora-{budget}'))] if c]
        if parts:
            sentences.append(f'Against DoRA ({budget} budget) FLoRA is ' + '; '.join(parts)
                             + '.')
    parts = [f'{VERDICT_WORDS[c["verdict"]]} the frozen trunk on {t["key"]} '
             f'({c["difference"]:+.1f})'
             for t in tasks for c in [by_pair.get((t['key'], 'bitfit', 'frozen'))] if c]
    if parts:
        sentences.append('BitFit is ' + '; '.join(parts) + '.')
    main_methods = [m for m in results['settings']['methods'] if method_by_key(m).table == 'main']
    lrs = results['settings']['profile']['lrs']
    edges = R.grid_edge_choices(summary, lrs, main_methods)
    chosen = sum(1 for t in tasks for m in main_methods if m in summary.get(t['key'], {}))
    for side, lr in (('largest', max(lrs)), ('smallest', min(lrs))):
        if edges[side]:
            sentences.append(
                f'The chosen lr is the grid\'s {side} ({lr:g}) for {len(edges[side])} of the '
                f'{chosen} method and task pairs: those might do better beyond it, where '
                'nothing was tried, so the comparison holds for this grid only.')
    for task in tasks:
        methods = summary.get(task['key'], {})
        order = R.ranking(methods, main_methods)
        if order:
            sentences.append(f'Best on {task["key"]}: {method_label(results, order[0])}.')
    return ['## What the table shows', '',
            ' '.join(sentences) + ' "Ahead" or "behind" means the difference of the test '
            f'means exceeds {R.DECISIVE_SE:g} standard errors (over the seeds, each method at '
            'its own best lr); "level" otherwise. ' + results.get('notes', ''), '']


def render(results: dict) -> str:
    lines = header(results) + budget_lines(results) + main_table(results) + findings(results)
    lines += init_table(results) + cost_table(results) + lr_tables(results)
    return '\n'.join(lines).rstrip() + '\n'
