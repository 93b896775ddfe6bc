"""FLoRAFSDPStrategy in a real 2-process run (gloo on CPU): train, resume, equal adapters.

The tiny InternViT-6B FLoRA config (4 blocks of width 64, the Table 2 adapter options)
trains under ``tools/train.py --strategy fsdp``; a second run resumes from the checkpoint of
the first one's middle and must end with the same trained tensors.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from safetensors.torch import load_file as load_adapter_tensors
from ..test_configs.helpers import CONFIG_DIR, make_data, small_run_config

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEPTH = 4


@pytest.fixture(scope='module')
def fsdp_runs(tmp_path_factory):
    """Run A (4 iterations) and run B (resumed from A's iter_2.pth) in one 2-process launch."""
    root = tmp_path_factory.mktemp('fsdp')
    cfg = small_run_config('ade', make_data(root / 'data', img_size=64), root / 'work', size=56,
                           config=CONFIG_DIR / 'flora' / 'upernet_internvit6b_ade20k.py')
    cfg.custom_hooks[0].path = 'factorised'  # no timing of the two adapter paths per layer
    # 2 images per process: UperNet's pooling module normalises 1 x 1 maps over the batch
    cfg.train_cfg.update(max_iters=4, val_interval=100)
    cfg.default_hooks.checkpoint.interval = 2
    for key in ('val_cfg', 'val_dataloader', 'val_evaluator', 'test_cfg', 'test_dataloader',
                'test_evaluator'):
        cfg[key] = None
    cfg.dump(str(root / 'tiny.py'))
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node',
               '2', str(HERE / 'fsdp_train_twice.py'), str(root / 'tiny.py'), '--out', str(root)]
    result = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return root


def load_state(path: Path) -> dict:
    return torch.load(path, map_location='cpu', weights_only=False)['state_dict']


def test_resumed_fsdp_run_ends_with_the_adapters_of_the_uninterrupted_run(fsdp_runs):
    uninterrupted, resumed = (load_state(fsdp_runs / run / 'iter_4.pth') for run in 'AB')
    assert sorted(uninterrupted) == sorted(resumed)
    for name, value in uninterrupted.items():
        assert torch.equal(value, resumed[name]), name
    cores = [k for k in uninterrupted if k.startswith('backbone.') and k.endswith('.core')]
    assert len(cores) == 4 * DEPTH  # qkv, proj, fc1, fc2 of every block
    middle = load_state(fsdp_runs / 'A' / 'iter_2.pth')
    assert any(not torch.equal(middle[k], uninterrupted[k]) for k in cores), 'nothing trained'
    assert any(uninterrupted[k].abs().sum() > 0 for k in cores)


def test_checkpoints_hold_the_trained_tensors_and_the_adapter_file_the_same(fsdp_runs):
    checkpoint = torch.load(fsdp_runs / 'A' / 'iter_4.pth', map_location='cpu',
                            weights_only=False)
    state = checkpoint['state_dict']
    assert 'backbone.blocks.0.attn.qkv.weight' not in state  # the frozen base is not written
    assert any(k.startswith('decode_head.') for k in state)  # trainable heads are
    facts = torch.load(fsdp_runs / 'A.rank0.pt', weights_only=False)
    assert len(checkpoint['optimizer']['state']) == facts['optimized'] == facts['trained']
    adapters = load_adapter_tensors(str(fsdp_runs / 'A' / 'iter_4.adapter.safetensors'))
    assert set(adapters) == set(state)
    for name, value in adapters.items():
        assert torch.equal(value, state[name]), name


@pytest.mark.parametrize('run', ['A', 'B'])
def test_frozen_base_is_sharded_and_only_what_trains_has_gradients(fsdp_runs, run):
    ranks = [torch.load(fsdp_runs / f'{run}.rank{r}.pt', weights_only=False) for r in (0, 1)]
    for facts in ranks:
        assert facts['wrapper'] == 'MMFullyShardedDataParallel'
        assert facts['strategy'] == 'FLoRAFSDPStrategy'
        assert 0 < facts['frozen_local'] < facts['frozen_full']  # a shard of the base
        assert facts['frozen_with_grad'] == 0
        assert facts['optimized_all_trained'] and facts['optimized'] == facts['trained']
        assert facts['trained_dtypes'] == ['torch.float32']
        assert facts['checkpointed_blocks'] == DEPTH
    # The two shards (use_orig_params views of the flat parameters) are the whole base.
    assert ranks[0]['frozen_local'] + ranks[1]['frozen_local'] == ranks[0]['frozen_full']
    for name, value in ranks[0]['state'].items():  # whole and equal on both processes
        if 'running_' not in name and 'num_batches' not in name:
            assert torch.equal(value, ranks[1]['state'][name]), name
