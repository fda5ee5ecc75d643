"""The package's Python log records, forwarded elsewhere: the node sends them to its rclpy logger, so that what the
engines say (a background compilation that ends, a frame that waits for it) reaches the node's log and /rosout
instead of Python's last-resort stderr handler, which drops everything below a warning."""

from __future__ import annotations

import logging
from typing import Callable

PACKAGE_LOGGER = "aliked_ros"


class ForwardingHandler(logging.Handler):
    """Hands each record to ``write(levelno, text)``."""

    def __init__(self, write: Callable[[int, str], None]):
        super().__init__()
        self.write = write

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write(record.levelno, self.format(record))
        except Exception:  # a broken sink must not break the engine that logged
            self.handleError(record)


def write_by_level(error: Callable[[str], None], warning: Callable[[str], None],
                   info: Callable[[str], None]) -> Callable[[int, str], None]:
    """A ``write(levelno, text)`` that calls ``error``, ``warning`` or ``info`` (an rclpy logger's methods), each
    from a line of its own: rclpy keys a logger's settings by the calling line, and refuses a line that logs at two
    severities ("Logger severity cannot be changed between calls")."""

    def write(level: int, text: str) -> None:
        if level >= logging.ERROR:
            error(text)
        elif level >= logging.WARNING:
            warning(text)
        else:
            info(text)

    return write


def forward_package_logs(write: Callable[[int, str], None], level: int = logging.INFO) -> Callable[[], None]:
    """Send the package's records at ``level`` and above to ``write(levelno, text)`` (and no longer up to the root
    logger); returns the function that undoes it."""
    logger = logging.getLogger(PACKAGE_LOGGER)
    handler = ForwardingHandler(write)
    before = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(before[0])
        logger.propagate = before[1]

    return undo
