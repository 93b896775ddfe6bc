"""tools/demo.py: the pretrained base is checked and made once, each run keeps the console to
one progress line and its logs in a file, and the table has a column per setting."""
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


def test_a_run_prints_progress_lines_only_and_logs_everything_to_a_file(tmp_path, capfd):
    data = make_data(tmp_path / 'data')
    cfg = small_run_config('ade', data, tmp_path / 'unused')
    config = dump_config(cfg, tmp_path / 'ade_small.py')
    work_dir = str(tmp_path / 'run')
    capfd.readouterr()  # what making the data printed
    metrics = demo.run(config, work_dir, 'ade tiny', train=True, base=None)
    assert {'mIoU', 'mAcc', 'aAcc'} <= set(metrics)
    out, err = capfd.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert lines and all(line.startswith('[demo] ade tiny: ') for line in lines), lines
    assert any('training 2/2' in line for line in lines)
    log = Path(work_dir, 'console.log').read_text()
    assert 'Config:' in log and 'FLoRAConvNeXtV2 injected flora adapters' in log
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))


def test_the_table_has_a_column_per_setting():
    results = {'ade': dict(keys=('mIoU', ), seconds=90.0, untrained={'mIoU': 2.1},
                           random={'mIoU': 50.0}, pretrained={'mIoU': 80.0})}
    table = demo.summary(results, 'checkpoints/x.pth')
    header = table.splitlines()[2]
    assert 'untrained' in header and 'random base' in header and 'pretrained base' in header
    row = table.splitlines()[3].split()
    assert row[:5] == ['ade', 'mIoU', '2.100', '50.000', '80.000']
