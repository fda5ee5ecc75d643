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
