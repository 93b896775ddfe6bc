"""GPU check (d): InternViT-6B with FLoRA at Table 2's budget, one training step at 504 px.

The backbone of the paper's 6B run (48 blocks of width 3200, 25 heads; 5.9B parameters) is
built on the device in bf16, FLoRA r=8, s=0.04 goes into every Linear (0.32% of the backbone,
Table 2), and one step runs: forward under bf16 autocast with activation checkpointing per
block, the loss the mean square of the last block's tokens, backward, an AdamW step over the
adapters (fp32). Recorded: build and step seconds, the peak memory of the step and what the
weights take; ``tools/memory_plan.py`` gives the whole UperNet model's plan beside it.

The blocks come from ``mmflora/models/internvit/block.py``, loaded as a file: that module needs
only torch and timm, whereas importing the ``mmflora.models`` package registers every model in
mmengine's registries, and the GPU machine has no OpenMMLab packages. The patch embedding and
position embeddings are those of the backbone (``InternViT6B``), written here again in a few
lines for the same reason.

Without CUDA (``--device cpu``) the full size is skipped and the reason recorded; ``--quick``
runs the same code on a tiny instance (2 blocks of width 64) on any device.
"""
import importlib.util
import os.path as osp
import time
from typing import Callable, Dict

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmflora.adapters import inject_adapters

BLOCK_FILE = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'mmflora',
                      'models', 'internvit', 'block.py')
#: Table 2's FLoRA at 0.32% of InternViT-6B: every Linear, r=8, s=0.04.
TABLE2_FLORA = dict(targets=['Linear'], r=8, scale=0.04, path='factorised')
#: The full size (the authors' release) and the tiny one of ``--quick``.
SIZES = {
    'full': dict(embed_dim=3200, depth=48, num_heads=25, patch=14, px=504, batch=2),
    'quick': dict(embed_dim=64, depth=2, num_heads=4, patch=14, px=56, batch=2),
}
#: What the full size needs at least: bf16 weights (11.9 GB) and the step's working memory.
FULL_MIN_GIB = 40


def load_block_module():
    """``mmflora/models/internvit/block.py`` as a module of its own (torch and timm only)."""
    spec = importlib.util.spec_from_file_location('gpu_check_internvit_block', BLOCK_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class InternViTTrunk(nn.Module):
    """Patch embedding, class token, position embeddings and the blocks of InternViT-6B."""

    def __init__(self, embed_dim: int, depth: int, num_heads: int, patch: int, px: int) -> None:
        super().__init__()
        blocks = load_block_module()
        self.patch_embed = nn.Conv2d(3, embed_dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (px // patch)**2, embed_dim))
        self.blocks = nn.ModuleList(
            blocks.InternViTBlock(embed_dim, num_heads, qkv_bias=False, qk_normalization=True,
                                  init_values=0.1) for _ in range(depth))
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1).to(x.dtype), x], dim=1)
        x = x + self.pos_embed.to(x.dtype)
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False)
        return x


def skip_reason(device: torch.device, quick: bool) -> str:
    """Why the step cannot run here ('' when it can)."""
    if quick:
        return ''
    if device.type != 'cuda':
        return (f'InternViT-6B (5.9B parameters, 11.9 GB of bf16 weights) is built on a GPU only; '
                f'this run is on {device.type}; --quick runs the same code on a tiny instance')
    total = torch.cuda.get_device_properties(device).total_memory / 2**30
    if total < FULL_MIN_GIB:
        return f'the GPU has {total:.0f} GiB; the step needs about {FULL_MIN_GIB} GiB'
    return ''


def run_internvit(profile: dict, device: torch.device, log: Callable[[str], None]) -> Dict:
    """Build, adapt and train one step; returns the record (or why it was skipped)."""
    quick = profile['model'] != 'convnextv2_large'
    reason = skip_reason(device, quick)
    if reason:
        log(f'internvit: skipped: {reason}')
        return dict(skipped=reason)
    size = SIZES['quick' if quick else 'full']
    start = time.monotonic()
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # the frozen base is created in bf16
    try:
        with torch.device(device):
            model = InternViTTrunk(size['embed_dim'], size['depth'], size['num_heads'],
                                   size['patch'], size['px'])
    finally:
        torch.set_default_dtype(previous)
    backbone_params = sum(p.numel() for p in model.parameters())
    report = inject_adapters(model, 'flora', **TABLE2_FLORA)
    adapters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(adapters, lr=4e-5)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    build_seconds = time.monotonic() - start
    log(f'internvit: built {backbone_params / 1e9:.2f}B parameters, '
        f'{report.adapter_params:,} adapter parameters ({len(report.entries)} layers) in '
        f'{build_seconds:.1f} s')
    images = torch.randn(size['batch'], 3, size['px'], size['px'], device=device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.monotonic()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        loss = model(images).float().pow(2).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    step_seconds = time.monotonic() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == 'cuda' else None
    grads_ok = all(torch.isfinite(p).all() for p in adapters)
    return dict(size=size, backbone_params=backbone_params,
                adapter_params=report.adapter_params,
                adapter_percent=100.0 * report.adapter_params / backbone_params,
                adapted_layers=len(report.entries), weights_gib=weights / 2**30,
                peak_gib=None if peak is None else peak / 2**30,
                build_seconds=build_seconds, step_seconds=step_seconds,
                loss=float(loss), finite=bool(grads_ok))


def internvit_lines(result: dict) -> list:
    """The report's section for :func:`run_internvit`'s record."""
    lines = ['## (d) InternViT-6B with FLoRA (Table 2), one training step', '']
    if 'skipped' in result:
        return lines + [f"Skipped: {result['skipped']}.", '']
    size = result['size']
    peak = 'not measured on CPU' if result['peak_gib'] is None else f"{result['peak_gib']:.1f} GiB"
    return lines + [
        f"- backbone: {size['depth']} blocks of width {size['embed_dim']}, "
        f"{result['backbone_params'] / 1e9:.3f}B parameters in bf16 ({result['weights_gib']:.1f} "
        f'GiB with the adapters)',
        f"- FLoRA r=8, s=0.04 on {result['adapted_layers']} Linear layers: "
        f"{result['adapter_params']:,} parameters, {result['adapter_percent']:.3f}% of the "
        f'backbone (Table 2: 0.32%)',
        f"- one step (batch {size['batch']} at {size['px']} px, bf16 autocast, activation "
        f"checkpointing per block): {result['step_seconds']:.2f} s, peak memory {peak}; "
        f"build {result['build_seconds']:.1f} s; loss {result['loss']:.4g}, adapters finite: "
        f"{result['finite']}", '']
