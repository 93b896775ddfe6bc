"""The adapter benchmark keeps working: its --quick run measures every section, and its results
data (the JSON beside the markdown) holds what the report and the summary say.

No speed is asserted anywhere: on shared CI machines only the harness itself is under test.
"""
import json
import math
import os.path as osp

import pytest
import torch

from benchmarks import models
from benchmarks.records import find, ratio
from benchmarks.settings import ADAPT, PAPER
from benchmarks.speed import cli
from benchmarks.speed.backbone import backbone_builders
from benchmarks.speed.layers import adapted_layer, layer_specs
from benchmarks.speed.settings import SECTIONS
from benchmarks.speed.targets import TARGETS
from mmflora.adapters import inject_adapters, iter_adapter_layers, paths
from .quick_runs import ROOT, committed, quick_run as run_quick

SCRIPT = osp.join(ROOT, 'benchmarks', 'bench_adapters.py')
COMMITTED = committed('BENCHMARKS.md', 'BENCHMARKS.json')

LAYER_KEYS = {'base', 'full', 'flora-auto', 'flora-merged', 'flora-factorised', 'twoconv',
              'lora', 'peft', 'dora'}
DEPTHWISE_KEYS = {'base', 'full', 'flora-dense-auto', 'flora-dense-merged',
                  'flora-dense-factorised', 'flora-structured-auto', 'twoconv-dense',
                  'twoconv-structured', 'lora-dense', 'lora-structured', 'peft', 'dora'}
BACKBONE_KEYS = {'base', 'full', 'flora-auto', 'flora-auto-twin', 'flora-recompute',
                 'flora-factorised', 'flora-merged', 'flora-structured',
                 'flora-structured-factorised', 'flora-structured-merged',
                 'twoconv-structured', 'twoconv-dense', 'lora', 'peft', 'dora'}
#: Backbone rows on the automatic path: every adapter layer is counted by path and decider.
AUTO_BACKBONE_KEYS = {'flora-auto', 'flora-auto-twin', 'flora-recompute', 'flora-structured',
                      'lora', 'dora'}
PATH_KEYS = {'auto', 'twin', 'merged', 'factorised'}
INFERENCE_KEYS = {'base', 'merged-structured', 'unloaded-structured', 'unmerged-structured',
                  'unmerged-dense', 'partial-dense', 'unloaded-dense'}


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('bench') / 'BENCHMARKS.md'
    return run_quick(SCRIPT, out, COMMITTED, timeout=600)


def assert_measured(case):
    """A measured case has positive, finite times and peak memory."""
    assert case['times'] and all(t > 0 and math.isfinite(t) for t in case['times']), case
    assert math.isfinite(case['ms']) and case['ms'] > 0, case
    assert case['peak'] > 0, case


def assert_measured_time(case):
    """A timed case (the path comparison measures no memory) has positive, finite times."""
    assert case['times'] and all(t > 0 and math.isfinite(t) for t in case['times']), case
    assert math.isfinite(case['ms']) and case['ms'] > 0, case


def assert_ratio(value, what):
    assert math.isfinite(value) and value > 0, f'{what}: {value}'


def test_quick_mode_leaves_the_committed_benchmarks_alone(quick_run):
    assert quick_run['before'] == quick_run['after']


def test_results_data_has_every_section_and_the_machine(quick_run):
    data = quick_run['data']
    assert set(SECTIONS) <= set(data)
    assert {'cpu', 'cores', 'threads', 'versions', 'platform'} <= set(data['environment'])
    assert data['device'] == 'cpu' and data['seconds'] > 0 and len(data['load']) == 2


