"""Storage: an adapter-only file against the full checkpoint, at the paper's budgets."""
import copy
import os
import os.path as osp
import tempfile

import torch

from mmflora.adapters import inject_adapters, save_adapters

from ..models import make_backbone
from ..settings import ADAPT, PAPER


def run_storage(profile: dict, log) -> dict:
    """Sizes of ``torch.save(state_dict)`` and of ``save_adapters`` for FLoRA and LoRA.

    Returns:
        dict: model, full_bytes, and for 'flora' and 'lora' the rank, trainable params, bytes.
    """
    name = profile['storage_model']
    results = dict(model=name)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = make_backbone(name)
        full_path = osp.join(tmp, 'full.pth')
        torch.save(model.state_dict(), full_path)
        results['full_bytes'] = os.path.getsize(full_path)
        os.remove(full_path)
        for method, r in (('flora', PAPER['flora_r']), ('lora', PAPER['lora_r'])):
            adapted = copy.deepcopy(model)
            kwargs = dict(r_kernel=PAPER['r_kernel'], scale=PAPER['scale']) if method == 'flora' \
                else {}
            report = inject_adapters(adapted, method, r=r, **kwargs, **ADAPT)
            path = osp.join(tmp, f'{method}.safetensors')
            save_adapters(adapted, path)
            results[method] = dict(r=r, params=report.trainable_params,
                                   bytes=os.path.getsize(path))
            del adapted
    log(f'  storage {name} done')
    return results
