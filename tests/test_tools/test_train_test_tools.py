"""tools/train.py, test.py and the dist_*.sh launchers end to end: 2-process gloo runs, resume.

Each run is a child process, as a user would start it; the configs are the paper configs
shrunk by tests/test_configs/helpers.py and dumped to a file.
"""
import glob
import json
import os
import os.path as osp
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.test_configs.helpers import (TOOLS, make_data, small_run_config,  # noqa: E402
                                        train_tool)

ENV = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
           PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp('tools_data'))


def run_tool(args, timeout=300, command=(sys.executable, ), cwd=REPO, env=ENV):
    """Run ``command + args`` (a tool under this interpreter); it must succeed. Its output."""
    result = subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


def dump_config(cfg, path: Path) -> str:
    cfg.dump(str(path))
    return str(path)


def load_ckpt(path):
    return torch.load(path, map_location='cpu', weights_only=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_launcher(args, cwd, timeout=300):
    """Run a tools/dist_*.sh script with this interpreter on a free port.

    Started in ``cwd``: mmengine collects distributed CPU results through a ``.dist_test``
    folder it makes in the working directory.
    """
    env = dict(ENV, PYTHON=sys.executable, PORT=str(free_port()))
    return run_tool(args, timeout, command=('bash', ), cwd=cwd, env=env)


def test_dist_train_and_dist_test_run_two_cpu_processes_over_gloo(demo_data, tmp_path):
    # UperNet's SyncBN has no CPU kernel: train.py must also swap it for BN here.
    # 2 images a process: the pyramid pooling's 1x1 BatchNorm needs more than one value.
    cfg = small_run_config('ade', demo_data, tmp_path / 'work', batch_size=2)
    config = dump_config(cfg, tmp_path / 'ade_small.py')
    out = run_launcher([str(TOOLS / 'dist_train.sh'), config, '2'], cwd=tmp_path)
    assert 'Distributed launcher: pytorch' in out
    assert "dist_cfg: {'backend': 'gloo'}" in out
    assert 'GPU number: 2' in out  # mmengine's name for the world size
    ckpt = load_ckpt(osp.join(cfg.work_dir, 'iter_2.pth'))
    assert ckpt['meta']['iter'] == 2
    # RandomStateHook gathered both ranks' generator states (rank 0 alone writes the file;
    # the ranks share one seed here, so the states may be equal).
    states = ckpt['meta']['random_state']
    assert len(states) == 2 and all(set(state) >= {'torch', 'numpy', 'python'} for state in states)
    logs = glob.glob(osp.join(cfg.work_dir, '*', 'vis_data', 'scalars.json'))
    assert logs, 'no scalar log written'
    with open(logs[0]) as f:
        records = [json.loads(line) for line in f]
    assert any('mIoU' in r for r in records), 'validation did not report mIoU'

    # Testing in 2 processes too. --show-dir paints every image of rank 0's share (the
    # SegVisualizationHook otherwise draws one in 50); the visualizer draws on rank 0 only.
    show_dir = tmp_path / 'show'
    out = run_launcher([str(TOOLS / 'dist_test.sh'), config, osp.join(cfg.work_dir, 'iter_2.pth'),
                        '2', '--work-dir', str(tmp_path / 'test'), '--show-dir', str(show_dir)],
                       cwd=tmp_path)
    # The console: the metrics once (rank 0), the warning; the run's output in console.log.
    assert out.count('mIoU') == 1
    assert 'only rank 0 paints' in out
    assert 'GPU number: 2' in (tmp_path / 'test' / 'console.log').read_text()
    assert (tmp_path / 'test' / 'console_rank1.log').is_file()
    assert len(list(show_dir.rglob('*.png'))) == 1

    # In one process every validation image is painted.
    show_dir = tmp_path / 'show_one'
    run_tool([str(TOOLS / 'test.py'), config, osp.join(cfg.work_dir, 'iter_2.pth'),
              '--work-dir', str(tmp_path / 'test_one'), '--show-dir', str(show_dir)])
    assert len(list(show_dir.rglob('*.png'))) == 2


def test_tools_close_the_process_group_before_exit(tmp_path):
    # A gloo group left open is torn down during interpreter exit, where a rank that
    # finished first could abort and make the launcher kill the others.
    torch.distributed.init_process_group(
        'gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    train_tool.close_distributed()
    assert not torch.distributed.is_initialized()
    train_tool.close_distributed()  # without a group it does nothing


def test_interrupted_training_resumes_with_optimizer_state_and_test_py_evaluates(
        demo_data, tmp_path):
    cfg = small_run_config('coco', demo_data, tmp_path / 'work')
    cfg.train_cfg.max_epochs = 2
    config = dump_config(cfg, tmp_path / 'coco_small.py')
    train = [str(TOOLS / 'train.py'), config]

    # "Interrupted" after epoch 1 of 2: same schedule, the loop just stops early.
    run_tool(train + ['--cfg-options', 'train_cfg.max_epochs=1'])
    first = load_ckpt(osp.join(cfg.work_dir, 'epoch_1.pth'))
    assert (first['meta']['epoch'], first['meta']['iter']) == (1, 2)

    out = run_tool(train + ['--resume'])
    assert 'resumed epoch: 1, iter: 2' in out
    second = load_ckpt(osp.join(cfg.work_dir, 'epoch_2.pth'))
    assert (second['meta']['epoch'], second['meta']['iter']) == (2, 4)
    # AdamW counted all four steps: its state came back from epoch_1.pth, not from scratch.
    steps = {float(s['step']) for s in second['optimizer']['state'].values()}
    assert steps == {4.0}
    cores = [k for k in second['state_dict'] if k.endswith('.core')]
    assert cores and any(not torch.equal(first['state_dict'][k], second['state_dict'][k])
                         for k in cores)

    results = tmp_path / 'results.pkl'
    show_dir = tmp_path / 'show'
    run_tool([str(TOOLS / 'test.py'), config, osp.join(cfg.work_dir, 'epoch_2.pth'),
              '--work-dir', str(tmp_path / 'test'), '--out', str(results),
              '--show-dir', str(show_dir)])
    assert results.is_file()
    metrics = glob.glob(str(tmp_path / 'test' / '*' / '*.json'))
    with open(metrics[0]) as f:
        assert 'coco/bbox_mAP' in json.load(f)
    assert list(show_dir.rglob('*.jpg')) or list(show_dir.rglob('*.png'))


def test_train_py_refuses_auto_scale_lr_without_a_base_batch_size(demo_data, tmp_path):
    cfg = small_run_config('coco', demo_data, tmp_path / 'work')
    cfg.pop('auto_scale_lr')
    config = dump_config(cfg, tmp_path / 'coco_small.py')
    result = subprocess.run([sys.executable, str(TOOLS / 'train.py'), config, '--auto-scale-lr'],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert 'base_batch_size' in result.stderr


@pytest.mark.parametrize('injection', ['backbone', 'hook'])
def test_test_py_evaluates_an_adapter_file_on_the_pretrained_base(
        demo_data, tmp_path, injection):
    # 'backbone': FLoRAConvNeXtV2 injects when built; 'hook': a plain ConvNeXtV2 and FLoRAHook,
    # which injects before the Pretrained base loads.
    from mmflora.models import ConvNeXtV2
    torch.manual_seed(0)
    base_file = tmp_path / 'atto_base.pth'
    torch.save(ConvNeXtV2(arch='atto').state_dict(), base_file)
    cfg = small_run_config('ade', demo_data, tmp_path / 'work')
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(base_file))
    cfg.custom_hooks = [dict(type='AdapterCheckpointHook')]
    if injection == 'hook':
        adapter = cfg.model.backbone.pop('adapter')
        cfg.model.backbone.type = 'ConvNeXtV2'
        cfg.custom_hooks.insert(0, dict(type='FLoRAHook', method='flora', targets=['backbone.'],
                                        r=adapter.r, trainable=['decode_head', 'auxiliary_head']))
    config = dump_config(cfg, tmp_path / 'ade_small.py')
    run_tool([str(TOOLS / 'train.py'), config])

    def metrics(checkpoint, name):
        run_tool([str(TOOLS / 'test.py'), config, osp.join(cfg.work_dir, checkpoint),
                  '--work-dir', str(tmp_path / name)])
        (path, ) = glob.glob(str(tmp_path / name / '*' / '*.json'))
        with open(path) as f:
            return json.load(f), (tmp_path / name / 'console.log').read_text()

    full, _ = metrics('iter_2.pth', 'full')
    adapters, out = metrics('iter_2.adapter.safetensors', 'adapters')
    applied = {'backbone': 'applied the adapter file', 'hook': 'FLoRAHook loaded adapters from'}
    assert applied[injection] in out
    scores = ('aAcc', 'mIoU', 'mAcc')
    assert {k: adapters[k] for k in scores} == {k: full[k] for k in scores}


def test_train_py_refuses_amp_on_cpu_with_the_reason(demo_data, tmp_path):
    cfg = small_run_config('coco', demo_data, tmp_path / 'work')
    config = dump_config(cfg, tmp_path / 'coco_small.py')
    result = subprocess.run([sys.executable, str(TOOLS / 'train.py'), config, '--amp'],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert '--amp needs an accelerator' in result.stderr
