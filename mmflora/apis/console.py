"""Keep a tool's console to its result: a run's own output to a file, its warnings after.

An OpenMMLab run prints the whole config, the environment, every initialised parameter, a
progress line every few iterations and the evaluators' own tables: hundreds of lines for a
test of 40 images. The tools that report a result (``tools/test.py``, ``tools/demo.py``,
``tools/count_params.py``) run inside :class:`RunConsole`, which sends all of that to a file,
collects the warnings, and lets the tool print its result and then the warnings (to stderr).
"""
import contextlib
import logging
import sys
import warnings
from typing import List, Optional, TextIO


class WarningCollector(logging.Handler):
    """A logging handler that keeps each distinct WARNING (and above) message once, in order."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def add(self, message: str) -> None:
        if message not in self.messages:
            self.messages.append(message)

    def emit(self, record: logging.LogRecord) -> None:
        self.add(f'{record.levelname.lower()}: {record.getMessage()}')


class RunConsole(contextlib.AbstractContextManager):
    """Within the block, stdout and stderr (prints, and the console handlers of the mmengine
    loggers created inside) write into ``path``; Python warnings and the WARNING records of
    the loggers given to :meth:`watch` are collected.

    On exit, the console handlers that wrote into the file are pointed at stderr for errors
    only (the file is closed, and later messages must not fill the console), and the
    collected Python warnings are added to the file.

    Args:
        path (str): The file (overwritten).

    Attributes:
        warnings (WarningCollector): What was collected; ``messages`` in order.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.warnings = WarningCollector()
        self._file: Optional[TextIO] = None
        self._stack = contextlib.ExitStack()
        self._watched: List[logging.Logger] = []
        self._recorded: list = []

    def __enter__(self) -> 'RunConsole':
        self._file = self._stack.enter_context(open(self.path, 'w'))
        self._stack.enter_context(contextlib.redirect_stdout(self._file))
        self._stack.enter_context(contextlib.redirect_stderr(self._file))
        self._recorded = self._stack.enter_context(warnings.catch_warnings(record=True))
        return self

    def watch(self, logger: logging.Logger) -> None:
        """Collect the WARNING records of ``logger`` (a runner's ``logger``) from now on."""
        logger.addHandler(self.warnings)
        self._watched.append(logger)

    def __exit__(self, *exc_info) -> None:
        for item in self._recorded:
            message = f'{item.category.__name__}: {item.message} ({item.filename}:{item.lineno})'
            self.warnings.add(message)
            print(message, file=self._file)
        for logger in self._watched:
            logger.removeHandler(self.warnings)
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and \
                        getattr(handler, 'stream', None) is self._file:
                    handler.setStream(sys.__stderr__)
                    handler.setLevel(logging.ERROR)
        self._stack.close()

    def print_warnings(self, stream: Optional[TextIO] = None) -> None:
        """Write the collected warnings, one a line, to ``stream`` (default stderr)."""
        stream = stream or sys.stderr
        for message in self.warnings.messages:
            print(message, file=stream)
