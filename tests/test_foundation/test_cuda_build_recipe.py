"""The parts of the CUDA mmcv build recipe that run without a compiler, a GPU or the network.

``tools/patch_mmcv_source.py`` is applied to small trees holding the lines it must edit,
``tools/cuda_toolchain.py`` assembles a CUDA_HOME from fake package trees of empty files, and
``tools/setup_env.sh`` is run only as far as its argument checks.
"""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools'))
import cuda_toolchain  # noqa: E402
import patch_mmcv_source  # noqa: E402

# The lines of mmcv 2.1.0's setup.py that carry the C++ standard (the C++ flags, the MPS flags and
# the nvcc flags), with a line that must stay as it is.
SETUP_PY_LINES = """\
                extra_compile_args['cxx'] = ['-std=c++17']
            extra_compile_args['cxx'] = ['-Wall', '-std=c++17']
                extra_compile_args['nvcc'] += ['-std=c++17']
                extra_compile_args['cxx'] = ['/std:c++17']
"""


def write(path, text: str = '') -> str:
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    return path


def read(path) -> str:
    with open(path) as f:
        return f.read()


def edited_tree(tmp_path) -> str:
    """A tree holding, for every edit, its file with the edit's text as often as it expects."""
    root = str(tmp_path / 'mmcv-2.1.0')
    write(osp.join(root, 'setup.py'), SETUP_PY_LINES)
    for edit in patch_mmcv_source.MMCV_2_1_0_EDITS:
        path = osp.join(root, edit.path)
        if edit.path != 'setup.py':
            write(path, read(path) if osp.exists(path) else '// kept\n')
            with open(path, 'a') as f:
                f.write((edit.old + '\n') * edit.count)
    return root


def test_cxx20_edit_changes_the_standard_of_every_compile_and_nothing_else(tmp_path):
    root = edited_tree(tmp_path)
    patch_mmcv_source.apply_edits(root)
    setup_py = read(osp.join(root, 'setup.py'))
    assert "'-std=c++17'" not in setup_py
    assert setup_py.count("'-std=c++20'") == 3
    assert "extra_compile_args['nvcc'] += ['-std=c++20']" in setup_py
    assert "['/std:c++17']" in setup_py  # the Windows flag is not this build's


def test_every_edit_replaces_its_text_in_its_file(tmp_path):
    root = edited_tree(tmp_path)
    applied = patch_mmcv_source.apply_edits(root)
    assert applied == [edit.name for edit in patch_mmcv_source.MMCV_2_1_0_EDITS]
    for edit in patch_mmcv_source.MMCV_2_1_0_EDITS:
        text = read(osp.join(root, edit.path))
        assert edit.old not in text, edit.name
        assert text.count(edit.new) >= edit.count, edit.name


def test_every_edit_says_why_it_is_needed():
    for edit in patch_mmcv_source.MMCV_2_1_0_EDITS:
        assert len(edit.reason.split()) >= 8, edit.name
        assert edit.old != edit.new and edit.count >= 1, edit.name


def test_an_edit_that_no_longer_applies_stops_before_any_file_is_written(tmp_path):
    root = edited_tree(tmp_path)
    setup_py = osp.join(root, 'setup.py')
    write(setup_py, SETUP_PY_LINES.replace("['-Wall', '-std=c++17']", "['-Wall']"))
    others = {edit.path: read(osp.join(root, edit.path))
              for edit in patch_mmcv_source.MMCV_2_1_0_EDITS}
    with pytest.raises(RuntimeError, match=r"edit 'c\+\+20'.*setup.py.* 2 times, expected 3"):
        patch_mmcv_source.apply_edits(root)
    assert {path: read(osp.join(root, path)) for path in others} == others


def test_a_tree_edited_twice_is_refused(tmp_path):
    root = edited_tree(tmp_path)
    patch_mmcv_source.apply_edits(root)
    with pytest.raises(RuntimeError, match='or was edited already'):
        patch_mmcv_source.apply_edits(root)


def test_patch_script_names_the_missing_file_and_exits_non_zero(tmp_path):
    result = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'patch_mmcv_source.py'),
                             str(tmp_path)], capture_output=True, text=True)
    assert result.returncode != 0
    assert osp.join(str(tmp_path), 'setup.py') in result.stderr
    assert 'does not exist' in result.stderr


def fake_compiler_tree(root) -> str:
    """The layout of the nvcc, nvvm, crt and cccl wheels under nvidia/cu13, as empty files."""
    tree = str(root / 'packages' / 'nvidia' / 'cu13')
    for part in ('bin/nvcc', 'bin/ptxas', 'bin/fatbinary', 'bin/nvcc.profile', 'bin/crt/link.stub',
                 'nvvm/bin/cicc', 'nvvm/libdevice/libdevice.10.bc', 'include/crt/host_defines.h',
                 'include/cccl/thrust/device_vector.h', 'include/nvvm.h', 'lib/libnvvm.so.4'):
        write(osp.join(tree, part), part)
    return tree


