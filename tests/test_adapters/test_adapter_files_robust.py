"""Adapter files are written atomically, and unreadable ones are refused naming the file."""
import os

import pytest
import torch
from torch import nn

from mmflora.adapters import inject_adapters, load_adapters, read_adapter_metadata, save_adapters
from mmflora.adapters import state as state_module


def adapted():
    model = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 3))
    inject_adapters(model, 'lora', r=2)
    return model


def test_a_failed_write_leaves_the_previous_file_intact_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / 'a.safetensors'
    save_adapters(adapted(), str(path))
    before = path.read_bytes()

    def torn_write(tensors, filename, metadata=None):
        with open(filename, 'wb') as f:
            f.write(b'\x00' * 10)  # half a file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(state_module, 'save_file', torn_write)
    with pytest.raises(KeyboardInterrupt):
        save_adapters(adapted(), str(path))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ['a.safetensors']


@pytest.mark.parametrize('content', [b'', b'\x10\x00\x00\x00\x00\x00\x00\x00{"a": 1', None])
def test_corrupt_truncated_or_foreign_files_raise_value_error_naming_the_path(tmp_path, content):
    path = tmp_path / 'broken.safetensors'
    if content is None:  # a torch checkpoint under an adapter-file name
        torch.save({'weight': torch.ones(2)}, path)
    else:
        path.write_bytes(content)
    for read in (read_adapter_metadata, lambda p: load_adapters(adapted(), p)):
        with pytest.raises(ValueError, match=rf'{path}: not a readable safetensors file'):
            read(str(path))


def test_a_truncated_real_adapter_file_is_refused(tmp_path):
    path = tmp_path / 'a.safetensors'
    save_adapters(adapted(), str(path))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 7])
    with pytest.raises(ValueError, match='not a readable safetensors file'):
        load_adapters(adapted(), str(path))


def test_a_missing_file_is_a_file_not_found_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.safetensors'):
        read_adapter_metadata(str(tmp_path / 'nope.safetensors'))


def test_a_file_from_a_nested_injection_records_its_config_and_names_it_on_a_mismatch(tmp_path):
    def detector(rank):
        model = nn.Module()
        model.backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Linear(8, 8))
        model.head = nn.Linear(8, 2)
        inject_adapters(model.backbone, 'flora', r=rank, mode='structured')
        return model

    path = tmp_path / 'a.safetensors'
    save_adapters(detector(4), str(path))
    metadata = read_adapter_metadata(str(path))
    assert metadata['config'] is None
    assert metadata['submodule_configs']['backbone']['r'] == 4
    assert metadata['submodule_configs']['backbone']['mode'] == 'structured'
    with pytest.raises(ValueError, match=r"saved with \(backbone: method='flora', r=4, "
                                         r"mode='structured'\)"):
        load_adapters(detector(2), str(path))
