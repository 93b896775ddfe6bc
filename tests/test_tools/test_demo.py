"""tools/demo.py: the pretrained base is checked and made once, each run keeps the console to
one progress line and its logs in a file, and the table has a column per setting."""
import io
import hashlib
import json
import os.path as osp
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
for folder in (str(REPO), str(REPO / 'tools')):
    if folder not in sys.path:
        sys.path.insert(0, folder)

import demo  # noqa: E402
from tests.test_configs.helpers import make_data, small_run_config  # noqa: E402
from tests.test_tools.test_train_test_tools import dump_config  # noqa: E402


def test_an_explicit_base_must_exist(tmp_path):
    with pytest.raises(SystemExit, match='no such file'):
        demo.ensure_base(str(tmp_path / 'missing.pth'))


def test_a_missing_base_is_pretrained_in_a_process_of_its_own(tmp_path, monkeypatch):
    # pretraining switches on deterministic algorithms process-wide: the demo's own trainings
    # must not inherit that
    commands = []
    monkeypatch.chdir(tmp_path)  # no checkpoints/ here
    monkeypatch.setattr(demo.subprocess, 'run',
                        lambda command, **kwargs: commands.append((command, kwargs)))
    assert demo.ensure_base(None) == demo.DEFAULT_BASE
    (command, kwargs), = commands
    assert command[0] == sys.executable and command[1].endswith('pretrain_backbone.py')
    assert command[2:] == ['--out', demo.DEFAULT_BASE]
    assert kwargs == dict(check=True)  # in this directory, like the path it checks


def test_a_torn_base_is_detected_by_its_sidecar(tmp_path):
    path = tmp_path / 'base.pth'
    path.write_bytes(b'weights')
    sidecar = {'sha256': hashlib.sha256(b'weights').hexdigest()}
    (tmp_path / 'base.pth.json').write_text(json.dumps(sidecar))
    assert demo.base_is_intact(str(path))
    path.write_bytes(b'weig')  # cut short
    assert not demo.base_is_intact(str(path))


def test_a_run_prints_one_line_and_logs_everything_to_a_file(tmp_path, capfd):
    data = make_data(tmp_path / 'data')
    cfg = small_run_config('ade', data, tmp_path / 'unused')
    config = dump_config(cfg, tmp_path / 'ade_small.py')
    work_dir = str(tmp_path / 'run')
    capfd.readouterr()  # what making the data printed
    result = demo.run(config, work_dir, 'ade tiny', train=True, base=None,
                      cfg_options={'train_cfg.max_iters': 3})
    assert {'mIoU', 'mAcc', 'aAcc'} <= set(result['metrics'])
    assert result['adapter']['method'] == 'flora' and result['adapter']['params'] > 0
    out, err = capfd.readouterr()
    # not a terminal: the finished line only
    assert out.splitlines() == [line for line in out.splitlines() if line.strip()]
    (line, ) = out.splitlines()
    assert line.startswith('[demo] ade tiny: 3 iterations, evaluated ('), line
    assert err == ''
    log = Path(work_dir, 'console.log').read_text()
    assert 'Config:' in log and 'FLoRAConvNeXtV2 injected flora adapters' in log
    assert osp.isfile(osp.join(work_dir, 'iter_3.pth'))


def test_progress_rewrites_one_line_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    progress = demo.Progress(stream, 'ade LoRA')
    progress.show('training 1/4', 0.25)
    progress.show('training 4/4', 1.0)
    progress.show('evaluated', 1.0, final=True)
    assert stream.getvalue().count('\n') == 1 and stream.getvalue().count('\r') == 3
    plain = io.StringIO()
    progress = demo.Progress(plain, 'ade LoRA')
    progress.show('training 1/4', 0.25)
    progress.show('evaluated', 1.0, final=True)
    assert plain.getvalue().startswith('[demo] ade LoRA: evaluated (')
    assert plain.getvalue().count('\n') == 1


def test_the_table_has_a_column_per_setting_and_says_the_adapters_budgets():
    def column(miou, method='none', r=0, params=0):
        return dict(metrics={'mIoU': miou}, adapter=dict(method=method, r=r, params=params))

    results = {'ade': dict(keys=('mIoU', ), seconds=90.0, untrained=column(2.1),
                           frozen=column(50.0), lora=column(60.0, 'lora', 2, 226384),
                           flora=column(61.0, 'flora', 10, 238490))}
    table = demo.summary(results, 'checkpoints/x.pth')
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith('task'))
    assert header.split()[2:] == ['untrained', 'heads', 'only', 'LoRA', 'FLoRA']
    row = next(line for line in lines if line.startswith('ade')).split()
    assert row[:6] == ['ade', 'mIoU', '2.100', '50.000', '60.000', '61.000']
    text = ' '.join(lines)
    assert 'LoRA r=2 adds 226,384 and FLoRA r=10 adds 238,490 trunk parameters' in text


def test_the_closing_line_gives_the_wall_time_with_threads_and_load():
    line = demo.wall_time_line(317.4, threads=2, cores=2, load_average=6.04)
    assert line == '[demo] wall time 5:17 (torch threads 2, cores 2, load average 6.0)'
    line = demo.wall_time_line(61, threads=1, cores=4, load_average=None)
    assert line == '[demo] wall time 1:01 (torch threads 1, cores 4)'
    conditions = demo.run_conditions()
    assert conditions['threads'] >= 1 and set(conditions) == {'threads', 'cores', 'load_average'}
