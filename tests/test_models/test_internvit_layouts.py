"""InternViT6B loads checkpoints with the names and shapes of the published model code.

The checkpoints are written from published_internvit_layouts.py (key by key from the
upstream code, without the layout records), and the loaded backbone's outputs are compared
with internvit_reference.py, which computes the published model's forward from the same
tensors under their published names.
"""
import pytest
import torch

from mmflora.models import InternViT6B
from mmflora.models.internvit import INTERNVIT_LAYOUTS
from .internvit_reference import reference_features
from .published_internvit_layouts import (TINY, hf_vision_model, internvl_chat,
                                          random_state_dict, release_backbone)

HEADS = 4
IMG = 56  # 4 x 4 patches of 14 px


def tiny(**kwargs) -> InternViT6B:
    torch.manual_seed(1)
    kwargs = dict(dict(img_size=IMG, embed_dim=TINY['dim'], depth=TINY['depth'],
                       num_heads=HEADS, out_indices=(0, 1)), **kwargs)
    return InternViT6B(**kwargs).eval()


def _release(**kwargs):
    return release_backbone(TINY['depth'], TINY['dim'], TINY['patch'], **kwargs)


def _hf(**kwargs):
    return hf_vision_model(TINY['depth'], TINY['dim'], TINY['patch'], **kwargs)


def _expected_values(theirs, layout):
    """Which published tensor each backbone tensor must hold, written out per layout."""
    if layout == 'release':
        return {k: v for k, v in theirs.items() if not k.startswith('up')}
    want = {'cls_token': theirs['embeddings.class_embedding'],
            'pos_embed': theirs['embeddings.position_embedding'],
            'patch_embed.proj.weight': theirs['embeddings.patch_embedding.weight'],
            'patch_embed.proj.bias': theirs['embeddings.patch_embedding.bias']}
    for i in range(TINY['depth']):
        hf = f'encoder.layers.{i}.'
        want[f'blocks.{i}.ls1.gamma'] = theirs[hf + 'ls1']
        want[f'blocks.{i}.ls2.gamma'] = theirs[hf + 'ls2']
        for member in ('norm1.weight', 'norm2.weight', 'attn.qkv.weight', 'attn.q_norm.weight',
                       'attn.k_norm.weight', 'attn.proj.weight', 'attn.proj.bias',
                       'mlp.fc1.weight', 'mlp.fc1.bias', 'mlp.fc2.weight', 'mlp.fc2.bias'):
            want[f'blocks.{i}.{member}'] = theirs[hf + member]
    return want


# name: (published shapes, how the file wraps them, layout of the tensors, tower prefix)
PUBLISHED = {
    # intern_vit_6b_224px.pth: 16 x 16 grid at 224 px, resized to the 4 x 4 grid of 56 px
    'release-pretrained': (_release(), lambda sd: sd, 'release', ''),
    # a fine-tuned segmentor of the authors: backbone. prefix, their FPN inside the backbone
    'release-segmentor': (
        {'backbone.' + k: v for k, v in _release(img_size=IMG, with_fpn=True).items()},
        lambda sd: dict(state_dict=sd, meta={}), 'release', 'backbone.'),
    'huggingface-224px': (_hf(), lambda sd: sd, 'huggingface', ''),
    # an InternVL-Chat model (448 px vision tower) with projector and language model
    'internvl-chat-448px': (internvl_chat(_hf(image_size=448)), lambda sd: sd, 'huggingface',
                            'vision_model.'),
}


@pytest.mark.parametrize('case', sorted(PUBLISHED))
def test_published_checkpoint_fills_the_backbone_and_computes_what_its_source_computes(case):
    shapes, wrap, layout, tower = PUBLISHED[case]
    theirs = random_state_dict(shapes)
    model = tiny()
    summary = model.load_pretrained(wrap(theirs))
    assert summary['format'] == layout
    assert summary['loaded'] == sorted(model.state_dict())
    source = {k[len(tower):]: v for k, v in theirs.items() if k.startswith(tower)}
    got = model.state_dict()
    for key, value in _expected_values(source, layout).items():
        if key == 'pos_embed' and value.shape != got[key].shape:
            assert summary['resized'] == ['pos_embed']
            assert torch.equal(got[key][:, 0], value[:, 0])  # the class token's is kept
        else:
            assert torch.equal(got[key], value), key
    other_parts = [k for k in theirs if not k.startswith(tower)]
    their_neck = [k for k in source if k.startswith('up')]  # the authors' FPN: our neck
    assert sorted(summary['dropped']) == sorted(other_parts + their_neck)

    images = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model(images)
        expected = reference_features(source, layout, images, HEADS, (0, 1))
    for a, b in zip(ours, expected):
        assert a.shape == b.shape == (2, TINY['dim'], 4, 4)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('layout', sorted(INTERNVIT_LAYOUTS))
