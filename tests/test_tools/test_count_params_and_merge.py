"""tools/count_params.py and tools/merge_adapter.py on small configs."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs', 'demo', 'maskrcnn_convnextv2_atto_demo.py')
sys.path.insert(0, osp.join(ROOT, 'tools'))


def write_config(tmp_path, name: str, body: str) -> str:
    path = osp.join(tmp_path, name)
    with open(path, 'w') as f:
        f.write(f'_base_ = {DEMO!r}\n{body}\n')
    return path


def test_count_params_reports_the_backbone_adapter_budget(tmp_path, capsys):
    import count_params
    from mmflora.adapters import planned_adapter_params
    from mmflora.models import ConvNeXtV2
    config = write_config(tmp_path, 'c.py', 'model = dict(backbone=dict(adapter=dict(r=6)))')
    count_params.main([config])
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith('c.py')][0]
    expected = planned_adapter_params(ConvNeXtV2(arch='atto'), 'flora', r=6, r_kernel=2,
                                      targets=['Conv2d', 'Linear'])
    assert row.split()[1] == 'flora'
    assert float(row.split()[2]) == pytest.approx(expected / 1e6, abs=0.006)


def test_merge_adapter_writes_a_checkpoint_the_plain_config_loads(tmp_path):
    from mmflora.adapters import iter_adapter_layers
    from mmflora.apis import build_model_from_config, load_config
    import merge_adapter
    config = write_config(tmp_path, 's.py',
                          "model = dict(backbone=dict(adapter=dict(r=4, mode='structured')))")
    cfg = load_config(config)
    model = build_model_from_config(cfg).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, layer in iter_adapter_layers(model.backbone):
            for param in layer.adapter_parameters().values():
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    trained = osp.join(tmp_path, 'trained.pth')
    torch.save(dict(state_dict=model.state_dict()), trained)
    out = osp.join(tmp_path, 'merged.pth')
    merge_adapter.main([config, trained, '--out', out])
    plain_cfg = load_config(config)
    plain_cfg.model = merge_adapter.plain_model_config(plain_cfg.model)
    plain = build_model_from_config(plain_cfg).eval()
    merged_state = torch.load(out, weights_only=True)['state_dict']
    plain.load_state_dict(merged_state, strict=True)
    name = 'backbone.stages.0.blocks.0.conv_dw.weight'
    assert not torch.equal(merged_state[name], model.state_dict()[name])  # dW was folded in
    probe = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for got, expected in zip(plain.backbone(probe), model.backbone(probe)):
            assert torch.allclose(got, expected, atol=1e-4)


def test_merge_adapter_refuses_dense_depthwise_adapters_with_the_reason(tmp_path):
    import merge_adapter
    from mmflora.apis import build_model_from_config, load_config
    config = write_config(tmp_path, 'd.py', "model = dict(backbone=dict(adapter=dict(r=4)))")
    model = build_model_from_config(load_config(config))
    trained = osp.join(tmp_path, 'trained.pth')
    torch.save(dict(state_dict=model.state_dict()), trained)
    with pytest.raises(SystemExit, match="cannot be folded into a depthwise kernel.*structured"):
        merge_adapter.main([config, trained, '--out', osp.join(tmp_path, 'm.pth')])