def fake_runtime_tree(root) -> str:
    """What torch's CUDA wheels leave in site-packages/nvidia/cu13, as empty files."""
    tree = str(root / 'site-packages' / 'nvidia' / 'cu13')
    for part in ('include/cuda_runtime.h', 'include/cublas_v2.h', 'include/cusparse.h',
                 'lib/libcudart.so.13', 'lib/libcublas.so.13', 'lib/libcudart_static.a'):
        write(osp.join(tree, part), part)
    return tree


def test_cuda_home_links_the_compiler_and_merges_both_include_trees(tmp_path):
    compiler, runtime = fake_compiler_tree(tmp_path), fake_runtime_tree(tmp_path)
    home = cuda_toolchain.assemble_cuda_home(compiler, runtime, str(tmp_path / 'home'))
    for name in ('nvcc', 'ptxas', 'fatbinary', 'nvcc.profile', 'crt'):
        link = osp.join(home, 'bin', name)
        assert osp.islink(link) and osp.realpath(link) == osp.join(compiler, 'bin', name)
    cicc = osp.join(compiler, 'nvvm', 'bin', 'cicc')
    assert osp.realpath(osp.join(home, 'nvvm', 'bin', 'cicc')) == cicc
    assert sorted(os.listdir(osp.join(home, 'include'))) == [
        'cccl', 'crt', 'cublas_v2.h', 'cuda_runtime.h', 'cusparse.h', 'nvvm.h']
    assert read(osp.join(home, 'include', 'cuda_runtime.h')) == 'include/cuda_runtime.h'
    assert osp.isfile(osp.join(home, 'include', 'cccl', 'thrust', 'device_vector.h'))


def test_cuda_home_has_the_unversioned_cudart_that_linking_needs(tmp_path):
    compiler, runtime = fake_compiler_tree(tmp_path), fake_runtime_tree(tmp_path)
    home = cuda_toolchain.assemble_cuda_home(compiler, runtime, str(tmp_path / 'home'))
    lib64 = osp.join(home, 'lib64')
    assert os.readlink(osp.join(lib64, 'libcudart.so')) == 'libcudart.so.13'
    assert osp.realpath(osp.join(lib64, 'libcudart.so')) == osp.join(runtime, 'lib',
                                                                     'libcudart.so.13')
    assert osp.realpath(osp.join(lib64, 'libnvvm.so.4')) == osp.join(compiler, 'lib',
                                                                     'libnvvm.so.4')
    assert not osp.exists(osp.join(home, 'lib'))  # nvcc.profile and torch both look in lib64


def test_cuda_home_is_rebuilt_rather_than_added_to(tmp_path):
    compiler, runtime = fake_compiler_tree(tmp_path), fake_runtime_tree(tmp_path)
    home = str(tmp_path / 'home')
    cuda_toolchain.assemble_cuda_home(compiler, runtime, home)
    os.remove(osp.join(runtime, 'include', 'cusparse.h'))
    cuda_toolchain.assemble_cuda_home(compiler, runtime, home)
    assert 'cusparse.h' not in os.listdir(osp.join(home, 'include'))


def test_a_name_in_both_include_trees_is_refused(tmp_path):
    compiler, runtime = fake_compiler_tree(tmp_path), fake_runtime_tree(tmp_path)
    write(osp.join(runtime, 'include', 'crt', 'host_defines.h'))
    with pytest.raises(SystemExit, match=r"hold 'crt'; cannot merge"):
        cuda_toolchain.assemble_cuda_home(compiler, runtime, str(tmp_path / 'home'))


def test_a_runtime_tree_without_cuda_headers_is_refused_by_name(tmp_path):
    compiler, runtime = fake_compiler_tree(tmp_path), fake_runtime_tree(tmp_path)
    os.remove(osp.join(runtime, 'include', 'cuda_runtime.h'))
    with pytest.raises(SystemExit, match=r'cu13 lacks include/cuda_runtime.h'):
        cuda_toolchain.assemble_cuda_home(compiler, runtime, str(tmp_path / 'home'))


def test_installed_compiler_packages_are_reused_without_pip(tmp_path, monkeypatch):
    packages = cuda_toolchain.TOOLKIT_PACKAGES['13.0']
    write(str(tmp_path / 'packages' / cuda_toolchain.STAMP), '\n'.join(packages) + '\n')

    def no_pip(*args, **kwargs):
        raise AssertionError(f'pip ran: {args}')

    monkeypatch.setattr(cuda_toolchain.subprocess, 'run', no_pip)
    tree = cuda_toolchain.install_compiler_packages(str(tmp_path), '13.0')
    assert tree == str(tmp_path / 'packages' / 'nvidia' / 'cu13')


