"""Send what the pure-PyTorch core logs to mmengine's logger, so it lands in the run's log."""
import logging

from mmengine.logging import print_log

#: The core logs on children of this logger (``mmflora.adapters``).
CORE_LOGGER = 'mmflora'


class _ToMMLogger(logging.Handler):
    """Re-emit a record through mmengine's current logger (console and the run's log file)."""

    def emit(self, record: logging.LogRecord) -> None:
        print_log(record.getMessage(), logger='current', level=record.levelno)


def route_mmflora_logs() -> None:
    """Forward the core's records to mmengine's current logger instead of Python's root.

    Idempotent; applied when ``mmflora.models`` or ``mmflora.engine`` is imported.
    """
    logger = logging.getLogger(CORE_LOGGER)
    if not any(isinstance(handler, _ToMMLogger) for handler in logger.handlers):
        logger.addHandler(_ToMMLogger())
        logger.propagate = False
