"""Path choice: FLoRA's automatic forward path against both fixed paths, per layer and backbone.

Per layer (the columns of ``layers.py``: stem, downsample, depthwise in dense and structured
mode, pointwise linears), four FLoRA cases on the same input run interleaved: ``path='auto'``,
a second, identical ``'auto'`` (its *twin*: the ratio of the two is what noise alone does to
this comparison), ``'merged'`` and ``'factorised'`` (refused on a structured grouped conv,
which has no factorised path; the merged one is then the only fixed path). The automatic
choice is asked for before anything is timed, so a close call is measured there, once; the
decision is kept for the process, and the twin and every timed step reuse it.

The backbone rows read the records of ``backbone.py``: FLoRA dense and structured with the
automatic choice, on every layer merged, and on every layer factorised where a layer can be
(structured grouped convs merge); the twin of dense auto gives the noise of both rows.

A comparison's figures: ``auto_vs_best`` (auto's median over the faster fixed path's), the
path auto took and what decided it (``models.explain_path``), ``twin_vs_auto`` and its
``noise`` (how far two identical cases differ, either way), and the ``spread`` of auto's own
repetitions (interquartile range over the median).
"""
import math
import re
import statistics
import time
from typing import Dict, List, Optional, Sequence

import torch

from ..harness import time_interleaved
from ..records import FIXED_PATHS, case_record, compare, find, ratio
from ..settings import PAPER
from .layers import Builder, LayerSpec, adapted_layer, layer_cases, layer_specs

#: Backbone records compared: {mode: (auto, all merged, all factorised)}.
BACKBONE_KEYS = {
    'dense': ('flora-auto', 'flora-merged', 'flora-factorised'),
    'structured': ('flora-structured', 'flora-structured-merged', 'flora-structured-factorised'),
}
#: The backbone's identical pair (dense auto and its twin): the noise of every backbone row.
BACKBONE_TWINS = ('flora-auto', 'flora-auto-twin')


def path_builders(spec: LayerSpec, mode: str) -> List[Builder]:
    """FLoRA at the paper's rank on ``spec``: auto, its twin, merged and factorised."""
    flora = dict(r=PAPER['flora_r'], r_kernel=PAPER['r_kernel'], scale=PAPER['scale'],
                 mode=mode)
    rows = [('auto', 'auto', 'auto'), ('twin', 'auto (twin)', 'auto')]
    rows += [(path, path, path) for path in FIXED_PATHS]
    return [(key, label, lambda path=path: adapted_layer(spec, 'flora', path=path, **flora))
            for key, label, path in rows]


def layer_row(spec: LayerSpec, mode: str, records: List[dict]) -> dict:
    """One layer's comparison from its four records."""
    timed = {r['key']: r for r in records if r.get('times')}
    auto = timed.get('auto')
    detail = auto.get('detail', {}) if auto else {}
    row = compare(auto, {p: timed.get(p) for p in FIXED_PATHS},
                  ratio(timed.get('twin'), auto), detail.get('path', '?'),
                  detail.get('decided', '?'))
    refused = {r['key']: r['note'] for r in records if r['key'] in FIXED_PATHS
               and not r.get('times')}
    return dict(family=spec.family, column=spec.column, mode=mode,
                input_shape=list(spec.input_shape), refused=refused, cases=records, **row)


def run_path_choice(profile: dict, device: torch.device, log,
                    only: Optional[str] = None) -> dict:
    """Time auto, its twin and both fixed paths on every layer column (or those ``only``
    matches), interleaved: ``path_reps`` repetitions at least, more for a fast case (until it
    has run ``path_seconds``, at most ``path_max_reps``).

    Returns:
        dict: the repetition settings, one row per (layer, mode) with the records and the
        comparison, and the worst layer with the noise over all of them (``layers_overall``).
    """
    rows = []
    for spec in layer_specs(profile):
        if only and not re.search(only, spec.column):
            continue
        start = time.perf_counter()
        modes = ['dense', 'structured'] if spec.family == 'depthwise 7x7' else ['dense']
        for mode in modes:
            cases = layer_cases(spec, device, path_builders(spec, mode))
            time_interleaved(cases, profile['path_reps'], profile['layer_warmup'], device,
                             min_seconds=profile['path_seconds'],
                             max_reps=profile['path_max_reps'])
            rows.append(layer_row(spec, mode, [case_record(c) for c in cases]))
            del cases
        log(f'  paths {spec.column:<22} {time.perf_counter() - start:6.1f} s')
    return dict(reps=profile['path_reps'], min_seconds=profile['path_seconds'],
                max_reps=profile['path_max_reps'], rows=rows, overall=layers_overall(rows))


def layers_overall(rows: List[dict]) -> dict:
    """The worst auto / best fixed over the layers, and the noise of the twins beside it."""
    ratios = [r for r in rows if math.isfinite(r['auto_vs_best'])]
    noises = [r['noise'] for r in rows if math.isfinite(r['noise'])]
    worst = max(ratios, key=lambda r: r['auto_vs_best']) if ratios else None
    return dict(
        worst=(dict(column=worst['column'], mode=worst['mode'], path=worst['path'],
                    decided=worst['decided'], auto_vs_best=worst['auto_vs_best'])
               if worst else None),
        worst_auto_vs_best=worst['auto_vs_best'] if worst else float('nan'),
        max_noise=max(noises) if noises else float('nan'),
        median_noise=statistics.median(noises) if noises else float('nan'),
        layers=len(rows), measured=sum(r['decided'] == 'measured' for r in rows))


def backbone_paths(cases: List[dict]) -> List[dict]:
    """The backbone comparisons (``BACKBONE_KEYS``) from the backbone section's records."""
    rows = []
    twin_vs_auto = ratio(find(cases, BACKBONE_TWINS[1]), find(cases, BACKBONE_TWINS[0]))
    for mode, (auto_key, merged_key, factorised_key) in BACKBONE_KEYS.items():
        auto = find(cases, auto_key)
        if auto is None:
            continue
        row = compare(auto, dict(merged=find(cases, merged_key),
                                 factorised=find(cases, factorised_key)),
                      twin_vs_auto, path=auto['note'], decided='per layer')
        rows.append(dict(mode=mode, auto=auto_key,
                         fixed=dict(merged=merged_key, factorised=factorised_key), **row))
    return rows
