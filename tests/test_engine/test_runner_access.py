"""The one module that reads mmengine Runner internals names the version it was checked with."""
import logging

import mmengine
from mmengine.logging import MMLogger

from mmflora.engine import runner_access


class _Records(logging.Handler):

    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_the_checked_version_is_the_installed_one():
    assert runner_access.MMENGINE_CHECKED == mmengine.__version__


def test_another_mmengine_version_is_warned_about_once(monkeypatch):
    logger = MMLogger.get_instance('runner_access_test')
    records = _Records()
    logger.addHandler(records)
    monkeypatch.setattr(mmengine, '__version__', '0.99.0')
    monkeypatch.setattr(runner_access, '_warned_version', [])
    try:
        runner_access.check_mmengine_version()
        runner_access.check_mmengine_version()
    finally:
        logger.removeHandler(records)
    warned = [m for m in records.messages if '0.99.0' in m and runner_access.MMENGINE_CHECKED in m]
    assert len(warned) == 1


class _FakeRunner:
    _resume = True
    _has_loaded = False


def test_resume_state_is_read_from_the_runner():
    assert runner_access.is_resuming(_FakeRunner())
    assert not runner_access.has_loaded_checkpoint(_FakeRunner())
    assert not runner_access.is_resuming(object())
