"""From run records to the table's figures: seeds averaged, the learning rate chosen on val.

Everything here reads the results data only (the ``runs`` list of the JSON), so a report can
be rendered again from a saved run. The best learning rate of a method on a task is the one
with the highest mean *validation* score over the seeds (the lower lr on a tie); the score
reported beside it is the mean *test* score at that lr.
"""
import math
import statistics
from typing import Dict, Iterable, List, Sequence, Tuple

#: How many standard errors a difference must exceed to count as a win or a loss.
DECISIVE_SE = 2.0


def mean_std(values: Sequence[float]) -> Dict[str, float]:
    """Mean, sample standard deviation (0 for one value) and count of ``values``."""
    values = [float(v) for v in values]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return dict(mean=statistics.fmean(values), std=std, n=len(values))


def group_runs(runs: Iterable[dict]) -> Dict[str, Dict[str, Dict[float, List[dict]]]]:
    """``{task: {method: {lr: [records over seeds]}}}``, seeds in order."""
    groups: Dict[str, Dict[str, Dict[float, List[dict]]]] = {}
    for record in sorted(runs, key=lambda r: (r['task'], r['method'], r['lr'], r['seed'])):
        groups.setdefault(record['task'], {}).setdefault(record['method'], {}).setdefault(
            float(record['lr']), []).append(record)
    return groups


def summarise_lr(records: List[dict]) -> dict:
    """Figures of one (task, method, lr) over its seeds."""
    return dict(
        seeds=[r['seed'] for r in records],
        val=mean_std([r['val'] for r in records]),
        test=mean_std([r['test'] for r in records]),
        dw_norm=mean_std([r['dw_norm'] for r in records]),
        step_cpu_ms=statistics.median(r['step_cpu_ms'] for r in records),
        step_wall_ms=statistics.median(r['step_wall_ms'] for r in records),
        adapter_params=records[0]['adapter_params'],
        trainable_params=records[0]['trainable_params'],
        diverged=sum(not r['finite'] for r in records))


def best_lr(per_lr: Dict[float, dict]) -> float:
    """The lr with the highest mean validation score (the lower one on a tie)."""
    return max(sorted(per_lr), key=lambda lr: (per_lr[lr]['val']['mean'], -lr))


def grid_edge_choices(summary: Dict[str, Dict[str, dict]], lrs: Sequence[float],
                      methods: Sequence[str]) -> Dict[str, List[Tuple[str, str]]]:
    """The (task, method) pairs whose chosen lr is the grid's largest or smallest.

    A best lr at an edge of the grid says the method might do better beyond it, where
    nothing was tried: the comparison holds for this grid only.

    Returns:
        dict: ``{'largest': [(task, method), ...], 'smallest': [...]}``.
    """
    edges: Dict[str, List[Tuple[str, str]]] = dict(largest=[], smallest=[])
    if len(lrs) < 2:
        return edges
    for task, per_method in summary.items():
        for method in methods:
            if method not in per_method:
                continue
            chosen = per_method[method]['best_lr']
            if chosen == max(lrs):
                edges['largest'].append((task, method))
            elif chosen == min(lrs):
                edges['smallest'].append((task, method))
    return edges


def summarise(runs: Iterable[dict]) -> Dict[str, Dict[str, dict]]:
    """``{task: {method: dict(per_lr={lr: figures}, best_lr, best=figures at best_lr,
    step_cpu_ms over every lr)}}``."""
    summary: Dict[str, Dict[str, dict]] = {}
    for task, methods in group_runs(runs).items():
        for method, lrs in methods.items():
            per_lr = {lr: summarise_lr(records) for lr, records in lrs.items()}
            chosen = best_lr(per_lr)
            every = [r for records in lrs.values() for r in records]
            summary.setdefault(task, {})[method] = dict(
                per_lr=per_lr, best_lr=chosen, best=per_lr[chosen],
                step_cpu_ms=statistics.median(r['step_cpu_ms'] for r in every),
                step_wall_ms=statistics.median(r['step_wall_ms'] for r in every))
    return summary


def compare(a: dict, b: dict) -> dict:
    """``a`` against ``b`` (both ``best`` figures): the test difference, its standard error
    over the seeds and a verdict ('ahead', 'level' or 'behind'; 'one seed' where a side has a
    single seed and no spread to judge by)."""
    difference = a['test']['mean'] - b['test']['mean']
    se = math.sqrt(a['test']['std']**2 / a['test']['n'] + b['test']['std']**2 / b['test']['n'])
    if min(a['test']['n'], b['test']['n']) < 2:
        verdict = 'one seed'
    elif difference > DECISIVE_SE * se:
        verdict = 'ahead'
    elif difference < -DECISIVE_SE * se:
        verdict = 'behind'
    else:
        verdict = 'level'
    return dict(difference=difference, se=se, verdict=verdict)


def comparisons(summary: Dict[str, Dict[str, dict]], budgets: Sequence[str]) -> List[dict]:
    """FLoRA against LoRA and DoRA at each budget, and BitFit against the frozen trunk, on
    every task, each at its own best lr."""
    rows = []
    pairs = [(f'flora-{b}', f'lora-{b}') for b in budgets]
    pairs += [(f'flora-{b}', f'dora-{b}') for b in budgets]
    pairs += [(f'dora-{b}', f'lora-{b}') for b in budgets]
    pairs += [('bitfit', 'frozen'), ('full', 'frozen')]
    for task, methods in summary.items():
        for a, b in pairs:
            if a in methods and b in methods:
                rows.append(dict(task=task, a=a, b=b,
                                 **compare(methods[a]['best'], methods[b]['best'])))
    return rows


def ranking(methods: Dict[str, dict], keys: Sequence[str]) -> List[str]:
    """``keys`` present in ``methods``, best test score first."""
    present = [k for k in keys if k in methods]
    return sorted(present, key=lambda k: -methods[k]['best']['test']['mean'])


def missing_runs(runs: Iterable[dict], tasks: Sequence[str], methods: Sequence[str],
                 lrs: Sequence[float], seeds: Sequence[int]) -> List[tuple]:
    """The (task, method, lr, seed) of the grid that have no record."""
    have = {(r['task'], r['method'], float(r['lr']), int(r['seed'])) for r in runs}
    return [(t, m, float(lr), s) for t in tasks for m in methods for lr in lrs for s in seeds
            if (t, m, float(lr), s) not in have]


def lr_key(lr: float) -> str:
    """A learning rate as a JSON key and a column label ('1e-04')."""
    return f'{lr:.0e}'


def json_summary(summary: Dict[str, Dict[str, dict]]) -> dict:
    """``summarise``'s output with string lr keys (JSON objects)."""
    out: Dict[str, Dict[str, dict]] = {}
    for task, methods in summary.items():
        for method, figures in methods.items():
            out.setdefault(task, {})[method] = dict(
                figures, per_lr={lr_key(lr): v for lr, v in figures['per_lr'].items()})
    return out
