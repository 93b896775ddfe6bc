"""A benchmark script's --quick run for the tests, watching the committed results it must not
touch."""
import hashlib
import json
import os.path as osp
import pathlib
import subprocess
import sys
from typing import List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def committed(*names: str) -> List[str]:
    """Paths of the committed results ``names`` under ``benchmarks/``."""
    return [osp.join(ROOT, 'benchmarks', name) for name in names]


def fingerprint(path: str) -> Optional[str]:
    """SHA-256 of the file at ``path``; None when there is none."""
    if not osp.exists(path):
        return None
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def quick_run(script: str, out: pathlib.Path, watched: Sequence[str], timeout: int) -> dict:
    """Run ``script --quick --out out`` from the repository root; it must succeed.

    Args:
        script (str): The benchmark script.
        out (pathlib.Path): The markdown it writes; the results data goes beside it (.json).
        watched (Sequence[str]): The committed results, fingerprinted before and after the run.
        timeout (int): Seconds the run may take.

    Returns:
        dict: ``out``, the results ``data``, the fingerprints ``before`` and ``after`` and the
        console ``output`` (stdout, then stderr).
    """
    before = [fingerprint(p) for p in watched]
    proc = subprocess.run([sys.executable, script, '--quick', '--out', str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    after = [fingerprint(p) for p in watched]
    data = json.loads(out.with_suffix('.json').read_text())
    return dict(out=out, data=data, before=before, after=after,
                output=proc.stdout + proc.stderr)


#: What kineto (the profiler behind the CPU memory measurement) prints unless silenced: two
#: lines at every profile start and stop, and a failed CUDA device count on a machine without
#: a GPU.
PROFILER_NOISE = ('USDT:', 'profiler_start', 'gpuGetDeviceCount', 'STAGE:')
