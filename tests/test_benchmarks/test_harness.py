"""The benchmark harness: interleaving, failures recorded per case, the time guard, memory."""
import torch

from benchmarks.harness import (Case, describe_error, measure_peak, tensor_bytes,
                                time_interleaved)

CPU = torch.device('cpu')


def recording_cases(order, keys=('a', 'b', 'c')):
    return [Case(key, key, lambda key=key: order.append(key)) for key in keys]


def test_time_interleaved_rotates_the_order_and_times_every_repetition():
    order = []
    cases = recording_cases(order)
    time_interleaved(cases, reps=3, warmup=1, device=CPU)
    assert order == list('abc' 'bca' 'cab' 'abc')
    assert [len(case.times) for case in cases] == [3, 3, 3]


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
    assert order == list('abc' 'bca')
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
