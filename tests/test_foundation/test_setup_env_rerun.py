"""A second ``tools/setup_env.sh`` run on an installed environment only checks it.

The script runs against a stand-in environment: its ``bin/python`` is this interpreter behind a
wrapper that writes down every ``python -m pip`` call and refuses it, so nothing is installed
anywhere; mmflora appears installed editable from this checkout by a dist-info made for the test
(the one in this interpreter's environment may come from another checkout).
"""
import hashlib
import json
import os
import stat
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'tools' / 'setup_env.sh'
STAMP = '.mmflora-setup.sha256'


def installed_mmflora() -> metadata.Distribution:
    """mmflora as pip installed it, not the ``mmflora.egg-info`` an editable install leaves in
    the checkout (found first when the checkout is on ``sys.path``, and without pip's
    ``direct_url.json``)."""
    for dist in metadata.distributions(name='mmflora'):
        if dist.read_text('direct_url.json'):
            return dist
    pytest.fail('mmflora is not installed with pip here (no direct_url.json in any dist-info)')


@pytest.fixture
def installed_env(tmp_path):
    """A stand-in for ``.venv`` after a first run: (venv folder, file of the pip calls)."""
    venv, pip_calls = tmp_path / 'venv', tmp_path / 'pip_calls.txt'
    dist = tmp_path / 'dists' / 'mmflora-0.1.0.dist-info'
    dist.mkdir(parents=True)
    (dist / 'METADATA').write_text(installed_mmflora().read_text('METADATA'))
    (dist / 'direct_url.json').write_text(
        json.dumps(dict(url=REPO.as_uri(), dir_info=dict(editable=True))))
    (venv / 'bin').mkdir(parents=True)
    python = venv / 'bin' / 'python'
    python.write_text('#!/bin/sh\n'
                      'if [ "$1" = -m ] && [ "$2" = pip ]; then\n'
                      f'  echo "$*" >> {pip_calls}; exit 1\n'
                      'fi\n'
                      f'PYTHONPATH={dist.parent}:{REPO} exec {sys.executable} "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    (venv / STAMP).write_text(hashlib.sha256((REPO / 'setup.py').read_bytes()).hexdigest() + '\n')
    return venv, pip_calls


def run_setup(venv: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items()
           if key not in ('PIP_FIND_LINKS', 'FORCE_CUDA', 'PYTHONPATH')}
    env.update(MMFLORA_VENV=str(venv), PYTHON=sys.executable)
    return subprocess.run(['bash', str(SCRIPT)], capture_output=True, text=True, env=env,
                          timeout=1200)


def test_second_run_only_checks(installed_env):
    venv, pip_calls = installed_env
    result = run_setup(venv)
    output = result.stdout + result.stderr
    assert not pip_calls.exists(), f'pip ran:\n{pip_calls.read_text()}\n{output}'
    assert result.returncode == 0, output
    assert 'mmflora is installed from this checkout with all its requirements' in output
    assert '[setup] done.' in output


def install_check(root) -> subprocess.CompletedProcess:
    """The script's check that mmflora is installed (its Python between ``<<'EOF'`` and ``EOF``
    after the stamp test), run on this environment for the checkout ``root``."""
    text = SCRIPT.read_text()
    start = text.index('"$PY" -P - "$ROOT" <<\'EOF\'')
    check = text[text.index('\n', start) + 1:text.index('\nEOF\n', start)]
    return subprocess.run([sys.executable, '-P', '-', str(root)], input=check,
                          capture_output=True, text=True, cwd=REPO)


def test_the_install_check_accepts_the_checkout_mmflora_is_installed_from():
    url = json.loads(installed_mmflora().read_text('direct_url.json'))['url']
    result = install_check(url.removeprefix('file://'))
    assert result.returncode == 0, result.stderr


def test_the_install_check_refuses_an_install_from_another_checkout(tmp_path):
    other = tmp_path / 'another_clone'
    other.mkdir()
    result = install_check(other)
    assert result.returncode != 0
    assert 'another checkout' in result.stderr
