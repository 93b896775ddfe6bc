"""A CUDA toolkit for compiling mmcv's CUDA ops, assembled from PyPI packages alone.

    python tools/cuda_toolchain.py assemble --prefix ~/.cache/mmflora/cuda-13.0   # prints CUDA_HOME
    python tools/cuda_toolchain.py check-arch     # checks TORCH_CUDA_ARCH_LIST before a build

``tools/setup_env.sh`` runs both with the virtual environment's interpreter when
``MMFLORA_CUDA_TOOLKIT=pip``, so a machine without a system CUDA still compiles mmcv's CUDA ops.

The toolkit is made of two trees. The compiler tree comes from the ``nvidia-cuda-nvcc``,
``nvidia-nvvm``, ``nvidia-cuda-crt`` and ``nvidia-cuda-cccl`` wheels, installed with
``pip install --target`` into ``<prefix>/packages`` (about 100 MB to download, 264 MB on disk for
CUDA 13.0). The runtime tree is the one torch's own CUDA wheels already put under
``site-packages/nvidia/cu13``: the headers of cudart, cuBLAS, cuSPARSE, cuSOLVER, ... that
torch's headers include, and the libraries it runs with. ``<prefix>/home`` joins them through
symbolic links into the layout a CUDA_HOME has (``bin``, ``nvvm``, ``include``, ``lib64``).

nvcc reads ``bin/nvcc.profile`` from the folder it was started from (``_HERE_`` in
``nvcc --dryrun`` is the folder of the link, not of its target) and takes ``nvvm/``, ``include/``
and ``lib64/`` next to that folder, the same ones torch's ``cpp_extension`` takes from
CUDA_HOME; that is why the home holds its own ``bin`` of links rather than pointing at the
package's ``bin``. The home is rebuilt on every run (milliseconds), so it follows the virtual
environment it was made for; only the downloaded packages are kept.
"""
import argparse
import os
import os.path as osp
import shutil
import subprocess
import sys
import sysconfig
import tempfile

# The compiler wheels for each CUDA version torch is built for: the versions that the
# cuda-toolkit==13.0.3 metapackage torch 2.14.1+cu130 depends on names for its nvcc and cccl
# extras (its cudart is the runtime 13.0.96 torch installs). Another CUDA version needs its own,
# checked, set.
TOOLKIT_PACKAGES = {
    '13.0': ('nvidia-cuda-nvcc==13.0.88', 'nvidia-nvvm==13.0.88', 'nvidia-cuda-crt==13.0.88',
             'nvidia-cuda-cccl==13.0.85'),
}

# The oldest GPU architecture each CUDA major version still compiles for (CUDA 13 dropped
# Maxwell, Pascal and Volta; `nvcc --list-gpu-arch` of 13.0 starts at compute_75).
OLDEST_ARCH = {12: (5, 0), 13: (7, 5)}

STAMP = 'packages.txt'


def cuda_tree_name(cuda_version: str) -> str:
    """The folder under ``site-packages/nvidia`` that NVIDIA's wheels for this CUDA use."""
    return f'cu{cuda_version.split(".")[0]}'


