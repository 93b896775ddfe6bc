"""The memory plan: its per-block activation estimate against what autograd saves on CPU, the
meta-device trace of the heads against real tensors, and the table of a tiny config."""
import os.path as osp

import pytest
import torch

from mmflora.adapters import inject_adapters
from mmflora.apis.memory_plan import (block_geometry, format_plan, memory_plan,
                                      saved_tensor_bytes)
from mmflora.apis.memory_plan.activations import (backbone_activation_bytes,
                                                  head_activation_bytes)
from mmflora.models import InternViT6B

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FLORA = osp.join(ROOT, 'configs', 'flora', 'upernet_internvit6b_ade20k.py')
TINY_CONFIG = f"""_base_ = {FLORA!r}
model = dict(
    backbone=dict(img_size=56, embed_dim=64, depth=4, num_heads=4, out_indices=(0, 1, 2, 3),
                  init_cfg=None),
    neck=dict(embed_dim=64),
    decode_head=dict(in_channels=[64, 64, 64, 64], channels=16),
    auxiliary_head=dict(in_channels=64, channels=16))
"""


def _backbone(img_size, width, method, depth=2, with_cp=False):
    torch.manual_seed(0)
    model = InternViT6B(img_size=img_size, embed_dim=width, depth=depth, num_heads=4,
                        out_indices=(depth - 1, ), with_cp=with_cp).train()
    if method != 'full':  # the factorised path: the one the cost model picks at 6B size
        inject_adapters(model, method, targets=['Linear'], r=4, path='factorised')
    return model


def _measured_blocks(model, batch=2):
    """Bytes autograd keeps for the blocks (fp32 on CPU), the tokens entering them as input."""
    tokens = torch.randn(batch, model.pos_embed.shape[1], model.embed_dim, requires_grad=True)

    def run():
        x = tokens * 1.0
        for block in model.blocks:
            x = block(x)
        return x

    return saved_tensor_bytes(run, exclude=list(model.parameters()))[1]


def _estimate(model, method, batch=2, checkpointing=False):
    geometry = block_geometry(model, batch)
    width, hidden = geometry.width, geometry.mlp_width
    adapted = () if method == 'full' else (  # qkv, proj, fc1, fc2: (out, in)
        (3 * width, width), (width, width), (hidden, width), (width, hidden))
    return backbone_activation_bytes(geometry, method, 4, adapted, checkpointing, dtype_bytes=4)


@pytest.mark.parametrize('method', ['full', 'flora', 'lora'])
@pytest.mark.parametrize('img_size, width', [(56, 64), (112, 64), (56, 128)])
def test_block_estimate_matches_what_autograd_saves_on_cpu(method, img_size, width):
    model = _backbone(img_size, width, method)
    measured = _measured_blocks(model)
    assert measured == _estimate(model, method)


@pytest.mark.parametrize('method', ['full', 'flora'])
def test_saved_activations_grow_with_tokens_and_width_as_estimated(method):
    base, tokens, wide = (_backbone(s, w, method) for s, w in ((56, 64), (112, 64), (56, 128)))
    for other in (tokens, wide):
        measured = _measured_blocks(other) / _measured_blocks(base)
        estimated = _estimate(other, method) / _estimate(base, method)
        assert measured == pytest.approx(estimated, rel=0.03)
        assert measured > 1.8  # 17 -> 65 tokens, 64 -> 128 channels: about 4x and 2x


def test_checkpointed_blocks_keep_only_their_inputs_during_the_forward():
    # FLoRA: the frozen patch embedding keeps nothing, so the backbone's forward keeps what
    # its blocks keep: with checkpointing, each block's input.
    images = torch.randn(2, 3, 56, 56)
    model = _backbone(56, 64, 'flora', depth=3, with_cp=True)
    geometry = block_geometry(model, 2)
    inputs = geometry.depth * geometry.positions * geometry.width * 4
    assert saved_tensor_bytes(lambda: model(images), list(model.parameters()))[1] == inputs
    # the estimate adds the one block recomputed in the backward pass
    assert _estimate(model, 'flora', checkpointing=True) == inputs + _estimate(
        _backbone(56, 64, 'flora', depth=1), 'flora')


