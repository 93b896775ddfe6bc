"""The markdown report (BENCHMARKS.md) rendered from the results data.

Nothing is measured here: ``render`` reads the dict the sections produced (the same dict that is
written as JSON beside the markdown), so a run can be re-rendered from its JSON.
"""
from typing import Dict, List, Optional

from mmflora.adapters.paths import MEASURE_WITHIN

from ..records import find, ratio
from ..settings import MiB, PAPER
from .path_choice import FIXED_PATHS
from .targets import summary


def fmt_ratio(value: float, digits: int = 2) -> str:
    return '—' if value != value else f'{value:.{digits}f}x'


def layer_tables(layers: List[dict]) -> List[str]:
    """Per family: a time table and a peak-memory table, ratios to the frozen base."""
    lines = []
    families = []
    for layer in layers:
        if layer['family'] not in families:
            families.append(layer['family'])
    for family in families:
        columns = [layer for layer in layers if layer['family'] == family]
        keys = []
        for layer in columns:
            for case in layer['cases']:
                if case['key'] not in [k for k, _ in keys]:
                    keys.append((case['key'], case['label']))
        for field, title in (('ms', 'time'), ('peak', 'peak memory')):
            lines += [f'**{family} — forward + backward {title}, x frozen base**', '']
            lines.append('| method | ' + ' | '.join(c['column'] for c in columns) + ' |')
            lines.append('|---|' + '---:|' * len(columns))
            unit = (lambda v: f'{v:.1f} ms') if field == 'ms' else (lambda v: f'{v / MiB:.1f} MiB')
            lines.append('| *frozen base, absolute* | ' + ' | '.join(
                unit(find(c['cases'], 'base')[field]) for c in columns) + ' |')
            for key, label in keys:
                cells = []
                for layer in columns:
                    case = next((c for c in layer['cases'] if c['key'] == key), None)
                    if case is None:
                        cells.append('')
                    elif case['peak'] is None:
                        cells.append(case['note'] or 'n/a')
                    else:
                        cell = fmt_ratio(ratio(case, find(layer['cases'], 'base'), field))
                        if field == 'ms' and case['note']:
                            cell += f" ({case['note'].replace('auto -> ', '')})"
                        cells.append(cell)
                lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
            if family == 'depthwise 7x7':
                key_ratios = [ratio(find(c['cases'], 'flora-dense-auto'),
                                    find(c['cases'], 'twoconv-dense'), field) for c in columns]
                lines.append('| **FLoRA dense auto / two-conv dense** | ' + ' | '.join(
                    f'**{fmt_ratio(value, 3)}**' for value in key_ratios) + ' |')
            lines.append('')
    return lines


def roles_of(bd: dict) -> Dict[str, dict]:
    """The breakdown rows summed per role: layer count, FLoRA and LoRA ms, FLoRA's paths."""
    roles: Dict[str, dict] = {}
    for row in bd['rows']:
        entry = roles.setdefault(row['role'], dict(count=0, flora=0.0, lora=0.0, paths={}))
        entry['count'] += row['count']
        for method in ('flora', 'lora'):
            entry[method] += row[method]['ms'] * row['count']
        path = row['flora']['path']
        entry['paths'][path] = entry['paths'].get(path, 0) + row['count']
    return roles


def breakdown_table(bd: dict) -> List[str]:
    """Per role: isolated layer times and saved activations, FLoRA against LoRA."""
    roles = roles_of(bd)
    lines = ['## Where the backbone step goes: FLoRA against LoRA by layer role', '',
             f"Each adapter layer of `{bd['model']}` ({bd['px']} px, batch {bd['batch']}) timed "
             'alone at the input shape it sees in the backbone (forward + backward, interleaved '
             'median), summed over the layers of that role; and the activations each method '
             'saves for backward in one backbone forward, by role (parameters excluded). '
             f"FLoRA dense auto r={bd['flora_r']}, LoRA r={PAPER['lora_r']}.", '',
             '| role | layers | FLoRA | LoRA | FLoRA - LoRA | FLoRA / LoRA | FLoRA paths '
             '| saved, FLoRA | saved, LoRA |',
             '|---|---:|---:|---:|---:|---:|---|---:|---:|']
    total = dict(flora=0.0, lora=0.0)
    for role, entry in roles.items():
        total['flora'] += entry['flora']
        total['lora'] += entry['lora']
        paths = ', '.join(f'{p} {n}' for p, n in sorted(entry['paths'].items()))
        lines.append(
            f"| {role} | {entry['count']} | {entry['flora']:.1f} ms | {entry['lora']:.1f} ms | "
            f"{entry['flora'] - entry['lora']:+.1f} ms | "
            f"{fmt_ratio(entry['flora'] / entry['lora'])} | {paths} | "
            f"{bd['saved']['flora'].get(role, 0) / MiB:.1f} MiB | "
            f"{bd['saved']['lora'].get(role, 0) / MiB:.1f} MiB |")
    if 'other' in bd['saved']['flora']:
        lines.append('| other layers (norms, GELU, GRN, head) | | | | | | | '
                     f"{bd['saved']['flora']['other'] / MiB:.1f} MiB | "
                     f"{bd['saved']['lora'].get('other', 0) / MiB:.1f} MiB |")
    saved_total = {m: sum(bd['saved'][m].values()) / MiB for m in ('flora', 'lora')}
    lines.append(
        f"| **all** | | **{total['flora']:.1f} ms** | **{total['lora']:.1f} ms** | "
        f"**{total['flora'] - total['lora']:+.1f} ms** | "
        f"**{fmt_ratio(total['flora'] / total['lora'])}** | | "
        f"**{saved_total['flora']:.1f} MiB** | **{saved_total['lora']:.1f} MiB** |")
    lines.append('')
    return lines


