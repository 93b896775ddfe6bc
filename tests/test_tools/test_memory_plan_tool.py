"""tools/memory_plan.py on a tiny InternViT config: the table, the JSON, the refusals."""
import json
import os.path as osp
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools'))
from tests.test_apis.test_memory_plan import TINY_CONFIG  # noqa: E402


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / 'tiny.py'
    path.write_text(TINY_CONFIG)
    return str(path)


def test_prints_the_table_and_writes_the_same_plan_as_json(tiny_config, tmp_path, capsys):
    import memory_plan
    out = tmp_path / 'plan.json'
    plan = memory_plan.main([tiny_config, '--gpus', '2', '--dtype', 'bf16', '--json', str(out),
                             '--batch', '1'])
    text = capsys.readouterr().out
    assert '2 GPUs x 80 GiB, bf16, 1 images of 56 px per GPU' in text
    assert text.count('| flora r=8 |') == 4 and text.count('| full |') == 4
    assert 'Fits in 80 GiB per GPU' in text.splitlines()[-1]
    assert json.loads(out.read_text()) == json.loads(json.dumps(plan))
    assert plan['settings']['batch_per_gpu'] == 1


def test_refuses_a_backbone_without_an_activation_estimate():
    import memory_plan
    demo = osp.join(ROOT, 'configs', 'demo', 'upernet_convnextv2_atto_demo.py')
    with pytest.raises(SystemExit, match='InternViT'):
        memory_plan.main([demo])


def test_refuses_an_unknown_dtype(tiny_config):
    import memory_plan
    with pytest.raises(SystemExit):
        memory_plan.main([tiny_config, '--dtype', 'int8'])


def test_readme_shows_the_table_the_tool_prints_for_the_flora_config():
    from mmflora.apis.memory_plan import format_plan, memory_plan
    config = 'configs/flora/upernet_internvit6b_ade20k.py'
    printed = format_plan(memory_plan(osp.join(ROOT, config), gpus=8, dtype='bf16'))
    rows = [line for line in printed.splitlines() if line.startswith(('|', 'Fits in'))]
    with open(osp.join(ROOT, 'README.md')) as f:
        readme = f.read()
    assert len(rows) == 2 + 12 + 1
    assert '\n'.join(rows[:-1]) in readme
    assert rows[-1] in readme
