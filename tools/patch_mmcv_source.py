"""Edits that make the mmcv 2.1.0 source package build against this stack.

    python tools/patch_mmcv_source.py path/to/mmcv-2.1.0

``tools/setup_env.sh`` runs it on the unpacked PyPI source package (``mmcv-2.1.0.tar.gz``, from
2023) in its temporary build folder, never on installed files. Each edit replaces an exact piece of
text that must occur a known number of times; when it does not (another mmcv version, a tree
patched twice) nothing is written and the script stops with the file and the edit's name, so a
change upstream shows up as a failed set-up step instead of a build that compiles something else.
"""
import argparse
import os.path as osp
from dataclasses import dataclass


@dataclass(frozen=True)
class SourceEdit:
    """One textual edit of a file in the source package.

    Args:
        name (str): Short name used in messages.
        path (str): The file, relative to the source package's root.
        old (str): The exact text to replace.
        new (str): What replaces it.
        count (int): How many times ``old`` occurs in the unedited file.
        reason (str): What breaks without the edit and why the edit is right.
    """
    name: str
    path: str
    old: str
    new: str
    count: int
    reason: str


MMCV_2_1_0_EDITS = (
    SourceEdit(
        name='c++20',
        path='setup.py',
        old="'-std=c++17'",
        new="'-std=c++20'",
        count=3,  # the g++ flags, the nvcc flags, and the (unused here) Apple MPS flags
        reason='torch 2.14 headers refuse to compile below C++20 (ATen/ATen.h: #error C++20 or '
               'later compatible compiler is required), and '
               "mmcv's setup.py hard-codes -std=c++17 for the C++ and the nvcc compiles"),
)


def apply_edits(source_root: str, edits=MMCV_2_1_0_EDITS) -> list:
    """Apply ``edits`` to the source package at ``source_root``.

    All edits are checked before any file is written, so a tree is either fully edited or left
    as it was.

    Args:
        source_root (str): The unpacked source package (the folder holding ``setup.py``).
        edits (Sequence[SourceEdit]): The edits. Defaults to ``MMCV_2_1_0_EDITS``.

    Returns:
        list[str]: The names of the edits applied.

    Raises:
        RuntimeError: A file is missing, or an edit's text does not occur exactly ``count`` times.
    """
    texts = {}
    for edit in edits:
        path = osp.join(source_root, edit.path)
        if edit.path not in texts:
            if not osp.isfile(path):
                raise RuntimeError(f'edit {edit.name!r}: {path} does not exist; is {source_root} '
                                   'the unpacked mmcv 2.1.0 source package?')
            with open(path, encoding='utf-8') as f:
                texts[edit.path] = f.read()
        found = texts[edit.path].count(edit.old)
        if found != edit.count:
            raise RuntimeError(
                f'edit {edit.name!r}: {path} holds {edit.old!r} {found} times, expected '
                f'{edit.count}; the source is not the mmcv 2.1.0 this edit was written for '
                '(or was edited already), so check the edit against it before building')
        texts[edit.path] = texts[edit.path].replace(edit.old, edit.new)
    for relative, text in texts.items():
        with open(osp.join(source_root, relative), 'w', encoding='utf-8') as f:
            f.write(text)
    return [edit.name for edit in edits]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description='Edit the mmcv 2.1.0 source package so that it '
                                     'builds against torch 2.14 (C++20) and CUDA 13')
    parser.add_argument('source_root', help='the unpacked mmcv-2.1.0 folder (holds setup.py)')
    args = parser.parse_args(argv)
    try:
        applied = apply_edits(args.source_root)
    except RuntimeError as error:
        raise SystemExit(f'[patch_mmcv_source] {error}')
    print(f'[patch_mmcv_source] applied to {args.source_root}: {", ".join(applied)}')


if __name__ == '__main__':
    main()
