"""TRANSFER.md from the results data of a transfer run (``benchmarks/transfer.py``)."""
import datetime
from typing import Dict, List, Optional

from . import search
from .settings import method_by_key

VERDICT_WORDS = {'ahead': 'ahead of', 'level': 'level with', 'behind': 'behind',
                 'one seed': 'compared at one seed (no test possible) with'}


def fmt_score(figures: dict) -> str:
    return f'{figures["mean"]:.1f} ± {figures["std"]:.1f}'


def fmt_params(count: int) -> str:
    if count >= 1e6:
        return f'{count / 1e6:.2f}M'
    return f'{count / 1e3:.1f}k' if count >= 1e3 else str(count)


def fmt_p(p: float) -> str:
    if p != p:  # NaN
        return '-'
    return f'{p:.3f}' if p >= 0.001 else f'{p:.1e}'


def method_label(results: dict, key: str) -> str:
    """Row label with the solved rank and budget ('FLoRA r=10 (6.5%)')."""
    spec = method_by_key(key)
    if spec.budget is None:
        return spec.label
    budget = results['budgets'][spec.budget]
    return f'{spec.label} r={budget[spec.method]} ({100 * budget["share"]:.1f}%)'


def knob_text(chosen: dict) -> str:
    """The chosen knob ('s=16 (x4)', 'alpha=2 (x1)'), '-' for a method without one."""
    if not chosen.get('knob'):
        return '-'
    name = 's' if chosen['knob'] == 'scale' else 'alpha'
    return f'{name}={chosen["knob_value"]:g} (x{search.scale_factor(chosen["scale_step"]):g})'


def tasks_of(results: dict) -> List[dict]:
    wanted = results['settings']['tasks']
    return [t for t in results['settings']['targets'] if t['key'] in wanted]


