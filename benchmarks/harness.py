"""Running the methods of one comparison side by side: interleaved timing and peak memory.

Times are medians of repetitions interleaved across the methods of one comparison (each
repetition runs every method once), so a busy machine slows all of them alike and the ratios
stay meaningful; absolute times are noise on shared machines. The orders of the repetitions
form a Williams design (``balanced_orders``): over a cycle every method runs right after every
other equally often, so what one method leaves behind (cold caches, memory to fault back in)
weighs on all of them alike.

On CUDA a step is timed with CUDA events recorded around it on the current stream (after a
``torch.cuda.synchronize``, and read once the end event has completed). On CPU with one torch
thread the timer is the thread's CPU time, else wall-clock time (see ``clock``).

Peak memory is the most bytes held by tensors at any point of one step, weights, inputs and
optimizer state included: the bytes of the method's tensors alive before the step, plus the
highest the allocations and frees during the step rise above that. On CUDA that rise is
``torch.cuda.max_memory_allocated`` (its peak reset first) less what was allocated before; on
CPU it is the highest running sum of the allocations and frees that ``torch.profiler``
(``profile_memory=True``) records from PyTorch's CPU allocator (activations saved for backward,
gradients, temporaries); memory that a library allocates behind PyTorch's back (oneDNN scratch
space) is not seen.
"""
import contextlib
import ctypes
import ctypes.util
import dataclasses
import logging
import math
import os
import statistics
import time
import warnings
from typing import Callable, Iterable, Iterator, List, Optional, Sequence, Tuple, Type

import torch
from torch import Tensor, nn


@dataclasses.dataclass
class Case:
    """One method in a comparison: ``step`` runs what is timed, ``reset`` tidies up after it.

    Args:
        key (str): Identifies the method in the results data.
        label (str): The row label in the report.
        step (callable, optional): One timed run; None for a method that refused the layer.
        reset (callable): Clears what a step leaves behind (gradients). Defaults to nothing.
        note (str): What the report says beside the figures (the refusal, the paths taken).
        params (int): Trainable parameters of the method.
        persistent (callable): Bytes of the method's tensors alive before a step.
        detail (dict): Results data beside the figures (the paths the automatic choice took
            and what decided them). Defaults to none.
    """

    key: str
    label: str
    step: Optional[Callable[[], None]]
    reset: Callable[[], None] = lambda: None
    note: str = ''
    params: int = 0
    times: List[float] = dataclasses.field(default_factory=list)
    peak: Optional[int] = None
    persistent: Callable[[], int] = lambda: 0
    error: str = ''
    detail: dict = dataclasses.field(default_factory=dict)

    @property
    def runnable(self) -> bool:
        return self.step is not None and not self.error

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float('nan')


def clock(device: torch.device) -> Callable[[], float]:
    """The CPU-side timer: this thread's CPU time when it alone computes, else wall-clock time.

    With one torch thread on CPU every op and the autograd engine run in the calling thread,
    so its CPU time is the cost of the step, free of the time slices that other jobs on a
    shared machine take; with more threads only wall-clock time is meaningful. (On CUDA the
    harness times with events instead, see ``timed_step``.)
    """
    if device.type == 'cpu' and torch.get_num_threads() == 1:
        return time.thread_time
    return time.perf_counter


def synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def timed_step(step: Callable[[], None], device: torch.device) -> float:
    """Run ``step`` once and return its duration in seconds (CUDA events on CUDA)."""
    synchronize(device)
    if device.type == 'cuda':
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    now = clock(device)
    start_time = now()
    step()
    return now() - start_time


def describe_error(error: BaseException) -> str:
    """A short record of why a case failed (out of memory is named as such)."""
    if isinstance(error, torch.cuda.OutOfMemoryError) or 'out of memory' in str(error):
        return 'out of memory'
    return f'{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ""}'


def _fail(case: Case, error: BaseException, device: torch.device) -> None:
    case.error = describe_error(error)
    try:
        case.reset()
    finally:
        if device.type == 'cuda':
            torch.cuda.empty_cache()


#: glibc's mallopt parameters, and the largest mmap threshold it accepts on 64-bit systems.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 2**20


