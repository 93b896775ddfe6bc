"""Per-GPU memory of a training run under DDP and FSDP, from a config's model on the meta device.

For each method (the config's own, and FLoRA, LoRA and full fine-tuning at the same budget),
each strategy and with or without activation checkpointing per block:

weights
    The frozen base in the compute dtype (bf16: 2 bytes per parameter) and every trained
    parameter in fp32 (4 bytes: the master copy; autocast casts it per op). FSDP shards both
    across the GPUs and gathers two units at a time (the one computing and the one
    prefetched; units are each block, the neck and each head) in the compute dtype.
gradients
    fp32 gradients of the trained parameters. DDP keeps a second copy in its communication
    buckets (PyTorch's default ``gradient_as_bucket_view=False``); FSDP keeps its shard, plus
    the unsharded gradients of one unit in the compute dtype before they are reduce-scattered.
optimizer state
    AdamW's two fp32 moments per trained parameter (8 bytes); FSDP shards them.
activations
    What the backward pass needs (:mod:`.activations`): the blocks by the analytic estimate,
    the neck, heads and losses traced on the meta device; not sharded.

Not counted: the CUDA context, NCCL buffers and allocator slack (the ``reserve``), the input
batch, and the transient activation gradients of the backward pass.
"""
import dataclasses
from typing import Dict, List, Optional, Tuple

import torch

from mmflora.apis.config import load_config
from .activations import backbone_activation_bytes, block_geometry, head_activation_bytes
from .counts import MethodCounts, adapter_options, build_meta_model, matched_rank, method_counts

GIB = 2**30
DTYPE_BYTES = {'bf16': 2, 'fp16': 2, 'fp32': 4}
TORCH_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16, 'fp32': torch.float32}
STRATEGIES = ('DDP', 'FSDP')
#: Compared with the config's method, at its adapter budget.
COMPARED = ('flora', 'lora', 'full')
#: Budget for FLoRA and LoRA when the config's method has no rank: Table 2's smaller one.
DEFAULT_PERCENT = 0.32


def _compared_methods(model, options: Dict) -> Tuple[MethodCounts, List[MethodCounts]]:
    """The config's own counts, and FLoRA, LoRA and full fine-tuning at its budget.

    The budget is the config's adapter when its method has a rank (FLoRA, LoRA, DoRA), else
    Table 2's smaller budget (``DEFAULT_PERCENT`` of the backbone).
    """
    own = method_counts(model, options)
    budget = own.adapter if own.rank is not None else int(DEFAULT_PERCENT / 100 * own.backbone)
    compared = []
    for method in COMPARED:
        if method == own.method:
            compared.append(own)
        elif method == 'full':
            compared.append(method_counts(model, options, 'full'))
        else:
            compared.append(method_counts(model, options, method,
                                          matched_rank(model, options, method, budget)))
    return own, compared


def _units(model, counts: MethodCounts) -> List[int]:
    """Parameters of each FSDP unit: every block (with its adapters), the neck, each head."""
    blocks = list(model.backbone.blocks)
    per_block_adapter = counts.adapter // len(blocks) if counts.rank is not None else 0
    units = [sum(p.numel() for p in block.parameters()) + per_block_adapter for block in blocks]
    for name in ('neck', 'decode_head', 'auxiliary_head'):
        if hasattr(model, name):
            units.append(sum(p.numel() for p in getattr(model, name).parameters()))
    return sorted(units, reverse=True)


def _memory(counts: MethodCounts, strategy: str, gpus: int, dtype_bytes: int,
            units: List[int], trained_unit: int, activations: int) -> Dict[str, int]:
    frozen, trained = counts.frozen, counts.trainable
    if strategy == 'DDP':
        weights = frozen * dtype_bytes + trained * 4
        gradients = 2 * trained * 4
        optimizer = trained * 8
    else:
        weights = (frozen * dtype_bytes + trained * 4) // gpus + sum(units[:2]) * dtype_bytes
        gradients = trained * 4 // gpus + trained_unit * dtype_bytes
        optimizer = trained * 8 // gpus
    total = weights + gradients + optimizer + activations
    return dict(weights=weights, gradients=gradients, optimizer=optimizer,
                activations=activations, total=total)


