"""tools/count_params.py and tools/merge_adapter.py on small configs."""
import os.path as osp
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs', 'demo', 'maskrcnn_convnextv2_atto_demo_flora.py')
sys.path.insert(0, osp.join(ROOT, 'tools'))


def write_config(tmp_path, name: str, body: str) -> str:
    """``body`` on the demo's FLoRA Mask R-CNN with a random base (no pretrained checkpoint)."""
    base = osp.join(tmp_path, 'flora_random_base.py')
    with open(base, 'w') as f:
        f.write(f'_base_ = {DEMO!r}\nmodel = dict(backbone=dict(init_cfg=None))\n')
    path = osp.join(tmp_path, name)
    with open(path, 'w') as f:
        f.write(f'_base_ = {base!r}\n{body}\n')
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


def test_count_params_prints_the_table_on_stdout_and_warnings_after_it_on_stderr(tmp_path,
                                                                                 capsys):
    import count_params
    capped = write_config(tmp_path, 'capped.py', 'model = dict(backbone=dict(adapter=dict(r=10)))')
    plain = write_config(tmp_path, 'plain.py', 'model = dict(backbone=dict(adapter=dict(r=2)))')
    count_params.main([capped, plain])
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith('config') and set(lines[1]) == {'-'}
    assert [line.split()[0] for line in lines[2:]] == ['capped.py', 'plain.py']
    assert f"{capped}: warning: flora: ranks capped to the mode size" in err
    assert 'plain.py:' not in err


# Built on the meta device by count_params.describe: shapes only, seconds for ConvNeXt-V2-L.
BITFIT_L = osp.join(ROOT, 'configs', 'baselines', 'bitfit_maskrcnn_convnextv2_l_coco.py')


def test_bitfit_config_trains_the_0_2m_biases_of_table1_without_grn():
    # Table 1 prints BitFit's #Params to one significant figure (0.2M), so the count is checked
    # to that precision; the GRN biases alone (108,288 on -L) would make it 0.3M.
    import count_params
    row = count_params.describe(BITFIT_L)
    assert row['method'] == 'bitfit'
    assert round(row['backbone_adapter'] / 1e6, 1) == 0.2, row['backbone_adapter']
    families = row['biases']
    assert {name for name, f in families.items() if f['trained']} == {
        'Conv2d', 'Linear', 'LayerNorm', 'LayerNorm2d'}
    block_widths = 3 * [192] + 3 * [384] + 27 * [768] + 3 * [1536]  # ConvNeXt-V2-L blocks
    assert families['GlobalResponseNorm'] == dict(
        layers=len(block_widths), trained=0, frozen=sum(4 * c for c in block_widths))
    trained = sum(f['trained'] for f in families.values())
    assert trained == row['backbone_adapter']
    assert row['by_kind']['bitfit:Linear.bias'] == families['Linear']['trained']


def test_bitfit_trains_the_grn_biases_when_the_exclude_is_dropped():
    import count_params
    row = count_params.describe(BITFIT_L, {'model.backbone.adapter.exclude': None})
    grn = row['biases']['GlobalResponseNorm']
    assert grn['frozen'] == 0 and grn['trained'] > 0
    assert round(row['backbone_adapter'] / 1e6, 1) == 0.3
    default = count_params.describe(BITFIT_L)
    assert row['backbone_adapter'] - default['backbone_adapter'] == grn['trained']


def test_count_params_says_which_biases_bitfit_trains(tmp_path, capsys):
    import count_params
    config = write_config(tmp_path, 'b.py', "model = dict(backbone=dict(adapter=dict("
                          "_delete_=True, method='bitfit', exclude=[r'\\.mlp\\.grn$'])))")
    count_params.main([config, '--by-kind'])
    out = capsys.readouterr().out
    note = [line for line in out.splitlines() if 'BitFit trains' in line]
    assert len(note) == 1
    assert 'Conv2d' in note[0] and 'Linear' in note[0]
    assert 'frozen biases: GlobalResponseNorm' in note[0]
    assert any(line.split()[0] == 'bitfit:Conv2d.bias' for line in out.splitlines()
               if line.strip())


