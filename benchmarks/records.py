"""The results data: a measured case as a record, and ratios read back from records.

A record is a plain dict (it goes to the JSON beside the markdown): ``key``, ``label``, ``ms``
(median), ``times`` (seconds, every timed repetition), ``peak`` (bytes; None when the method
was not measured), ``params`` (trainable), ``note``, ``detail`` when the case has one (the paths
the automatic choice took) and, when the case failed, ``error``.
"""
from typing import List, Optional

from .harness import Case


def case_record(case: Case) -> dict:
    """The results data of one measured case."""
    record = dict(key=case.key, label=case.label, ms=1e3 * case.median, times=case.times,
                  peak=case.peak, params=case.params, note=case.note)
    if case.detail:
        record['detail'] = case.detail
    if case.error:
        record['error'] = case.error
    return record


def find(cases: List[dict], key: str) -> Optional[dict]:
    """The measured record ``key`` among ``cases`` (None when absent or not measured)."""
    return next((c for c in cases if c['key'] == key and c.get('peak') is not None), None)


def ratio(a: Optional[dict], b: Optional[dict], field: str = 'ms') -> float:
    """``a[field] / b[field]``; NaN when either record or figure is missing or the divisor is 0."""
    if a is None or b is None or a.get(field) is None or not b.get(field):
        return float('nan')
    return a[field] / b[field]