def install_compiler_packages(prefix: str, cuda_version: str) -> str:
    """Install the compiler wheels for ``cuda_version`` under ``prefix`` once.

    Args:
        prefix (str): The cache folder; the wheels go to ``<prefix>/packages``.
        cuda_version (str): The CUDA version torch is built for, e.g. ``'13.0'``.

    Returns:
        str: The compiler tree, ``<prefix>/packages/nvidia/cu13``.
    """
    if cuda_version not in TOOLKIT_PACKAGES:
        raise SystemExit(
            f'[cuda_toolchain] torch is built for CUDA {cuda_version}, but the PyPI toolkit is '
            f'only set up for CUDA {", ".join(TOOLKIT_PACKAGES)}; install a CUDA '
            f'{cuda_version} nvcc '
            'and use MMFLORA_CUDA_TOOLKIT=system')
    packages = TOOLKIT_PACKAGES[cuda_version]
    target = osp.join(prefix, 'packages')
    stamp = osp.join(target, STAMP)
    tree = osp.join(target, 'nvidia', cuda_tree_name(cuda_version))
    if osp.isfile(stamp):
        with open(stamp) as f:
            if f.read().split() == list(packages):
                return tree
    os.makedirs(prefix, exist_ok=True)
    # Into a fresh folder first, so that an interrupted download never looks installed.
    staging = tempfile.mkdtemp(prefix='packages.', dir=prefix)
    print(f'[cuda_toolchain] pip install --target {target}: {" ".join(packages)}', file=sys.stderr)
    subprocess.run([sys.executable, '-m', 'pip', '--disable-pip-version-check', 'install', '-q',
                    '--no-deps', '--target', staging, *packages], check=True, stdout=sys.stderr)
    with open(osp.join(staging, STAMP), 'w') as f:
        f.write('\n'.join(packages) + '\n')
    shutil.rmtree(target, ignore_errors=True)
    os.rename(staging, target)
    return tree


def link_entries(source_dir: str, dest_dir: str, linked_from: dict) -> None:
    """Link every entry of ``source_dir`` into ``dest_dir``; two trees may not share a name."""
    for name in sorted(os.listdir(source_dir)):
        dest = osp.join(dest_dir, name)
        if name in linked_from:
            raise SystemExit(f'[cuda_toolchain] both {linked_from[name]} and {source_dir} hold '
                             f'{name!r}; cannot merge them into {dest_dir}')
        os.symlink(osp.join(source_dir, name), dest)
        linked_from[name] = source_dir


def assemble_cuda_home(compiler_tree: str, runtime_tree: str, home: str) -> str:
    """Build ``home`` as a CUDA_HOME from the compiler tree and torch's runtime tree.

    Args:
        compiler_tree (str): The tree of the compiler wheels (``bin/nvcc``, ``nvvm/``,
            ``include/crt``, ``include/cccl``, ``lib/``).
        runtime_tree (str): torch's ``site-packages/nvidia/cu13`` (``include/cuda_runtime.h``,
            ``lib/libcudart.so.13``, ...).
        home (str): The folder to (re)create.

    Returns:
        str: ``home``.
    """
    required = {compiler_tree: ('bin/nvcc', 'bin/ptxas', 'nvvm/bin/cicc', 'include/crt'),
                runtime_tree: ('include/cuda_runtime.h', 'lib')}
    for tree, parts in required.items():
        missing = [part for part in parts if not osp.exists(osp.join(tree, part))]
        if missing:
            raise SystemExit(f'[cuda_toolchain] {tree} lacks {", ".join(missing)}: not the CUDA '
                             'tree expected (compiler wheels, or the runtime of a CUDA build of '
                             'torch)')
    shutil.rmtree(home, ignore_errors=True)
    for sub in ('bin', 'include', 'lib64'):
        os.makedirs(osp.join(home, sub))
    link_entries(osp.join(compiler_tree, 'bin'), osp.join(home, 'bin'), {})
    os.symlink(osp.join(compiler_tree, 'nvvm'), osp.join(home, 'nvvm'))
    included = {}
    link_entries(osp.join(runtime_tree, 'include'), osp.join(home, 'include'), included)
    link_entries(osp.join(compiler_tree, 'include'), osp.join(home, 'include'), included)
    libraries = {}
    link_entries(osp.join(runtime_tree, 'lib'), osp.join(home, 'lib64'), libraries)
    if osp.isdir(osp.join(compiler_tree, 'lib')):
        link_entries(osp.join(compiler_tree, 'lib'), osp.join(home, 'lib64'), libraries)
    # Extensions link with -lcudart, which needs the unversioned name the wheel does not ship;
    # the extension then records the soname (libcudart.so.13) that torch loads at run time.
    cudart = sorted(name for name in libraries if name.startswith('libcudart.so.'))
    if not cudart:
        raise SystemExit(f'[cuda_toolchain] {runtime_tree}/lib holds no libcudart.so.*')
    if 'libcudart.so' not in libraries:
        os.symlink(cudart[0], osp.join(home, 'lib64', 'libcudart.so'))
    return home


