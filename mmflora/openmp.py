"""How the OpenMP threads of torch wait on a CPU that other jobs share.

torch's CPU kernels run on an OpenMP thread team (GNU libgomp in the PyPI wheels). With
``OMP_WAIT_POLICY`` unset, a thread that reaches the end of a parallel region before the
others spins, burning its core, instead of sleeping. On an idle machine that saves a wake-up;
on a machine where other busy processes hold the cores, the spinning thread takes CPU time
from the very thread it waits for, and every parallel region ends late. Measured on 2 cores
shared with other jobs (load average 6-7), 60 iterations of the demo's UperNet training took
499 s with the policy unset and 130 s with ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep while
they wait); with one more busy process beside them, 1178 s and 87 s (the other jobs eased off
during that last run). Passive waiting changes only scheduling, never results.

libgomp reads the variable once, when torch loads it, so the tools call
:func:`wait_passively` before anything imports torch; subprocesses inherit it. This module
imports nothing but the standard library for that reason.
"""
import os
import sys

#: The environment variable libgomp (and Intel's OpenMP) read at start-up.
WAIT_POLICY = 'OMP_WAIT_POLICY'


def wait_passively() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user chose a policy.

    Call it before ``import torch``. A value already in the environment (``ACTIVE`` for an
    idle machine where the last microseconds matter) is kept.

    Returns:
        bool: Whether the policy this process runs with is the one now in the environment:
        False when torch was imported earlier (then only subprocesses get it).
    """
    os.environ.setdefault(WAIT_POLICY, 'PASSIVE')
    return 'torch' not in sys.modules
