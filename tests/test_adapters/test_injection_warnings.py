"""Injection warns (WARNING, once per injection) about ranks it capped and adapters larger
than the update they parameterise."""
import logging

import pytest
from torch import nn

from mmflora.adapters import inject_adapters


class Records(logging.Handler):

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def records():
    logger = logging.getLogger('mmflora.adapters')
    handler = Records()
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


def warnings_of(records):
    return [r.getMessage() for r in records if r.levelno == logging.WARNING]


def test_capped_ranks_are_one_warning_naming_the_layers(records):
    model = nn.Sequential(nn.Conv2d(3, 16, 4, stride=4), nn.Conv2d(16, 16, 1), nn.Linear(16, 2))
    report = inject_adapters(model, 'flora', r=8, r_kernel=2)
    capped = [m for m in warnings_of(records) if 'capped' in m]
    assert len(capped) == 1
    assert "'0' (mode 1 rank 8->3" in capped[0] and "'2' (mode 0 rank 8->2" in capped[0]
    assert 'strict_ranks=True' in capped[0]
    assert capped[0] in report.warnings


def test_an_adapter_larger_than_its_update_is_warned_about(records):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(64, 64))
    inject_adapters(model, 'lora', r=4)  # 4x4: A 4x4 + B 4x4 = 32 > 16 weights
    larger = [m for m in warnings_of(records) if 'larger than' in m]
    assert len(larger) == 1 and "'0'" in larger[0] and "'1'" not in larger[0]
    assert '32 adapter parameters for an update of 16' in larger[0]


def test_r_1000_on_a_small_model_warns_that_the_adapters_outgrow_the_model(records):
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    report = inject_adapters(model, 'flora', r=1000)
    messages = warnings_of(records)
    assert any('more adapter parameters' in m and 'than the model has' in m for m in messages)
    assert report.adapter_params > sum(p.numel() for n, p in model.named_parameters()
                                       if 'core' not in n and 'factors' not in n)


def test_the_paper_setting_warns_about_nothing(records):
    model = nn.Sequential(nn.Conv2d(64, 64, 7, padding=3, groups=64), nn.Linear(64, 256))
    inject_adapters(model, 'flora', r=8, r_kernel=2, mode='dense')
    assert warnings_of(records) == []
