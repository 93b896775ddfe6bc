"""InternViT6B backbone: sizes, outputs, per-block checkpointing, registries, the 6B count."""
import pytest
import torch
from mmengine.config import Config
from torch import nn

from mmflora.models import InternViT6B
from mmflora.models.internvit import InternViTBlock

# InternViT-6B-224px as the Hugging Face model card counts it: "Params (M): 5903".
PARAMS_224 = 5_902_793_600


def tiny(**kwargs) -> InternViT6B:
    torch.manual_seed(0)
    return InternViT6B(**dict(dict(img_size=56, embed_dim=64, depth=2, num_heads=4,
                                   out_indices=(0, 1)), **kwargs))


def test_full_size_on_the_meta_device_has_the_published_parameter_count():
    with torch.device('meta'):
        model = InternViT6B()  # 224 px, the pretraining grid
        at_504 = InternViT6B(img_size=504)
    assert sum(p.numel() for p in model.parameters()) == PARAMS_224
    # 36 x 36 position embeddings instead of 16 x 16 of width 3200
    assert sum(p.numel() for p in at_504.parameters()) == PARAMS_224 + (36**2 - 16**2) * 3200
    block = at_504.blocks[0]
    assert (block.attn.qkv.weight.shape, block.attn.qkv.bias) == ((9600, 3200), None)
    assert block.mlp.fc1.weight.shape == (12800, 3200)
    assert len(at_504.blocks) == 48 and at_504.out_indices == (11, 23, 35, 47)


def test_forward_returns_the_patch_tokens_of_the_chosen_blocks_as_maps():
    model = tiny(out_indices=(1, 0)).eval()
    feats = model(torch.randn(2, 3, 56, 56))
    assert [tuple(f.shape) for f in feats] == [(2, 64, 4, 4), (2, 64, 4, 4)]
    assert not torch.equal(feats[0], feats[1])  # block 1's output first, as asked


def test_another_input_size_takes_resized_position_embeddings():
    model = tiny(out_indices=(-1, )).eval()
    assert model(torch.randn(1, 3, 70, 42))[0].shape == (1, 64, 5, 3)
    assert model.position_embedding((4, 4)) is model.pos_embed


def test_every_projection_is_a_linear_layer_inside_a_block_module():
    model = tiny()
    assert all(isinstance(b, InternViTBlock) for b in model.blocks)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert linears == [f'blocks.{i}.{name}' for i in range(2)
                       for name in ('attn.qkv', 'attn.proj', 'mlp.fc1', 'mlp.fc2')]


def test_stochastic_depth_rises_linearly_to_the_last_block():
    model = tiny(depth=3, drop_path_rate=0.4, out_indices=(2, ))
    assert isinstance(model.blocks[0].drop_path1, nn.Identity)
    assert model.blocks[1].drop_path1.drop_prob == pytest.approx(0.2)
    assert model.blocks[2].drop_path2.drop_prob == pytest.approx(0.4)


def test_no_layer_scale_without_init_values():
    model = tiny(init_values=None)
    assert isinstance(model.blocks[0].ls1, nn.Identity)
    assert not any('.ls' in k for k in model.state_dict())


def test_checkpointed_blocks_give_the_same_outputs_and_gradients():
    images = torch.randn(2, 3, 56, 56)
    results = []
    for with_cp in (False, True):
        model = tiny(with_cp=with_cp).train()
        out = model(images)
        sum(f.square().mean() for f in out).backward()
        results.append((out, model.blocks[0].attn.qkv.weight.grad.clone()))
    for a, b in zip(results[0][0], results[1][0]):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(results[0][1], results[1][1])


def test_bad_arguments_raise_errors_that_name_the_fix():
    with pytest.raises(ValueError, match='out_indices entry 2'):
        tiny(out_indices=(0, 2))
    with pytest.raises(ValueError, match='num_heads=5'):
        tiny(num_heads=5)
    with pytest.raises(ValueError, match='img_size'):
        tiny(img_size=10)


def test_builds_from_an_mmseg_config_with_custom_imports(tmp_path):
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    path = tmp_path / 'internvit_neck.py'
    path.write_text(
        "custom_imports = dict(imports=['mmflora.models'], allow_failed_imports=False)\n"
        "backbone = dict(type='InternViT6B', img_size=56, embed_dim=64, depth=2, num_heads=4,\n"
        "                out_indices=[0, 1])\n"
        "neck = dict(type='Feature2Pyramid', embed_dim=64, rescales=[4, 2, 1, 0.5],\n"
        "            norm_cfg=dict(type='LN2d'))\n")
    cfg = Config.fromfile(str(path))
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmseg'):
        backbone, neck = MODELS.build(cfg.backbone), MODELS.build(cfg.neck)
    assert type(backbone) is InternViT6B
    feats = backbone(torch.randn(1, 3, 56, 56))
    pyramid = neck(feats + feats)  # four levels from two blocks, for the shapes only
    assert [tuple(f.shape[-2:]) for f in pyramid] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert type(neck.upsample_4x[1]).__name__ == 'LayerNorm2d'