def test_meta_trace_of_the_heads_equals_the_bytes_saved_by_real_tensors(tmp_path):
    from mmflora.apis import load_config
    from mmflora.apis.memory_plan.counts import build_meta_model
    from ..test_configs.helpers import build_model
    path = tmp_path / 'tiny.py'
    path.write_text(TINY_CONFIG)
    cfg = load_config(str(path))
    geometry = block_geometry(build_meta_model(cfg).backbone, 2)
    traced = head_activation_bytes(build_meta_model(cfg), geometry, 56, torch.float32)

    from mmengine.model import revert_sync_batchnorm
    model = revert_sync_batchnorm(build_model(cfg)).train()
    feats = [torch.randn(2, 64, 4, 4, requires_grad=True) for _ in range(4)]
    target = torch.randint(0, 150, (2, 56, 56))

    def step():
        pyramid = model.neck(feats)
        return [torch.nn.functional.cross_entropy(torch.nn.functional.interpolate(
            head(pyramid), size=(56, 56), mode='bilinear', align_corners=False), target)
            for head in (model.decode_head, model.auxiliary_head)]

    _, measured = saved_tensor_bytes(step, exclude=list(model.parameters()))
    assert traced == measured


@pytest.fixture(scope='module')
def tiny_plan(tmp_path_factory):
    path = tmp_path_factory.mktemp('plan') / 'tiny.py'
    path.write_text(TINY_CONFIG)
    return memory_plan(str(path), gpus=2, dtype='bf16', gpu_memory=0.01, reserve=0.)


def test_plan_compares_flora_lora_and_full_at_the_config_budget(tiny_plan):
    methods = {m['method']: m for m in tiny_plan['methods']}
    assert list(methods) == ['flora', 'lora', 'full']
    assert methods['flora']['rank'] == 8  # the config's r
    assert abs(methods['lora']['adapter'] - methods['flora']['adapter']) <= (
        methods['flora']['adapter'] * 0.2)
    assert methods['full']['trainable'] == methods['full']['total']
    assert len(tiny_plan['rows']) == 3 * 2 * 2  # methods x (DDP, FSDP) x checkpointing


def test_plan_rows_follow_the_stated_byte_counts(tiny_plan):
    counts = {m['method']: m for m in tiny_plan['methods']}
    rows = {(r['method'], r['strategy'], r['checkpointing']): r for r in tiny_plan['rows']}
    full = counts['full']['total']
    assert rows['full', 'DDP', False]['optimizer'] == 8 * full  # AdamW moments in fp32
    assert rows['full', 'DDP', False]['gradients'] == 2 * 4 * full  # + DDP's bucket copy
    assert rows['full', 'FSDP', False]['optimizer'] == 8 * full // 2
    flora = counts['flora']
    assert rows['flora', 'DDP', False]['weights'] == 2 * flora['frozen'] + 4 * flora['trainable']
    for method in ('flora', 'full'):
        assert rows[method, 'FSDP', True]['total'] < rows[method, 'DDP', True]['total']
        assert rows[method, 'DDP', True]['activations'] < rows[method, 'DDP', False]['activations']
    # 0.01 GiB per GPU: only some runs fit, and the table says which
    fitting = [r for r in tiny_plan['rows'] if r['fits']]
    assert 0 < len(fitting) < len(tiny_plan['rows'])
    assert all(r['total'] <= 0.01 * 2**30 for r in fitting)
    text = format_plan(tiny_plan)
    assert text.count('\n| ') == 1 + 12 and 'Fits in 0.01 GiB per GPU' in text
    assert 'flora r=8 FSDP +ckpt' in text.splitlines()[-1]
