"""From run records to the report's figures: the search, the final seeds, the paired verdicts.

Everything here reads the results data only (the ``runs`` list of the JSON), so a report can
be rendered again from a saved run. Per (task, method): every searched point (validation
score on the search seed), the chosen point (the search's best, ``search.best_point``) with
any edge flag, and the final runs at that point (test score over the final seeds). FLoRA
against LoRA, DoRA and BitFit is a paired t-test over the final seeds: the two runs of a pair
share the seed, so the training data and its order and the heads' initial weights.
"""
import math
import statistics
from typing import Dict, Iterable, List, Optional, Sequence

from . import search
from . import settings as S

#: The verdict's significance level (two-sided paired t-test over the final seeds).
ALPHA = 0.05


def mean_std(values: Sequence[float]) -> Dict[str, float]:
    """Mean, sample standard deviation (0 for one value) and count of ``values``."""
    values = [float(v) for v in values]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return dict(mean=statistics.fmean(values), std=std, n=len(values))


def point_key(lr_step: int, scale_step: int) -> str:
    """A grid point as a JSON key: 'lr_step,scale_step'."""
    return f'{lr_step},{scale_step}'


def search_points(records: List[dict]) -> Dict[str, dict]:
    """The searched points of one (task, method), keyed by ``point_key``."""
    return {point_key(r['lr_step'], r['scale_step']): dict(
        lr=r['lr'], lr_step=r['lr_step'], scale_step=r['scale_step'],
        knob_value=r['knob_value'], val=r['val'], val_curve=r['val_curve'],
        collapsed=r['collapsed'], finite=r['finite'], dw_norm=r['dw_norm'])
        for r in sorted(records, key=lambda r: (r['lr_step'], r['scale_step']))}


def final_figures(records: List[dict]) -> Optional[dict]:
    """The final runs of one (task, method) over their seeds; None when there are none."""
    if not records:
        return None
    records = sorted(records, key=lambda r: r['seed'])
    fractions = [step / records[0]['planned_steps'] for step, _ in records[0]['val_curve']]
    curves = [[score for _, score in r['val_curve']] for r in records
              if len(r['val_curve']) == len(fractions)]
    return dict(
        seeds=[r['seed'] for r in records],
        test_by_seed=[r['test'] for r in records],
        test=mean_std([r['test'] for r in records]),
        val=mean_std([r['val'] for r in records]),
        val_curve=dict(fractions=fractions,
                       mean=[statistics.fmean(c[i] for c in curves)
                             for i in range(len(fractions))],
                       std=[mean_std([c[i] for c in curves])['std']
                            for i in range(len(fractions))]),
        dw_norm=mean_std([r['dw_norm'] for r in records]),
        step_cpu_ms=statistics.median(r['step_cpu_ms'] for r in records),
        adapter_params=records[0]['adapter_params'],
        trainable_params=records[0]['trainable_params'],
        collapsed=sum(r['collapsed'] for r in records),
        diverged=sum(not r['finite'] for r in records))


def summarise(runs: Iterable[dict], max_points: int = search.MAX_POINTS
              ) -> Dict[str, Dict[str, dict]]:
    """``{task: {method: dict(points, chosen, edges, collapses, final)}}``.

    ``chosen`` is the search's best point (lr, its steps, the knob and its value); ``edges``
    says why that choice may not be the optimum (empty when it has a tried, no-better
    neighbour on every side); ``collapses`` lists the searched points that collapsed.
    """
    grouped: Dict[str, Dict[str, Dict[str, List[dict]]]] = {}
    for record in runs:
        stages = grouped.setdefault(record['task'], {}).setdefault(
            record['method'], dict(search=[], final=[]))
        stages[record['stage']].append(record)
    summary: Dict[str, Dict[str, dict]] = {}
    for task, methods in grouped.items():
        for method, stages in methods.items():
            if not stages['search']:
                continue
            knob = S.method_by_key(method).knob is not None
            tried = {(r['lr_step'], r['scale_step']): search.Outcome(r['val'], r['collapsed'])
                     for r in stages['search']}
            best = search.best_point(tried)
            at_best = next(r for r in stages['search']
                           if (r['lr_step'], r['scale_step']) == best)
            summary.setdefault(task, {})[method] = dict(
                points=search_points(stages['search']),
                chosen=dict(lr=at_best['lr'], lr_step=best[0], scale_step=best[1],
                            knob=at_best['knob'], knob_value=at_best['knob_value'],
                            val=at_best['val']),
                edges=search.edges(tried, knob, max_points),
                collapses=[point_key(*p) for p, o in sorted(tried.items()) if o.collapsed],
                search_runs=len(stages['search']),
                final=final_figures([r for r in stages['final']
                                     if (r['lr_step'], r['scale_step']) == best]))
    return summary


