"""README's code blocks run as README shows them, on a temporary copy of the repository.

The convention: the line before every fenced code block of README.md (a fence that names its
language, ```bash or ```python; a bare ``` fence is printed output, not code) is an HTML comment
(not rendered) that says how this test treats the block:

``<!-- readme-test: run -->``
    Run it. A bash block runs line by line (``bash -c``, in the copy's root, ``.venv`` there
    being this interpreter's environment); a python block runs as a script there. A line that
    takes minutes runs as its quick equivalent, listed in ``QUICK`` below by its text.
``<!-- readme-test: skip: <reason> -->``
    Not run; the reason is written there, for the reader too.
``<!-- readme-test: see tests/<file>.py[::<test name>] -->``
    Another test checks it; that test must exist.

The test fails for a block without the comment, for an unknown mode, a skip without a reason,
a ``see`` naming no test, a ``QUICK`` entry whose line README no longer shows, and for every
command that exits non-zero, prints a traceback, or floods the console (more than
``MAX_LINES`` lines).
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / 'README.md'

#: README lines (without their trailing comment) -> what runs instead, and why it is equivalent.
QUICK = {
    # The first run pretrains the base (10-25 min); a 2-step base takes its place, then one
    # task trains its columns for 2 iterations each and evaluates them on 4 images.
    '.venv/bin/python tools/demo.py':
        '.venv/bin/python tools/pretrain_backbone.py --steps 2 --batch-size 4 '
        '--eval-images 16 && .venv/bin/python tools/demo.py --tasks ade '
        '--cfg-options train_cfg.max_iters=2 test_dataloader.dataset.indices=4',
    '.venv/bin/python tools/pretrain_backbone.py':
        '.venv/bin/python tools/pretrain_backbone.py --steps 2 --batch-size 4 --eval-images 16',
    '.venv/bin/python tools/pretrain_backbone.py --arch nano --out checkpoints/nano.pth --probe':
        '.venv/bin/python tools/pretrain_backbone.py --arch nano --out checkpoints/nano.pth '
        '--probe --steps 2 --batch-size 4 --eval-images 16 --probe-images 40',
}

#: A command's console is its result: more lines than this is a flood.
MAX_LINES = 60

COMMENT = re.compile(r'^<!-- readme-test: (?P<mode>run|skip|see)(?P<arg>[^>]*?)\s*-->$')
FENCE = re.compile(r'^```(?P<lang>\w*)\s*$')


class Block(NamedTuple):
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    mode: str  # run, skip, see, or '' (no comment)
    arg: str


def readme_blocks(text: str) -> List[Block]:
    """Every fenced block of ``text`` with the readme-test comment before it."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening or not opening['lang']:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith('```'))
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), '')
        comment = COMMENT.match(before.strip())
        blocks.append(Block(i + 1, opening['lang'], '\n'.join(lines[i + 1:end]),
                            comment['mode'] if comment else '',
                            comment['arg'].strip().lstrip(':').strip() if comment else ''))
        i = end + 1
    return blocks


def commands(block: Block) -> List[str]:
    """The command lines of a bash block, trailing comments dropped."""
    found = []
    for line in block.code.splitlines():
        line = line.strip()
        if line and not line.startswith('#'):
            found.append(re.sub(r'\s+#.*$', '', line))
    return found


BLOCKS = readme_blocks(README.read_text())
RUN_BLOCKS = [b for b in BLOCKS if b.mode == 'run']


def block_problems(blocks: List[Block]) -> List[str]:
    """What is wrong with the readme-test comments of ``blocks``, one line each."""
    problems = []
    for block in blocks:
        where = f'README.md:{block.line} ({block.lang})'
        if not block.mode:
            problems.append(
                f'{where}: no <!-- readme-test ... --> comment on the line before the block; '
                'add <!-- readme-test: run --> (the suite runs it; a slow line gets a quick '
                'equivalent in QUICK of tests/test_foundation/test_readme_commands.py), '
                '<!-- readme-test: skip: <why it cannot run here> --> or '
                '<!-- readme-test: see tests/<file>.py::<test that checks it> -->')
        elif block.mode == 'skip' and len(block.arg) < 10:
            problems.append(f'{where}: a skip needs its reason')
        elif block.mode == 'see':
            path, _, name = block.arg.partition('::')
            if not (REPO / path).is_file():
                problems.append(f'{where}: {path} does not exist')
            elif name and not re.search(rf'def {re.escape(name)}\b', (REPO / path).read_text()):
                problems.append(f'{where}: {path} has no test {name}')
        elif block.mode == 'run' and block.lang not in ('bash', 'python'):
            problems.append(f'{where}: cannot run a {block.lang} block')
    return problems


