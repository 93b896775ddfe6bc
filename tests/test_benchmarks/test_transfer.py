"""The transfer benchmark keeps working: its --quick run trains every task x method x lr x seed
end to end, and its results data holds what the table needs (parameters, matched budgets,
||dW||, the lr chosen on validation). No score or speed is asserted: the quick run is too
short to learn anything, and only the machinery is under test.
"""
import os.path as osp

import numpy as np
import pytest

from benchmarks.transfer import results as R
from benchmarks.transfer import settings as S
from benchmarks.transfer.cli import parse_list
from benchmarks.transfer.train import batch_order
from .quick_runs import ROOT, committed, quick_run as run_quick

SCRIPT = osp.join(ROOT, 'benchmarks', 'transfer.py')
COMMITTED = committed('TRANSFER.md', 'TRANSFER.json')
#: FLoRA's count moves in steps of about 10 % of the low budget per rank on atto, so the
#: closest rank lands within half a step of LoRA's count.
BUDGET_TOLERANCE = 0.06


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('transfer') / 'TRANSFER.md'
    return run_quick(SCRIPT, out, COMMITTED, timeout=900)


def runs_by_method(data):
    by_method = {}
    for record in data['runs']:
        by_method.setdefault(record['method'], []).append(record)
    return by_method


def test_quick_run_trains_every_task_method_lr_and_seed(quick_run):
    data = quick_run['data']
    profile = data['settings']['profile']
    keys = [(r['task'], r['method'], r['lr'], r['seed']) for r in data['runs']]
    expected = [(t.key, m.key, float(lr), seed) for t in S.TARGETS for m in S.METHODS
                for lr in profile['lrs'] for seed in profile['seeds']]
    assert sorted(keys) == sorted(expected)
    for record in data['runs']:
        steps = S.steps_of(profile, S.target_by_key(record['task']))
        assert record['steps'] == steps and record['finite'], record
        assert record['step_cpu_ms'] > 0 and record['step_wall_ms'] > 0, record
    # every task and method has a summary with a chosen lr of the grid
    for target in S.TARGETS:
        for method in S.METHODS:
            figures = data['summary'][target.key][method.key]
            assert figures['best_lr'] in profile['lrs']


def test_dense_runs_train_longer_than_image_runs(quick_run):
    profile = quick_run['data']['settings']['profile']
    steps = {t.dense: S.steps_of(profile, t) for t in S.TARGETS}
    assert steps[True] == profile['dense_steps'] != profile['steps'] == steps[False]


def test_quick_run_counts_parameters_and_matches_the_budgets(quick_run):
    data = quick_run['data']
    for record in data['runs']:
        assert record['trainable_params'] > 0, record  # heads train in every method
        if record['method'] == 'frozen':
            assert record['adapter_params'] == 0, record
        else:
            assert record['adapter_params'] > 0, record
        if record['method'] == 'full':
            assert record['adapter_params'] >= data['trunk_params'], record
        assert record['trainable_params'] > record['adapter_params'], record
    by_method = runs_by_method(data)
    for budget, solved in data['budgets'].items():
        counts = solved['counts']
        assert abs(counts['flora'] / counts['lora'] - 1) < BUDGET_TOLERANCE, solved
        assert abs(counts['lora'] / solved['target'] - 1) < 0.5 / solved['lora'] + 0.01
        for method in ('lora', 'dora', 'flora'):
            injected = {r['adapter_params'] for r in by_method[f'{method}-{budget}']}
            assert injected == {counts[method]}, (method, budget, injected)
    assert data['budgets']['low']['counts']['lora'] < data['budgets']['high']['counts']['lora']


def test_quick_run_measures_dw_zero_for_frozen_and_positive_for_the_rest(quick_run):
    for record in quick_run['data']['runs']:
        if record['method'] == 'frozen':
            assert record['dw_norm'] == 0.0, record
        else:
            assert record['dw_norm'] > 0.0, record
        assert record['dw_terms'] > 0, record


