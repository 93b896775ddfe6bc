"""Run a script as the GPU machine would: no OpenMMLab packages and no installed mmflora.

Usage: ``python run_without_openmmlab.py SCRIPT [ARGS...]``. Importing mmengine, mmcv, mmdet,
mmseg or mmrotate raises ImportError (and is recorded); the editable install of mmflora and the
repository root are taken off the import path, so the script must put the checkout on
``sys.path`` itself. The last stderr lines name the blocked imports and where mmflora came from.
"""
import os.path as osp
import runpy
import sys

BLOCKED = ('mmengine', 'mmcv', 'mmdet', 'mmseg', 'mmrotate')
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
attempts = []


class BlockOpenMMLab:
    """A meta path finder that refuses the OpenMMLab packages."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            attempts.append(name)
            raise ImportError(f'{name} is blocked: the GPU machine has no OpenMMLab packages')
        return None


def main() -> int:
    script, args = sys.argv[1], sys.argv[2:]
    sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in getattr(
        f, '__module__', '')]
    sys.meta_path.insert(0, BlockOpenMMLab)
    sys.path[:] = [p for p in sys.path if osp.abspath(p or '.') != ROOT]
    for name in [m for m in sys.modules if m.split('.')[0] == 'mmflora']:
        del sys.modules[name]
    sys.argv = [script] + args
    code = 0
    try:
        runpy.run_path(script, run_name='__main__')
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        loaded = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)
        mmflora = sys.modules.get('mmflora')
        print(f'BLOCKED-IMPORTS: {sorted(set(attempts))} LOADED: {loaded}', file=sys.stderr)
        print(f'MMFLORA-FROM: {getattr(mmflora, "__file__", None)}', file=sys.stderr)
    return code


if __name__ == '__main__':
    sys.exit(main())