def test_every_readme_block_says_how_it_is_tested():
    problems = block_problems(BLOCKS)
    assert not problems, '\n'.join(problems)


def test_a_block_without_a_comment_or_a_reason_is_a_problem():
    text = '\n'.join([
        'Install:', '', '```bash', 'bash tools/setup_env.sh', '```', '',
        '<!-- readme-test: skip: -->', '```bash', 'make', '```',
        '<!-- readme-test: see tests/no_such_file.py -->', '```python', 'pass', '```',
        '<!-- readme-test: run -->', '```bash', 'true  # a comment', '```',
        'Output:', '```', 'not code', '```'])
    blocks = readme_blocks(text)
    assert [(b.lang, b.mode) for b in blocks] == [('bash', ''), ('bash', 'skip'),
                                                   ('python', 'see'), ('bash', 'run')]
    assert commands(blocks[3]) == ['true']
    problems = block_problems(blocks)
    assert len(problems) == 3
    assert 'README.md:3 (bash): no <!-- readme-test ... --> comment' in problems[0]
    assert 'add <!-- readme-test: run -->' in problems[0]
    assert 'a skip needs its reason' in problems[1] and 'does not exist' in problems[2]


def test_every_quick_equivalent_is_for_a_line_readme_shows():
    shown = {command for block in RUN_BLOCKS if block.lang == 'bash'
             for command in commands(block)}
    assert not set(QUICK) - shown, f'stale QUICK entries: {sorted(set(QUICK) - shown)}'


def test_a_hung_command_is_stopped_with_what_it_started(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], 'TIMEOUT', 1)
    child = tmp_path / 'child.pid'
    with pytest.raises(pytest.fail.Exception, match='still running after 1 s'):
        run_in(tmp_path, ['bash', '-c', f'sleep 60 & echo $! > {child}; wait'], 'a hang')
    pid = int(child.read_text())
    for _ in range(50):  # killed; gone once init has reaped it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f'the hung command\'s child {pid} is still there')


@pytest.fixture(scope='module')
def repo_copy(tmp_path_factory):
    """The tracked files of the repository in a temporary folder, ``.venv`` linked to this
    interpreter's environment."""
    root = tmp_path_factory.mktemp('readme') / 'mmflora'
    files = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split('\0')
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    (root / '.venv').symlink_to(sys.prefix)
    return root


#: Seconds a command may take before it counts as hung (a loaded machine is many times slower).
TIMEOUT = 1200


def run_in(root: Path, args: List[str], what: str) -> None:
    """Run ``args`` in ``root``; a hung command is stopped with everything it started."""
    env = dict(os.environ, PYTHONPATH=str(root))
    process = subprocess.Popen(args, cwd=root, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the shell and the tools it started
        process.communicate()
        pytest.fail(f'{what}: still running after {TIMEOUT} s')
    output = stdout + stderr
    assert process.returncode == 0, f'{what}: exit {process.returncode}\n{output[-4000:]}'
    assert 'Traceback' not in output, f'{what}: a traceback\n{output[-4000:]}'
    lines = output.count('\n')
    assert lines <= MAX_LINES, f'{what}: {lines} lines\n{output[-4000:]}'


@pytest.mark.parametrize('block', RUN_BLOCKS, ids=lambda b: f'line{b.line}')
def test_readme_block_runs(block, repo_copy):
    if block.lang == 'python':
        run_in(repo_copy, [sys.executable, '-c', block.code], f'README.md:{block.line}')
        return
    for command in commands(block):
        run_in(repo_copy, ['bash', '-c', QUICK.get(command, command)],
               f'README.md:{block.line}: {command}')
