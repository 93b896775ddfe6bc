"""tools/merge_adapter.py on a config whose adapters FLoRAHook injects (the Table 2 ViT
configs): the tool injects them as a run would, folds them (q, k, v and the attention output
of every nn.MultiheadAttention included) and writes a config without the hook."""
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config

from mmflora.adapters import iter_adapter_layers
from mmflora.apis import build_model_from_config
from tests.test_configs.helpers import TABLE2_CONFIG, shrink_vit

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                            'tools'))


def small_vit_config(tmp_path, rank: int = 2) -> str:
    """The Table 2 FLoRA config on a ViT of width 32, without a pretrained checkpoint."""
    cfg = Config.fromfile(str(TABLE2_CONFIG))
    shrink_vit(cfg.model, image_size=64)
    cfg.custom_hooks[0]['r'] = rank
    path = str(tmp_path / 'vit_flora.py')
    cfg.dump(path)
    return path


def trained_checkpoint(config: str, tmp_path) -> tuple:
    """A full checkpoint of the adapted model with every adapter tensor moved off its init."""
    import merge_adapter
    cfg = Config.fromfile(config)
    model = build_model_from_config(cfg)
    merge_adapter.inject_hook_adapters(cfg, model, 'unused.pth')
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, layer in iter_adapter_layers(model):
            for param in layer.adapter_parameters().values():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    path = str(tmp_path / 'iter_2.pth')
    torch.save(dict(state_dict=model.state_dict()), path)
    return model.eval(), path


def test_merge_adapter_folds_hook_adapters_of_a_vit_and_drops_the_hook(tmp_path, capsys):
    import merge_adapter
    config = small_vit_config(tmp_path)
    adapted, checkpoint = trained_checkpoint(config, tmp_path)
    names = [name for name, _ in iter_adapter_layers(adapted)]
    assert {'attn.attn.in_proj', 'attn.attn.out_proj'} <= {n.split('.', 3)[-1] for n in names}
    out = str(tmp_path / 'merged.pth')

    merge_adapter.main([config, checkpoint, '--out', out])

    plain_cfg = Config.fromfile(osp.splitext(out)[0] + '.py')
    assert [h['type'] for h in plain_cfg.custom_hooks if h['type'] == 'FLoRAHook'] == []
    assert plain_cfg.model.backbone.type == 'VisionTransformer'
    plain = build_model_from_config(plain_cfg).eval()
    plain.load_state_dict(torch.load(out, weights_only=True)['state_dict'], strict=True)
    assert not any(True for _ in iter_adapter_layers(plain))
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for want, got in zip(adapted.backbone(image), plain.backbone(image)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert 'max |difference|' in capsys.readouterr().out


def test_merge_adapter_refuses_a_config_without_adapters_naming_it(tmp_path):
    import merge_adapter
    config = small_vit_config(tmp_path)
    _, checkpoint = trained_checkpoint(config, tmp_path)
    cfg = Config.fromfile(config)
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h['type'] != 'FLoRAHook']
    bare = str(tmp_path / 'vit_bare.py')
    cfg.dump(bare)
    with pytest.raises(SystemExit, match=r'vit_bare\.py builds no adapters'):
        merge_adapter.main([bare, checkpoint, '--out', str(tmp_path / 'm.pth')])
    assert not osp.exists(tmp_path / 'm.pth')