def test_every_layer_column_measures_every_method_against_the_frozen_base(quick_run):
    layers = quick_run['data']['layers']
    assert {layer['family'] for layer in layers} == {'stem and downsample', 'depthwise 7x7',
                                                     'pointwise linears'}
    for layer in layers:
        keys = {case['key'] for case in layer['cases']}
        assert keys == (DEPTHWISE_KEYS if layer['family'] == 'depthwise 7x7' else LAYER_KEYS)
        base = find(layer['cases'], 'base')
        for case in layer['cases']:
            if case['peak'] is None:  # refused: only PEFT, on depthwise convs
                assert case['key'] == 'peft' and layer['family'] == 'depthwise 7x7'
                assert 'multiple of groups' in case['note']
                continue
            assert_measured(case)
            for field in ('ms', 'peak'):
                assert_ratio(ratio(case, base, field), f"{layer['column']} {case['key']}")


def test_backbone_methods_train_at_the_matched_budget(quick_run):
    data = quick_run['data']
    backbone, ranks = data['backbone'], data['matched_ranks']
    assert {case['key'] for case in backbone['cases']} == BACKBONE_KEYS
    assert (backbone['flora_r_dense'], backbone['flora_r_structured']) == (
        ranks['flora_dense'], ranks['flora_structured'])
    lora, base = find(backbone['cases'], 'lora'), find(backbone['cases'], 'base')
    for case in backbone['cases']:
        assert_measured(case)
        for reference in (lora, base):
            assert_ratio(ratio(case, reference), case['key'])
        assert_ratio(ratio(case, lora, 'peak'), case['key'])
    assert lora['params'] == ranks['budget']
    for key in ('flora-auto', 'flora-structured', 'twoconv-dense', 'twoconv-structured'):
        params = find(backbone['cases'], key)['params']
        assert abs(params - ranks['budget']) < 0.1 * ranks['budget'], (key, params)
    assert base['params'] == 0


def adapter_layers(model_name, **kwargs):
    model = models.make_backbone(model_name)
    inject_adapters(model, 'flora', **ADAPT, **kwargs)
    return list(iter_adapter_layers(model))


def test_backbone_rows_say_what_the_automatic_choice_took(quick_run):
    backbone = quick_run['data']['backbone']
    count = len(adapter_layers(backbone['model'], r=4))
    for case in backbone['cases']:
        counts = case.get('detail', {}).get('paths', {})
        if case['key'] not in AUTO_BACKBONE_KEYS:
            assert counts == {} and case['note'] == '', case['key']  # fixed paths, no adapters
            continue
        assert set(counts) <= {'merged', 'factorised'}
        assert set(d for by in counts.values() for d in by) <= set(models.DECIDERS)
        assert sum(n for by in counts.values() for n in by.values()) == count, case['key']
        assert case['note'] == models.census_text(counts)
    cases = {case['key']: case for case in backbone['cases']}
    # The twin and the recompute row share dense auto's layers and rank: the same budget, and
    # the twin the same layer signatures, hence the same (process-wide) decisions.
    for key in ('flora-auto-twin', 'flora-recompute'):
        assert cases[key]['params'] == cases['flora-auto']['params']
    assert cases['flora-auto-twin']['detail'] == cases['flora-auto']['detail']
    structured = cases['flora-structured']['detail']['paths']
    assert structured['merged'].get('only path', 0) > 0  # the depthwise convs


def test_structured_all_factorised_row_merges_only_what_cannot_be_factorised(quick_run):
    ranks = models.MatchedRanks(**quick_run['data']['matched_ranks'])
    build = next(b for key, _, b in backbone_builders(ranks)
                 if key == 'flora-structured-factorised')
    layers = [layer for _, layer in iter_adapter_layers(build())]
    assert {layer.path for layer in layers if layer.supports_factorised} == {'factorised'}
    grouped = [layer for layer in layers if not layer.supports_factorised]
    assert grouped and {layer.path for layer in grouped} == {'merged'}