def preamble(results: dict) -> List[str]:
    """Title, the machine and how everything is measured."""
    env, profile, device = results['environment'], results['profile'], results['device']
    reps = [f"{profile['layer_reps']} (layers)", f"{profile['backbone_reps']} (backbone)",
            f"{profile['infer_reps']} (inference)"]
    if 'path_reps' in profile:
        reps.insert(1, f"at least {profile['path_reps']} (path choice)")
    lines = [
        '# mmflora benchmarks: FLoRA against LoRA, DoRA, the two-conv formulation and the '
        'frozen base', '',
        f'Generated by `{results["command"]}` on {results["date"]} '
        f'({results["seconds"]:.0f} s). Do not edit by hand: rerun the script.', '',
        '## Machine', '',
        f'- device: {device}' + (f" ({env['gpu']})" if 'gpu' in env else ''),
        f"- CPU: {env['cpu']}, {env['cores']} cores visible, torch threads: {env['threads']}",
        f"- load average (1 min) at start / end: {results['load'][0]} / {results['load'][1]}"
        + (' — the machine was busy with other jobs' if max(results['load']) > max(
            env['cores'] - env['threads'], 1) else ''),
        '- versions: ' + ', '.join(f'{k} {v}' for k, v in env['versions'].items()),
        f"- platform: {env['platform']}", '',
        '## How it is measured', '',
        '- Every comparison (one layer, the backbone, inference) runs its methods '
        'interleaved: each repetition runs every method once, in orders that let every '
        'method run right after every other equally often (a Williams design), and '
        + ('a 64 MiB buffer is written between repetitions, so that every method comes '
           'first, after that same separator, equally often' if device == 'cpu' else
           'nothing runs between repetitions')
        + f"; the figure is the median of {', '.join(reps[:-1])} and {reps[-1]} timed "
        'repetitions after warm-up (methods more than 1 s per run, the dense references, '
        'get 3). Cells are ratios to the row named in the title.']
    if env.get('keeps_freed_memory'):
        lines.append('- Freed memory stays in the process (glibc `mallopt`: blocks up to '
                     '32 MiB from the heap, no trimming), so that no case pays for faulting '
                     'back in the pages the case before it freed.')
    lines += [
        '- Timer: ' + (
            'CPU time of the computing thread (`time.thread_time`): with one torch thread '
            'every op and the autograd engine run in the calling thread, so this is the '
            "step's cost without the time slices other jobs take on a shared machine."
            if device == 'cpu' and env['threads'] == 1 else
            'CUDA events recorded around each step (after `torch.cuda.synchronize`).'
            if device == 'cuda' else 'wall-clock time (`time.perf_counter`).'),
        '- Peak memory: bytes of the method\'s tensors alive before the step (weights, '
        'input, optimizer state, cached or backed-up weights) plus the most the step '
        'allocates on top (saved activations, gradients, temporaries): ' + (
            '`torch.cuda.max_memory_allocated` less what was allocated before the step.'
            if device == 'cuda' else
            'the highest running sum of the allocations and frees that `torch.profiler` '
            '(profile_memory=True) records from the CPU allocator. Allocations made '
            'outside PyTorch\'s allocator (oneDNN scratch space) are not seen.'),
        f"- FLoRA: r3 = {PAPER['r_kernel']}, s = {PAPER['scale']}; LoRA and DoRA alpha = r. "
        'Zero-initialised adapter tensors (FLoRA core, LoRA B) get small random values. '
        '"dense" adapts a depthwise conv with an update spanning all input channels (the '
        'mode whose count gives the paper\'s 12.8M at r=38); "structured" keeps the '
        'depthwise weight\'s own (C, 1, 7, 7) shape.',
        '- Two-conv reference: the frozen base layer plus a second conv (or linear) whose '
        'weight is the full Tucker reconstruction rebuilt at every forward, as in the '
        'official release; its dense variant convolves over all input channels.',
        '- PEFT LoRA: `peft.get_peft_model(model, LoraConfig(r=8, lora_alpha=8, ...))`, '
        'calling the wrapped inner model. PEFT refuses depthwise convs unless the rank is a '
        'multiple of the groups, so its backbone row leaves them out (smaller budget).', '']
    return lines


