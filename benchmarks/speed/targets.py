"""The targets of issues 6 and 12 and the summary entries measured against them.

Each entry is results data: the measured ratio, its target (an upper limit) and the verdict,
PASS when the ratio is finite and at most the limit, else MISS.
"""
import math
from typing import Dict, List, Optional

from ..records import find, ratio

#: The limit of "never slower than the faster fixed path by more than noise": the automatic
#: choice against the faster of 'merged' and 'factorised', at most this ratio. Chosen from the
#: noise the path comparison measures (two identical cases, see ``path_choice.py``); the
#: closing notes give the figures.
PATH_LIMIT = 1.05

#: (key, description, limit).
TARGETS = [
    ('train_vs_lora', 'FLoRA whole-backbone train step vs LoRA at equal budget', 1.00),
    ('dw_vs_twoconv', 'FLoRA on dense depthwise layers vs the two-conv formulation (worst C)',
     0.10),
    ('mem_vs_lora', 'FLoRA whole-backbone peak training memory vs LoRA', 1.00),
    ('recompute_train_vs_lora', 'FLoRA with recompute=True, whole-backbone train step vs LoRA',
     1.00),
    ('recompute_mem_vs_lora', 'FLoRA with recompute=True, whole-backbone peak training memory '
     'vs LoRA', 1.00),
    ('auto_vs_fixed_layers', 'FLoRA path auto vs the faster fixed path, worst layer',
     PATH_LIMIT),
    ('auto_vs_fixed_dense', 'FLoRA dense path auto vs the faster of all-merged and '
     'all-factorised, whole-backbone train step', PATH_LIMIT),
    ('auto_vs_fixed_structured', 'FLoRA structured path auto vs the faster of all-merged and '
     'all-factorised (depthwise merged), whole-backbone train step', PATH_LIMIT),
    ('merged_infer', 'merged FLoRA inference vs the base model', 1.01),
    ('storage', 'adapter file vs full checkpoint ({model}, paper budget)', 0.10),
]


def verdict(value: float, limit: float) -> str:
    return 'PASS' if math.isfinite(value) and value <= limit else 'MISS'


def backbone_path_row(results: dict, mode: str) -> Optional[dict]:
    return next((row for row in results.get('backbone', {}).get('paths', [])
                 if row['mode'] == mode), None)


def measured_ratios(results: dict) -> dict:
    """{target key: the measured ratio} from the sections present (NaN for a missing one)."""
    nan = float('nan')
    backbone = results.get('backbone', {}).get('cases', [])
    lora, flora = find(backbone, 'lora'), find(backbone, 'flora-auto')
    recompute = find(backbone, 'flora-recompute')
    dw = [ratio(find(layer['cases'], 'flora-dense-auto'), find(layer['cases'], 'twoconv-dense'))
          for layer in results.get('layers', []) if layer['family'] == 'depthwise 7x7']
    infer = results.get('inference', {}).get('cases', [])
    storage = results.get('storage', {})
    paths = {mode: backbone_path_row(results, mode) for mode in ('dense', 'structured')}
    return {
        'train_vs_lora': ratio(flora, lora),
        'dw_vs_twoconv': max(dw) if dw else nan,
        'mem_vs_lora': ratio(flora, lora, 'peak'),
        'recompute_train_vs_lora': ratio(recompute, lora),
        'recompute_mem_vs_lora': ratio(recompute, lora, 'peak'),
        'auto_vs_fixed_layers': results.get('paths', {}).get('overall', {}).get(
            'worst_auto_vs_best', nan),
        'auto_vs_fixed_dense': paths['dense']['auto_vs_best'] if paths['dense'] else nan,
        'auto_vs_fixed_structured': (paths['structured']['auto_vs_best']
                                     if paths['structured'] else nan),
        'merged_infer': ratio(find(infer, 'merged-structured'), find(infer, 'base')),
        'storage': (storage['flora']['bytes'] / storage['full_bytes']
                    if 'flora' in storage else nan),
    }


def path_notes(results: dict) -> Dict[str, str]:
    """What the path entries rest on: the worst layer, what auto took, the noise measured."""
    notes = {}
    overall = results.get('paths', {}).get('overall', {})
    if overall.get('worst'):
        worst = overall['worst']
        notes['auto_vs_fixed_layers'] = (
            f"worst: {worst['column']} ({worst['mode']}), auto took {worst['path']} "
            f"({worst['decided']}); identical cases differ by up to "
            f"{overall['max_noise']:.1%}, median {overall['median_noise']:.1%}")
    for mode in ('dense', 'structured'):
        row = backbone_path_row(results, mode)
        if row and row['best']:
            notes[f'auto_vs_fixed_{mode}'] = (
                f"auto: {row['path']}; faster fixed: all {row['best']}; identical cases "
                f"differ by {row['noise']:.1%}")
    return notes


def summary(results: dict) -> List[dict]:
    """One entry per target: key, text, value (measured ratio), limit, verdict and, for the
    path entries, a note on what they rest on."""
    measured = measured_ratios(results)
    notes = path_notes(results)
    model = results.get('storage', {}).get('model', '?')
    entries = []
    for key, text, limit in TARGETS:
        entry = dict(key=key, text=text.format(model=model), value=measured[key], limit=limit,
                     verdict=verdict(measured[key], limit))
        if key in notes:
            entry['note'] = notes[key]
        entries.append(entry)
    return entries
