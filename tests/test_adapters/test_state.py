"""Adapter files: the trained tensors only, with the configuration as metadata."""
import os

import pytest
import torch
from torch import nn

from mmflora import __version__
from mmflora.adapters import (adapter_state_dict, inject_adapters, load_adapters,
                              read_adapter_metadata, save_adapters)
from .helpers import randomise_adapters, small_convnet


def test_adapter_file_round_trip_restores_outputs(tmp_path):
    model = small_convnet()
    inject_adapters(model, 'flora', r=4, trainable=['norm'])
    randomise_adapters(model)
    with torch.no_grad():
        model[1].norm.weight.mul_(3)
    path = os.path.join(tmp_path, 'adapter.safetensors')
    save_adapters(model, path, extra_metadata={'iteration': 7})
    fresh = small_convnet()
    inject_adapters(fresh, 'flora', r=4, trainable=['norm'])
    metadata = load_adapters(fresh, path)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    assert metadata['config']['method'] == 'flora' and metadata['config']['r'] == 4
    assert metadata['config']['scale'] == 4.0 and metadata['config']['mode'] == 'dense'
    assert metadata['mmflora_version'] == __version__ and metadata['iteration'] == 7
    assert metadata['layers']['1.conv_dw']['ranks'] == [4, 4, 2, 2]


def test_adapter_file_holds_only_trainable_tensors(tmp_path):
    model = small_convnet()
    inject_adapters(model, 'flora', r=4)
    state = adapter_state_dict(model)
    assert state and all('core' in k or 'factors' in k for k in state)
    path = os.path.join(tmp_path, 'a.safetensors')
    written = save_adapters(model, path)
    assert written == sum(t.numel() * 4 for t in state.values())
    # Readable like any file the user writes (safetensors alone makes it owner-only).
    plain = os.path.join(tmp_path, 'plain.txt')
    open(plain, 'w').close()
    assert os.stat(path).st_mode & 0o777 == os.stat(plain).st_mode & 0o777


def test_adapter_file_can_take_its_tensors_from_a_state_dict(tmp_path):
    model = small_convnet()
    inject_adapters(model, 'flora', r=4)
    averaged = {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items()}
    path = os.path.join(tmp_path, 'a.safetensors')
    save_adapters(model, path, values=averaged)
    fresh = small_convnet()
    inject_adapters(fresh, 'flora', r=4)
    load_adapters(fresh, path)
    for name, value in adapter_state_dict(fresh).items():
        assert torch.equal(value, averaged[name]), name

    core = next(k for k in averaged if k.endswith('.core'))
    del averaged[core]
    with pytest.raises(KeyError, match=core.replace('.', r'\.')):
        save_adapters(model, path, values=averaged)


def test_adapter_file_keeps_running_stats_of_trained_norms(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    inject_adapters(model, 'flora', r=2, trainable=[r'^1\.'])
    assert {'1.running_mean', '1.running_var', '1.num_batches_tracked'} <= set(
        adapter_state_dict(model))


def test_loading_into_other_ranks_lists_the_mismatching_keys_and_shapes(tmp_path):
    model = small_convnet()
    inject_adapters(model, 'flora', r=4)
    path = os.path.join(tmp_path, 'adapter.safetensors')
    save_adapters(model, path)
    other = small_convnet()
    inject_adapters(other, 'flora', r=3)
    with pytest.raises(ValueError, match=r"shape mismatch \(model vs file\): 0\.core "
                       r"\(3, 3, 2, 2\) vs \(4, 3, 2, 2\)"):
        load_adapters(other, path)


def test_loading_into_other_targets_lists_missing_and_unexpected_keys(tmp_path):
    model = small_convnet()
    inject_adapters(model, 'flora', r=4, targets=['Linear'])
    path = os.path.join(tmp_path, 'adapter.safetensors')
    save_adapters(model, path)
    other = small_convnet()
    inject_adapters(other, 'flora', r=4, targets=['Conv2d'])
    with pytest.raises(ValueError) as error:
        load_adapters(other, path)
    message = str(error.value)
    assert 'in the model but not in the file: 0.core' in message
    assert 'in the file but not in the model: 1.fc1.core' in message
    assert "targets=['Linear']" in message  # the settings it was saved with


def test_non_adapter_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file
    path = os.path.join(tmp_path, 'weights.safetensors')
    save_file({'w': torch.zeros(2)}, path)
    with pytest.raises(ValueError, match='is not an mmflora adapter file'):
        read_adapter_metadata(path)