def layers_section(results: dict) -> List[str]:
    profile = results['profile']
    dims = profile['dims']
    return ['## Per layer (ConvNeXt-V2-L shapes)', '',
            f"Stage widths {', '.join(map(str, dims))}; batch {profile['batch']}; "
            f"feature maps of a {profile['image']} px image (the \"@N\" in a column is "
            'the map size). '
            f"FLoRA r = {PAPER['flora_r']}, LoRA/DoRA r = {PAPER['lora_r']} (the paper's "
            'ConvNeXt-V2-L budgets). The frozen base needs only the input gradient (none '
            'for the stem, whose input is the image). Time cells give the path the '
            'automatic choice took ("measured" where it timed both; see the path choice '
            'section).', ''] + layer_tables(results['layers'])


def backbone_section(bb: dict) -> List[str]:
    lines = ['## Whole backbone: one training step', '',
             f"timm `{bb['model']}`, batch {bb['batch']} at {bb['px']} px, forward + "
             'backward + AdamW step, loss on the (frozen) head output. Budgets matched to '
             f"LoRA r={PAPER['lora_r']} ({bb['budget']:,} parameters) with `solve_rank`: "
             f"FLoRA r = {bb['flora_r_dense']} dense, {bb['flora_r_structured']} "
             'structured.', '',
             '| method | trainable | step | x LoRA | x frozen base | peak memory | x LoRA '
             '| automatic paths |',
             '|---|---:|---:|---:|---:|---:|---:|---|']
    lora, base = find(bb['cases'], 'lora'), find(bb['cases'], 'base')
    for case in bb['cases']:
        if case['peak'] is None:
            lines.append(f"| {case['label']} | | {case['note']} | | | | | |")
            continue
        lines.append(
            f"| {case['label']} | {case['params']:,} | {case['ms']:.0f} ms | "
            f"{fmt_ratio(ratio(case, lora))} | {fmt_ratio(ratio(case, base))} | "
            f"{case['peak'] / MiB:.0f} MiB | {fmt_ratio(ratio(case, lora, 'peak'))} | "
            f"{case['note']} |")
    lines.append('')
    return lines


def fmt_ms(value: Optional[float], digits: int = 2) -> str:
    return '—' if value is None or value != value else f'{value:.{digits}f} ms'


def path_section(results: dict) -> List[str]:
    """The automatic path against both fixed paths: per layer, then on the whole backbone."""
    lines = ['## Path choice: the automatic path against both fixed paths', '',
             'An unmerged adapter layer runs `merged` (one op with W0 + s*dW) or `factorised` '
             '(the base op and the small branch ops); `auto` decides by a multiply-add cost '
             'model and, in training where the two estimates are within '
             f'{MEASURE_WITHIN:.0f}x of each other, by timing both paths once per layer '
             'signature at the first step (kept for the process). "decided by": *measured* '
             '(that timing), *cost model* (estimates further apart), *dense branch* (a '
             'dense-mode update on a grouped conv stays factorised, unmeasured), *only path* '
             '(a structured grouped conv has no factorised path). Every model is asked for '
             'its paths before anything is timed, so the measuring happens once, there. '
             '*twin*: a second, identical auto case in the same comparison; how far it lands '
             'from the first is the noise the ratio has to beat. *spread*: interquartile '
             "range over the median of auto's own repetitions.", '']
    if 'paths' in results:
        pc = results['paths']
        more = (f", more for a fast case (until it has run {pc['min_seconds']:g} s, at most "
                f"{pc['max_reps']}; auto's count is the repetitions column)"
                if pc['min_seconds'] > 0 else '')
        lines += [f"Per layer: FLoRA r = {PAPER['flora_r']} on the shapes above, forward + "
                  'backward, the four cases interleaved; the median of at least '
                  f"{pc['reps']} repetitions{more}.",
                  '', '| layer | mode | auto took | decided by | merged | factorised | auto '
                  '| **auto / faster fixed** | twin / auto | spread | repetitions |',
                  '|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|']
        for row in results['paths']['rows']:
            fixed = [row['refused'].get(p) or fmt_ms(row['fixed_ms'].get(p))
                     for p in FIXED_PATHS]
            lines.append(
                f"| {row['column']} | {row['mode']} | {row['path']} | {row['decided']} | "
                f"{fixed[0]} | {fixed[1]} | {fmt_ms(row['auto_ms'])} | "
                f"**{fmt_ratio(row['auto_vs_best'], 3)}** | "
                f"{fmt_ratio(row['twin_vs_auto'], 3)} | {row['spread']:.1%} | "
                f"{row['reps']} |")
        overall = results['paths']['overall']
        lines += ['', f"{overall['measured']} of {overall['layers']} layers measured; "
                  f"identical cases differ by up to {overall['max_noise']:.1%} (median "
                  f"{overall['median_noise']:.1%}).", '']
    rows = results.get('backbone', {}).get('paths', [])
    if rows:
        bb = results['backbone']
        lines += [f"Whole backbone (`{bb['model']}`, the training step of the section above): "
                  'FLoRA with the automatic choice against every layer on one fixed path '
                  '(structured grouped convs merge in the all-factorised row, having no '
                  'factorised path); the twin is the second dense auto case.', '',
                  '| FLoRA | auto took | all merged | all factorised | auto '
                  '| **auto / faster fixed** | twin / auto |', '|---|---|---:|---:|---:|---:|---:|']
        for row in rows:
            r = bb[f"flora_r_{row['mode']}"]
            fixed = [fmt_ms(row['fixed_ms'][p], 0) for p in FIXED_PATHS]
            lines.append(
                f"| {row['mode']} (r={r}) | {row['path']} | {fixed[0]} | {fixed[1]} | "
                f"{fmt_ms(row['auto_ms'], 0)} | **{fmt_ratio(row['auto_vs_best'], 3)}** | "
                f"{fmt_ratio(row['twin_vs_auto'], 3)} |")
        lines.append('')
    return lines


