"""Tests of mmflora.compat: each shim is shown to be needed and to work, and to stay narrow.

"Needed" is shown in a fresh interpreter (a subprocess) because this process may already have
applied the shims: importing ``mmflora.models`` or ``mmflora.engine`` does that.
"""
import importlib.metadata
import io
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint
from torch import nn
from torch.utils.data import Dataset

from mmflora.compat import apply_compat_shims, mmengine_checkpoint_safe_globals


class _TinyModel(BaseModel):
    """A linear layer and a norm: enough for optimizer state and buffers in the checkpoint."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 1)
        self.norm = nn.BatchNorm1d(1)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.norm(self.fc(inputs))
        if mode == 'loss':
            return {'loss': ((out - labels)**2).mean()}
        return [dict(pred=float(p)) for p in out]


class _TinyDataset(Dataset):
    metainfo = dict(classes=('a', 'b'), palette=[(0, 0, 0), (255, 255, 255)])

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return dict(inputs=torch.full((2, ), float(i)), labels=torch.ones(1))


class _NumpyScalarMetric(BaseMetric):
    """Returns numpy scalars, as mmseg's IoUMetric (float32) and other metrics do."""

    def process(self, data_batch, data_samples):
        self.results.extend(s['pred'] for s in data_samples)

    def compute_metrics(self, results):
        return dict(score=np.float64(np.mean(results)), miou=np.float32(0.5),
                    count=np.int64(len(results)), plain=1.0)


def _make_runner(work_dir: Path, max_iters: int, name: str, **kwargs) -> Runner:
    loader = dict(dataset=_TinyDataset(), batch_size=2, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='default_collate'))
    return Runner(
        model=_TinyModel(),
        work_dir=str(work_dir),
        experiment_name=name,
        train_dataloader=loader,
        val_dataloader=loader,
        val_evaluator=Evaluator([_NumpyScalarMetric()]),
        val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2),
            dict(type='MultiStepLR', milestones=[3], by_epoch=False),
            dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=8, by_epoch=False),
        ],
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=2),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False,
                            save_best='miou', rule='greater'),
            logger=dict(type='LoggerHook', interval=1)),
        default_scope='mmengine',
        log_level='WARNING',
        **kwargs)


@pytest.fixture(scope='module')
def mmengine_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint written by an mmengine Runner after 2 iterations and a validation."""
    work_dir = tmp_path_factory.mktemp('mmengine_ckpt')
    _make_runner(work_dir, max_iters=2, name='compat_save').train()
    checkpoint = work_dir / 'iter_2.pth'
    assert checkpoint.is_file()
    return checkpoint


def _safe_global_names() -> set:
    names = set()
    for entry in mmengine_checkpoint_safe_globals():
        if isinstance(entry, tuple):
            names.add(entry[1])
        else:
            names.add(f'{entry.__module__}.{entry.__qualname__}')
    return names


def test_mmengine_checkpoint_fails_weights_only_load_without_shims(mmengine_checkpoint):
    code = 'import sys, torch; torch.load(sys.argv[1], map_location="cpu")'
    done = subprocess.run([sys.executable, '-c', code, str(mmengine_checkpoint)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert 'Weights only load failed' in done.stderr
    assert 'HistoryBuffer' in done.stderr


def test_safe_globals_cover_every_global_of_an_mmengine_checkpoint(mmengine_checkpoint):
    # Other tests may have applied the shims already; list the globals as plain torch sees them.
    registered = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        found = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(mmengine_checkpoint)))
    finally:
        torch.serialization.add_safe_globals(registered)
    assert found, 'expected the checkpoint to hold non-tensor globals'
    assert found <= _safe_global_names(), f'not allowed: {sorted(found - _safe_global_names())}'


def test_runner_resumes_from_its_own_checkpoint_with_weights_only(mmengine_checkpoint):
    apply_compat_shims()
    runner = _make_runner(mmengine_checkpoint.parent, max_iters=4, name='compat_resume',
                          load_from=str(mmengine_checkpoint), resume=True)
    runner.train()
    assert runner.iter == 4
    scalars = runner.message_hub.log_scalars
    assert isinstance(scalars['train/lr'], HistoryBuffer)
    assert len(scalars['train/lr'].data[0]) == 4  # 2 resumed + 2 new iterations


def test_load_checkpoint_reads_an_mmengine_checkpoint(mmengine_checkpoint):
    apply_compat_shims()
    model = _TinyModel()
    checkpoint = load_checkpoint(model, str(mmengine_checkpoint), map_location='cpu')
    assert torch.equal(model.fc.weight, checkpoint['state_dict']['fc.weight'])
    runtime_info = checkpoint['message_hub']['runtime_info']
    assert isinstance(runtime_info['best_score'], np.float32)  # from the metric's miou
    assert isinstance(runtime_info['eta'], np.float64)


def test_numpy1_pickle_names_load_too():
    # Checkpoints written under numpy 1.x name numpy.core.multiarray instead of numpy._core.
    apply_compat_shims()
    buffer = io.BytesIO()
    torch.save({'array': np.arange(3.0), 'scalar': np.float64(2.5)}, buffer,
               _use_new_zipfile_serialization=False)
    raw = buffer.getvalue()
    assert b'numpy._core.multiarray' in raw
    legacy = raw.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
    loaded = torch.load(io.BytesIO(legacy), weights_only=True)
    assert np.array_equal(loaded['array'], np.arange(3.0))
    assert loaded['scalar'] == 2.5


class _AsksForAnyAttribute:
    """Pickles as getattr(HistoryBuffer, '__init__'): a lookup the stand-in must refuse."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


class _CallsAFunction:
    """Pickles as a call of subprocess.getoutput: a global that must stay forbidden."""

    def __reduce__(self):
        return subprocess.getoutput, ('true', )


@pytest.mark.parametrize('payload,message', [
    (_AsksForAnyAttribute(), 'refused getattr'),
    (_CallsAFunction(), 'getoutput'),
])
def test_shims_keep_weights_only_protection(payload, message):
    apply_compat_shims()
    buffer = io.BytesIO()
    torch.save({'x': payload}, buffer)
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError, match=message):
        torch.load(buffer)


def test_apply_compat_shims_is_idempotent():
    apply_compat_shims()
    before = set(torch.serialization.get_safe_globals())
    apply_compat_shims()
    assert set(torch.serialization.get_safe_globals()) == before
    assert set(mmengine_checkpoint_safe_globals()) <= before


def test_mmseg_imports_with_its_undeclared_tokenizer_deps():
    # mmseg.utils imports ftfy and regex (its CLIP tokenizer) without declaring them;
    # mmflora declares both so that `import mmseg.utils` / register_all_modules() work.
    requirements = importlib.metadata.requires('mmflora') or []
    declared = {r.split(';')[0].split('[')[0].strip().lower() for r in requirements}
    assert {'ftfy', 'regex'} <= declared
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