def test_other_pinned_packages_are_installed_again(tmp_path, monkeypatch):
    write(str(tmp_path / 'packages' / cuda_toolchain.STAMP), 'nvidia-cuda-nvcc==13.0.48\n')
    commands = []

    def fake_pip(command, **kwargs):
        commands.append(command)
        write(osp.join(command[command.index('--target') + 1], 'nvidia', 'cu13', 'bin', 'nvcc'))

    monkeypatch.setattr(cuda_toolchain.subprocess, 'run', fake_pip)
    cuda_toolchain.install_compiler_packages(str(tmp_path), '13.0')
    assert commands[0][-4:] == list(cuda_toolchain.TOOLKIT_PACKAGES['13.0'])
    assert '--no-deps' in commands[0]
    stamp = read(str(tmp_path / 'packages' / cuda_toolchain.STAMP)).split()
    assert stamp == list(cuda_toolchain.TOOLKIT_PACKAGES['13.0'])
    assert osp.isfile(str(tmp_path / 'packages' / 'nvidia' / 'cu13' / 'bin' / 'nvcc'))


def test_a_cuda_version_without_a_checked_package_set_is_refused(tmp_path):
    with pytest.raises(SystemExit, match='CUDA 12.8.*MMFLORA_CUDA_TOOLKIT=system'):
        cuda_toolchain.install_compiler_packages(str(tmp_path), '12.8')
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize('arch_list, cuda_major, gpu_visible', [
    ('9.0', 13, False), ('8.0;9.0', 13, False), ('7.5 8.6 9.0+PTX', 13, False),
    ('9.0a;10.0', 13, False), ('', 13, True), ('7.0', 12, False), ('Hopper', 13, False)])
def test_arch_lists_the_toolkit_compiles_for_pass(arch_list, cuda_major, gpu_visible):
    cuda_toolchain.check_arch_list(arch_list, cuda_major, gpu_visible)


def test_an_empty_arch_list_without_a_gpu_asks_for_one():
    with pytest.raises(ValueError, match='TORCH_CUDA_ARCH_LIST is not set and torch sees no GPU'):
        cuda_toolchain.check_arch_list(' ', 13, gpu_visible=False)


def test_an_arch_cuda_13_dropped_is_refused_by_name():
    with pytest.raises(ValueError, match=r"entry '7.0\+PTX': CUDA 13 compiles for 7.5 and newer"):
        cuda_toolchain.check_arch_list('9.0;7.0+PTX', 13, gpu_visible=True)


def test_check_arch_command_refuses_a_dropped_arch_for_this_torch():
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST='6.1;9.0')
    result = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'cuda_toolchain.py'),
                             'check-arch'], capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "entry '6.1'" in result.stderr


def test_setup_refuses_an_unknown_cuda_toolkit_before_doing_anything(tmp_path):
    venv = tmp_path / 'venv'
    env = dict(os.environ, MMFLORA_CUDA_TOOLKIT='conda', MMFLORA_VENV=str(venv))
    result = subprocess.run(['bash', osp.join(ROOT, 'tools', 'setup_env.sh')],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert "MMFLORA_CUDA_TOOLKIT='conda' is not one of: system" in result.stderr
    assert 'pip (nvcc from PyPI wheels)' in result.stderr
    assert not venv.exists()


class CudaShell(torch.Tensor):
    """A tensor that says it lives on cuda:0 but has no storage, so it needs no GPU.

    mmcv's ``DISPATCH_DEVICE_IMPL`` picks the implementation from the device of its tensor
    arguments before it touches their data; any aten op run on the shell fails loudly.
    """

    @staticmethod
    def __new__(cls, shape):
        return torch.Tensor._make_wrapper_subclass(cls, shape, dtype=torch.float32,
                                                   device='cuda:0')

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f'aten op {func} ran on a CudaShell')


def test_setup_check_for_cuda_ops_agrees_with_the_cuda_kernels_mmcv_registered():
    """setup_env.sh's ``mmcv_ok`` takes a CUDA build to be one whose compiling CUDA version is
    known; the CUDA entries of mmcv's dispatch registry must be there exactly then. On a CPU
    build (CI) nms on a cuda tensor finds no implementation; on a CUDA build it reaches the CUDA
    launcher, which fails next: without a GPU on the driver call of its device guard, with one
    on the first aten op it runs on the shell."""
    from mmcv.ops import get_compiling_cuda_version
    from mmcv.utils import ext_loader
    ext = ext_loader.load_ext('_ext', ['nms'])
    cuda_build = get_compiling_cuda_version() != 'not available'
    with pytest.raises(Exception) as caught:
        ext.nms(CudaShell((4, 4)), CudaShell((4, )), iou_threshold=0.5, offset=0)
    not_registered = 'nms_impl: implementation for device cuda:0 not found' in str(caught.value)
    assert not_registered == (not cuda_build), str(caught.value)