def test_recompute_row_trains_dense_flora_with_the_branch_recomputed(quick_run):
    ranks = models.MatchedRanks(**quick_run['data']['matched_ranks'])
    builders = {key: build for key, _, build in backbone_builders(ranks)}
    for key, recompute in (('flora-recompute', True), ('flora-auto', False)):
        layers = [layer for _, layer in iter_adapter_layers(builders[key]())]
        assert {layer.config.recompute for layer in layers} == {recompute}
        assert {layer.dense for layer in layers} == {True, False}  # dense mode on depthwise
    case = find(quick_run['data']['backbone']['cases'], 'flora-recompute')
    assert_measured(case)


def test_path_choice_sets_auto_against_both_fixed_paths_on_every_layer(quick_run):
    data = quick_run['data']
    columns = [(layer['column'], layer['family']) for layer in data['layers']]
    rows = data['paths']['rows']
    expected = []
    for column, family in columns:
        expected += [(column, 'dense')] + ([(column, 'structured')]
                                           if family == 'depthwise 7x7' else [])
    assert [(row['column'], row['mode']) for row in rows] == expected
    for row in rows:
        cases = {case['key']: case for case in row['cases']}
        assert set(cases) == PATH_KEYS
        ran = {key: case for key, case in cases.items() if case['times']}
        if row['mode'] == 'structured':  # a structured grouped conv has no factorised path
            assert set(ran) == PATH_KEYS - {'factorised'}
            assert 'no factorised path' in row['refused']['factorised']
            assert (row['path'], row['decided']) == ('merged', 'only path')
        else:
            assert set(ran) == PATH_KEYS and row['refused'] == {}
        if row['family'] == 'depthwise 7x7' and row['mode'] == 'dense':
            assert (row['path'], row['decided']) == ('factorised', 'dense branch')
        assert row['path'] in ('merged', 'factorised') and row['decided'] in models.DECIDERS
        # The twin reuses the decision auto's first question made (measured or modelled).
        assert cases['auto']['detail'] == cases['twin']['detail'] == dict(
            path=row['path'], decided=row['decided'])
        fixed = {p: ran[p]['ms'] for p in ('merged', 'factorised') if p in ran}
        assert row['best'] == min(fixed, key=fixed.get)
        assert row['auto_vs_best'] == pytest.approx(cases['auto']['ms'] / fixed[row['best']])
        twin = cases['twin']['ms'] / cases['auto']['ms']
        assert row['twin_vs_auto'] == pytest.approx(twin)
        assert row['noise'] == pytest.approx(max(twin, 1 / twin) - 1)
        assert row['reps'] == len(cases['auto']['times']) >= data['paths']['reps']
        for case in ran.values():
            assert_measured_time(case)
    overall = data['paths']['overall']
    worst = max(rows, key=lambda row: row['auto_vs_best'])
    assert overall['worst_auto_vs_best'] == worst['auto_vs_best']
    assert overall['worst']['column'] == worst['column']
    assert overall['max_noise'] == max(row['noise'] for row in rows)
    assert overall['measured'] == sum(row['decided'] == 'measured' for row in rows)


def test_path_choice_decisions_follow_the_cost_model_where_it_is_clear(quick_run):
    """Where merged and factorised estimates are more than MEASURE_WITHIN apart, nothing is
    measured and auto takes the cheaper path; 'measured' only where they are close."""
    profile = quick_run['data']['profile']
    specs = {spec.column: spec for spec in layer_specs(profile)}
    for row in quick_run['data']['paths']['rows']:
        if row['decided'] not in ('measured', 'cost model'):
            continue
        spec = specs[row['column']]
        layer = next(layer for _, layer in iter_adapter_layers(adapted_layer(
            spec, 'flora', r=PAPER['flora_r'], r_kernel=PAPER['r_kernel'],
            scale=PAPER['scale'], mode=row['mode'])))
        x = torch.randn(spec.input_shape).requires_grad_(spec.input_grad)
        with torch.enable_grad():
            merged, factorised = paths.path_costs(layer, x, training=True)
        close = max(merged, factorised) <= paths.MEASURE_WITHIN * min(merged, factorised)
        assert (row['decided'] == 'measured') == close, row['column']
        if not close:
            assert row['path'] == ('merged' if merged <= factorised else 'factorised')


