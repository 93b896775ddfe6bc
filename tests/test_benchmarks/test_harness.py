"""The benchmark harness: interleaving, failures recorded per case, the time guard, memory."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

from benchmarks import harness
from benchmarks.harness import (Case, balanced_orders, describe_error, measure_peak,
                                state_tensors, tensor_bytes, time_interleaved)

CPU = torch.device('cpu')
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def recording_cases(order, keys=('a', 'b', 'c')):
    return [Case(key, key, lambda key=key: order.append(key)) for key in keys]


def predecessors(order, reps):
    """{(case run before, case): how often} within each repetition of ``order``."""
    per_rep = len(order) // reps
    pairs = {}
    for rep in range(reps):
        run = order[rep * per_rep:(rep + 1) * per_rep]
        for before, after in zip(run, run[1:]):
            pairs[before, after] = pairs.get((before, after), 0) + 1
    return pairs


@pytest.mark.parametrize('keys', ['a', 'ab', 'abc', 'abcd', 'abcde'])
def test_every_case_runs_after_every_other_equally_often(keys):
    orders = balanced_orders(len(keys))
    assert all(sorted(order) == list(range(len(keys))) for order in orders)
    order = []
    cases = recording_cases(order, keys=tuple(keys))
    time_interleaved(cases, reps=len(orders), warmup=0, device=CPU)
    pairs = predecessors(order, len(orders))
    expected = {(a, b) for a in keys for b in keys if a != b}
    assert set(pairs) == expected
    assert len(set(pairs.values())) <= 1, pairs  # one count for every ordered pair


def test_time_interleaved_times_every_repetition_after_the_warm_up():
    order = []
    cases = recording_cases(order)
    time_interleaved(cases, reps=6, warmup=2, device=CPU)
    assert len(order) == 3 * 8 and all(sorted(order[i:i + 3]) == list('abc')
                                       for i in range(0, 24, 3))
    assert [len(case.times) for case in cases] == [6, 6, 6]
    # The timed repetitions start the balanced cycle: their predecessors are balanced.
    assert set(predecessors(order[6:], 6).values()) == {2}


def test_a_failing_case_is_recorded_and_the_others_keep_running():
    order = []
    cases = recording_cases(order, keys=('a', 'c'))

    def out_of_memory():
        raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')
    cases.insert(1, Case('b', 'b', out_of_memory))
    time_interleaved(cases, reps=2, warmup=1, device=CPU, catch=(RuntimeError, ))
    assert cases[1].error == 'out of memory' and not cases[1].times
    assert not cases[1].runnable
    assert [len(cases[0].times), len(cases[2].times)] == [2, 2]


def test_an_uncaught_failure_still_raises():
    def broken():
        raise ValueError('bad shape')
    try:
        time_interleaved([Case('x', 'x', broken)], reps=1, warmup=0, device=CPU)
    except ValueError:
        return
    raise AssertionError('the ValueError was swallowed')


def test_out_of_time_still_runs_the_warm_up_and_one_timed_repetition():
    order = []
    cases = recording_cases(order)
    time_interleaved(cases, reps=5, warmup=1, device=CPU, out_of_time=lambda: True)
    assert len(order) == 6 and sorted(order[:3]) == sorted(order[3:]) == list('abc')
    assert [len(case.times) for case in cases] == [1, 1, 1]


def test_refused_cases_are_left_out():
    order = []
    cases = recording_cases(order, keys=('a', )) + [Case('peft', 'PEFT', None, note='refused')]
    time_interleaved(cases, reps=2, warmup=0, device=CPU)
    assert order == ['a', 'a'] and cases[1].times == []


def test_describe_error_names_the_error_type():
    assert describe_error(ValueError('rank 3 too big\nmore')) == 'ValueError: rank 3 too big'


def test_cpu_peak_counts_what_the_step_allocates_on_top_of_the_persistent_tensors():
    kept = []
    weight = torch.zeros(256, 256)

    def step():
        kept.append(torch.ones(1024, 1024))  # 4 MiB alive at the end of the step

    case = Case('alloc', 'alloc', step, reset=kept.clear,
                persistent=lambda: tensor_bytes([weight]))
    measure_peak(case, CPU)
    assert case.peak >= 4 * 2**20 + weight.numel() * 4
    assert kept == []  # reset ran


def test_tensor_bytes_counts_a_shared_storage_once():
    base = torch.zeros(100)
    assert tensor_bytes([base, base[10:], base.view(10, 10), None]) == 400


KEEPS_FREED_MEMORY = '''
import torch
from benchmarks.harness import keep_freed_memory

def resident_pages():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1])

pinned = keep_freed_memory() if KEEP else False
block = torch.ones(4 * 2**20)  # 16 MiB, touched
held = resident_pages()
del block
print(pinned, (held - resident_pages()) * 4096 / 2**20)
'''


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc allocator settings')
@pytest.mark.parametrize('keep', [False, True])
def test_freed_memory_stays_in_the_process_once_asked_to(keep):
    code = f'KEEP = {keep}\n' + KEEPS_FREED_MEMORY
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    pinned, returned_mib = proc.stdout.split()
    assert pinned == str(keep)
    if keep:
        assert float(returned_mib) < 1  # kept for the next allocation, not faulted in again
    else:
        assert float(returned_mib) > 15  # glibc's default: a block this size goes back


def fixed_durations(monkeypatch, seconds):
    """Time every case by ``seconds[key]`` instead of the clock (and still run its step)."""
    def timed_step(step, device):
        step()
        return seconds[step.key]
    monkeypatch.setattr(harness, 'timed_step', timed_step)


def keyed_cases(keys):
    cases = []
    for key in keys:
        def step():
            pass
        step.key = key
        cases.append(Case(key, key, step))
    return cases


def test_fast_cases_get_more_repetitions_up_to_the_cap(monkeypatch):
    fixed_durations(monkeypatch, dict(fast=0.001, medium=0.01, slow=2.0))
    cases = keyed_cases(['fast', 'medium', 'slow'])
    time_interleaved(cases, reps=3, warmup=1, device=CPU, min_seconds=0.2, max_reps=50)
    # 0.2 s of steps each: 200 of 1 ms (capped at 50), 20 of 10 ms; the slow case keeps 3.
    assert [len(case.times) for case in cases] == [50, 20, 3]
    cases = keyed_cases(['medium'])
    time_interleaved(cases, reps=30, warmup=1, device=CPU, min_seconds=0.2, max_reps=50)
    assert len(cases[0].times) == 30  # never fewer than asked


def test_the_separator_runs_between_repetitions_and_balances_what_comes_first():
    order = []
    cases = recording_cases(order, keys=tuple('abcd'))
    time_interleaved(cases, reps=4, warmup=1, device=CPU, between=lambda: order.append('|'))
    assert order.count('|') == 4  # before every repetition but the first
    timed = ''.join(order).split('|')[1:]
    assert sorted(run[0] for run in timed) == list('abcd')  # each case once after it
    pairs = predecessors([k for run in timed for k in run], 4)
    assert set(pairs.values()) == {1} and len(pairs) == 12


def test_state_tensors_count_what_a_layer_keeps_in_tuples():
    layer = torch.nn.Linear(4, 4)
    layer.cache = (torch.zeros(100), [torch.zeros(50)], 'settings')  # as an eval cache keeps
    layer.backup = torch.zeros(10)
    kept = tensor_bytes(state_tensors(layer))
    assert kept == 4 * (16 + 4 + 100 + 50 + 10)