def header(results: dict) -> List[str]:
    env, base, settings = results['environment'], results['base'], results['settings']
    profile = settings['profile']
    versions = ', '.join(f'{k} {v}' for k, v in env['versions'].items())
    accuracy = base.get('held_out_accuracy')
    date = datetime.datetime.fromtimestamp(results['started']).strftime('%Y-%m-%d %H:%M')
    start = ', '.join(f'{search.lr_of(k):g}' for k in profile['start_lrs'])
    return [
        '# Transfer: a small Table 1 on CPU',
        '',
        'FLoRA against the baselines of the paper\'s Table 1, adapting one pretrained '
        'ConvNeXt-V2-atto trunk to target tasks with a small and a large domain gap (the '
        'analogue of COCO against DOTA), each method at the learning rate and scale knob its '
        f'own search chose on a validation split, then {len(profile["final_seeds"])} fresh '
        'seed(s) at that setting on a test split. Written by `' + results['command'] + '`.',
        '',
        'Tasks: classification of the `near` and the `far` procedural images (a linear '
        'classifier on the pooled last stage) and segmentation of both through MMSegmentation\'s '
        'UperNet with its auxiliary FCN head; far-seg (two pattern regions per image, labelled '
        'per pixel) is the dense task with the large domain gap, the analogue of the paper\'s '
        'DOTA column. Oriented detection through MMRotate on aerial-like scenes is not part of '
        'the benchmark: it does not fit the run\'s time on 2 CPU cores.',
        '',
        f'* Machine: {env["cpu"]}, {env["cores"]} cores, shared with other jobs (load average '
        f'{env["load_start"]} at the start, {env["load_end"]} at the end); '
        f'{profile["workers"]} runs in parallel with {settings["threads"]} torch thread(s) '
        'each.',
        f'* Versions: {versions}.',
        f'* Base: `{base["path"]}`, sha256 `{base["sha256"]}`; pretrained on the procedural '
        f'`{base.get("task", "?")}` task for {base.get("steps", "?")} steps, held-out accuracy '
        + (f'{accuracy:.3f}' if accuracy is not None else 'not recorded') + '.',
        f'* Training: {profile["steps"]} steps of batch {profile["batch"]} on the '
        f'classification tasks, {profile["dense_steps"]} of batch {profile["dense_batch"]} on '
        'the segmentation tasks (their heads start from scratch and need more updates), '
        f'{100 * profile["warmup"]:.0f}% linear warm-up then cosine to 0, AdamW, weight decay '
        f'0.05 on every trainable tensor, the heads (from scratch) at '
        f'{settings.get("head_lr_mult", 1):g}x the lr of the trunk\'s trainable tensors; '
        f'{profile["image_size"]} px images; per seed {profile["train"]} training images, '
        f'cycled in a per-epoch order drawn from the seed; {profile["val"]} validation and '
        f'{profile["test"]} test images, the same for every run, each split from its own '
        'seed.',
        f'* Seeds: the search runs on seed {profile["search_seed"]}, the final stage on seeds '
        f'{list(profile["final_seeds"])} (fresh: the seed the setting was chosen on does not '
        'enter the verdict). A seed fixes the training images, their order and the heads\' '
        'initial weights, the same for every method.',
        f'* Runs: {len(results["runs"])} ({sum(r["stage"] == "search" for r in results["runs"])} '
        f'in the searches, {sum(r["stage"] == "final" for r in results["runs"])} final); wall '
        f'time {results["wall_time_s"] / 3600:.2f} h from {date}, CPU time summed over the '
        f'processes {results["cpu_time_s"] / 3600:.2f} h'
        + (f' ({results["reused_runs"]} runs reused from a stopped run, their CPU time '
           'included)' if results.get('reused_runs') else '') + '.',
        '',
        '## How each method\'s setting is chosen',
        '',
        'An adaptive coordinate search per task and method, on seed '
        f'{profile["search_seed"]} and the validation split, over a crossed grid: learning '
        'rates in half-decade steps (1e-4, 3e-4, 1e-3, 3e-3, ...) and, for FLoRA\'s s '
        '(default 4) and LoRA\'s and DoRA\'s alpha (default r), factors of 4 around the '
        f'default. It starts at lr {start} at the default scale'
        + warm_text(settings.get('warm_starts', {})) + '; it then takes the best point '
        'tried so far and tries its untried lr neighbours, and, once both lr neighbours are '
        'tried, its untried scale neighbours; whenever the best point moves, its own '
        'neighbours follow. It stops when the best point has a tried, no better neighbour on '
        'both sides in lr and (for a method with a knob) in scale. A run whose validation '
        'score is within 1 point of the best constant prediction, or whose loss diverged, '
        'counts as collapsed: it ranks below every run that did not collapse, and as a '
        'neighbour it counts as worse. The grid stops at lr '
        f'{search.lr_of(search.LR_STEPS[0]):g} .. {search.lr_of(search.LR_STEPS[1]):g} and '
        f'scale x4^{search.SCALE_STEPS[0]} .. x4^{search.SCALE_STEPS[1]}, and a search at '
        f'{profile["max_points"]} points; a choice that sits at such a limit, or with an '
        'untried neighbour, is flagged in the tables. Frozen, full fine-tuning and BitFit '
        'have no scale knob and search the lr only. FLoRA runs with the authors\' factor init '
        '(`init=\'paper\'`); the comparison with `init=\'unit\'` of earlier versions of this '
        'benchmark is not part of it. Searches of different tasks and methods '
        'are independent and run interleaved in a pool of workers; a search\'s next round '
        'starts when its last round has finished.',
        '',
    ]


def warm_text(warm_starts: Dict[str, str]) -> str:
    """How the warm-started searches start, in words ('' when none is)."""
    if not warm_starts:
        return ''
    pairs = ', '.join(f'{task} from {parent}' for task, parent in warm_starts.items())
    return (' (warm-started searches start instead from the same method\'s choice on another '
            f'task, at that point and its two lr neighbours, once that search is over: {pairs})')