def test_quick_run_writes_markdown_and_leaves_committed_results_alone(quick_run):
    assert quick_run['out'].exists() and quick_run['out'].stat().st_size > 0
    assert quick_run['before'] == quick_run['after']
    data = quick_run['data']
    assert data['base']['sha256'] and len(data['base']['sha256']) == 64
    assert data['environment']['versions']['mmseg'] != 'not installed'


def record(method, lr, seed, val, test):
    return dict(task='t', method=method, lr=lr, seed=seed, val=val, test=test, dw_norm=1.0,
                step_cpu_ms=1.0, step_wall_ms=1.0, adapter_params=1, trainable_params=1,
                finite=True)


def test_best_lr_is_chosen_on_validation_and_reported_on_test():
    # lr 1e-3 wins on validation, lr 1e-4 on test: the validation choice is reported
    runs = [record('m', 1e-4, s, val=50 + s, test=90) for s in range(3)]
    runs += [record('m', 1e-3, s, val=60 + s, test=70 + s) for s in range(3)]
    figures = R.summarise(runs)['t']['m']
    assert figures['best_lr'] == 1e-3
    assert figures['best']['test']['mean'] == pytest.approx(71.0)
    assert figures['best']['test']['std'] == pytest.approx(1.0)
    assert figures['best']['val']['n'] == 3


def test_comparison_verdict_needs_more_than_the_seeds_spread():
    near = R.summarise([record('a', 1e-3, s, 0, 50 + s) for s in range(3)] +
                       [record('b', 1e-3, s, 0, 50.5 + s) for s in range(3)])['t']
    far = R.summarise([record('a', 1e-3, s, 0, 60 + s) for s in range(3)] +
                      [record('b', 1e-3, s, 0, 50 + s) for s in range(3)])['t']
    assert R.compare(near['a']['best'], near['b']['best'])['verdict'] == 'level'
    assert R.compare(far['a']['best'], far['b']['best'])['verdict'] == 'ahead'
    assert R.compare(far['b']['best'], far['a']['best'])['verdict'] == 'behind'


def test_missing_runs_are_listed():
    runs = [record('m', 1e-3, 0, 1, 1)]
    assert R.missing_runs(runs, ['t'], ['m'], [1e-3], [0, 1]) == [('t', 'm', 1e-3, 1)]


def test_every_method_of_a_seed_gets_the_same_batches_and_seeds_differ():
    first = batch_order(0, num_train=10, batch=4, steps=6)
    assert all(np.array_equal(a, b) for a, b in zip(first, batch_order(0, 10, 4, 6)))
    assert not all(np.array_equal(a, b) for a, b in zip(first, batch_order(1, 10, 4, 6)))
    # each epoch is a permutation: the first 10 indices cover the training set once
    assert sorted(np.concatenate(first)[:10].tolist()) == list(range(10))


def test_unknown_task_is_refused_with_the_choices():
    with pytest.raises(SystemExit, match='near-cls'):
        parse_list('near-cls,coco', str, [t.key for t in S.TARGETS], '--tasks')


def test_best_learning_rates_at_the_grid_edges_are_named():
    def chosen(lr):
        return dict(best_lr=lr)

    summary = {'near-cls': dict(lora=chosen(3e-3), flora=chosen(1e-3), full=chosen(1e-4)),
               'far-cls': dict(lora=chosen(3e-3))}
    edges = R.grid_edge_choices(summary, (1e-4, 1e-3, 3e-3), ['lora', 'flora', 'full'])
    assert sorted(edges['largest']) == [('far-cls', 'lora'), ('near-cls', 'lora')]
    assert edges['smallest'] == [('near-cls', 'full')]
    # one lr has no edge to speak of
    assert R.grid_edge_choices(summary, (3e-3, ), ['lora']) == dict(largest=[], smallest=[])