def keep_freed_memory() -> bool:
    """Keep what PyTorch's CPU allocator frees inside the process (glibc only).

    By default glibc hands large freed blocks back to the system, and the next allocation of
    that size faults every page in again. In an interleaved comparison that cost lands on
    whichever case runs after one that freed much (it follows the order, not the method):
    measured here as up to 1.4x on a 2x2 downsample conv's step. With blocks up to 32 MiB
    served from the heap and the heap never trimmed, a step pays for its own work. Returns
    whether the settings took (False off glibc, where nothing changes).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
                and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def balanced_orders(n: int) -> List[List[int]]:
    """Orders of ``n`` cases in which each case follows each other equally often (Williams).

    The first order is 0, 1, n-1, 2, n-2, ...; the others add 1, 2, ... (mod n). For an even
    ``n`` the n orders hold every ordered pair of neighbours once; for an odd ``n`` they and
    their reverses (2n orders) hold each twice.
    """
    first, low, high = [0], 1, n - 1
    while len(first) < n:
        first.append(low)
        low += 1
        if len(first) < n:
            first.append(high)
            high -= 1
    orders = [[(i + shift) % n for i in first] for shift in range(n)]
    if n % 2:
        orders += [order[::-1] for order in orders]
    return orders


def time_interleaved(cases: Sequence[Case], reps: int, warmup: int, device: torch.device,
                     slow: float = 1.0, slow_reps: int = 3,
                     catch: Tuple[Type[BaseException], ...] = (),
                     out_of_time: Callable[[], bool] = lambda: False,
                     min_seconds: float = 0.0, max_reps: Optional[int] = None,
                     between: Optional[Callable[[], None]] = None) -> None:
    """Run every case once per repetition in balanced orders; keep the timed repetitions.

    The timed repetitions start the cycle of ``balanced_orders`` (the warm-up runs the orders
    before it), so over a whole number of cycles every case runs right after every other
    equally often; a separator (``between``) runs between repetitions, so that the first case
    of one follows the separator rather than whichever case ended the one before, and every
    case comes first equally often.

    Args:
        cases (Sequence[Case]): The methods of one comparison.
        reps (int): Timed repetitions.
        warmup (int): Untimed repetitions first.
        device (torch.device): Where the cases run.
        slow (float): A case whose warm-up run took more than this many seconds (a dense
            reference that is orders of magnitude behind) is timed only ``slow_reps`` times.
            Defaults to 1.0.
        slow_reps (int): See ``slow``. Defaults to 3.
        catch (tuple): Exception types that fail one case (recorded in ``case.error``, the case
            is left out of later repetitions) instead of the whole comparison, e.g.
            ``torch.cuda.OutOfMemoryError``. Defaults to none.
        out_of_time (callable): Asked before each repetition after the first timed one; True
            stops the timing (cases keep the repetitions they have). Defaults to never.
        min_seconds (float): When ``reps`` runs of the slowest case that is not slow would
            take less than this (by its last warm-up run), every case that is not slow gets
            as many repetitions as that case needs to fill it, up to ``max_reps``: a
            comparison of millisecond steps then rests on more than a few of them. Needs a
            warm-up. Defaults to 0 (``reps`` repetitions).
        max_reps (int, optional): See ``min_seconds``. Defaults to ``reps``.
        between (callable, optional): The separator. Defaults to ``flush_caches`` on CPU,
            nothing on CUDA.
    """
    runnable = [c for c in cases if c.runnable]
    budget = {id(c): reps for c in runnable}
    warm = {}
    orders = balanced_orders(len(runnable)) if runnable else [[]]
    if between is None:
        between = flush_caches if device.type == 'cpu' else (lambda: None)
    total, rep = warmup + reps, 0
    while rep < total:
        if rep > warmup and out_of_time():
            break
        if rep == warmup and min_seconds > 0 and warm:
            total = warmup + _more_reps(budget, warm, reps, slow, min_seconds, max_reps)
        if rep:
            between()
        for case in [runnable[i] for i in orders[(rep - warmup) % len(orders)]]:
            if case.error or (rep >= warmup and len(case.times) >= budget[id(case)]):
                continue
            try:
                elapsed = timed_step(case.step, device)
                case.reset()
            except catch as error:
                _fail(case, error, device)
                continue
            if rep >= warmup:
                case.times.append(elapsed)
            else:
                warm[id(case)] = elapsed
                if elapsed > slow:
                    budget[id(case)] = min(reps, slow_reps)
        rep += 1


def _more_reps(budget: dict, warm: dict, reps: int, slow: float, min_seconds: float,
               max_reps: Optional[int]) -> int:
    """Raise the budget of every case that is not slow to fill ``min_seconds`` (see
    ``time_interleaved``); returns the most repetitions any case now gets."""
    for key, elapsed in warm.items():
        if 0 < elapsed <= slow:
            wanted = min(max_reps or reps, math.ceil(min_seconds / elapsed))
            budget[key] = max(budget[key], wanted)
    return max(budget.values())


#: Bytes ``flush_caches`` writes: more than the last-level cache of the machines at hand.
FLUSH_BYTES = 64 * 2**20
_flush_buffer: List[Tensor] = []


def flush_caches() -> None:
    """Read and write a buffer larger than the CPU caches: the state every repetition
    starts from.

    A step leaves its own tensors in the caches (or, when it was large, nothing of anyone
    else's); without a separator that favours or burdens whichever case comes next. Between
    repetitions this is the one predecessor every case shares.
    """
    if not _flush_buffer:
        _flush_buffer.append(torch.zeros(FLUSH_BYTES // 4, dtype=torch.float32))
    _flush_buffer[0].add_(1.0)


def clear_grads(tensors: Sequence[Tensor]) -> Callable[[], None]:
    """A case's ``reset``: drops the gradients a step left on ``tensors`` (weights, inputs)."""
    def reset():
        for t in tensors:
            t.grad = None
    return reset


def tensor_bytes(tensors: Iterable[Optional[Tensor]]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (shared storages counted once)."""
    seen, total = set(), 0
    for t in tensors:
        if t is None:
            continue
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total


def state_tensors(*modules: nn.Module, optimizer=None, extra=()) -> List[Tensor]:
    """The tensors that live across steps: parameters, buffers, gradients, optimizer state."""
    tensors = list(extra)
    for module in modules:
        tensors += list(module.parameters()) + list(module.buffers())
        tensors += [p.grad for p in module.parameters() if p.grad is not None]
        for sub in module.modules():  # plain attributes: merge backups, eval caches
            tensors += _nested_tensors(list(sub.__dict__.values()))
    if optimizer is not None:
        for state in optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, Tensor)]
    return tensors


def _nested_tensors(values: list) -> List[Tensor]:
    """The tensors among ``values`` and inside the tuples and lists among them."""
    found = []
    for value in values:
        if isinstance(value, Tensor):
            found.append(value)
        elif isinstance(value, (tuple, list)):
            found += _nested_tensors(list(value))
    return found


def measure_peak(case: Case, device: torch.device,
                 catch: Tuple[Type[BaseException], ...] = ()) -> None:
    """Peak bytes held during one ``case.step`` (see the module docstring for the method).

    Args:
        case (Case): Its ``peak`` is set, or its ``error`` when the step raises one of ``catch``.
        device (torch.device): Where the case runs.
        catch (tuple): Exception types recorded instead of raised. Defaults to none.
    """
    try:
        if device.type == 'cuda':
            case.peak = _cuda_peak(case, device)
        else:
            case.peak = _cpu_peak(case)
        case.reset()
    except catch as error:
        case.peak = None
        _fail(case, error, device)


def _cuda_peak(case: Case, device: torch.device) -> int:
    # Every method's model sits on the device at once: count this case's own tensors and the
    # peak it adds on top of what was allocated before its step.
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    allocated = torch.cuda.memory_allocated(device)
    case.step()
    synchronize(device)
    return case.persistent() + torch.cuda.max_memory_allocated(device) - allocated


class CoreWarnings(logging.Handler):
    """Keeps what the adapter core warns about while a benchmark builds its cases, instead of
    printing it: ranks capped to a small layer, adapters larger than their update. The
    benchmarks choose those settings on purpose (the paper's ranks on small layers), so each
    would be a console line about nothing; ``messages`` (each distinct one once) go into the
    results data.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.messages:
            self.messages.append(message)

    @classmethod
    @contextlib.contextmanager
    def collect(cls) -> Iterator['CoreWarnings']:
        """Within the block, the records of the core's logger (``mmflora``) are collected
        here and not printed."""
        handler, logger = cls(), logging.getLogger('mmflora')
        propagate = logger.propagate
        logger.addHandler(handler)
        logger.propagate = False
        try:
            yield handler
        finally:
            logger.removeHandler(handler)
            logger.propagate = propagate


#: ``KINETO_LOG_LEVEL`` above kineto's highest message level (VERBOSE 0 ... USDT 5). The
#: profiler only counts allocations here, yet kineto logs two USDT lines at every start and
#: stop and, in a CUDA build of torch on a machine without a GPU, a failed device count: a
#: hundred lines for nothing. Read by kineto when the first profile starts.
KINETO_SILENT = '6'


def _cpu_peak(case: Case) -> int:
    from torch.profiler import ProfilerActivity, profile
    os.environ.setdefault('KINETO_LOG_LEVEL', KINETO_SILENT)  # a level the user set stays
    before = case.persistent()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            case.step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == '[memory]')
    if not events:  # kineto's own messages are silenced: say it here
        raise RuntimeError(f'{case.key}: the profiler recorded no allocation, so its peak '
                           f'memory is unknown (run with KINETO_LOG_LEVEL=0 to see why)')
    running = highest = 0
    for _, nbytes in events:
        running += nbytes
        highest = max(highest, running)
    return before + highest


def measure(cases: Sequence[Case], reps: int, warmup: int, device: torch.device,
            memory: bool = True) -> None:
    """Time the cases interleaved, then take one memory measurement of each."""
    time_interleaved(cases, reps, warmup, device)
    if memory:
        for case in cases:
            if case.runnable:
                measure_peak(case, device)