def parse_arch_list(arch_list: str) -> list:
    """The entries of a TORCH_CUDA_ARCH_LIST (``;`` or space separated), as torch splits it."""
    return [entry for entry in arch_list.replace(' ', ';').split(';') if entry]


def check_arch_list(arch_list: str, cuda_major: int, gpu_visible: bool) -> None:
    """Refuse a TORCH_CUDA_ARCH_LIST the build would fail on, before anything is compiled.

    Args:
        arch_list (str): The value of TORCH_CUDA_ARCH_LIST ('' when unset).
        cuda_major (int): The CUDA major version of the toolkit (torch's).
        gpu_visible (bool): Whether torch sees a GPU; without one torch cannot pick the
            architecture itself (its ``_get_cuda_arch_flags`` fails on an empty list).

    Raises:
        ValueError: The list is empty without a GPU, or names an architecture this CUDA no
            longer compiles for.
    """
    entries = parse_arch_list(arch_list)
    if not entries:
        if gpu_visible:
            return
        raise ValueError('TORCH_CUDA_ARCH_LIST is not set and torch sees no GPU to take it from; '
                         'set it to the GPUs the build is for, e.g. TORCH_CUDA_ARCH_LIST="9.0" '
                         '(H100/H200) or "8.0;9.0" (A100 and H100)')
    oldest = OLDEST_ARCH.get(cuda_major)
    for entry in entries:
        number = entry.removesuffix('+PTX').removesuffix('a')
        major, dot, minor = number.partition('.')
        if not (major.isdigit() and dot and minor.isdigit()):
            continue  # named architectures ("Hopper", "native") are torch's to check
        if oldest and (int(major), int(minor)) < oldest:
            raise ValueError(f'TORCH_CUDA_ARCH_LIST entry {entry!r}: CUDA {cuda_major} compiles '
                             f'for {oldest[0]}.{oldest[1]} and newer only; drop it or use an '
                             f'older CUDA')


def torch_cuda() -> tuple:
    """The CUDA version this interpreter's torch is built for, and whether it sees a GPU."""
    import torch
    if torch.version.cuda is None:
        raise SystemExit(f'[cuda_toolchain] torch {torch.__version__} is not a CUDA build; '
                         'CUDA ops need a CUDA build of torch')
    return torch.version.cuda, torch.cuda.is_available()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest='command', required=True)
    assemble = commands.add_parser('assemble', help='install the compiler wheels (once) and '
                                   'print the CUDA_HOME assembled from them')
    assemble.add_argument('--prefix', required=True, help='cache folder for the toolkit')
    assemble.add_argument('--runtime', help="the CUDA runtime tree (default: torch's "
                          'site-packages/nvidia/cuXX in this interpreter)')
    commands.add_parser('check-arch', help='check TORCH_CUDA_ARCH_LIST against the CUDA of '
                        'torch and the GPUs it sees')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    cuda_version, gpu_visible = torch_cuda()
    if args.command == 'check-arch':
        try:
            check_arch_list(os.environ.get('TORCH_CUDA_ARCH_LIST', ''),
                            int(cuda_version.split('.')[0]), gpu_visible)
        except ValueError as error:
            raise SystemExit(f'[cuda_toolchain] {error}')
        return
    runtime = args.runtime or osp.join(sysconfig.get_paths()['purelib'], 'nvidia',
                                       cuda_tree_name(cuda_version))
    compiler = install_compiler_packages(osp.abspath(args.prefix), cuda_version)
    print(assemble_cuda_home(compiler, runtime, osp.join(osp.abspath(args.prefix), 'home')))


if __name__ == '__main__':
    main()
