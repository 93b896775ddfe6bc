"""The targets of issue 6 and the summary entries measured against them.

Each entry is results data: the measured ratio, its target (an upper limit) and the verdict,
PASS when the ratio is finite and at most the limit, else MISS.
"""
import math
from typing import List

from .records import find, ratio

#: (key, description, limit).
TARGETS = [
    ('train_vs_lora', 'FLoRA whole-backbone train step vs LoRA at equal budget', 1.00),
    ('dw_vs_twoconv', 'FLoRA on dense depthwise layers vs the two-conv formulation (worst C)',
     0.10),
    ('mem_vs_lora', 'FLoRA whole-backbone peak training memory vs LoRA', 1.00),
    ('merged_infer', 'merged FLoRA inference vs the base model', 1.01),
    ('storage', 'adapter file vs full checkpoint ({model}, paper budget)', 0.10),
]


def verdict(value: float, limit: float) -> str:
    return 'PASS' if math.isfinite(value) and value <= limit else 'MISS'


def measured_ratios(results: dict) -> dict:
    """{target key: the measured ratio} from the sections present (NaN for a missing one)."""
    backbone = results.get('backbone', {}).get('cases', [])
    lora, flora = find(backbone, 'lora'), find(backbone, 'flora-auto')
    dw = [ratio(find(layer['cases'], 'flora-dense-auto'), find(layer['cases'], 'twoconv-dense'))
          for layer in results.get('layers', []) if layer['family'] == 'depthwise 7x7']
    infer = results.get('inference', {}).get('cases', [])
    storage = results.get('storage', {})
    return {
        'train_vs_lora': ratio(flora, lora),
        'dw_vs_twoconv': max(dw) if dw else float('nan'),
        'mem_vs_lora': ratio(flora, lora, 'peak'),
        'merged_infer': ratio(find(infer, 'merged-structured'), find(infer, 'base')),
        'storage': (storage['flora']['bytes'] / storage['full_bytes']
                    if 'flora' in storage else float('nan')),
    }


def summary(results: dict) -> List[dict]:
    """One entry per target: key, text, value (measured ratio), limit and verdict."""
    measured = measured_ratios(results)
    model = results.get('storage', {}).get('model', '?')
    return [dict(key=key, text=text.format(model=model), value=measured[key], limit=limit,
                 verdict=verdict(measured[key], limit)) for key, text, limit in TARGETS]
