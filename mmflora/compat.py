"""Narrow compatibility shims for the pinned stack (torch 2.14, numpy 2.x, mmengine 0.10.7).

mmflora runs on the OpenMMLab 2.x stack, which was written for torch 1.x/2.0 and numpy 1.x. The
shims here adapt *this process* to what broke; none of them edits a file of an installed package,
and each is covered by a test that fails without it (``tests/test_foundation/test_compat.py``).

Call :func:`apply_compat_shims` once before an mmengine Runner starts; ``mmflora.models`` and
``mmflora.engine`` call it on import, so configs that ``custom_imports`` them get it for free.
It is idempotent.

Shims:

``fsdp_device_id``
    mmengine 0.10.7's ``FSDPStrategy._wrap_model`` builds its wrapper with
    ``device_id=int(os.environ['LOCAL_RANK'])``, which makes torch's FSDP move the module to
    CUDA device ``LOCAL_RANK``; on a machine without CUDA (gloo, the CPU tests) that fails.
    :func:`fsdp_device_id` gives the device FSDP needs here: ``LOCAL_RANK`` with CUDA,
    ``torch.device('cpu')`` without (torch 2.14's FSDP refuses a CPU module when no device is
    named: "FSDP needs a non-CPU accelerator device"). mmflora's
    :class:`~mmflora.engine.fsdp.FLoRAFSDPStrategy` builds its wrapper with it; mmengine's
    class itself is left as it is.

``mmengine_checkpoint_globals``
    Since torch 2.6 ``torch.load`` defaults to ``weights_only=True``, which only unpickles tensors,
    containers and an allowlist of types. mmengine 0.10.7 calls ``torch.load`` without
    ``weights_only`` when it resumes (``resume=True``) or loads (``load_from``,
    ``mmengine.runner.load_checkpoint``) one of its own checkpoints, and those checkpoints hold more
    than tensors: the message hub keeps ``HistoryBuffer`` objects whose logs are numpy arrays,
    numpy scalars (``eta``, ``best_score``, metric values) and, through
    ``HistoryBuffer.__getstate__``, its statistics methods, pickled as
    ``getattr(HistoryBuffer, 'min')``. Loading fails with::

        _pickle.UnpicklingError: Weights only load failed. ...
        WeightsUnpickler error: Unsupported global: GLOBAL
        mmengine.logging.history_buffer.HistoryBuffer was not an allowed global by default.

    The shim keeps ``weights_only=True`` and adds exactly these types to torch's allowlist
    (``torch.serialization.add_safe_globals``). ``builtins.getattr`` is not allowed as such: a
    stand-in registered under that name resolves only ``HistoryBuffer``'s four statistics methods
    and refuses any other lookup, so the protection against code in checkpoints stays intact.
"""
from __future__ import annotations

import pickle
from typing import Any, Callable, Union

import numpy as np
import torch

__all__ = ['apply_compat_shims', 'fsdp_device_id', 'mmengine_checkpoint_safe_globals']

SafeGlobal = Union[Callable[..., Any], type, tuple[Callable[..., Any], str]]

# Statistics HistoryBuffer registers for itself (HistoryBuffer._set_default_statistics).
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')

# One character code per numeric numpy dtype: bool, signed and unsigned ints, floats.
_NUMERIC_DTYPE_CODES = '?bhilqBHILQefd'

_applied = False


def _numpy_multiarray() -> Any:
    """Return numpy's ``multiarray`` module (``numpy._core`` in numpy 2, ``numpy.core`` in 1.x)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    return multiarray


def _history_buffer_statistic(owner: Any, name: str) -> Callable[..., Any]:
    """Stand-in for ``builtins.getattr`` while a checkpoint is unpickled with weights_only.

    ``HistoryBuffer.__getstate__`` stores its statistics methods, which pickle writes as
    ``getattr(HistoryBuffer, '<name>')``. Only those lookups are answered.

    Args:
        owner: The object the pickle asks an attribute of.
        name: The attribute name.

    Returns:
        The statistics method ``HistoryBuffer.<name>``.

    Raises:
        pickle.UnpicklingError: For any other object or attribute.
    """
    from mmengine.logging import HistoryBuffer
    if owner is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'weights_only load refused getattr({owner!r}, {name!r}): mmflora.compat only allows '
        f'HistoryBuffer statistics {_HISTORY_BUFFER_STATISTICS}. If you trust this file, load it '
        'with torch.load(..., weights_only=False).')


def mmengine_checkpoint_safe_globals() -> list[SafeGlobal]:
    """List the globals an mmengine 0.10.7 checkpoint holds besides tensors.

    Found by saving checkpoints with an mmengine Runner (optimizer, LR schedulers, validation
    metrics returning numpy scalars, ``save_best``) and listing them with
    ``torch.serialization.get_unsafe_globals_in_checkpoint``, plus the numpy dtype classes that
    unpickled arrays and scalars need but the pickle does not name.

    Returns:
        Entries for ``torch.serialization.add_safe_globals``: objects, or ``(object, name)``
        pairs where the name in the pickle differs from where the object lives.
    """
    from mmengine.logging import HistoryBuffer
    multiarray = _numpy_multiarray()
    dtype_classes = list(dict.fromkeys(type(np.dtype(c)) for c in _NUMERIC_DTYPE_CODES))
    entries: list[SafeGlobal] = [HistoryBuffer, (_history_buffer_statistic, 'builtins.getattr'),
                                 np.ndarray, np.dtype, *dtype_classes]
    # numpy 2 pickles name numpy._core, numpy 1.x pickles (older checkpoints) numpy.core.
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        entries.append((multiarray._reconstruct, f'{module}._reconstruct'))
        entries.append((multiarray.scalar, f'{module}.scalar'))
    return entries


#: The mmengine versions whose FSDPStrategy passes ``device_id=int(LOCAL_RANK)`` (read in 0.10.7).
FSDP_DEVICE_ID_CHECKED = ('0.10.',)


def fsdp_device_id() -> Union[int, torch.device]:
    """The ``device_id`` for torch's FSDP in this process: ``LOCAL_RANK`` with CUDA, else CPU.

    Raises:
        RuntimeError: mmengine is a version this was not checked against (its FSDPStrategy
            may place the model differently); the message names the version.
    """
    import os

    import mmengine
    if not mmengine.__version__.startswith(FSDP_DEVICE_ID_CHECKED):
        raise RuntimeError(f'mmflora.compat.fsdp_device_id was checked against mmengine '
                           f'{FSDP_DEVICE_ID_CHECKED} and this is mmengine '
                           f'{mmengine.__version__}; read mmengine/_strategy/fsdp.py '
                           f'(_wrap_model) and update the check')
    if torch.cuda.is_available():
        return int(os.environ.get('LOCAL_RANK', 0))
    return torch.device('cpu')


def apply_compat_shims() -> None:
    """Apply every shim of this module to the running process; calling it again does nothing."""
    global _applied
    if _applied:
        return
    torch.serialization.add_safe_globals(mmengine_checkpoint_safe_globals())
    _applied = True