def test_backbone_path_rows_set_auto_against_all_merged_and_all_factorised(quick_run):
    backbone = quick_run['data']['backbone']
    cases = backbone['cases']
    rows = {row['mode']: row for row in backbone['paths']}
    assert set(rows) == {'dense', 'structured'}
    twin = find(cases, 'flora-auto-twin')['ms'] / find(cases, 'flora-auto')['ms']
    for mode, (auto_key, merged_key, factorised_key) in (
            ('dense', ('flora-auto', 'flora-merged', 'flora-factorised')),
            ('structured', ('flora-structured', 'flora-structured-merged',
                            'flora-structured-factorised'))):
        row = rows[mode]
        auto = find(cases, auto_key)
        fixed = dict(merged=find(cases, merged_key)['ms'],
                     factorised=find(cases, factorised_key)['ms'])
        assert row['fixed_ms'] == fixed and row['auto_ms'] == auto['ms']
        assert row['best'] == min(fixed, key=fixed.get)
        assert row['auto_vs_best'] == pytest.approx(auto['ms'] / fixed[row['best']])
        assert row['twin_vs_auto'] == pytest.approx(twin)  # the dense twin: noise of both
        assert row['path'] == auto['note']


def test_breakdown_covers_every_adapter_layer_by_role(quick_run):
    data = quick_run['data']
    breakdown = data['breakdown']
    assert breakdown['flora_r'] == data['matched_ranks']['flora_dense']
    roles = {row['role'] for row in breakdown['rows']}
    assert roles == {'stem', 'downsample', 'depthwise', 'fc1', 'fc2'}
    for row in breakdown['rows']:
        assert row['count'] >= 1
        for method in ('flora', 'lora'):
            assert_ratio(row[method]['ms'], f"{row['role']} {method}")
            assert row[method]['path'] in ('merged', 'factorised')
    for method in ('flora', 'lora'):
        assert sum(breakdown['saved'][method].values()) > 0


def test_inference_measures_every_deployment_form(quick_run):
    inference = quick_run['data']['inference']
    assert {case['key'] for case in inference['cases']} == INFERENCE_KEYS
    base = find(inference['cases'], 'base')
    for case in inference['cases']:
        assert_measured(case)
        assert_ratio(ratio(case, base), case['key'])


def test_storage_compares_adapter_files_with_the_full_checkpoint(quick_run):
    storage = quick_run['data']['storage']
    for method in ('flora', 'lora'):
        assert 0 < storage[method]['bytes'] < storage['full_bytes']
        assert storage[method]['params'] > 0