def test_merge_adapter_writes_a_checkpoint_the_plain_config_loads(tmp_path):
    # into folders that do not exist yet, as README's `--out work_dirs/x/merged.pth`
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
    out = osp.join(tmp_path, 'work_dirs', 'x', 'merged.pth')
    merge_adapter.main([config, trained, '--out', out])
    assert osp.isfile(osp.splitext(out)[0] + '.py')
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


def structured_config_and_adapter_file(tmp_path):
    """A structured-mode demo config (no Pretrained init) and a trained adapter file for it."""
    from mmflora.adapters import iter_adapter_layers, save_adapters
    from mmflora.apis import build_model_from_config, load_config
    config = write_config(tmp_path, 's.py',
                          "model = dict(backbone=dict(adapter=dict(r=4, mode='structured')))")
    model = build_model_from_config(load_config(config)).eval()
    with torch.no_grad():
        for _, layer in iter_adapter_layers(model.backbone):
            for param in layer.adapter_parameters().values():
                param.add_(0.05)
    adapter_file = osp.join(tmp_path, 'trained.adapter.safetensors')
    save_adapters(model, adapter_file)
    return config, model, adapter_file


def test_merge_adapter_refuses_to_merge_onto_a_random_base(tmp_path):
    # An adapter file (or slim checkpoint) holds no base weights; with no Pretrained init_cfg
    # the base would be random and the merged model worthless.
    import merge_adapter
    config, _, adapter_file = structured_config_and_adapter_file(tmp_path)
    with pytest.raises(SystemExit, match='no base weights.*--base-checkpoint'):
        merge_adapter.main([config, adapter_file, '--out', osp.join(tmp_path, 'm.pth')])
    assert not osp.exists(osp.join(tmp_path, 'm.pth'))


def test_merge_adapter_takes_the_base_from_base_checkpoint_and_writes_a_plain_config(tmp_path):
    import merge_adapter
    from mmengine.config import Config
    from mmflora.apis import build_model_from_config
    from mmflora.models import ConvNeXtV2
    config, _, adapter_file = structured_config_and_adapter_file(tmp_path)
    torch.manual_seed(3)
    base = ConvNeXtV2(arch='atto')
    base_file = osp.join(tmp_path, 'atto_base.pth')
    torch.save(base.state_dict(), base_file)
    out = osp.join(tmp_path, 'merged.pth')
    merge_adapter.main([config, adapter_file, '--out', out, '--base-checkpoint', base_file])
    merged = torch.load(out, weights_only=True)['state_dict']
    bias = 'stages.0.blocks.0.conv_dw.bias'  # a base tensor no adapter changes
    assert torch.equal(merged['backbone.' + bias], base.state_dict()[bias])

    # The config written beside the checkpoint builds the plain model it loads into.
    plain_cfg = Config.fromfile(osp.join(tmp_path, 'merged.py'))
    assert plain_cfg.model.backbone.type == 'ConvNeXtV2'
    assert 'adapter' not in plain_cfg.model.backbone
    plain = build_model_from_config(plain_cfg)
    plain.load_state_dict(merged, strict=True)


def test_merge_adapter_with_another_config_than_training_names_the_fix(tmp_path):
    import merge_adapter
    from mmflora.apis import build_model_from_config, load_config
    config, model, _ = structured_config_and_adapter_file(tmp_path)
    trained = osp.join(tmp_path, 'trained.pth')
    torch.save(dict(state_dict=model.state_dict()), trained)
    dense = write_config(tmp_path, 'd.py', "model = dict(backbone=dict(adapter=dict(r=4)))")
    assert build_model_from_config(load_config(dense))  # the dense config itself builds
    fix = r'(?s)size mismatch.*more\nMerge with the config it was trained with.*--cfg-options'
    with pytest.raises(SystemExit, match=fix):
        merge_adapter.main([dense, trained, '--out', osp.join(tmp_path, 'm.pth')])