def inference_section(inf: dict) -> List[str]:
    base = find(inf['cases'], 'base')
    lines = ['## Inference', '',
             f"timm `{inf['model']}`, batch {inf['batch']} at {inf['px']} px, eval mode, "
             'no_grad, same budgets as above. A structured update has the depthwise '
             "weight's own shape and folds into it; a dense one spans all input channels, "
             'so it folds only by turning the depthwise conv into a dense conv '
             '(`convert_dense=True`), or stays a factorised branch beside it. Merging in '
             'place keeps a copy of W0 for `unmerge` (counted in the peak).', '',
             '| model | forward | x base | peak memory | automatic paths |',
             '|---|---:|---:|---:|---|']
    for case in inf['cases']:
        lines.append(f"| {case['label']} | {case['ms']:.1f} ms | "
                     f"{fmt_ratio(ratio(case, base), 3)} | {case['peak'] / MiB:.0f} MiB | "
                     f"{case['note']} |")
    lines.append('')
    return lines


def storage_section(st: dict) -> List[str]:
    lines = ['## Storage', '',
             f"timm `{st['model']}` (head excluded from adaptation): "
             '`save_adapters` (safetensors with metadata) against '
             '`torch.save(model.state_dict())`.', '',
             '| file | trainable params | size | x full checkpoint |',
             '|---|---:|---:|---:|',
             f"| full checkpoint | — | {st['full_bytes'] / MiB:.1f} MiB | 1.000x |"]
    for method in ('flora', 'lora'):
        entry = st[method]
        lines.append(f"| {method} r={entry['r']} adapter file | {entry['params']:,} | "
                     f"{entry['bytes'] / MiB:.1f} MiB | "
                     f"{entry['bytes'] / st['full_bytes']:.3f}x |")
    lines.append('')
    return lines


def summary_lines(results: dict) -> List[str]:
    """One line per target: the measured ratio, the target, what it rests on, the verdict."""
    lines = ['## Summary', '']
    for entry in summary(results):
        value, limit = entry['value'], entry['limit']
        shown = f'{value:.3f}'
        if value == value and float(shown) == limit and value != limit:  # 0.10003 is no 0.100
            shown = f'{value:.5f}'
        note = f"; {entry['note']}" if entry.get('note') else ''
        lines.append(f"- {entry['text']}: {shown}x (target <= {limit:.2f}x{note}) "
                     f"{entry['verdict']}")
    return lines


def render(results: dict, notes: Optional[str] = None) -> str:
    """BENCHMARKS.md for ``results``, with the hand-written ``notes`` before the summary."""
    lines = preamble(results)
    if 'layers' in results:
        lines += layers_section(results)
    if 'backbone' in results:
        lines += backbone_section(results['backbone'])
    if 'paths' in results or results.get('backbone', {}).get('paths'):
        lines += path_section(results)
    if 'breakdown' in results:
        lines += breakdown_table(results['breakdown'])
    if 'inference' in results:
        lines += inference_section(results['inference'])
    if 'storage' in results:
        lines += storage_section(results['storage'])
    if notes:
        lines += [notes, '']
    lines += summary_lines(results)
    return '\n'.join(lines) + '\n'