def test_summary_entries_follow_from_the_measured_numbers(quick_run):
    data = quick_run['data']
    entries = data['summary']
    assert [e['key'] for e in entries] == [key for key, _, _ in TARGETS]
    assert [e['limit'] for e in entries] == [limit for _, _, limit in TARGETS]
    backbone, inference = data['backbone']['cases'], data['inference']['cases']
    depthwise = [layer['cases'] for layer in data['layers'] if layer['family'] == 'depthwise 7x7']
    lora, recompute = find(backbone, 'lora'), find(backbone, 'flora-recompute')
    path_rows = {row['mode']: row for row in data['backbone']['paths']}

    def auto_vs_best(auto_key, merged_key, factorised_key):
        fastest_fixed = min(find(backbone, merged_key)['ms'],
                            find(backbone, factorised_key)['ms'])
        return find(backbone, auto_key)['ms'] / fastest_fixed
    expected = {
        'train_vs_lora': find(backbone, 'flora-auto')['ms'] / find(backbone, 'lora')['ms'],
        'mem_vs_lora': find(backbone, 'flora-auto')['peak'] / find(backbone, 'lora')['peak'],
        'recompute_train_vs_lora': recompute['ms'] / lora['ms'],
        'recompute_mem_vs_lora': recompute['peak'] / lora['peak'],
        'auto_vs_fixed_layers': max(row['auto_vs_best'] for row in data['paths']['rows']),
        'auto_vs_fixed_dense': auto_vs_best('flora-auto', 'flora-merged', 'flora-factorised'),
        'auto_vs_fixed_structured': auto_vs_best('flora-structured', 'flora-structured-merged',
                                                 'flora-structured-factorised'),
        'dw_vs_twoconv': max(find(c, 'flora-dense-auto')['ms'] / find(c, 'twoconv-dense')['ms']
                             for c in depthwise),
        'merged_infer': (find(inference, 'merged-structured')['ms']
                         / find(inference, 'base')['ms']),
        'storage': data['storage']['flora']['bytes'] / data['storage']['full_bytes'],
    }
    for entry in entries:
        assert entry['value'] == pytest.approx(expected[entry['key']], rel=1e-12), entry
        assert math.isfinite(entry['value']) and entry['value'] > 0
        assert entry['verdict'] == ('PASS' if entry['value'] <= entry['limit'] else 'MISS')
    notes = {e['key']: e.get('note') for e in entries}
    overall = data['paths']['overall']
    assert overall['worst']['column'] in notes['auto_vs_fixed_layers']
    assert f"up to {overall['max_noise']:.1%}" in notes['auto_vs_fixed_layers']
    for mode in ('dense', 'structured'):
        assert f"differ by {path_rows[mode]['noise']:.1%}" in notes[f'auto_vs_fixed_{mode}']
        assert f"all {path_rows[mode]['best']}" in notes[f'auto_vs_fixed_{mode}']
    assert {key for key, note in notes.items() if note} == {
        'auto_vs_fixed_layers', 'auto_vs_fixed_dense', 'auto_vs_fixed_structured'}


def test_markdown_renders_every_section_and_summary_entry(quick_run):
    text = quick_run['out'].read_text()
    for heading in ('## Machine', '## How it is measured', '## Per layer', '## Whole backbone',
                    '## Path choice', '## Where the backbone', '## Inference', '## Storage',
                    '## Summary'):
        assert heading in text
    summary = text.split('## Summary', 1)[1].strip().splitlines()
    assert len(summary) == len(TARGETS)
    for line, entry in zip(summary, quick_run['data']['summary']):
        assert line.startswith(f"- {entry['text']}: ") and line.endswith(entry['verdict'])


def test_from_json_renders_the_same_markdown_without_measuring(quick_run, tmp_path):
    out = tmp_path / 'again.md'
    threads = torch.get_num_threads()
    try:
        cli.main(['--quick', '--from-json', str(quick_run['out'].with_suffix('.json')),
                  '--out', str(out)])
    finally:
        torch.set_num_threads(threads)
    assert out.read_text() == quick_run['out'].read_text()
    assert not out.with_suffix('.json').exists()


def test_matched_ranks_are_solved_once_per_run(tmp_path, monkeypatch):
    calls = []

    def counting_solve_rank(*args, **kwargs):
        calls.append(kwargs.get('mode'))
        return solve_rank(*args, **kwargs)
    solve_rank = models.solve_rank
    monkeypatch.setattr(models, 'solve_rank', counting_solve_rank)
    threads = torch.get_num_threads()
    try:
        out = cli.main(['--quick', '--sections', 'backbone,breakdown,inference',
                        '--out', str(tmp_path / 'ranks.md')])
    finally:
        torch.set_num_threads(threads)
    assert sorted(calls) == ['dense', 'structured']
    data = json.loads((tmp_path / 'ranks.json').read_text())
    assert {'backbone', 'breakdown', 'inference', 'matched_ranks'} <= set(data)
    assert 'layers' not in data and osp.exists(out)
