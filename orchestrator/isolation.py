"""Run a service's own Python code (its env.py and revision files) without letting it change
the process for anyone else.

A service's code shares the process with the tool and with the next service's code. Real trees
read their settings from ``os.environ``, configure logging (``logging.config.fileConfig`` in
env.py disables every existing logger), ``print()`` from revisions, and trigger SQLAlchemy
warnings that Python prints with their source lines. ``service_code`` sets the service's
``environ`` for the duration, sends whatever the code writes to stdout to stderr (stdout holds
only the tool's data, e.g. JSON), gathers warnings into one summarised log line each, and
afterwards restores the environment variables and the logging configuration it found.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

log = logging.getLogger("orchestrator")


@dataclass(frozen=True)
class _LoggerState:
    level: int
    handlers: tuple[logging.Handler, ...]
    propagate: bool
    disabled: bool


@dataclass(frozen=True)
class _LoggingState:
    root: _LoggerState
    loggers: dict[str, _LoggerState]
    disable: int

    @classmethod
    def capture(cls) -> _LoggingState:
        loggers = {name: _state(obj) for name, obj in _loggers().items()}
        return cls(_state(logging.root), loggers, logging.root.manager.disable)

    def restore(self) -> None:
        _apply(logging.root, self.root)
        for name, logger in _loggers().items():
            # a logger the service's code created goes back to a blank one
            _apply(logger, self.loggers.get(name, _LoggerState(logging.NOTSET, (), True, False)))
        logging.disable(self.disable)


def _loggers() -> dict[str, logging.Logger]:
    items = list(logging.root.manager.loggerDict.items())
    return {name: obj for name, obj in items if isinstance(obj, logging.Logger)}


def _state(logger: logging.Logger) -> _LoggerState:
    return _LoggerState(logger.level, tuple(logger.handlers), logger.propagate, logger.disabled)


def _apply(logger: logging.Logger, state: _LoggerState) -> None:
    logger.setLevel(state.level)
    logger.handlers = list(state.handlers)
    logger.propagate = state.propagate
    logger.disabled = state.disabled


def handlers_off_stdout(stdout: IO[str] | Any = None) -> None:
    """Point every logging handler that writes to stdout at stderr instead (an env.py may have
    set one up on ``sys.stdout`` before it was redirected, or on ``sys.__stdout__``)."""
    targets = {id(s) for s in (stdout, sys.__stdout__) if s is not None}
    for logger in (logging.root, *_loggers().values()):
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and id(handler.stream) in targets:
                handler.setStream(sys.stderr)


def _restore_environ(saved: dict[str, str]) -> None:
    for name in [n for n in os.environ if n not in saved]:
        del os.environ[name]
    for name, value in saved.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _summarise(caught: list[warnings.WarningMessage]) -> None:
    """One log line per distinct warning, without the source line Python would print."""
    counts: dict[tuple[str, str], int] = {}
    for w in caught:
        text = str(w.message).strip().splitlines()[0] if str(w.message).strip() else ""
        key = (w.category.__name__, text)
        counts[key] = counts.get(key, 0) + 1
    for (category, text), n in counts.items():
        log.warning("%s: %s%s", category, text, f" ({n} times)" if n > 1 else "")


@contextlib.contextmanager
def service_code(environ: Mapping[str, str] | None = None) -> Iterator[None]:
    """While a service's env.py or revisions run: ``environ`` set, stdout sent to stderr,
    warnings summarised; the environment and logging configuration restored afterwards."""
    saved_environ = dict(os.environ)
    saved_logging = _LoggingState.capture()
    stdout = sys.stdout
    caught: list[warnings.WarningMessage] = []
    try:
        os.environ.update(environ or {})
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings(record=True) as recorded:
            warnings.simplefilter("always")
            handlers_off_stdout(stdout)
            try:
                yield
            finally:
                handlers_off_stdout(stdout)
                caught = list(recorded or [])
    finally:
        _restore_environ(saved_environ)
        saved_logging.restore()
        _summarise(caught)
