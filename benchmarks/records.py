"""The results data: a measured case as a record, and ratios read back from records.

Both the speed benchmark and the GPU check compare FLoRA's automatic path with the fixed ones
from such records (``compare``).

A record is a plain dict (it goes to the JSON beside the markdown): ``key``, ``label``, ``ms``
(median), ``times`` (seconds, every timed repetition), ``peak`` (bytes; None when the method
was not measured), ``params`` (trainable), ``note``, ``detail`` when the case has one (the paths
the automatic choice took) and, when the case failed, ``error``.
"""
import math
import statistics
from typing import Dict, List, Optional, Sequence

from .harness import Case

#: The fixed paths an adapter layer can be forced onto.
FIXED_PATHS = ('merged', 'factorised')


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


def spread(times: Sequence[float]) -> float:
    """Interquartile range of ``times`` over their median (NaN for fewer than 2)."""
    if len(times) < 2:
        return float('nan')
    q1, _, q3 = statistics.quantiles(times, n=4, method='inclusive')
    return (q3 - q1) / statistics.median(times)


def noise_of(twin_vs_auto: float) -> float:
    """How far two identical cases differ, either way: 1.03 and 1/1.03 are both 0.03."""
    if not (math.isfinite(twin_vs_auto) and twin_vs_auto > 0):
        return float('nan')
    return max(twin_vs_auto, 1 / twin_vs_auto) - 1


def compare(auto: Optional[dict], fixed: Dict[str, Optional[dict]], twin_vs_auto: float,
            path: str, decided: str) -> dict:
    """auto against the faster of the ``fixed`` records that ran, beside the noise."""
    ran = {p: c for p, c in fixed.items() if c is not None and c.get('times')}
    best = min(ran, key=lambda p: ran[p]['ms']) if ran else None
    return dict(path=path, decided=decided, best=best,
                fixed_ms={p: (c['ms'] if p in ran else None) for p, c in fixed.items()},
                auto_ms=auto['ms'] if auto else float('nan'),
                auto_vs_best=ratio(auto, ran.get(best)), twin_vs_auto=twin_vs_auto,
                noise=noise_of(twin_vs_auto), spread=spread(auto['times'] if auto else []),
                reps=len(auto['times']) if auto else 0)
