"""A ROS 2 bag writer that never leaves a broken bag: closed and readable after Ctrl-C, SIGTERM, SIGHUP, an error
or a full disk, and marked partial in its metadata when it was cut short (see :class:`BagWriter`)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sqlite3
from pathlib import Path

from aliked_ros.bag_storage import CHUNK_BYTES, RosbagsStorage
from aliked_ros.bags import BAG_VERSION, DEFAULT_STORAGE, STORAGES, WRITER_RESERVE_NAME, clear_output, typestore
from aliked_ros.errors import AlikedError, DiskFullError
from aliked_ros.signals import SIGNAL_GATE

PARTIAL_KEY = "aliked_ros.partial"  # metadata.yaml custom_data of a bag that was cut short: the reason
NO_SPACE_GUARD_ENV = "ALIKED_ROS_NO_SPACE_GUARD"  # "1": no free-space check before each message (tests only)
CLOSE_BYTES = 256 * 1024  # what closing writes besides the last chunk: mcap summary, metadata, metadata.yaml
_RESERVE_STEP = 256 * 1024
_MIB = 2**20


class BagWriter:
    """A ROS 2 bag being written: one connection per topic, messages serialised as CDR.

    Convention:
        - Nothing is on disk before the first :meth:`write`: the bag directory is created then, and with ``replace``
          the old output at ``path`` (checked by the caller with :func:`check_output`) is removed only then, so a
          run that fails before its first message leaves the old output, or nothing.
        - Use it as a context manager. A clean exit closes the bag (an empty one where nothing was written). An
          exception after the first message (an AlikedError, Ctrl-C, SIGTERM or SIGHUP as the command line raises
          them, a full disk) closes it as well, readable by ``ros2 bag info`` and rosbags, with
          ``aliked_ros.partial: <reason>`` in the custom_data of its metadata.yaml; :attr:`message_count`,
          :attr:`counts` and :attr:`partial_reason` say what it holds. An exception before the first message
          removes what was created.
        - Each write and the close run with SIGINT, SIGTERM and SIGHUP held back
          (:class:`aliked_ros.signals.SignalGate`): a signal acts between two messages, never inside one, and never
          inside the close.
        - Full disks: before each message the free space of the bag's file system must cover :meth:`_room` (the
          chunk rosbags may write next, then the summary and metadata.yaml), else the bag is closed with a
          DiskFullError. A file of that size is kept allocated in the bag directory; where a write fails all the
          same (another process filled the disk, a quota), the storage is cut back to its last complete record
          (:class:`RosbagsStorage`), the reserve is deleted to make room, and the bag is closed. The environment
          variable ALIKED_ROS_NO_SPACE_GUARD=1 turns the free-space check off (the reserve stays): it exists for the
          tests of that second path.
    """

    def __init__(self, path: Path, storage: str = DEFAULT_STORAGE, *, replace: bool = False,
                 space_guard: bool | None = None):
        if storage not in STORAGES:
            raise AlikedError(f"--storage must be one of {', '.join(STORAGES)}, not {storage!r}.")
        self.path = Path(path)
        self.storage = storage
        self.replace = replace
        self.space_guard = os.environ.get(NO_SPACE_GUARD_ENV) != "1" if space_guard is None else space_guard
        self.counts: dict[str, int] = {}
        self.partial_reason: str | None = None
        self._writer = None
        self._storage: RosbagsStorage | None = None
        self._connections = {}
        self._reserve = _Reserve(self.path / WRITER_RESERVE_NAME)
        self._largest = 0  # bytes of the largest message so far
        self._bytes = 0  # bytes of all messages so far
        self._closed = False
        self._gated = False  # this writer has opened _SIGNALS

    @property
    def message_count(self) -> int:
        return sum(self.counts.values())

    def describe(self) -> str:
        """``"<path> holds 4 Image and 3 CameraInfo messages"`` (by message type), then ``(partial: <reason>)`` where
        the bag was cut short: what the tools say when they stop."""
        by_type: dict[str, int] = {}
        for topic, count in self.counts.items():
            name = self._connections[topic].msgtype.rpartition("/")[2]
            by_type[name] = by_type.get(name, 0) + count
        held = " and ".join(f"{count} {name}" for name, count in by_type.items()) or "0"
        partial = f" (partial: {self.partial_reason})" if self.partial_reason else ""
        return f"{self.path} holds {held} message{'' if self.message_count == 1 else 's'}{partial}"

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, exc_type, error, traceback) -> None:
        self.close(error)

    def write(self, topic: str, timestamp_ns: int, message) -> None:
        """Serialise ``message`` (a class of :func:`typestore`) on ``topic`` at bag time ``timestamp_ns``."""
        msgtype = message.__msgtype__
        data = typestore().serialize_cdr(message, msgtype)
        self._open_gate()
        with SIGNAL_GATE.held():
            if self._writer is None:
                self._create()
            self._make_room(len(data))
            connection = self._connections.get(topic)
            try:
                if connection is None:
                    # The typestore makes rosbags store the message definition and its type hash in the bag.
                    connection = self._writer.add_connection(topic, msgtype, typestore=typestore())
                    self._connections[topic] = connection
                    self.counts[topic] = 0
                    self._storage.settle(0, new_topic=True)
                self._writer.write(connection, timestamp_ns, data)
                self._storage.settle(len(data))
            except Exception as error:
                failure = self._write_failed(error)
                if failure is None:
                    raise
                raise failure from error
            self.counts[topic] += 1
            self._bytes += len(data)

    def close(self, error: BaseException | None = None) -> None:
        """Close the bag as the class's convention says; ``error`` is the exception that stops the writing, if any."""
        if self._closed:
            return
        self._open_gate()
        try:
            with SIGNAL_GATE.held(block=True):
                self._closed = True
                if self._writer is None:
                    if error is not None:
                        return  # nothing was created, and an old output was left in place
                    self._create()  # a run that wrote nothing, cleanly: an empty bag
                if error is not None and self.message_count == 0:
                    self._discard()
                    return
                if error is not None:
                    self.partial_reason = _stop_reason(error)
                    self._writer.set_custom_data(PARTIAL_KEY, self.partial_reason)
                self._reserve.release()  # the room that closing needs
                self._close_storage()
        finally:
            if self._gated:
                self._gated = False
                SIGNAL_GATE.close()

    # --- internals ---

    def _open_gate(self) -> None:
        if not self._gated:
            self._gated = True
            SIGNAL_GATE.open()

    def _create(self) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer, WriterError

        if self.replace:
            clear_output(self.path)
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        existed = self.path.exists() or self.path.is_symlink()
        try:
            writer = Writer(self.path, version=BAG_VERSION, storage_plugin=plugin)
            writer.open()
            storage = RosbagsStorage(writer)
        except WriterError:
            raise AlikedError(f"{self.path} exists; choose another --output or add --overwrite to replace it.") \
                from None
        except BaseException as error:
            if not existed and self.path.is_dir():
                clear_output(self.path)
            failure = self._storage_error(error, 0)
            if failure is None:
                raise
            raise failure from error
        self._writer, self._storage = writer, storage

    def _room(self) -> int:
        """Bytes the bag may still need on disk: the chunk rosbags writes next (up to CHUNK_BYTES plus a message,
        and its index of 16 bytes a message; sqlite3 commits as much at a time), then the summary and metadata.yaml
        (a few KiB per topic and about 100 bytes per chunk)."""
        mean = self._bytes // self.message_count if self.message_count else self._largest
        index = 16 * (CHUNK_BYTES // (31 + mean) + 1)  # 31: an mcap message record without its data
        chunks = self._bytes // CHUNK_BYTES + 1
        return CHUNK_BYTES + 2 * self._largest + index + CLOSE_BYTES + 128 * chunks

    def _make_room(self, size: int) -> None:
        """DiskFullError unless the next message and the close fit on the disk, with the reserve grown to match."""
        self._largest = max(self._largest, size)
        needed = self._room()
        if self.space_guard:
            free = _free_bytes(self.path)
            if free is not None and free < needed:
                # The reserve file already holds the room to close; the next chunk needs as much again beside it.
                held = f" besides the {self._reserve.size / _MIB:.1f} MiB held to close the bag" if self._reserve.size \
                    else ""
                raise self._disk_full(f"{free / _MIB:.1f} MiB free{held}, less than the {needed / _MIB:.1f} MiB the "
                                      "next chunk and the close may need", nearly=True)
        try:
            self._reserve.grow(needed)
        except OSError as error:
            if error.errno not in _FULL_ERRNOS:
                raise
            raise self._disk_full(f"no room for the {needed / _MIB:.1f} MiB kept to close the bag",
                                  nearly=True) from None

    def _disk_full(self, detail: str, nearly: bool = False) -> DiskFullError:
        count = self.message_count
        kept = f"the bag is closed with {_messages(count)}" if count else "no bag was written"
        return DiskFullError(f"The disk holding {self.path} is {'nearly ' if nearly else ''}full ({detail}): {kept}; "
                             "free some space or write to another disk.")

    def _storage_error(self, error: BaseException, count: int) -> AlikedError | None:
        """The AlikedError that a storage failure stands for (None: not one, re-raise it)."""
        if isinstance(error, AlikedError) or not isinstance(error, (OSError, sqlite3.Error)):
            return None
        if isinstance(error, OSError) and error.errno in _FULL_ERRNOS or _sqlite_full(error):
            return self._disk_full(getattr(error, "strerror", None) or str(error))
        kept = f"the bag is closed with {_messages(count)}" if count else "no bag was written"
        return AlikedError(f"Writing {self.path} failed ({getattr(error, 'strerror', None) or error}): {kept}; "
                           "check the disk and run again.")

    def _write_failed(self, error: Exception) -> AlikedError | None:
        """After a failed write: the storage back at its last complete record, the counts as it holds them."""
        self._reserve.release()
        self._storage.recover()
        by_id = self._writer.counts  # what metadata.yaml will say
        self.counts = {topic: by_id.get(connection.id, 0) for topic, connection in self._connections.items()}
        return self._storage_error(error, self.message_count)

    def _close_storage(self) -> None:
        error = None
        for _attempt in range(2):  # twice where space vanished after the reserve was deleted (another process)
            try:
                self._storage.before_close()
                self._writer.close()
                return
            except Exception as failure:
                error = failure
                if self._writer.storage is None:  # the storage is closed: only metadata.yaml failed
                    break
                self._storage.recover()  # rewound where it can be, else tried again as it is
        with contextlib.suppress(Exception):
            self._writer.abort()
        self.partial_reason = self.partial_reason or "not closed"
        raise AlikedError(f"{self.path} could not be closed ({error}): its messages are there without an index; "
                          f"free some space, then run `ros2 bag reindex {self.path}`.") from error

    def _discard(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.abort()
        self._reserve.release()
        clear_output(self.path)


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _messages(count: int) -> str:
    return f"{count} message{'' if count == 1 else 's'}"


def _sqlite_full(error: BaseException) -> bool:
    return isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def _free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged process may still write on the file system of ``path``."""
    try:
        stats = os.statvfs(path)
    except (OSError, AttributeError):  # no statvfs (Windows) or a vanished directory: no check
        return None
    return stats.f_bavail * stats.f_frsize


def _stop_reason(error: BaseException) -> str:
    """Why a bag was closed early, for its metadata and the tools' last line."""
    if isinstance(error, KeyboardInterrupt):
        signum = getattr(error, "signum", signal.SIGINT)  # the command line's SIGTERM and SIGHUP carry theirs
        if signum == signal.SIGINT:
            return "interrupted by Ctrl-C (SIGINT)"
        with contextlib.suppress(ValueError):
            return f"interrupted by {signal.Signals(signum).name}"
        return f"interrupted by signal {signum}"
    if isinstance(error, DiskFullError):
        return "the disk holding the bag is full"
    text = str(error).strip() or type(error).__name__
    if isinstance(error, AlikedError):
        return f"stopped by an error: {text}"
    return f"stopped by {type(error).__name__}: {text}"


class _Reserve:
    """Disk space held by a file in the bag directory, deleted to give closing its room on a full disk."""

    def __init__(self, path: Path):
        self.path = path
        self.size = 0
        self._fd: int | None = None

    def grow(self, needed: int) -> None:
        """At least ``needed`` bytes allocated (with a quarter more, so that it grows seldom); OSError ENOSPC where
        the disk has not that much."""
        if needed <= self.size:
            return
        size = -(-(needed + needed // 4) // _RESERVE_STEP) * _RESERVE_STEP
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(self._fd, 0, size)
            else:
                os.pwrite(self._fd, bytes(size - self.size), self.size)
        except OSError as error:
            if error.errno in _FULL_ERRNOS:
                raise
            return  # a file system that cannot allocate ahead: the free-space check alone guards the bag
        self.size = size

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self.size = 0


__all__ = ["BagWriter", "PARTIAL_KEY"]
