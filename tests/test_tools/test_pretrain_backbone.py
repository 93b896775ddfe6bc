"""tools/pretrain_backbone.py (and probe_backbone.py): reproducible weights, a checkpoint
the backbone loads, the sidecar."""
import hashlib
import json
import os.path as osp
import sys
from unittest import mock

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools'))

import pretrain_backbone  # noqa: E402
from mmflora.apis.lr_schedule import warmup_cosine_lr  # noqa: E402

TINY = ['--steps', '3', '--batch-size', '8', '--eval-images', '24', '--threads', '1',
        '--log-interval', '1']


def run_tiny(out, *extra):
    """Run the tool in this process, restoring the torch settings it changes."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        return pretrain_backbone.main([*TINY, '--out', str(out), *extra])
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp('pretrain') / 'atto.pth'
    record = run_tiny(out)
    return out, record


def test_same_seed_gives_bit_identical_weights_and_another_seed_does_not(tiny_run, tmp_path):
    out, record = tiny_run
    again = run_tiny(tmp_path / 'again.pth')
    other = run_tiny(tmp_path / 'other.pth', '--seed', '1')
    first, second, third = load(out), load(tmp_path / 'again.pth'), load(tmp_path / 'other.pth')
    assert first.keys() == second.keys() == third.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert again['sha256'] == record['sha256']  # the file is bit-identical too
    assert not all(torch.equal(first[k], third[k]) for k in first)
    assert other['sha256'] != record['sha256']


def test_checkpoint_is_timm_layout_and_loads_through_the_backbone_pretrained_init(tiny_run):
    from mmflora.models import ConvNeXtV2
    out, _ = tiny_run
    saved = load(out)
    assert 'stem.0.weight' in saved and 'head.fc.weight' in saved
    assert saved['stages.0.blocks.0.mlp.fc1.weight'].ndim == 2  # nn.Linear layout
    backbone = ConvNeXtV2(arch='atto', init_cfg=dict(type='Pretrained', checkpoint=str(out)))
    with mock.patch('mmflora.models.convnextv2.print_log'):
        backbone.init_weights()
    loaded = backbone.state_dict()
    trunk = [k for k in loaded if k.startswith(('stem.', 'stages.'))]
    assert trunk and all(torch.equal(loaded[k], saved[k]) for k in trunk)
    assert torch.equal(loaded['norm3.weight'], saved['head.norm.weight'])
    assert torch.equal(loaded['norm3.bias'], saved['head.norm.bias'])
    assert set(saved) - set(trunk) == {'head.norm.weight', 'head.norm.bias',
                                       'head.fc.weight', 'head.fc.bias'}


def test_sidecar_records_the_run_and_the_checkpoint_sha256(tiny_run):
    out, record = tiny_run
    with open(f'{out}.json') as f:
        sidecar = json.load(f)
    assert sidecar == json.loads(json.dumps(record))
    with open(out, 'rb') as f:
        assert sidecar['sha256'] == hashlib.sha256(f.read()).hexdigest()
    assert sidecar['arch'] == 'atto' and sidecar['format'] == 'timm'
    assert sidecar['task']['name'] == 'source' and len(sidecar['class_names']) == 12
    assert sidecar['task']['image_size'] == 64
    assert (sidecar['steps'], sidecar['batch_size'], sidecar['seed']) == (3, 8, 0)
    assert sidecar['lr'] == pretrain_backbone.parse_args([]).lr
    assert sidecar['held_out']['images'] == 24
    assert 0.0 <= sidecar['held_out']['accuracy'] <= 1.0
    assert sidecar['held_out']['seed'] != sidecar['seed']
    assert sidecar['wall_time_s'] > 0 and sidecar['torch_version'] == torch.__version__
    assert not list(out.parent.glob('.*.tmp'))  # the temporary files are gone


def test_progress_prints_a_line_per_interval_with_loss_speed_and_eta(tmp_path, capsys):
    run_tiny(tmp_path / 'p.pth', '--log-interval', '2')
    lines = [line for line in capsys.readouterr().out.splitlines() if ' step ' in line]
    assert [line.split()[2] for line in lines] == ['2/3', '3/3']  # interval, then the last
    assert all('loss' in line and 'img/s' in line and 'ETA' in line for line in lines)


def test_probe_compares_the_trunk_with_a_random_one_on_every_target_task(tmp_path, capsys):
    record = run_tiny(tmp_path / 'probe.pth', '--probe', '--probe-images', '40')
    probe = record['linear_probe']
    assert set(probe) == {'near', 'far', 'seconds'}  # every task but the source
    for task in ('near', 'far'):
        assert set(probe[task]) == {'pretrained', 'random_init'}
        for accuracies in probe[task].values():
            assert set(accuracies) == {'stages', 'pre_logits'}
            assert all(0.0 <= a <= 1.0 for a in accuracies.values())
    with open(f'{tmp_path}/probe.pth.json') as f:
        assert json.load(f)['linear_probe'] == json.loads(json.dumps(probe))
    # The stand-alone tool probes the saved checkpoint to the same numbers.
    import probe_backbone
    again = probe_backbone.main([str(tmp_path / 'probe.pth'), '--images', '40', '--threads', '1'])
    assert again == {task: probe[task] for task in ('near', 'far')}
    assert '[probe] near: stages pretrained' in capsys.readouterr().out


def test_learning_rate_warms_up_linearly_then_decays_to_zero():
    args = pretrain_backbone.parse_args(['--steps', '100', '--lr', '0.01'])
    rates = [warmup_cosine_lr(s, args.lr, args.warmup_steps, args.steps) for s in range(100)]
    assert args.warmup_steps == 5
    assert rates[:5] == pytest.approx([0.002, 0.004, 0.006, 0.008, 0.01])
    assert all(a >= b for a, b in zip(rates[4:], rates[5:]))
    assert rates[-1] < 1e-5


def test_unknown_arch_and_bad_counts_are_refused_with_the_option_named(tmp_path):
    with pytest.raises(SystemExit, match="--arch 'tinyest' is unknown"):
        run_tiny(tmp_path / 'x.pth', '--arch', 'tinyest')
    with pytest.raises(SystemExit):
        pretrain_backbone.parse_args(['--steps', '0'])
