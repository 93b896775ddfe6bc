"""The FSDP switch without processes: what ``--strategy fsdp`` writes into a config, and the
strategy's refusals of options that cannot work (before anything is built)."""
import pytest
import torch
from mmengine.config import Config

from mmflora.compat import fsdp_device_id
from mmflora.engine.fsdp import FLoRAFSDPStrategy, average_gradients, use_fsdp
from ..test_configs.helpers import CONFIG_DIR

FLORA_6B = CONFIG_DIR / 'flora' / 'upernet_internvit6b_ade20k.py'


def test_switch_moves_the_flora_hook_options_to_the_strategy():
    cfg = Config.fromfile(str(FLORA_6B))
    cfg.model.backbone.with_cp = True
    cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel')
    use_fsdp(cfg)
    assert cfg.runner_type == 'FlexibleRunner'
    strategy = cfg.strategy
    assert strategy.type == 'FLoRAFSDPStrategy'
    assert strategy.adapter == dict(method='flora', targets=['Linear'], r=8, scale=0.04,
                                    trainable=[r'^neck\.', r'^decode_head\.',
                                               r'^auxiliary_head\.'])
    assert strategy.blocks == ['InternViTBlock']
    assert cfg.model.backbone.with_cp is False  # the strategy checkpoints each block
    assert 'model_wrapper_cfg' not in cfg
    assert ('frozen_dtype' in strategy) == torch.cuda.is_available()


def test_switch_keeps_what_the_config_sets_and_refuses_what_cannot_train():
    cfg = Config.fromfile(str(FLORA_6B))
    cfg.strategy = dict(type='FLoRAFSDPStrategy', blocks=[], checkpoint_blocks=False)
    use_fsdp(cfg)
    assert cfg.strategy.blocks == [] and cfg.strategy.checkpoint_blocks is False
    cfg = Config.fromfile(str(FLORA_6B))
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h['type'] != 'FLoRAHook']
    with pytest.raises(ValueError, match='no FLoRAHook in custom_hooks'):
        use_fsdp(cfg)
    cfg = Config.fromfile(str(FLORA_6B))
    cfg.custom_hooks[0] = dict(type='FLoRAHook', method=None, adapter_checkpoint='a.safetensors')
    with pytest.raises(ValueError, match='method=None'):
        use_fsdp(cfg)
    cfg = Config.fromfile(str(FLORA_6B))
    cfg.strategy = dict(type='DeepSpeedStrategy')
    with pytest.raises(ValueError, match='DeepSpeedStrategy'):
        use_fsdp(cfg)


@pytest.mark.parametrize('options, message', [
    (dict(state_dict_cfg='full'), 'state_dict_cfg is not an option'),
    (dict(activation_checkpointing=dict(check_fn='x')), 'use checkpoint_blocks'),
    (dict(frozen_dtype='bf16'), "frozen_dtype='bf16' is not a torch dtype"),
    (dict(adapter=dict(method='flora', rank=8)), 'strategy.adapter'),
])
def test_strategy_refuses_options_it_cannot_honour(options, message):
    with pytest.raises(ValueError, match=message):
        FLoRAFSDPStrategy(**options)


def test_cpu_device_and_no_averaging_without_a_process_group():
    if not torch.cuda.is_available():
        assert fsdp_device_id() == torch.device('cpu')
    param = torch.nn.Parameter(torch.ones(3))
    param.grad = torch.full((3, ), 2.0)
    average_gradients([param])
    assert torch.equal(param.grad, torch.full((3, ), 2.0))
