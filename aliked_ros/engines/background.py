"""Slow builds (torch.compile of one image size) done on a worker thread while the caller goes on serving.

The torch engine's compiled fast path makes a robot wait 30-40 s (12 s from torch.compile's cache) before its first
frame (BENCHMARKS.md, "Start-up"). With a background build the engine serves the uncompiled CUDA graph at once and
changes to the compiled one when its compilation is done. This module is the part that knows nothing of torch: a
queue of keyed jobs run one at a time, in order, on one daemon thread.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import weakref
from collections import deque
from typing import Any, Callable, Hashable

_logger = logging.getLogger(__name__)

PENDING, DONE, FAILED = "pending", "done", "failed"
_every_builds: weakref.WeakSet[BackgroundBuilds] = weakref.WeakSet()  # for builds_running()

# While a build runs, the interpreter asks the thread holding the GIL to hand it over after this long instead of its
# default 5 ms: a compilation is Python that rarely lets go of the GIL by itself, and the serving thread, back from
# each CUDA synchronisation, waited up to a switch interval for it, several times a frame.
BUILD_SWITCH_INTERVAL_S = 0.0005
_handoff_lock = threading.Lock()
_handoff_users = 0
_handoff_saved_interval = 0.0


@contextlib.contextmanager
def _quick_gil_handoff():
    """sys.setswitchinterval(BUILD_SWITCH_INTERVAL_S) while any build of the process runs; the interval found
    before the first of them is put back after the last."""
    global _handoff_users, _handoff_saved_interval
    with _handoff_lock:
        if _handoff_users == 0:
            _handoff_saved_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(_handoff_saved_interval, BUILD_SWITCH_INTERVAL_S))
        _handoff_users += 1
    try:
        yield
    finally:
        with _handoff_lock:
            _handoff_users -= 1
            if _handoff_users == 0:
                sys.setswitchinterval(_handoff_saved_interval)


class BackgroundBuilds:
    """Jobs by key, run one at a time on a daemon thread.

    Convention:
        - :meth:`submit` queues ``job`` (no argument; returns the built thing) under ``key``; a key already submitted
          is left as it is (one build per key).
        - :meth:`state` is ``None`` (never submitted), ``"pending"`` (queued or running), ``"done"`` or ``"failed"``;
          :meth:`result` is the job's return value once done; :meth:`error` the exception of a failed job (also
          logged once, through ``log``).
        - :attr:`busy` is true while a job runs or waits: what must not overlap a build (a CUDA graph capture, an
          eager module call: see ``torch_engine.next_graph_step``) waits for it to be false.
        - :meth:`close` drops the jobs not yet started and the results (compiled forwards hold their module's GPU
          memory); the running job finishes on the daemon thread, which then stays idle: a thread that ran torch's
          compiler and ends while the interpreter shuts down aborts the process ("terminate called without an active
          exception", seen on the CPU, in about one exit in two), so it never ends.
        - A process that exits while a job runs waits for it to end (a compilation cut off by the interpreter's
          shutdown aborts the process instead): an exit during a background compilation takes up to its remaining
          time, and the compilation may end in an error then (logged), which nothing uses any more. A program whose
          own cleanup is done can leave at once instead (:func:`exit_without_waiting_for_builds`: the node does).
    """

    def __init__(self, name: str = "aliked-build", log: Callable[[str], None] | None = None):
        self._name = name
        self._log = log or _logger.warning
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[Hashable] = deque()
        self._jobs: dict[Hashable, Callable[[], Any]] = {}
        self._states: dict[Hashable, str] = {}
        self._results: dict[Hashable, Any] = {}
        self._errors: dict[Hashable, BaseException] = {}
        self._running = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, key: Hashable, job: Callable[[], Any]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("BackgroundBuilds is closed")
            if key in self._states:
                return
            self._states[key] = PENDING
            self._jobs[key] = job
            self._queue.append(key)
            if self._thread is None:  # started on the first job: an engine that never builds has no thread
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
                atexit.register(self._finish_at_exit)
                _every_builds.add(self)
            self._wake.notify()

    def state(self, key: Hashable) -> str | None:
        with self._lock:
            return self._states.get(key)

    def result(self, key: Hashable) -> Any:
        with self._lock:
            if self._states.get(key) != DONE:
                raise KeyError(f"{key!r} is not built ({self._states.get(key)})")
            return self._results[key]

    def error(self, key: Hashable) -> BaseException | None:
        with self._lock:
            return self._errors.get(key)

    @property
    def busy(self) -> bool:
        with self._lock:
            return bool(self._queue) or self._running > 0

    def wait(self, key: Hashable, timeout: float | None = None) -> str | None:
        """Block until ``key``'s job has ended (or ``timeout`` seconds); its state then."""
        with self._wake:
            self._wake.wait_for(lambda: self._states.get(key) != PENDING, timeout)  # close() ends the queued
            return self._states.get(key)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job waits or runs (or ``timeout`` seconds); whether none does."""
        with self._wake:
            return self._wake.wait_for(lambda: not self._queue and self._running == 0, timeout)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for key in self._queue:
                self._states[key] = FAILED
                self._errors[key] = RuntimeError("closed before it was built")
            self._queue.clear()
            self._jobs.clear()
            self._results.clear()  # compiled forwards hold their modules (and GPU memory): nothing uses them now
            self._wake.notify_all()

    def _finish_at_exit(self) -> None:
        """At interpreter exit: drop the queued jobs and let the running one end first (a daemon thread still inside
        a compilation when the runtime finalises aborts the process)."""
        self.close()
        with self._wake:
            self._wake.wait_for(lambda: self._running == 0)

    def _work(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._queue)  # closed: never woken again (see the class docstring)
                key = self._queue.popleft()
                job = self._jobs.pop(key)
                self._running += 1
            try:
                with _quick_gil_handoff():
                    value, error = job(), None
            except Exception as caught:  # a failed build must not end the thread, nor lose the reason
                value, error = None, caught
            with self._wake:
                self._running -= 1
                if error is None and self._closed:
                    self._states[key] = FAILED
                    self._errors[key] = RuntimeError("closed while it was built")
                elif error is None:
                    self._states[key], self._results[key] = DONE, value
                else:
                    self._states[key], self._errors[key] = FAILED, error
                self._wake.notify_all()
            if error is not None:
                self._log(f"Background build {key!r} failed: {type(error).__name__}: "
                          f"{(str(error).strip().splitlines() or [''])[0][:300]}")


def builds_running() -> bool:
    """Whether a build runs now on any BackgroundBuilds of this process."""
    return any(builds._running for builds in list(_every_builds))


def exit_without_waiting_for_builds(code: int = 0) -> None:
    """End the process now where a build runs, without the interpreter's shutdown (which would wait for the build,
    tens of seconds of a compilation nothing will use; and a signal meanwhile aborts the process); return where
    none runs. For a program's last step, its own cleanup done: atexit handlers and finalizers are skipped, so
    stdout and stderr are flushed here first. torch's compile cache writes each entry whole (a temporary file
    renamed), so an entry is there or not."""
    if not builds_running():
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more to say anyway
            pass
    os._exit(code)