def paired_test(a: Sequence[float], b: Sequence[float]) -> Dict[str, float]:
    """Two-sided paired t-test of ``a`` against ``b`` (the same seeds in the same order).

    Returns:
        dict: ``difference`` (mean of a - b), ``p`` (NaN for fewer than two pairs; 1 for
        identical pairs, 0 for equal non-zero differences, where the t statistic has no
        spread to divide by) and ``n``.
    """
    differences = [x - y for x, y in zip(a, b)]
    n = len(differences)
    mean = statistics.fmean(differences) if differences else float('nan')
    if n < 2:
        return dict(difference=mean, p=float('nan'), n=n)
    if max(differences) - min(differences) <= 1e-12 * max(1.0, abs(mean)):
        return dict(difference=mean, p=1.0 if abs(mean) <= 1e-12 else 0.0, n=n)
    from scipy.stats import ttest_rel
    return dict(difference=mean, p=float(ttest_rel(a, b).pvalue), n=n)


def verdict(test: Dict[str, float]) -> str:
    """'ahead', 'behind' (p < ALPHA, by the sign of the mean difference), 'level', or 'one
    seed' where there are fewer than two pairs."""
    if math.isnan(test['p']):
        return 'one seed'
    if test['p'] < ALPHA:
        return 'ahead' if test['difference'] > 0 else 'behind'
    return 'level'


def paired_scores(a: dict, b: dict) -> tuple:
    """The test scores of the seeds both final stages ran, in seed order."""
    seeds = [s for s in a['seeds'] if s in b['seeds']]
    by_seed_a = dict(zip(a['seeds'], a['test_by_seed']))
    by_seed_b = dict(zip(b['seeds'], b['test_by_seed']))
    return seeds, [by_seed_a[s] for s in seeds], [by_seed_b[s] for s in seeds]


def comparisons(summary: Dict[str, Dict[str, dict]], budgets: Sequence[str]) -> List[dict]:
    """FLoRA against each of ``S.BASELINES`` (LoRA and DoRA at FLoRA's budget, BitFit as it
    is) on every task and budget, each method at its own chosen point."""
    rows = []
    for task, methods in summary.items():
        for budget in budgets:
            flora = f'flora-{budget}'
            for baseline in S.BASELINES:
                other = baseline if baseline == 'bitfit' else f'{baseline}-{budget}'
                if flora not in methods or other not in methods:
                    continue
                a, b = methods[flora]['final'], methods[other]['final']
                if a is None or b is None:
                    continue
                seeds, scores_a, scores_b = paired_scores(a, b)
                test = paired_test(scores_a, scores_b)
                rows.append(dict(task=task, budget=budget, a=flora, b=other, seeds=seeds,
                                 verdict=verdict(test), **test))
    return rows


def missing_finals(summary: Dict[str, Dict[str, dict]], tasks: Sequence[str],
                   methods: Sequence[str], seeds: Sequence[int]) -> List[tuple]:
    """The (task, method, seed) whose final run has no record."""
    missing = []
    for task in tasks:
        for method in methods:
            final = summary.get(task, {}).get(method, {}).get('final')
            have = set(final['seeds']) if final else set()
            missing += [(task, method, s) for s in seeds if s not in have]
    return missing
