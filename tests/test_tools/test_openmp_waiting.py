"""Every tool that trains or evaluates on CPU sets passive OpenMP waiting before torch loads
OpenMP (libgomp reads OMP_WAIT_POLICY once, at load), and keeps a policy the user chose."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / 'tools'

# Runs a tool with --help under an import watcher. The first `import torch` ends the process,
# printing the policy in the environment at that moment (nothing of torch is loaded, so this
# takes a fraction of a second); a tool that never imports torch on --help prints the policy
# its subprocesses and later imports would see.
WATCHER = r'''
import os, runpy, sys
tool = sys.argv[1]

class TorchImportWatcher:
    def find_spec(self, name, path=None, target=None):
        if name == 'torch':
            print('torch imported with', os.environ.get('OMP_WAIT_POLICY'), flush=True)
            os._exit(0)
        return None

sys.meta_path.insert(0, TorchImportWatcher())
sys.path.insert(0, os.path.dirname(tool))
sys.argv = [tool, '--help']
try:
    runpy.run_path(tool, run_name='__main__')
except SystemExit:
    pass
print('exited with', os.environ.get('OMP_WAIT_POLICY'), flush=True)
'''

#: The tools that train or evaluate on CPU.
CPU_TOOLS = ('train.py', 'test.py', 'demo.py', 'merge_adapter.py', 'pretrain_backbone.py',
             'probe_backbone.py')


def policy_seen(tool: str, user_policy=None) -> str:
    env = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'}
    env['PYTHONPATH'] = str(REPO)
    if user_policy is not None:
        env['OMP_WAIT_POLICY'] = user_policy
    result = subprocess.run([sys.executable, '-c', WATCHER, str(TOOLS / tool)], env=env,
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    lines = [line for line in result.stdout.splitlines()
             if line.startswith(('torch imported with', 'exited with'))]
    assert lines, result.stdout[-2000:] + result.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize('tool', CPU_TOOLS)
def test_tool_sets_passive_waiting_before_torch_loads(tool):
    seen = policy_seen(tool)
    assert seen.endswith(' PASSIVE'), f'{tool}: {seen}'
    if tool != 'demo.py':  # the demo imports torch only when a run starts
        assert seen.startswith('torch imported with'), f'{tool}: {seen}'


@pytest.mark.parametrize('tool', ('train.py', 'demo.py'))
def test_a_policy_the_user_chose_is_kept(tool):
    assert policy_seen(tool, 'ACTIVE').endswith(' ACTIVE')


def test_wait_passively_says_when_torch_was_loaded_first(monkeypatch):
    import torch  # noqa: F401  (loaded in this process already)

    from mmflora.openmp import wait_passively
    monkeypatch.delenv('OMP_WAIT_POLICY', raising=False)
    assert wait_passively() is False
    assert os.environ['OMP_WAIT_POLICY'] == 'PASSIVE'