def test_layout_record_writes_the_published_names_and_shapes(layout):
    """The records read backwards (backbone -> published) give exactly the published keys."""
    record = INTERNVIT_LAYOUTS[layout]
    exported = {}
    for key, value in tiny(img_size=224).state_dict().items():
        for rule in record.rules:
            theirs = rule.their_key(key)
            if theirs is not None:
                exported[theirs] = tuple(value.shape)
                break
    published = _release() if layout == 'release' else _hf()
    assert exported == published


def test_qkv_bias_checkpoints_load_where_the_backbone_has_the_bias():
    theirs = random_state_dict(_hf(qkv_bias=True))
    model = tiny(qkv_bias=True)
    model.load_pretrained(theirs)
    assert torch.equal(model.blocks[1].attn.qkv.bias, theirs['encoder.layers.1.attn.qkv.bias'])


def test_pretrained_init_cfg_loads_a_file_on_init_weights(tmp_path):
    theirs = random_state_dict(_release())
    path = tmp_path / 'intern_vit_6b_224px.pth'
    torch.save(theirs, path)
    model = tiny(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert torch.equal(model.blocks[0].mlp.fc2.weight, theirs['blocks.0.mlp.fc2.weight'])


def test_hugging_face_shard_index_loads_every_shard(tmp_path):
    import json

    from safetensors.torch import save_file
    theirs = random_state_dict(_hf())
    keys = sorted(theirs)
    shards = {'model-00001-of-00002.safetensors': keys[::2],
              'model-00002-of-00002.safetensors': keys[1::2]}
    for name, part in shards.items():
        save_file({k: theirs[k] for k in part}, str(tmp_path / name))
    index = tmp_path / 'model.safetensors.index.json'
    index.write_text(json.dumps(dict(weight_map={k: n for n, part in shards.items()
                                                 for k in part})))
    model = tiny()
    model.load_pretrained(str(index))
    assert torch.equal(model.blocks[1].attn.proj.weight,
                       theirs['encoder.layers.1.attn.proj.weight'])


def _refusal(model, checkpoint):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as info:
        model.load_pretrained(checkpoint)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), 'a refused load changed weights'
    return str(info.value)


def test_a_deeper_checkpoint_is_refused_naming_the_file_the_keys_and_depth(tmp_path):
    theirs = random_state_dict(release_backbone(3, TINY['dim'], TINY['patch']))
    path = tmp_path / 'deep.pth'
    torch.save(dict(module=theirs), path)  # the release's DeepSpeed container
    message = _refusal(tiny(), str(path))
    assert str(path) in message
    assert 'blocks.2.attn.qkv.weight' in message and 'depth=3' in message
    assert 'Nothing was loaded' in message


def test_a_checkpoint_lacking_a_tensor_is_refused_not_partly_loaded():
    theirs = random_state_dict(_hf())
    del theirs['encoder.layers.1.attn.k_norm.weight']
    message = _refusal(tiny(), theirs)
    assert 'blocks.1.attn.k_norm.weight' in message and '1 backbone tensors are missing' in message


@pytest.mark.parametrize('change, fix', [
    (dict(qkv_bias=True), 'qkv_bias=True'),
    (dict(mlp_ratio=2), 'mlp_ratio'),
])
def test_a_checkpoint_of_another_configuration_is_refused_with_the_setting_to_change(change, fix):
    theirs = random_state_dict(_release(**change))
    assert fix in _refusal(tiny(), theirs)


def test_a_foreign_checkpoint_is_refused_naming_the_supported_layouts():
    with pytest.raises(ValueError, match='release.*huggingface'):
        tiny().load_pretrained({'stem.0.weight': torch.zeros(3)})


def test_adapters_injected_before_pretrained_init_keep_their_init_and_are_not_expected():
    from mmflora.adapters import inject_adapters, iter_adapter_layers
    model = tiny()
    report = inject_adapters(model, 'flora', targets=['Linear'], r=2, scale=0.04)
    assert len(report.entries) == 4 * TINY['depth']  # qkv, proj, fc1, fc2 in every block
    factors = {n: layer.factors['0'].detach().clone() for n, layer in iter_adapter_layers(model)}
    theirs = random_state_dict(_release())
    model.load_pretrained(theirs)
    for name, layer in iter_adapter_layers(model):
        assert torch.equal(layer.factors['0'], factors[name])
    images = torch.randn(1, 3, IMG, IMG)
    with torch.no_grad():  # the core starts at zero: the adapted model is the source model
        torch.testing.assert_close(model(images)[1],
                                   reference_features(theirs, 'release', images, HEADS, (1, ))[0],
                                   rtol=1e-4, atol=1e-5)