def memory_plan(config: str, gpus: int = 8, dtype: str = 'bf16', gpu_memory: float = 80.,
                reserve: float = 4., batch: Optional[int] = None,
                cfg_options: Optional[dict] = None) -> dict:
    """The per-GPU memory table of a config (see the module docstring).

    Args:
        config: Path of an InternViT6B config with a ``FLoRAHook`` (or adapter) entry.
        gpus: GPUs the run uses (FSDP shards across them). Defaults to 8.
        dtype: Compute dtype: 'bf16', 'fp16' or 'fp32'. Defaults to 'bf16'.
        gpu_memory: Memory of one GPU in GiB. Defaults to 80.
        reserve: GiB kept for the CUDA context, NCCL and allocator slack. Defaults to 4.
        batch: Images per GPU. Defaults to the config's ``train_dataloader.batch_size``.
        cfg_options: Overrides of config entries.

    Returns:
        dict: ``config``, ``config_method`` (the config's own counts), ``settings``,
        ``geometry``, ``methods`` (FLoRA, LoRA, full: counts), ``rows`` (one per method,
        strategy and checkpointing: bytes, and whether it ``fits``).
    """
    if dtype not in DTYPE_BYTES:
        raise ValueError(f'memory_plan dtype {dtype!r} is unknown; use one of {list(DTYPE_BYTES)}')
    if gpus < 1:
        raise ValueError(f'memory_plan needs gpus >= 1, got {gpus}')
    cfg = load_config(config, cfg_options)
    batch = batch or cfg.train_dataloader.batch_size
    options = adapter_options(cfg)
    model = build_meta_model(cfg)
    geometry = block_geometry(model.backbone, batch)
    dtype_bytes = DTYPE_BYTES[dtype]
    image_size = model.backbone.img_size
    heads = head_activation_bytes(model, geometry, image_size, TORCH_DTYPES[dtype])
    own, methods = _compared_methods(model, options)
    rows = []
    limit = (gpu_memory - reserve) * GIB
    for counts in methods:
        units = _units(model, counts)
        trained_unit = units[0] if counts.method == 'full' else max(units[1:] + [0])
        for strategy in STRATEGIES:
            for checkpointing in (False, True):
                activations = heads + backbone_activation_bytes(
                    geometry, counts.method, counts.rank or 0, counts.block_layers,
                    checkpointing, dtype_bytes)
                memory = _memory(counts, strategy, gpus, dtype_bytes, units, trained_unit,
                                 activations)
                row = dict(method=counts.method, rank=counts.rank, strategy=strategy,
                           checkpointing=checkpointing, **memory,
                           fits=memory['total'] <= limit)
                rows.append(row)
    return dict(
        config=config,
        config_method=_counts_dict(own),
        settings=dict(gpus=gpus, dtype=dtype, gpu_memory_gib=gpu_memory, reserve_gib=reserve,
                      batch_per_gpu=batch, image_size=image_size),
        geometry=dict(vars(geometry), head_activation_bytes=heads),
        methods=[_counts_dict(c) for c in methods],
        rows=rows)


def _counts_dict(counts: MethodCounts) -> dict:
    return dict(dataclasses.asdict(counts), total=counts.total,
                percent_of_backbone=counts.percent_of_backbone())


def _name(method: str, rank: Optional[int]) -> str:
    return method if rank is None else f'{method} r={rank}'


def _describe(counts: dict) -> str:
    if counts['method'] == 'full':
        return f'full fine-tuning, {counts["trainable"] / 1e6:,.1f}M trained parameters'
    return (f'{_name(counts["method"], counts["rank"])}, {counts["adapter"] / 1e6:,.2f}M '
            f'adapter parameters = {counts["percent_of_backbone"]:.3f}% of the backbone '
            f'({counts["backbone"] / 1e6:,.1f}M)')


def _label(row: dict) -> str:
    return (f'{_name(row["method"], row["rank"])} {row["strategy"]}'
            f'{" +ckpt" if row["checkpointing"] else ""}')


def format_plan(plan: dict) -> str:
    """The plan as a markdown table (GiB per GPU) with a line saying which runs fit."""
    s, own = plan['settings'], plan['config_method']
    trained = {(m['method'], m['rank']): m['trainable'] for m in plan['methods']}
    lines = [
        f'{plan["config"]}: {s["gpus"]} GPUs x {s["gpu_memory_gib"]:g} GiB, {s["dtype"]}, '
        f'{s["batch_per_gpu"]} images of {s["image_size"]} px per GPU',
        f'config: {_describe(own)}; FLoRA and LoRA below at '
        + ('this budget' if own['rank'] is not None else f'{DEFAULT_PERCENT}% of the backbone'),
        '',
        '| method | trained (M) | strategy | act. ckpt | weights | gradients | optimizer '
        '| activations | total |',
        '|---|---:|---|---|---:|---:|---:|---:|---:|',
    ]
    for row in plan['rows']:
        cells = [f'{row[k] / GIB:.1f}'
                 for k in ('weights', 'gradients', 'optimizer', 'activations', 'total')]
        lines.append(
            f'| {_name(row["method"], row["rank"])} '
            f'| {trained[(row["method"], row["rank"])] / 1e6:,.1f} | {row["strategy"]} '
            f'| {"yes" if row["checkpointing"] else "no"} | ' + ' | '.join(cells) + ' |')
    fitting = [_label(r) for r in plan['rows'] if r['fits']]
    lines += ['', f'Fits in {s["gpu_memory_gib"]:g} GiB per GPU ({s["reserve_gib"]:g} GiB kept '
              f'for the CUDA context, NCCL and allocator): '
              + (', '.join(fitting) if fitting else 'none') + '.']
    return '\n'.join(lines)
