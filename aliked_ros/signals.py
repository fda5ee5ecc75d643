"""Signals as the tools and the node meet them: SIGTERM and SIGHUP act like Ctrl-C, and a bag being written holds
all three back until the message or the close in hand is done. Standard library only."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C's KeyboardInterrupt so that every ``except KeyboardInterrupt`` and every
    context manager (a bag being written) closes what it holds."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _terminate(signum: int, frame) -> None:
    raise Terminated(signum)


def handle_termination(names: tuple[str, ...] = ("SIGTERM", "SIGHUP")) -> dict:
    """The signals ``names`` raise Terminated; returns the handlers they had. Not where they are ignored
    (``nohup``), nor outside the main thread, where Python cannot set handlers."""
    previous = {}
    for name in names:
        signum = getattr(signal, name, None)
        if signum is None or signal.getsignal(signum) == signal.SIG_IGN:
            continue
        try:
            previous[signum] = signal.signal(signum, _terminate)
        except ValueError:
            break
    return previous


def restore_handlers(previous: dict) -> None:
    """Put back the handlers that :func:`handle_termination` replaced."""
    for signum, handler in previous.items():
        if handler is not None:
            signal.signal(signum, handler)


_HELD_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
_CAN_BLOCK = hasattr(signal, "pthread_sigmask")  # not on Windows


class SignalGate:
    """Holds SIGINT, SIGTERM and SIGHUP back while a bag is inside a write or its close, then lets them act.

    While a bag is open, the Python handlers of these signals (Ctrl-C's KeyboardInterrupt, the command line's
    SIGTERM and SIGHUP) are wrapped: outside :meth:`held` a signal goes to its handler at once; inside, it is noted
    and handed over when the block ends, so the exception it raises lands between two messages. Wrapping the
    handlers rather than only blocking the signals in the main thread matters because the kernel hands a blocked
    process signal to another thread (torch and onnxruntime start some), whose Python handler then runs in the main
    thread all the same. Wrapping costs nothing per message; the close also blocks them (pthread_sigmask), which
    holds back even a default action, such as SIGTERM ending a process that set no handler.
    """

    def __init__(self):
        self.users = 0
        self.depth = 0
        self.noted: list[int] = []
        self.wrapped: dict[int, Callable] = {}

    def open(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers run in the main thread only: other threads need no gate
        if self.users == 0:
            for signum in _HELD_SIGNALS:
                handler = signal.getsignal(signum)
                if callable(handler):  # SIG_DFL and SIG_IGN raise nothing inside a write
                    self.wrapped[signum] = handler
                    signal.signal(signum, self._handle)
        self.users += 1

    def close(self) -> None:
        if self.users == 0 or threading.current_thread() is not threading.main_thread():
            return
        self.users -= 1
        if self.users == 0:
            for signum, handler in self.wrapped.items():
                if signal.getsignal(signum) == self._handle:  # unless someone has set another one since
                    signal.signal(signum, handler)
            self.wrapped.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.depth:
            self.noted.append(signum)
        else:
            self.wrapped.get(signum, signal.default_int_handler)(signum, frame)

    @contextlib.contextmanager
    def held(self, block: bool = False):
        """The block runs to its end whatever signal comes; ``block``: the main thread also blocks the signals."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS) if block and _CAN_BLOCK else None
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            noted = [] if self.depth else self.noted
            self.noted = self.noted if self.depth else []
            if mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a blocked signal acts here
            for signum in noted[:1]:  # the first one acts as it would have; one interrupt is enough
                self.wrapped.get(signum, signal.default_int_handler)(signum, None)


SIGNAL_GATE = SignalGate()  # one for the process: signal handlers are per process
