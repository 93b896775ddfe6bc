"""Read what mmflora logs through a handler on mmengine's current logger (no patching)."""
import contextlib
import logging
from typing import Iterator, List

from mmengine.logging import MMLogger


class _Collect(logging.Handler):

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class CapturedLog:
    """The records logged inside a :func:`captured_log` block."""

    def __init__(self, handler: _Collect) -> None:
        self._handler = handler

    @property
    def records(self) -> List[logging.LogRecord]:
        return self._handler.records

    def messages(self, level: int = logging.DEBUG) -> List[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]

    def text(self, level: int = logging.DEBUG) -> str:
        return '\n'.join(self.messages(level))


@contextlib.contextmanager
def captured_log() -> Iterator[CapturedLog]:
    """Collect every record of mmengine's current logger (``print_log(logger='current')``)."""
    logger = MMLogger.get_current_instance()
    handler = _Collect()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield CapturedLog(handler)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
