"""The storage writer inside a rosbags Writer, made durable message by message and recoverable after a failed
write (:class:`RosbagsStorage`): the part of :class:`aliked_ros.bag_writer.BagWriter` that reaches past rosbags'
public API."""

from __future__ import annotations

import contextlib
import sqlite3

CHUNK_BYTES = 2**20  # rosbags' mcap writer holds a chunk in memory until it passes 1 MiB; sqlite3 commits as often


class RosbagsStorage:
    """The storage writer inside a rosbags Writer, reached where the public API ends, to close a bag after a failed
    write. Checked against rosbags 0.11.9 (rosbag2/writer.py, storage_mcap.py McapWriter, storage_sqlite3.py
    Sqlite3Writer); a storage of another shape turns recovery off (:attr:`usable` False) instead of failing writes.

    - mcap: rosbags writes each ~1 MiB chunk at once through a buffered file, and a write that fails half-way leaves
      a torn record at the end of the file while the chunk stays pending in memory. So the file is flushed after
      each message and its end noted; after a failure it is cut back to that end, and closing writes the pending
      chunk (which holds the failed message too) again.
    - sqlite3: rosbags keeps the whole bag in one transaction, and SQLite rolls it back when the disk fills up: every
      message would be lost. So it is committed after each new topic and every CHUNK_BYTES of messages; after a
      failure the counts are read back from the database.
    """

    def __init__(self, writer):
        self.writer = writer
        storage = writer.storage
        self.kind = ("mcap" if all(hasattr(storage, name) for name in ("bio", "chunk", "close_chunk", "channel_stats"))
                     else "sqlite3" if hasattr(storage, "conn") else None)
        self.usable = self.kind is not None
        self._uncommitted = 0
        self._flushing = False  # a failure now finds a complete chunk with its index still buffered
        self.end = 0
        if self.kind == "mcap":
            self._checkpoint(storage)

    def _checkpoint(self, storage) -> None:
        self._flushing = True
        storage.bio.flush()
        self._flushing = False
        self.end = storage.bio.tell()

    def settle(self, size: int, new_topic: bool = False) -> None:
        """After each message (``size`` bytes) or new topic: what the storage wrote made durable enough to keep."""
        if not self.usable:
            return
        storage = self.writer.storage
        if self.kind == "mcap":
            self._checkpoint(storage)  # cheap: the buffer is empty unless this message completed a chunk
            return
        self._uncommitted += size
        if new_topic or self._uncommitted >= CHUNK_BYTES:
            storage.conn.commit()
            self._uncommitted = 0

    def before_close(self) -> None:
        """mcap: the pending chunk written and noted before the summary, so a failure in the summary is cut back to
        complete chunks."""
        if self.usable and self.kind == "mcap":
            storage = self.writer.storage
            if storage.chunk.bio.tell():
                storage.close_chunk()
            self._checkpoint(storage)

    def recover(self) -> bool:
        """The storage back at its last complete record and the Writer's counts set to what it holds; False where
        that cannot be done (then closing is tried as things are)."""
        storage = self.writer.storage
        if not self.usable or storage is None:
            return False
        try:
            if self.kind == "mcap":
                if self._flushing:  # the chunk is whole; retry its buffered index
                    self._checkpoint(storage)
                else:
                    with contextlib.suppress(OSError):
                        storage.bio.close()  # drops what the failed write left in the buffer
                    file = storage.path.open("r+b")
                    file.truncate(self.end)
                    file.seek(self.end)
                    storage.bio = file
                counts = dict(storage.channel_stats)
                start, end = storage.message_start_time, storage.message_end_time
            else:
                rows = storage.conn.execute("SELECT topic_id, COUNT(*), MIN(timestamp), MAX(timestamp) FROM messages "
                                            "GROUP BY topic_id").fetchall()
                counts = {row[0]: row[1] for row in rows}
                start = min((row[2] for row in rows), default=2**63 - 1)
                end = max((row[3] for row in rows), default=0)
            for connection in self.writer.connections:
                self.writer.counts[connection.id] = counts.get(connection.id, 0)
            self.writer.min_timestamp, self.writer.max_timestamp = start, end
        except (OSError, sqlite3.Error, AttributeError, TypeError):
            self.usable = False
            return False
        return True


__all__ = ["CHUNK_BYTES", "RosbagsStorage"]