def budget_lines(results: dict) -> List[str]:
    lines = ['## Budgets', '',
             'Backbone adapter parameters; the trunk has '
             f'{fmt_params(results["trunk_params"])}. LoRA\'s rank is solved to a share of '
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


def edge_text(figures: dict) -> str:
    flags = list(figures['edges'])
    return '; '.join(flags) if flags else 'none'


def task_table(results: dict, task: dict) -> List[str]:
    """One task's main table: each method at its chosen setting."""
    methods = results['summary'].get(task['key'], {})
    profile = results['settings']['profile']
    seeds = len(profile['final_seeds'])
    lines = [f'### {task["key"]}: {task["metric"]}, {task["gap"]} domain gap', '',
             f'| Method | backbone params | chosen lr | chosen scale | test, {seeds} seeds '
             '| val, same seeds | ms/step | \\|\\|dW\\|\\|_F | search points (collapsed) '
             '| edge flag |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for key in results['settings']['methods']:
        figures = methods.get(key)
        if figures is None:
            continue
        final, chosen = figures['final'], figures['chosen']
        share = 100 * final['adapter_params'] / results['trunk_params']
        lines.append(
            f'| {method_label(results, key)} | {fmt_params(final["adapter_params"])} '
            f'({share:.1f}%) | {chosen["lr"]:g} | {knob_text(chosen)} | '
            f'{fmt_score(final["test"])} | {fmt_score(final["val"])} | '
            f'{final["step_cpu_ms"]:.0f} | {final["dw_norm"]["mean"]:.3g} | '
            f'{figures["search_runs"]} ({len(figures["collapses"])}) | {edge_text(figures)} |')
    return lines + ['']


def verdict_table(results: dict) -> List[str]:
    lines = ['## FLoRA against LoRA, DoRA and BitFit', '',
             'Each method at its own chosen setting; test scores of the final seeds, paired by '
             'seed (the two runs of a pair share the training images, their order and the '
             'heads\' initial weights). Two-sided paired t-test (scipy.stats.ttest_rel); '
             '"ahead" or "behind" where p < 0.05, by the sign of the mean difference, "level" '
             'otherwise.', '',
             '| Task | budget | FLoRA against | verdict | p | mean difference (points) |',
             '|---|---|---|---|---|---|']
    for row in results['comparisons']:
        lines.append(f'| {row["task"]} | {row["budget"]} | {method_label(results, row["b"])} '
                     f'| FLoRA {row["verdict"]} | {fmt_p(row["p"])} | '
                     f'{row["difference"]:+.1f} |')
    return lines + ['']


def findings(results: dict) -> List[str]:
    """The plain reading of the verdicts and of the flags, built from the data."""
    sentences = []
    by_budget: Dict[str, List[dict]] = {}
    for row in results['comparisons']:
        by_budget.setdefault(row['budget'], []).append(row)
    for budget, rows in by_budget.items():
        parts = [f'{VERDICT_WORDS[r["verdict"]]} {method_by_key(r["b"]).label} on {r["task"]} '
                 f'({r["difference"]:+.1f}, p {fmt_p(r["p"])})' for r in rows]
        sentences.append(f'At the {budget} budget FLoRA is ' + '; '.join(parts) + '.')
    counts = {v: sum(r['verdict'] == v for r in results['comparisons'])
              for v in ('ahead', 'level', 'behind')}
    sentences.append(f'Over the {len(results["comparisons"])} comparisons FLoRA is ahead in '
                     f'{counts["ahead"]}, level in {counts["level"]} and behind in '
                     f'{counts["behind"]}.')
    flagged = [(t, m, f) for t, methods in results['summary'].items()
               for m, f in methods.items() if f['edges']]
    if flagged:
        sentences.append(
            f'{len(flagged)} chosen settings carry an edge flag, so those methods might do '
            'better beyond what was tried: ' + '; '.join(
                f'{method_label(results, m)} on {t} ({edge_text(f)})' for t, m, f in flagged)
            + '.')
    else:
        sentences.append('No chosen setting sits at an edge of what the search tried: each '
                         'has a tried, no better neighbour on every side.')
    for task in tasks_of(results):
        methods = results['summary'].get(task['key'], {})
        ranked = sorted(methods, key=lambda m: -methods[m]['final']['test']['mean'])
        if ranked:
            sentences.append(f'Highest test mean on {task["key"]}: '
                             f'{method_label(results, ranked[0])}.')
    return ['## What the tables show', '', ' '.join(sentences), '']


def curves_table(results: dict) -> List[str]:
    lines = ['## Validation during training', '',
             'Validation score at 25, 50 and 100 % of the steps at each method\'s chosen '
             'setting, mean over the final seeds. The frozen trunk (heads only) comes first: '
             'its last two columns say whether the steps were enough for the heads.', '']
    tasks = tasks_of(results)
    lines += ['| Method | ' + ' | '.join(f'{t["key"]}: 25 / 50 / 100 %' for t in tasks) + ' |',
              '|---|' + '---|' * len(tasks)]
    for key in results['settings']['methods']:
        cells = []
        for task in tasks:
            figures = results['summary'].get(task['key'], {}).get(key)
            if figures is None or figures['final'] is None:
                cells.append('-')
                continue
            cells.append(' / '.join(f'{v:.1f}' for v in figures['final']['val_curve']['mean']))
        lines.append(f'| {method_label(results, key)} | ' + ' | '.join(cells) + ' |')
    return lines + ['']


def pictures(names: Optional[Dict[str, str]]) -> List[str]:
    if not names:
        return []
    return ['## Pictures', '',
            f'![validation score against lr]({names["lr"]})', '',
            'Validation score against the learning rate at each method\'s chosen scale. Each '
            'dot is one run (seed 0, the search); the square at the chosen lr is the mean ± '
            'std over the final seeds; a cross is a collapsed run.', '',
            f'![validation during training]({names["curves"]})', '',
            'Validation score at 25, 50 and 100 % of the steps at each method\'s chosen '
            'setting, mean ± std over the final seeds.', '']


def search_appendix(results: dict) -> List[str]:
    lines = ['## Appendix: every searched point', '',
             'Validation score of every point each search tried (seed '
             f'{results["settings"]["profile"]["search_seed"]}), rows the scale factor on the '
             'method\'s default knob, columns the lr; the chosen point in bold, c a collapsed '
             'run.', '']
    for task in tasks_of(results):
        methods = results['summary'].get(task['key'], {})
        for key in results['settings']['methods']:
            figures = methods.get(key)
            if figures is None:
                continue
            points = figures['points'].values()
            lrs = sorted({p['lr_step'] for p in points})
            scales = sorted({p['scale_step'] for p in points})
            chosen = (figures['chosen']['lr_step'], figures['chosen']['scale_step'])
            lines += [f'**{task["key"]}, {method_label(results, key)}**', '',
                      '| scale | ' + ' | '.join(f'lr {search.lr_of(k):g}' for k in lrs) + ' |',
                      '|---|' + '---|' * len(lrs)]
            by_point = {(p['lr_step'], p['scale_step']): p for p in points}
            for scale in scales:
                cells = []
                for lr in lrs:
                    point = by_point.get((lr, scale))
                    if point is None:
                        cells.append('')
                        continue
                    text = f'{point["val"]:.1f}' + (' c' if point['collapsed'] else '')
                    cells.append(f'**{text}**' if (lr, scale) == chosen else text)
                lines.append(f'| x{search.scale_factor(scale):g} | ' + ' | '.join(cells) + ' |')
            lines.append('')
    return lines


def render(results: dict, picture_names: Optional[Dict[str, str]] = None) -> str:
    """The markdown report; ``picture_names`` ({'lr': file, 'curves': file}) are linked."""
    lines = header(results) + budget_lines(results) + ['## Main tables', '']
    for task in tasks_of(results):
        lines += task_table(results, task)
    lines += ['Scores in %. Test: mean ± std over the final seeds at the chosen setting; val: '
              'the same runs\' validation score. ms/step: median over the final runs of one '
              'training step\'s CPU time (one torch thread). ||dW||_F: summed over the adapted '
              'layers (for full fine-tuning and the frozen trunk ||W - W0||_F over every conv '
              'and linear of the trunk, for BitFit ||b - b0|| over its biases), mean over the '
              'final seeds. Search points: runs the search made (collapsed ones in brackets).',
              '']
    lines += verdict_table(results) + findings(results) + curves_table(results)
    lines += pictures(picture_names) + search_appendix(results)
    return '\n'.join(lines).rstrip() + '\n'
